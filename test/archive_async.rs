//! Asynchronous archiving (archive-async=y) against a real PostgreSQL 15: the archiver's
//! commands answered by a background worker, locally and over SSH, and every way the worker,
//! the spool or the repository can fail without losing or faking a segment.
//!
//! The fixture's archive_command copies a segment to `originals/` only after archive-push
//! exited 0, so `originals/` is exactly the set of segments PostgreSQL was told are safe:
//! [`assert_every_acknowledged_segment_is_stored`] checks each one is in the repository once,
//! byte-identical. That is the "never a false done" property, whatever fault came before.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backup::Restored;
use crate::fixture::{assert_error, wait_until_archived, Options, Site, STANZA};
use crate::harness::{self, chown_postgres, wait_until};

fn async_site(remote: bool) -> Site {
    Site::new(Options {
        remote,
        async_archiving: true,
        ..Options::default()
    })
}

fn archive_async_and_fetch_back(site: &Site) {
    crate::archive::archive_and_fetch_back(site);
    let log = site.log("archive-push-async");
    assert!(
        log.contains("pushed WAL file"),
        "the worker pushed the segments:\n{}",
        harness::tail(&log, 20)
    );
    let fg = site.log("archive-push");
    assert!(
        fg.contains("pushed WAL file") && fg.contains("asynchronously"),
        "archive_command answered from acknowledgments:\n{}",
        harness::tail(&fg, 20)
    );
}

#[test]
fn async_push_under_load_every_segment_comes_back_identical_local() {
    archive_async_and_fetch_back(&async_site(false));
}

#[test]
fn async_push_under_load_every_segment_comes_back_identical_over_ssh() {
    archive_async_and_fetch_back(&async_site(true));
}

/// Writes about `n` segments of WAL, switching after each, without waiting for archiving.
fn write_segments(site: &Site, n: usize) {
    site.cluster
        .psql("create table if not exists filler(id int, pad text)");
    for _ in 0..n {
        site.cluster.psql(
            "insert into filler select g, md5(g::text) || repeat('x', 400) \
             from generate_series(1, 12000) g",
        );
        site.cluster.psql("select pg_switch_wal()");
    }
}

/// Every segment PostgreSQL was told is archived (copied to originals/ after exit 0) is
/// stored exactly once and comes back byte-identical; returns how many there were.
fn assert_every_acknowledged_segment_is_stored(site: &Site) -> usize {
    let segments = site.original_segments();
    let fetch = site.dir.mkdir("fetched-check");
    for seg in &segments {
        assert_eq!(site.stored(seg).len(), 1, "{seg} stored once");
        let dest = fetch.join(seg);
        let out = site.pgbr(&[
            "archive-get",
            "--archive-async=n",
            seg,
            dest.to_str().unwrap(),
        ]);
        assert_eq!(out.status, 0, "archive-get {seg}:\n{out}");
        assert!(
            fs::read(&dest).unwrap() == fs::read(site.originals.join(seg)).unwrap(),
            "{seg}: the archive holds other content than PostgreSQL archived"
        );
        fs::remove_file(&dest).unwrap();
    }
    segments.len()
}

/// A small deterministic pseudo-random sequence (the seed is printed, so a failure can be
/// replayed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[test]
fn worker_killed_at_random_instants_loses_nothing_and_fakes_nothing() {
    let site = async_site(false);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill schedule seed {seed}");
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (stop, kills) = (stop.clone(), kills.clone());
        let conf = site.conf.clone();
        let probe = Site::workers_probe(conf);
        std::thread::spawn(move || {
            let mut rng = Lcg(seed);
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10 + rng.next(300)));
                let pids = probe();
                if !pids.is_empty() {
                    harness::signal(&pids, "KILL");
                    kills.fetch_add(pids.len(), Ordering::SeqCst);
                }
            }
        })
    };
    // Until the worker has been killed a good number of times, mid-run.
    let start = Instant::now();
    while kills.load(Ordering::SeqCst) < 8 && start.elapsed() < Duration::from_secs(240) {
        write_segments(&site, 3);
    }
    stop.store(true, Ordering::SeqCst);
    killer.join().unwrap();
    assert!(
        kills.load(Ordering::SeqCst) >= 8,
        "the worker was killed only {} times",
        kills.load(Ordering::SeqCst)
    );
    wait_until_archived(&site);
    let n = assert_every_acknowledged_segment_is_stored(&site);
    assert!(n >= 6, "only {n} segments archived");
    let last = site
        .cluster
        .psql("select last_archived_wal from pg_stat_archiver");
    assert!(
        site.original_segments().contains(&last),
        "the last archived segment {last} is in originals/"
    );
}

impl Site {
    /// A closure listing this site's workers, for a thread that cannot borrow the site.
    fn workers_probe(conf: PathBuf) -> impl Fn() -> Vec<u32> + Send + 'static {
        move || {
            let conf = conf.to_string_lossy().into_owned();
            let mut out = Vec::new();
            for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
                    continue;
                };
                let cmdline = String::from_utf8_lossy(&cmdline);
                if cmdline.contains("archive-push:async") && cmdline.contains(&conf) {
                    out.push(pid);
                }
            }
            out
        }
    }
}

#[test]
fn spool_deleted_while_archiving_loses_nothing() {
    let site = async_site(false);
    let spool_root = site.dir.join("spool");
    for _ in 0..6 {
        write_segments(&site, 2);
        let _ = fs::remove_dir_all(&spool_root);
    }
    wait_until_archived(&site);
    assert!(assert_every_acknowledged_segment_is_stored(&site) >= 10);
    site.cluster.assert_archiving_never_failed();
}

/// A tmpfs mounted over a path for the test's lifetime.
struct Mount(PathBuf);
impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        fs::create_dir_all(at).unwrap();
        let out = harness::run({
            let mut c = std::process::Command::new("mount");
            c.args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0750"),
                "tmpfs",
            ])
            .arg(at);
            c
        });
        assert!(out.success(), "mount tmpfs at {}:\n{out}", at.display());
        chown_postgres(at);
        Mount(at.to_path_buf())
    }
}
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_spool_falls_back_to_pushing_synchronously_and_fails_nothing() {
    let site = async_site(false);
    let spool_root = site.dir.join("spool");
    let _mount = Mount::tmpfs(&spool_root, "256k");
    // The spool's directories exist (a spool that filled up in use), then the filesystem
    // fills: no acknowledgment can be written.
    let out_dir = site.spool().join("out");
    fs::create_dir_all(&out_dir).unwrap();
    harness::run({
        let mut c = std::process::Command::new("chown");
        c.args(["-R", "postgres:postgres"]).arg(&spool_root);
        c
    });
    let filler = spool_root.join("filler");
    let _ = harness::run({
        let mut c = std::process::Command::new("dd");
        c.args(["if=/dev/zero", "bs=4k"])
            .arg(format!("of={}", filler.display()));
        c
    });
    write_segments(&site, 4);
    wait_until_archived(&site);
    assert!(assert_every_acknowledged_segment_is_stored(&site) >= 4);
    site.cluster.assert_archiving_never_failed();
    let fg = site.log("archive-push");
    assert!(
        fg.contains("pushing WAL file") && fg.contains("synchronously"),
        "the fallback says why:\n{}",
        harness::tail(&fg, 20)
    );
    // Space again: asynchronous archiving resumes.
    fs::remove_file(&filler).unwrap();
    write_segments(&site, 2);
    wait_until_archived(&site);
    assert!(assert_every_acknowledged_segment_is_stored(&site) >= 6);
    site.cluster.assert_archiving_never_failed();
}

#[test]
fn repository_host_unreachable_for_a_minute_then_the_backlog_drains() {
    let mut site = async_site(true);
    write_segments(&site, 2);
    wait_until_archived(&site);
    site.sshd.as_mut().unwrap().pause();
    let paused = Instant::now();
    write_segments(&site, 6);
    // PostgreSQL keeps the segments and keeps retrying.
    wait_until("archive_command failures", Duration::from_secs(120), || {
        site.cluster
            .psql("select failed_count from pg_stat_archiver")
            .parse::<u64>()
            .unwrap_or(0)
            > 0
    });
    let remaining = Duration::from_secs(60).saturating_sub(paused.elapsed());
    std::thread::sleep(remaining);
    let ready_during_outage = fs::read_dir(site.cluster.data_dir().join("pg_wal/archive_status"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
        .count();
    assert!(
        ready_during_outage >= 5,
        "a backlog built up: {ready_during_outage}"
    );
    site.sshd.as_mut().unwrap().resume();
    wait_until_archived(&site);
    assert!(assert_every_acknowledged_segment_is_stored(&site) >= 8);
    let pg_log = site.cluster.log();
    assert!(
        pg_log.contains("archive command failed"),
        "PostgreSQL logged the failures:\n{}",
        harness::tail(&pg_log, 20)
    );
}

#[test]
fn a_worker_error_reaches_archive_command_with_its_code_and_message() {
    let site = async_site(false);
    let seg = site.one_segment();
    // The same segment with another cluster's system identifier (xlp_sysid, bytes 24..32 of
    // the long page header), ready in a pg_wal of its own: the worker refuses it, and the
    // archive_command waiting for it fails with the worker's code and message.
    let other = site.dir.mkdir("other");
    let pg_wal = other.join("pg_wal");
    fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
    let mut bytes = fs::read(site.originals.join(&seg)).unwrap();
    bytes[24] ^= 0xff;
    let path = pg_wal.join(&seg);
    fs::write(&path, &bytes).unwrap();
    fs::write(pg_wal.join(format!("archive_status/{seg}.ready")), b"").unwrap();
    harness::run({
        let mut c = std::process::Command::new("chown");
        c.args(["-R", "postgres:postgres"]).arg(&other);
        c
    });
    let out = site.pgbr(&["archive-push", path.to_str().unwrap()]);
    assert_error(&out, 44, "system-id");
    let log = site.log("archive-push-async");
    assert!(
        log.contains("unable to push WAL file") && log.contains(&seg),
        "the worker logged it:\n{}",
        harness::tail(&log, 20)
    );
    // Reported once: PostgreSQL's retry starts a new attempt, which fails the same way.
    let again = site.pgbr(&["archive-push", path.to_str().unwrap()]);
    assert_error(&again, 44, "system-id");
    // The repository still holds only the real segment.
    assert_eq!(site.stored(&seg).len(), 1);
    let _ = STANZA;
}

#[test]
fn a_copy_of_the_data_directory_sharing_the_spool_never_gets_a_false_done() {
    let site = async_site(false);
    write_segments(&site, 2);
    wait_until_archived(&site);
    // A cold copy of the data directory (a clone, a restored snapshot), started later with
    // the same config: same stanza, repository and spool.
    site.cluster.stop();
    let copy = Restored::at(&site, "copy");
    let out = harness::run({
        let mut c = std::process::Command::new("cp");
        c.arg("-a").arg(site.cluster.data_dir()).arg(&copy.data);
        c
    });
    assert!(out.success(), "{out}");
    site.cluster.start();
    // The original goes on first: its next segments are archived and acknowledged.
    write_segments(&site, 2);
    wait_until_archived(&site);
    let before = site.original_segments();
    // The copy writes other WAL under the same segment names.
    copy.start("");
    let sql = |q: &str| copy.try_psql_in("postgres", q).unwrap();
    // The statistics came along with the copy (saved at the original's shutdown).
    let archived_at_start = sql("select archived_count from pg_stat_archiver");
    sql("create table diverged(x int)");
    for _ in 0..2 {
        sql("insert into diverged select generate_series(1, 50000)");
        sql("select pg_switch_wal()");
    }
    wait_until(
        "the copy's archive_command to fail",
        Duration::from_secs(120),
        || {
            sql("select failed_count from pg_stat_archiver")
                .parse::<u64>()
                .unwrap_or(0)
                >= 2
        },
    );
    // Never a false done: nothing the copy wrote was reported archived.
    assert_eq!(
        sql("select archived_count from pg_stat_archiver"),
        archived_at_start,
        "the copy's WAL must not be reported archived"
    );
    let log = site.log("archive-push") + &site.log("archive-push-async");
    assert!(
        log.contains("different checksum"),
        "the refusal says why:\n{}",
        harness::tail(&log, 30)
    );
    // The original's archive is intact, and it keeps archiving.
    assert_eq!(site.original_segments(), before);
    write_segments(&site, 1);
    wait_until_archived(&site);
    assert!(assert_every_acknowledged_segment_is_stored(&site) > before.len());
}

#[test]
fn a_restored_copy_started_with_the_originals_spool_archives_its_own_wal_correctly() {
    let site = async_site(false);
    write_segments(&site, 1);
    wait_until_archived(&site);
    site.backup("full", &[]);
    write_segments(&site, 2);
    wait_until_archived(&site);
    // Restored with the original's config: same stanza, repository and spool. It replays
    // the archive, promotes onto timeline 2 and archives through the same spool while the
    // original goes on archiving timeline 1.
    let copy = Restored::restore(&site, "restored", None, &[]);
    copy.start("");
    copy.wait_for("select pg_is_in_recovery()", "f", "promotion");
    let sql = |q: &str| copy.try_psql_in("postgres", q).unwrap();
    sql("create table after_restore(x int)");
    for _ in 0..2 {
        sql("insert into after_restore select generate_series(1, 50000)");
        sql("select pg_switch_wal()");
    }
    write_segments(&site, 2);
    wait_until(
        "the copy to archive its timeline-2 segments",
        Duration::from_secs(120),
        || {
            site.original_segments()
                .iter()
                .filter(|s| s.starts_with("00000002"))
                .count()
                >= 2
        },
    );
    wait_until_archived(&site);
    assert_eq!(
        sql("select failed_count from pg_stat_archiver"),
        "0",
        "the copy archived without a failure"
    );
    site.cluster.assert_archiving_never_failed();
    // Each segment either cluster was told is archived is stored, byte-identical.
    assert!(assert_every_acknowledged_segment_is_stored(&site) >= 7);
    assert!(site.archive_id_dir().join("00000002.history").exists());
}
