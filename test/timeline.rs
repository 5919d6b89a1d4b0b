//! Timelines in the archive against a real PostgreSQL 15: a restored copy promoted into the
//! same stanza (timeline 2, then 3) archives its history file, `.partial` segment and new
//! timeline's WAL; info, verify, expire, archive-get of history files and a restore that
//! follows the timelines all work with them, from the moment the first history file arrives
//! (before any segment of the new timeline). Then verify reports unknown entries and a
//! garbled or missing history file, which info and expire pass over.

use std::fs;
use std::time::Duration;

use crate::backup::Restored;
use crate::fixture::{assert_error, Site};
use crate::harness::{self, wait_until, PG_BIN};

/// The options that aim a backup at the restored copy `r` instead of the site's cluster.
fn pg_args(r: &Restored) -> Vec<String> {
    vec![
        format!("--pg1-path={}", r.data.display()),
        format!("--pg1-port={}", r.port),
        format!("--pg1-socket-path={}", r.socket.display()),
    ]
}

/// Inserts `value` on `r`, switches WAL and waits until that segment is in the repository.
fn archive_row(site: &Site, r: &Restored, value: u32) -> String {
    r.psql(&format!("insert into tl values ({value})"));
    let seg = r.psql("select pg_walfile_name(pg_switch_wal())");
    wait_until(&format!("{seg} archived"), Duration::from_secs(60), || {
        !site.stored(&seg).is_empty()
    });
    seg
}

/// The WAL segment of the (stopped) primary's last checkpoint, its newest.
fn current_segment(site: &Site) -> String {
    let out = harness::run_as_postgres(
        format!("{PG_BIN}/pg_controldata"),
        &[site.cluster.data_dir().to_str().unwrap()],
    )
    .expect_ok("pg_controldata");
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Latest checkpoint's REDO WAL file:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no REDO WAL file in:\n{out}"))
}

/// Starts `r` with archiving into the stanza (its postgresql.conf is the primary's) and
/// waits until it has promoted onto timeline `tli`.
fn promote(r: &Restored, tli: u32) {
    r.start("");
    r.wait_for(
        "select pg_is_in_recovery()",
        "f",
        &format!("promotion to timeline {tli}"),
    );
    assert_eq!(
        r.psql("select timeline_id from pg_control_checkpoint()"),
        tli.to_string()
    );
}

/// `info` in text and JSON exits 0; returns the archive's (min, max).
fn info_range(site: &Site) -> (String, String) {
    let out = site.pgbr(&["info"]);
    assert_eq!(out.status, 0, "info:\n{out}");
    assert!(out.stdout.contains("wal archive min/max (15): "), "{out}");
    let json = site.info_json();
    let s = |k: &str| json["archive"][0][k].as_str().unwrap_or("").to_string();
    (s("min"), s("max"))
}

fn verify_ok(site: &Site, when: &str) {
    let out = site.pgbr(&["verify"]);
    assert_eq!(out.status, 0, "verify {when}:\n{out}");
    assert!(out.stdout.contains("result: ok"), "{out}");
}

#[test]
fn history_files_partials_and_new_timelines_work_with_every_command() {
    let site = Site::local();
    site.cluster
        .psql("create table tl(x int); insert into tl values (1)");
    let full = site.backup("full", &[]);
    site.one_segment();
    // Row 10 stays in the primary's current segment, which it never archives: the old
    // primary stops for good, and after the failover only the promoted copy archives.
    site.cluster.psql("insert into tl values (10)");
    site.cluster.stop();

    let tl2 = Restored::restore(&site, "tl2", Some(&full), &[]);
    // As if streamed before the failover: recovery ends inside this segment, so promotion
    // archives timeline 1's last segment as .partial.
    let last_segment = current_segment(&site);
    let copy = tl2.data.join("pg_wal").join(&last_segment);
    fs::copy(
        site.cluster.data_dir().join("pg_wal").join(&last_segment),
        &copy,
    )
    .unwrap();
    harness::chown_postgres(&copy);
    promote(&tl2, 2);
    let archive = site.archive_id_dir();
    wait_until("00000002.history archived", Duration::from_secs(60), || {
        archive.join("00000002.history").is_file()
    });
    // The exact moment of the report: a history file and no segment of timeline 2 yet.
    assert!(!archive.join("0000000200000000").exists());
    let (min, max) = info_range(&site);
    assert!(min.starts_with("00000001") && max.starts_with("00000001"));
    verify_ok(&site, "with only the history file of timeline 2");

    // Timeline 2's first segment: it holds the switch point, so timeline 1's segment of
    // that number exists only as the .partial.
    let seg2 = archive_row(&site, &tl2, 2);
    let args = pg_args(&tl2);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let incr = site.backup("incr", &refs);
    assert!(site.backup_wal_range(&incr).0.starts_with("00000002"));
    assert!(site.backup_wal_range(&incr).0 > seg2);
    tl2.stop();

    let tl3 = Restored::restore(&site, "tl3", Some(&incr), &[]);
    promote(&tl3, 3);
    let seg3 = archive_row(&site, &tl3, 3);
    wait_until("00000003.history archived", Duration::from_secs(60), || {
        archive.join("00000003.history").is_file()
    });
    tl3.stop();
    let partial = format!("{last_segment}.partial-");
    wait_until("the .partial archived", Duration::from_secs(60), || {
        fs::read_dir(archive.join(&last_segment[..16]))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&partial))
    });

    let (min, max) = info_range(&site);
    assert!(min.starts_with("00000001"), "{min}");
    assert_eq!(max, seg3);
    verify_ok(&site, "after timeline 3");

    let out = site.pgbr(&["expire", "--repo1-retention-full=1"]);
    assert_eq!(out.status, 0, "expire:\n{out}");
    for h in ["00000002.history", "00000003.history"] {
        assert!(archive.join(h).is_file(), "expire kept {h}");
    }
    verify_ok(&site, "after expire");

    let got = site.dir.mkdir("got");
    let dest = got.join("00000003.history");
    let out = site.pgbr(&["archive-get", "00000003.history", dest.to_str().unwrap()]);
    assert_eq!(out.status, 0, "archive-get of a history file:\n{out}");
    assert_eq!(
        fs::read(&dest).unwrap(),
        fs::read(tl3.data.join("pg_wal/00000003.history")).unwrap()
    );
    let missing = got.join("00000009.history");
    let out = site.pgbr(&["archive-get", "00000009.history", missing.to_str().unwrap()]);
    assert_eq!(out.status, 1, "a missing history file is exit 1:\n{out}");
    assert!(!missing.exists());

    // The newest backup (the incr on timeline 2) recovers along the latest timeline to the
    // end of the archive on timeline 3.
    let last = Restored::restore(&site, "last", None, &[]);
    last.start_and_wait_promoted();
    assert_eq!(
        last.psql("select string_agg(x::text, ',' order by x) from tl"),
        "1,2,3,10"
    );
    assert_eq!(
        last.psql("select timeline_id from pg_control_checkpoint()"),
        "4"
    );
    last.stop();

    // Entries pg_backrest did not write: verify names them, info and expire pass over them.
    fs::write(archive.join("notes.txt"), "x").unwrap();
    fs::write(archive.join("0000000300000000/garbage"), "x").unwrap();
    info_range(&site);
    let out = site.pgbr(&["expire", "--repo1-retention-full=1"]);
    assert_eq!(out.status, 0, "expire with unknown entries:\n{out}");
    let out = site.pgbr(&["verify"]);
    assert_error(&out, 91, "verify found problems");
    assert!(
        out.stdout.contains("unknown entry: 15-1/notes.txt"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("unknown entry: 15-1/0000000300000000/garbage"),
        "{out}"
    );
    // A segment stored in a compression this build cannot read (pgBackRest's .xz) is no
    // "not found" (exit 1, which would end recovery early) but a hard error.
    let foreign_dir = archive.join("0000000500000000");
    harness::mkdir_postgres(&foreign_dir);
    let foreign = foreign_dir.join(format!("000000050000000000000001-{}.xz", "a".repeat(40)));
    fs::write(&foreign, "x").unwrap();
    let dest = got.join("000000050000000000000001");
    let out = site.pgbr(&[
        "archive-get",
        "000000050000000000000001",
        dest.to_str().unwrap(),
    ]);
    assert_error(
        &out,
        67,
        "with compression '.xz' that pg_backrest cannot read",
    );
    assert!(!dest.exists());
    fs::remove_dir_all(&foreign_dir).unwrap();
    fs::remove_file(archive.join("notes.txt")).unwrap();
    fs::remove_file(archive.join("0000000300000000/garbage")).unwrap();

    // A garbled history file and a missing one are verify problems, in text and JSON.
    let hist2 = archive.join("00000002.history");
    let good = fs::read(&hist2).unwrap();
    fs::write(&hist2, "1\tnot-an-lsn\tbroken\n").unwrap();
    let hist3 = archive.join("00000003.history");
    let good3 = fs::read(&hist3).unwrap();
    fs::remove_file(&hist3).unwrap();
    let out = site.pgbr(&["verify"]);
    assert_error(&out, 91, "verify found problems");
    assert!(
        out.stdout.contains("history: 15-1/00000002.history"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("history: timeline 3 has no history file 15-1/00000003.history"),
        "{out}"
    );
    let out = site.pgbr(&["verify", "--output=json"]);
    assert_eq!(out.status, 91, "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    let problems = report["history_problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{out}");
    assert!(problems[0].as_str().unwrap().contains("00000002.history"));
    assert!(problems[1].as_str().unwrap().contains("00000003.history"));
    fs::write(&hist2, good).unwrap();
    assert!(
        site.pgbr(&["verify"]).status == 91,
        "00000003.history is still missing"
    );

    // The gap check follows the history of timeline 3 from the full backup on timeline 1:
    // nothing missing along it (timeline 1's segment numbers from the switch point on are
    // not expected), and a segment of timeline 2 outside every backup's range is a gap.
    fs::write(&hist3, good3).unwrap();
    harness::chown_postgres(&hist3);
    verify_ok(&site, "with every history file back");
    let stored2 = site.stored(&seg2);
    assert!(!stored2.is_empty(), "{seg2} is stored");
    for f in stored2 {
        fs::remove_file(f).unwrap();
    }
    let out = site.pgbr(&["verify"]);
    assert_error(&out, 91, "verify found problems");
    assert!(
        out.stdout.contains(&format!("gap: {seg2} is missing")),
        "{out}"
    );
    let out = site.pgbr(&["verify", "--output=json"]);
    assert_eq!(out.status, 91, "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["wal_gaps"], serde_json::json!([seg2]), "{out}");
}
