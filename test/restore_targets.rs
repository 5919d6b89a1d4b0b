//! Point-in-time recovery against a real PostgreSQL 15: restores to a restore point, a time
//! between two inserts, an xid and an LSN, with promote and with pause, checking exactly
//! which rows exist; targets before a backup's end refused; and a restore across a timeline
//! switch (a restored copy promoted, archiving on its new timeline, then restored again).

use std::time::Duration;

use crate::backup::Restored;
use crate::fixture::{assert_error, label_of, Site};
use crate::harness::wait_until;

/// Waits until PostgreSQL's clock has moved into a later whole second than when called, so
/// that what happened before and what happens after differ even at the one-second resolution
/// of backup times in backup.info (a time target is compared with a backup's end).
fn next_second(site: &Site) {
    let now = || -> i64 {
        let text = site
            .cluster
            .psql("select floor(extract(epoch from clock_timestamp()))::bigint");
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("epoch from psql: {text:?}"))
    };
    let start = now();
    wait_until(
        "PostgreSQL's clock to reach the next second",
        Duration::from_secs(10),
        || now() > start,
    );
}

/// The rows of `t` a restored copy holds.
fn rows(r: &Restored) -> String {
    r.psql("select coalesce(string_agg(x::text, ',' order by x), '') from pitr")
}

struct History {
    label: String,
    xid1: String,
    lsn1: String,
    time_between: String,
}

/// A backup, then row 1 (with its xid, a restore point and the LSN after it), a time, and
/// row 2, all archived.
fn history(site: &Site) -> History {
    site.cluster.psql("create table pitr(x int)");
    let out = site.pgbr(&["backup", "--type=full", "--start-fast"]);
    assert_eq!(out.status, 0, "{out}");
    let label = label_of(&out);
    let xid1 = site
        .cluster
        .psql("begin; insert into pitr values (1); select txid_current(); commit;");
    let xid1 = xid1
        .lines()
        .find(|l| l.chars().all(|c| c.is_ascii_digit()) && !l.is_empty())
        .unwrap()
        .to_string();
    site.cluster
        .psql("select pg_create_restore_point('after-one')");
    let lsn1 = site.cluster.psql("select pg_current_wal_insert_lsn()");
    next_second(site);
    let time_between = site.cluster.psql(
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
    );
    next_second(site);
    site.cluster.psql("insert into pitr values (2)");
    site.one_segment();
    History {
        label,
        xid1,
        lsn1,
        time_between,
    }
}

#[test]
fn each_target_type_recovers_exactly_to_its_point_with_promote_and_pause() {
    let site = Site::local();
    let h = history(&site);
    let cases: &[(&str, &[&str], &str)] = &[
        ("name", &["--type=name", "--target=after-one"], "1"),
        ("time", &["--type=time"], "1"),
        ("xid", &["--type=xid"], "1"),
        ("xid-exclusive", &["--type=xid", "--target-exclusive"], ""),
        ("lsn", &["--type=lsn"], "1"),
        ("immediate", &["--type=immediate"], ""),
        ("default", &[], "1,2"),
    ];
    for (i, (name, args, expected)) in cases.iter().enumerate() {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match *name {
            "time" => all.push(format!("--target={}", h.time_between)),
            "xid" | "xid-exclusive" => all.push(format!("--target={}", h.xid1)),
            "lsn" => all.push(format!("--target={}", h.lsn1)),
            _ => {}
        }
        // Alternate the actions: promote ends recovery, pause leaves it paused at the target.
        let pause = i % 2 == 1 && *name != "default";
        if *name != "default" {
            all.push(format!(
                "--target-action={}",
                if pause { "pause" } else { "promote" }
            ));
        }
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let r = Restored::restore(&site, &format!("pitr-{name}"), Some(&h.label), &refs);
        let auto = std::fs::read_to_string(r.data.join("postgresql.auto.conf")).unwrap();
        if pause {
            r.start("archive_mode = off\nhot_standby = on\n");
            r.wait_for(
                "select pg_get_wal_replay_pause_state()",
                "paused",
                &format!("{name}: paused at the target"),
            );
            assert_eq!(
                r.psql("select pg_is_in_recovery()"),
                "t",
                "{name}: still in recovery while paused"
            );
        } else {
            r.start_and_wait_promoted();
        }
        assert_eq!(
            rows(&r),
            *expected,
            "{name} {all:?} restored the wrong rows\n{auto}"
        );
        r.stop();
    }
}

#[test]
fn targets_before_the_end_of_a_backup_are_refused() {
    let site = Site::local();
    site.cluster.psql("create table pitr(x int)");
    let before = site.cluster.psql(
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00'",
    );
    next_second(&site);
    let out = site.pgbr(&["backup", "--type=full", "--start-fast"]);
    let label = label_of(&out);
    let dest = site.dir.join("never");
    let target = format!("--target={before}");
    let pg1 = format!("--pg1-path={}", dest.display());
    let set = format!("--set={label}");
    assert_error(
        &site.pgbr(&["restore", &pg1, "--type=time", &target, &set]),
        75,
        "is before the end of the backup",
    );
    assert_error(
        &site.pgbr(&["restore", &pg1, "--type=time", &target]),
        75,
        "no backup ends before recovery target",
    );
    assert_error(
        &site.pgbr(&["restore", &pg1, "--type=lsn", "--target=0/100"]),
        75,
        "no backup ends before recovery target",
    );
    assert_error(
        &site.pgbr(&["restore", &pg1, "--type=time", "--target=yesterday"]),
        32,
        "is not a time pg_backrest can read",
    );
    assert_error(
        &site.pgbr(&["restore", &pg1, "--type=xid"]),
        37,
        "requires --target",
    );
    assert_error(
        &site.pgbr(&["restore", &pg1, "--type=sometime"]),
        32,
        "invalid value 'sometime' for option '--type': must be one of: default, immediate, time, xid, lsn, name, standby, none for restore",
    );
    assert!(!dest.exists(), "nothing restored");
}

#[test]
fn restore_follows_a_timeline_switch_through_the_archived_history_file() {
    let site = Site::local();
    site.cluster
        .psql("create table pitr(x int); insert into pitr values (1)");
    let out = site.pgbr(&["backup", "--type=full", "--start-fast"]);
    let label = label_of(&out);
    site.one_segment();
    site.cluster.stop();

    // A restored copy is promoted (timeline 2) and archives to the same stanza.
    let first = Restored::restore(&site, "tl-first", Some(&label), &[]);
    first.start("");
    first.wait_for("select pg_is_in_recovery()", "f", "promotion");
    assert_eq!(
        first.psql("select timeline_id from pg_control_checkpoint()"),
        "2"
    );
    first.psql("insert into pitr values (3)");
    let seg = first.psql("select pg_walfile_name(pg_switch_wal())");
    let history = site.archive_id_dir().join("00000002.history");
    crate::harness::wait_until("timeline 2 archived", Duration::from_secs(60), || {
        history.is_file() && !site.stored(&seg).is_empty()
    });
    first.stop();

    // The same backup restored again follows the latest timeline and sees row 3.
    let second = Restored::restore(&site, "tl-second", Some(&label), &[]);
    second.start_and_wait_promoted();
    assert_eq!(rows(&second), "1,3");
    assert_eq!(
        second.psql("select timeline_id from pg_control_checkpoint()"),
        "3"
    );
    second.stop();
}

/// `postgres -C setting -D data` as postgres: the value PostgreSQL itself reads from the
/// restored copy's configuration, postgresql.auto.conf included.
fn pg_setting(data: &std::path::Path, setting: &str) -> String {
    let out = crate::harness::run_as_postgres(
        format!("{}/postgres", crate::harness::PG_BIN),
        &["-C", setting, "-D", data.to_str().unwrap()],
    );
    assert_eq!(out.status, 0, "postgres -C {setting}:\n{out}");
    out.stdout
        .strip_suffix('\n')
        .unwrap_or(&out.stdout)
        .to_string()
}

#[test]
fn hostile_targets_round_trip_through_postgres_and_control_characters_are_refused() {
    let site = Site::local();
    site.backup("full", &[]);
    let bin = crate::harness::bin();
    let cases = [
        ("backslash", r"a\", "0x2", "2"),
        ("inject", "x' restore_command = 'false", "latest", "latest"),
        ("doubled", r"it''s \\ ok", "current", "current"),
    ];
    for (name, text, timeline, timeline_read) in cases {
        let r = Restored::restore(
            &site,
            &format!("hostile-{name}"),
            None,
            &[
                "--type=name",
                &format!("--target={text}"),
                &format!("--target-timeline={timeline}"),
            ],
        );
        let auto = std::fs::read_to_string(r.data.join("postgresql.auto.conf")).unwrap();
        assert_eq!(
            pg_setting(&r.data, "recovery_target_name"),
            text,
            "{name}:\n{auto}"
        );
        assert_eq!(
            pg_setting(&r.data, "recovery_target_timeline"),
            timeline_read,
            "{name}:\n{auto}"
        );
        let command = pg_setting(&r.data, "restore_command");
        assert!(
            command.starts_with(bin.to_str().unwrap())
                && command.ends_with(" archive-get %f \"%p\""),
            "{name}: restore_command is not pg_backrest's: {command}\n{auto}"
        );
    }

    // Refused at option validation: nothing is created at the destination.
    let dest = site.dir.join("never");
    let pg1 = format!("--pg1-path={}", dest.display());
    assert_error(
        &site.pgbr(&[
            "restore",
            &pg1,
            "--type=name",
            "--target=a\nrestore_command = 'false'",
        ]),
        32,
        "option '--target' holds the control character U+000A",
    );
    for bad in ["2x", "010", "0", "last"] {
        assert_error(
            &site.pgbr(&["restore", &pg1, &format!("--target-timeline={bad}")]),
            32,
            "for option '--target-timeline'",
        );
    }
    assert!(!dest.exists(), "nothing restored");
}
