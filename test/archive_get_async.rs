//! Asynchronous archive-get (archive-async=y) against a real PostgreSQL 15: recovery and a
//! standby replaying from segments the `archive-get:async` worker prefetched into the spool,
//! locally and over SSH, and every way a prefetched file could be wrong (an earlier run,
//! another cluster, damaged content, a deleted spool, a timeline switch) without one ever
//! reaching PostgreSQL.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backup::Restored;
use crate::fixture::{Options, Site};
use crate::harness::{self, chown_postgres, run, run_as_postgres, wait_until, Out, PG_BIN};

fn async_site(remote: bool) -> Site {
    Site::new(Options {
        remote,
        async_archiving: true,
        ..Options::default()
    })
}

/// Pids of running `archive-get:async` workers of this site (their command line names the
/// site's config).
fn get_workers(site: &Site) -> Vec<u32> {
    let conf = site.conf.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("archive-get:async") && cmdline.contains(&conf) {
            out.push(pid);
        }
    }
    out
}

fn wait_workers_gone(site: &Site) {
    wait_until(
        "archive-get:async worker to end",
        Duration::from_secs(60),
        || get_workers(site).is_empty(),
    );
}

/// The archive-push:async worker lingers a moment after the last push, holding the stanza's
/// archive lock; an archive-get:async worker is started only once it is gone.
fn wait_push_worker_gone(site: &Site) {
    wait_until(
        "the archive-push:async worker to end",
        Duration::from_secs(30),
        || {
            let log = site.log("archive-push-async");
            log.matches("command begin").count() == log.matches("command end").count()
        },
    );
}

/// The one run directory under the spool's `in/`.
fn run_dir(site: &Site) -> PathBuf {
    let dirs: Vec<PathBuf> = fs::read_dir(site.spool().join("in"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(dirs.len(), 1, "one run directory in the spool: {dirs:?}");
    dirs[0].clone()
}

/// The segment the worker noted missing in `dir` (its `SEGMENT.missing` file), if any.
fn missing_note(dir: &Path) -> Option<String> {
    fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        e.file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(".missing"))
            .map(String::from)
    })
}

/// The prefetched file of `seg` in `dir`, if any.
fn prefetched(dir: &Path, seg: &str) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{seg}-")))
        })
}

fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    hex::encode(Sha1::digest(bytes))
}

/// A directory that looks like a running cluster's data directory to restore_command:
/// postmaster.pid (pid, data directory, start time) and the site's pg_control.
fn fake_data_dir(site: &Site, start_time: u64) -> PathBuf {
    let d = site.dir.join("fake");
    fs::create_dir_all(d.join("global")).unwrap();
    fs::create_dir_all(d.join("pg_wal")).unwrap();
    fs::copy(
        site.cluster.data_dir().join("global/pg_control"),
        d.join("global/pg_control"),
    )
    .unwrap();
    fs::write(
        d.join("postmaster.pid"),
        format!("4242\n{}\n{start_time}\n5432\n", d.display()),
    )
    .unwrap();
    for p in [
        d.clone(),
        d.join("global"),
        d.join("pg_wal"),
        d.join("global/pg_control"),
        d.join("postmaster.pid"),
    ] {
        chown_postgres(&p);
    }
    d
}

/// restore_command as PostgreSQL runs it: in the data directory, into pg_wal/RECOVERYXLOG.
fn restore_command(site: &Site, data: &Path, seg: &str, extra: &str) -> Out {
    let _ = fs::remove_file(data.join("pg_wal/RECOVERYXLOG"));
    run_as_postgres(
        "sh",
        &[
            "-c",
            &format!(
                "cd {} && {} --config={} --stanza=main {extra} archive-get {seg} pg_wal/RECOVERYXLOG",
                data.display(),
                harness::bin().display(),
                site.conf.display()
            ),
        ],
    )
}

fn assert_got(site: &Site, data: &Path, seg: &str, out: &Out) {
    assert_eq!(out.status, 0, "archive-get {seg}:\n{out}");
    assert!(
        fs::read(data.join("pg_wal/RECOVERYXLOG")).unwrap()
            == fs::read(site.originals.join(seg)).unwrap(),
        "{seg} handed over differs from what PostgreSQL archived"
    );
}

/// Lines of the foreground log after `mark` (its length before a call).
fn log_since(site: &Site, mark: usize) -> String {
    site.log("archive-get")[mark..].to_string()
}

#[test]
fn async_get_hands_over_only_valid_prefetched_files_of_this_run() {
    let site = async_site(false);
    let segs: Vec<String> = (0..5).map(|_| site.one_segment()).collect();
    for w in segs.windows(2) {
        assert_eq!(
            u64::from_str_radix(&w[1][8..], 16).unwrap(),
            u64::from_str_radix(&w[0][8..], 16).unwrap() + 1,
            "consecutive segments: {segs:?}"
        );
    }
    let data = fake_data_dir(&site, 1_700_000_000);
    wait_push_worker_gone(&site);

    // A miss in the spool: fetched from the repository, and the worker prefetches the rest
    // of the archive, up to the first segment it does not hold.
    let out = restore_command(&site, &data, &segs[0], "");
    assert_got(&site, &data, &segs[0], &out);
    wait_workers_gone(&site);
    let dir = run_dir(&site);
    for s in &segs[1..] {
        assert!(prefetched(&dir, s).is_some(), "{s} prefetched");
    }
    let async_log = site.log("archive-get-async");
    assert!(
        async_log.contains("prefetched WAL file") && async_log.contains("prefetching ends there"),
        "{}",
        harness::tail(&async_log, 20)
    );

    // Valid: handed over from the spool.
    let mark = site.log("archive-get").len();
    let out = restore_command(&site, &data, &segs[1], "");
    assert_got(&site, &data, &segs[1], &out);
    assert!(
        log_since(&site, mark).contains("in the spool"),
        "{}",
        log_since(&site, mark)
    );
    wait_workers_gone(&site);

    // Damaged content (a byte flipped, the name's SHA-1 unchanged): removed, fetched again.
    let f = prefetched(&dir, &segs[2]).expect("prefetched");
    let mut bytes = fs::read(&f).unwrap();
    bytes[100_000] ^= 0xFF;
    fs::write(&f, &bytes).unwrap();
    let mark = site.log("archive-get").len();
    let out = restore_command(&site, &data, &segs[2], "");
    assert_got(&site, &data, &segs[2], &out);
    let log = log_since(&site, mark);
    assert!(
        log.contains("is not handed over") && log.contains("SHA-1"),
        "{log}"
    );
    assert!(log.contains("in the archive"), "{log}");
    wait_workers_gone(&site);

    // Another cluster's segment of that name (its own checksum in the name): refused by the
    // system identifier in its page header.
    let f = prefetched(&dir, &segs[3]).expect("prefetched");
    let mut bytes = fs::read(&f).unwrap();
    bytes[24] ^= 0x01;
    fs::remove_file(&f).unwrap();
    let planted = dir.join(format!("{}-{}", segs[3], sha1_hex(&bytes)));
    fs::write(&planted, &bytes).unwrap();
    let mark = site.log("archive-get").len();
    let out = restore_command(&site, &data, &segs[3], "");
    assert_got(&site, &data, &segs[3], &out);
    let log = log_since(&site, mark);
    assert!(log.contains("system identifier"), "{log}");
    assert!(!planted.exists(), "the foreign file is removed");
    wait_workers_gone(&site);

    // An earlier run (the postmaster restarted: another start time): its files are removed
    // unread, the segment comes from the repository.
    assert!(prefetched(&dir, &segs[4]).is_some());
    let data = fake_data_dir(&site, 1_700_000_999);
    let mark = site.log("archive-get").len();
    let out = restore_command(&site, &data, &segs[4], "");
    assert_got(&site, &data, &segs[4], &out);
    let log = log_since(&site, mark);
    assert!(
        log.contains("prefetched for another run") && log.contains("in the archive"),
        "{log}"
    );
    assert!(!dir.exists(), "the earlier run's directory is gone");
    wait_workers_gone(&site);

    // The worker noted the segment after the archive's end missing. With the default
    // archive-missing-retry=y the note is never an answer: archived meanwhile, it is found.
    let dir = run_dir(&site);
    let next = missing_note(&dir).expect("a .missing note");
    let archived = site.one_segment();
    assert_eq!(archived, next);
    wait_push_worker_gone(&site);
    let out = restore_command(&site, &data, &next, "");
    assert_got(&site, &data, &next, &out);
    wait_workers_gone(&site);

    // archive-missing-retry=n: a miss the worker noted in this run is answered with exit 1
    // without looking again (pgBackRest's meaning), once; nothing is written to pg_wal.
    let after = missing_note(&dir).expect("a .missing note for the segment after");
    let mark = site.log("archive-get").len();
    let out = restore_command(&site, &data, &after, "--archive-missing-retry=n");
    assert_eq!(out.status, 1, "{out}");
    assert!(!data.join("pg_wal/RECOVERYXLOG").exists());
    assert!(
        log_since(&site, mark).contains("archive-missing-retry=n"),
        "{}",
        log_since(&site, mark)
    );
    // Really missing: the repository lookup says so too, and pg_wal stays clean.
    let out = restore_command(&site, &data, &after, "");
    assert_eq!(out.status, 1, "{out}");
    assert!(!out.stderr.contains("ERROR"), "{out}");
    assert!(!data.join("pg_wal/RECOVERYXLOG").exists());
    assert!(harness::temp_files_under(&data.join("pg_wal")).is_empty());

    // A spool that cannot be used (here: cannot even be created): restore_command answers
    // from the repository all the same; only the worker fails, in its own log.
    let out = restore_command(
        &site,
        &data,
        &segs[0],
        "--spool-path=/proc/pg_backrest-no-spool",
    );
    assert_got(&site, &data, &segs[0], &out);
    wait_workers_gone(&site);
    assert!(site.log("archive-get-async").contains("ERROR"));
}

/// A backup, then `segments` more archived under load; the backup restored and recovered
/// through async restore_command; the restored copy has every row.
fn recovery_replays_from_the_spool(site: &Site, delete_spool: bool) {
    site.backup("full", &[]);
    let before = site.original_segments().len();
    site.archive_under_load(before as u64 + 24);
    let expected = site
        .cluster
        .psql("select count(*) || ' ' || sum(id) from filler");
    site.one_segment();
    let replayed = site.original_segments().len() - before;
    assert!(replayed >= 20, "{replayed} segments to replay");

    let r = Restored::restore(site, "restored", None, &[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let deleter = delete_spool.then(|| {
        let spool = site.spool().join("in");
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut deletions = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(300));
                if fs::remove_dir_all(&spool).is_ok() {
                    deletions += 1;
                }
            }
            deletions
        })
    });
    let began = std::time::Instant::now();
    r.start_and_wait_promoted();
    let took = began.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(d) = deleter {
        let deletions = d.join().unwrap();
        assert!(deletions > 0, "the spool was deleted during recovery");
    }
    assert_eq!(
        r.psql("select count(*) || ' ' || sum(id) from filler"),
        expected
    );
    r.stop();
    let log = site.log("archive-get");
    let handed = log.matches("in the spool (prefetched").count();
    let vanished = log
        .matches("left the spool before it was handed over")
        .count();
    eprintln!(
        "recovery of {replayed} segments took {took:?}; {handed} handed over from the spool, \
         {vanished} removed with the spool between listing and hand-over"
    );
    if !delete_spool {
        assert!(
            handed >= replayed / 2,
            "only {handed} of {replayed} segments came from the spool:\n{}",
            harness::tail(&log, 40)
        );
    }
    assert!(
        !log.contains("is not handed over"),
        "{}",
        harness::tail(&log, 40)
    );
    assert!(site
        .log("archive-get-async")
        .contains("prefetched WAL file"));
}

#[test]
fn async_recovery_replays_prefetched_segments_local() {
    recovery_replays_from_the_spool(&async_site(false), false);
}

#[test]
fn async_recovery_replays_prefetched_segments_over_ssh() {
    recovery_replays_from_the_spool(&async_site(true), false);
}

#[test]
fn async_recovery_survives_the_spool_deleted_again_and_again() {
    recovery_replays_from_the_spool(&async_site(false), true);
}

/// A standby replays the archive with prefetch in flight and is promoted; it archives on
/// timeline 2, and a later recovery from the archive reaches the end of timeline 2.
#[test]
fn async_get_standby_promoted_mid_prefetch_then_recovery_follows_the_new_timeline() {
    let site = async_site(false);
    site.backup("full", &[]);
    let before = site.original_segments().len();
    site.archive_under_load(before as u64 + 12);
    let expected = site.cluster.psql("select count(*) from filler");
    site.one_segment();
    site.cluster.stop();

    let standby = Restored::restore(&site, "standby", None, &[]);
    fs::rename(
        standby.data.join("recovery.signal"),
        standby.data.join("standby.signal"),
    )
    .unwrap();
    // Archiving on, as after a failover: the promoted standby archives into the stanza.
    standby.start("");
    wait_until(
        "the standby to replay from prefetched segments",
        Duration::from_secs(120),
        || site.log("archive-get").contains("in the spool (prefetched"),
    );
    let out = run(harness::postgres_command(
        format!("{PG_BIN}/pg_ctl"),
        &["-D", standby.data.to_str().unwrap(), "-w", "promote"],
    ));
    assert!(out.success(), "promote:\n{out}");
    standby.wait_for("select pg_is_in_recovery()", "f", "promotion");
    standby.psql("checkpoint");
    assert_eq!(
        standby.psql("select timeline_id from pg_control_checkpoint()"),
        "2"
    );
    assert_eq!(standby.psql("select count(*) from filler"), expected);
    standby.psql("create table after_promote(x int); insert into after_promote values (42)");
    let seg = standby.psql("select pg_walfile_name(pg_switch_wal())");
    assert!(seg.starts_with("00000002"), "{seg}");
    wait_until(&format!("{seg} archived"), Duration::from_secs(60), || {
        !site.stored(&seg).is_empty()
    });
    standby.stop();

    let again = Restored::restore(&site, "again", None, &[]);
    again.start_and_wait_promoted();
    assert_eq!(again.psql("select x from after_promote"), "42");
    assert_eq!(again.psql("select count(*) from filler"), expected);
    again.psql("checkpoint");
    assert_eq!(
        again.psql("select timeline_id from pg_control_checkpoint()"),
        "3"
    );
    again.stop();
    assert!(!site.log("archive-get").contains("is not handed over"));
}
