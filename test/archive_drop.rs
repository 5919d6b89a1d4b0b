//! archive-push-queue-max against a real PostgreSQL 15 with asynchronous archiving: while
//! the repository cannot be reached, WAL piles up until the worker drops the queue, as
//! pgBackRest does; unlike pgBackRest, nobody can miss it. archive_command succeeds for the
//! dropped segments (PostgreSQL frees pg_wal), the worker logs an ERROR and runs the
//! archive-push failure hook, and once the repository is back the drop is recorded there:
//! `info` (text and JSON) shows the gap, `verify` fails naming it, `check` fails until a
//! backup starts after it, archive-get of a dropped segment exits 1 with a WARN. pgBackRest
//! 2.45's info, verify, archive-get and expire work on that repository (they pass the
//! records by), and so does our expire. check_pgbackrest sees the hole: the record's name is
//! not one it takes for a segment.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::fixture::{assert_error, Options, Site, STANZA};
use crate::harness::{self, chmod, run, wait_until, write_postgres, PgBackrest, PgBackrestPaths};

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// An async site whose queue holds at most two segments, with an archive-push failure hook
/// that appends `PG_BACKREST_ERROR` to `hook.out` in the site's directory.
fn site() -> (Site, PathBuf) {
    let site = Site::new(Options {
        async_archiving: true,
        global: "archive-push-queue-max=32MiB\n",
        ..Options::default()
    });
    let hook_out = site.dir.join("hook.out");
    let conf = fs::read_to_string(&site.conf).expect("site config");
    let hook = format!(
        "hook-archive-push-failure=echo \"$PG_BACKREST_COMMAND: $PG_BACKREST_ERROR\" >> {}\n",
        p(&hook_out)
    );
    write_postgres(
        &site.conf,
        &conf.replacen("[global]\n", &format!("[global]\n{hook}"), 1),
        0o640,
    );
    (site, hook_out)
}

/// Segments named in the worker's "dropped N WAL file(s) FIRST...LAST" errors.
fn dropped_in_log(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter(|l| l.contains("ERROR:"))
        .filter_map(|l| {
            let rest = l.split_once("WAL file(s) ")?.1;
            let (first, rest) = rest.split_once("...")?;
            Some((first.to_string(), rest.get(..24)?.to_string()))
        })
        .collect()
}

/// `.dropped` records in the repository's archive id 15-1, sorted.
fn records(site: &Site) -> Vec<String> {
    let mut out = Vec::new();
    for dir in fs::read_dir(site.archive_id_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        for f in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if let Some(seg) = name.strip_suffix(".dropped") {
                out.push(seg.replace('.', ""));
            }
        }
    }
    out.sort();
    out
}

/// Writes and switches WAL until the worker drops the queue, then waits until PostgreSQL
/// archived (archive_command returned 0 for) every dropped segment; returns the first drop.
/// With the repository reachable again, the next segment's worker writes the drop's
/// records from the spool's pending list into the repository; the records it holds then.
fn next_worker_records_the_drop(site: &Site, first: &str, last: &str) -> Vec<String> {
    site.one_segment();
    let recorded = records(site);
    assert!(
        recorded.iter().any(|r| r == first) && recorded.iter().any(|r| r == last),
        "records {recorded:?} hold {first}...{last}"
    );
    assert!(!site.spool().join("out/dropped.pending").exists());
    recorded
}

fn write_until_dropped(site: &Site) -> (String, String) {
    wait_until(
        "the worker drops the queue",
        Duration::from_secs(120),
        || {
            site.cluster.psql(
            "create table if not exists t(x int); insert into t select generate_series(1, 1000)",
        );
            site.cluster.psql("select pg_switch_wal()");
            std::thread::sleep(Duration::from_millis(700));
            !dropped_in_log(&site.log("archive-push-async")).is_empty()
        },
    );
    let drops = dropped_in_log(&site.log("archive-push-async"));
    let last = drops[drops.len() - 1].1.clone();
    wait_until(
        "PostgreSQL archived the dropped segments",
        Duration::from_secs(60),
        || last_archived(site).as_str() >= last.as_str(),
    );
    drops[0].clone()
}

fn last_archived(site: &Site) -> String {
    site.cluster
        .psql("select coalesce(last_archived_wal, '') from pg_stat_archiver")
}

#[test]
fn a_dropped_queue_is_recorded_and_reported_until_a_backup_covers_it() {
    let (site, hook_out) = site();
    site.backup("full", &[]);
    site.pgbr(&["check"]).expect_ok("check before any drop");

    // The repository becomes unreachable for postgres: archive.info cannot be read, so
    // every worker fails to open it, and the ready segments pile up in pg_wal.
    let archive_dir = site.repo.join("archive").join(STANZA);
    chmod(&archive_dir, 0o000);
    let (first, last) = write_until_dropped(&site);
    let async_log = site.log("archive-push-async");
    assert!(
        async_log.contains("more than archive-push-queue-max (33554432 bytes)")
            && async_log.contains("point-in-time recovery across them is impossible"),
        "{}",
        harness::tail(&async_log, 20)
    );
    let fg = site.log("archive-push");
    assert!(
        fg.contains(&format!(
            "ERROR: WAL file '{first}' was dropped, not archived"
        )),
        "archive_command logs the drop:\n{}",
        harness::tail(&fg, 20)
    );
    let hook = fs::read_to_string(&hook_out).unwrap_or_default();
    assert!(
        hook.contains("archive-push: dropped ") && hook.contains(&first),
        "the failure hook ran for the drop: {hook:?}"
    );
    // Unreachable: the records wait in the spool.
    assert!(site.spool().join("out/dropped.pending").exists());
    assert!(records(&site).is_empty());

    // The repository is back: the next worker records the drop there.
    chmod(&archive_dir, 0o750);
    let recorded = next_worker_records_the_drop(&site, &first, &last);
    for seg in &recorded {
        assert!(site.stored(seg).is_empty(), "{seg} is dropped, not stored");
    }
    let (gap_first, gap_last) = (recorded[0].clone(), recorded[recorded.len() - 1].clone());

    // info: the status line and a line per gap; JSON: the gap in the archive entry.
    let text = site.pgbr(&["info"]).expect_ok("info").stdout;
    assert!(
        text.contains("    status: ok (WAL DROPPED, see below)\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "    WAL DROPPED: {gap_first}...{gap_last} ({} segments, archive-push-queue-max exceeded at ",
            recorded.len()
        )) && text.contains("point-in-time recovery across them is impossible until the next backup"),
        "{text}"
    );
    let info = site.info_json();
    assert_eq!(info["status"]["code"], 0, "pgBackRest's status code stays");
    let gaps = &info["archive"][0]["dropped"];
    assert_eq!(gaps.as_array().map(Vec::len), Some(1), "{info}");
    assert_eq!(gaps[0]["first"], gap_first.as_str());
    assert_eq!(gaps[0]["last"], gap_last.as_str());
    assert_eq!(gaps[0]["segments"], recorded.len() as u64);
    assert_eq!(gaps[0]["queue-max"], 33554432);
    assert!(gaps[0]["time"].as_i64().is_some());
    assert_eq!(gaps[0]["covered"], false);

    // verify names the gap and fails.
    let out = site.pgbr(&["verify"]);
    assert_eq!(out.status, 91, "{out}");
    assert!(
        out.stdout
            .contains(&format!("dropped: 15-1: {gap_first}...{gap_last} (")),
        "{out}"
    );

    // check: archiving works again, but it fails until a backup covers the gap.
    let out = site.pgbr(&["check"]);
    assert_error(
        &out,
        82,
        &format!("archive-push dropped WAL of archive '15-1' without archiving it: {gap_first}...{gap_last}"),
    );
    assert!(out.stderr.contains("HINT: take a backup"), "{out}");

    // Monitoring: check_pgbackrest's archives service lists the archive and sees the hole.
    let (status, message) = check_pgbackrest_archives(&site);
    assert_eq!(status, 2, "CRITICAL: {message}");
    assert!(
        message.contains(&format!(
            "{} missing file(s) ({gap_first} / {gap_last})",
            recorded.len()
        )),
        "{message}"
    );

    // archive-get: not in the archive (exit 1), and the log says why.
    let out = site.pgbr(&["archive-get", &gap_first, "pg_wal/RECOVERYXLOG"]);
    assert_eq!(out.status, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "WARN: WAL file '{gap_first}' is not in the archive: archive-push dropped it"
        )),
        "{out}"
    );

    // A backup starting after the gap covers it: check passes, info stops shouting.
    site.backup("full", &[]);
    site.pgbr(&["check"]).expect_ok("check after a new backup");
    let text = site.pgbr(&["info"]).expect_ok("info").stdout;
    assert!(
        text.contains("    status: ok\n") && !text.contains("WAL DROPPED"),
        "{text}"
    );
    assert_eq!(
        site.info_json()["archive"][0]["dropped"][0]["covered"],
        true
    );

    // pgBackRest 2.45 on a copy of this repository passes the records by.
    compat_pgbackrest(&site, &gap_first);

    // Our expire removes the records with the WAL before the kept backup; verify is clean.
    site.pgbr(&["expire", "--repo1-retention-full=1"])
        .expect_ok("expire");
    assert!(records(&site).is_empty(), "{:?}", records(&site));
    assert_eq!(
        site.info_json()["archive"][0]["dropped"],
        Value::Array(vec![])
    );
    site.pgbr(&["verify"]).expect_ok("verify after expire");
}

/// check_pgbackrest 2.3 `--service=archives` on the site, finding this build as
/// `pgbackrest` on its PATH: exit status and message.
fn check_pgbackrest_archives(site: &Site) -> (i32, String) {
    let bin_dir = site.dir.mkdir("bin-ours");
    std::os::unix::fs::symlink(harness::bin(), bin_dir.join("pgbackrest")).expect("symlink");
    let path = format!("PATH={}:/usr/bin:/bin", p(&bin_dir));
    let config = format!("--config={}", p(&site.conf));
    let stanza = format!("--stanza={STANZA}");
    let mut cmd = harness::postgres_command(
        "env",
        &[
            &path,
            "/usr/bin/check_pgbackrest",
            &config,
            &stanza,
            "--service=archives",
            "--output=json",
        ],
    );
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("PG_BACKREST_") || key_text.starts_with("PGBACKREST_") {
            cmd.env_remove(&key);
        }
    }
    let out = run(cmd);
    let json: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("check_pgbackrest JSON: {e}\n{out}"));
    let message = json["message"].as_str().unwrap_or_default().to_string();
    (out.status, format!("{message}\n{out}"))
}

/// pgBackRest's info, verify and archive-get on a copy of the repository with a gap
/// recorded and a backup on each side of it, then its expire of the older backup, which
/// removes the records with the WAL around them.
fn compat_pgbackrest(site: &Site, dropped: &str) {
    let copy = site.dir.join("repo-copy");
    let out = run(std::process::Command::new("cp").args(["-a", p(&site.repo), p(&copy)]));
    assert!(out.success(), "{out}");
    let state = site.dir.join("theirs");
    harness::mkdir_postgres(&state);
    harness::mkdir_postgres(&state.join("pgbackrest-log"));
    let theirs = PgBackrest::new(
        PgBackrestPaths {
            dir: &state,
            repo: &copy,
            stanza: STANZA,
            global: "",
        },
        &site.cluster,
    );
    let info = theirs.run(&["info"]).expect_ok("pgBackRest info");
    assert!(info.stdout.contains("status: ok"), "{info}");
    // It sees the hole as a break in the WAL ranges it reports, and nothing else.
    let verify = theirs.run(&["verify"]).expect_ok("pgBackRest verify");
    let log = theirs.log("verify");
    assert!(
        !verify.stderr.contains(".dropped")
            && !log.contains(".dropped")
            && log.matches("archiveId: 15-1, wal start:").count() >= 2,
        "pgBackRest's verify ignores the records and reports the break:\n{verify}\n{log}"
    );
    // As PostgreSQL runs it: in the data directory.
    let mut get = theirs.command(&["archive-get", dropped, "pg_wal/RECOVERYXLOG"]);
    get.current_dir(site.cluster.data_dir());
    let get = run(get);
    assert_eq!(get.status, 1, "pgBackRest: not in the archive\n{get}");
    theirs
        .run(&["expire", "--repo1-retention-full=1"])
        .expect_ok("pgBackRest expire");
    // It removes WAL directories before its boundary whole, records and all, and leaves
    // the records in the boundary's directory (its pattern there is `^[0-F]{24}.*$`): they
    // lie before every backup left, so our verify of that repository is clean.
    let conf = site.dir.join("copy.conf");
    let text = fs::read_to_string(&site.conf)
        .expect("site config")
        .replace(
            &format!("repo1-path={}\n", p(&site.repo)),
            &format!("repo1-path={}\n", p(&copy)),
        );
    write_postgres(&conf, &text, 0o640);
    let config = format!("--config={}", p(&conf));
    let stanza = format!("--stanza={STANZA}");
    let out = run(harness::pgbr(&[&config, &stanza, "verify"]));
    assert!(
        out.success(),
        "our verify after pgBackRest's expire:\n{out}"
    );
    let out = run(harness::pgbr(&[&config, &stanza, "info"]));
    assert!(
        out.success() && !out.stdout.contains("WAL DROPPED"),
        "{out}"
    );
}

/// Over SSH, the repository host down (its sshd stopped): the worker cannot even connect,
/// drops the queue all the same, and records the drop once the host is back; info and
/// check, run through SSH, report it.
#[test]
fn a_drop_while_the_repository_host_is_down_is_recorded_once_it_is_back() {
    let mut site = Site::new(Options {
        remote: true,
        async_archiving: true,
        global: "archive-push-queue-max=32MiB\n",
        ..Options::default()
    });
    site.one_segment();
    site.sshd.as_mut().expect("remote site").stop();
    let (first, last) = write_until_dropped(&site);
    let pending = fs::read_to_string(site.spool().join("out/dropped.pending")).unwrap_or_default();
    assert!(
        pending.contains(&first) && pending.contains(&last),
        "{pending:?}"
    );

    site.sshd.as_mut().expect("remote site").start_again();
    let recorded = next_worker_records_the_drop(&site, &first, &last);
    let text = site.pgbr(&["info"]).expect_ok("info").stdout;
    assert!(
        text.contains("WAL DROPPED, see below")
            && text.contains(&format!("WAL DROPPED: {}...", recorded[0])),
        "{text}"
    );
    let out = site.pgbr(&["check"]);
    assert_error(
        &out,
        82,
        &format!("without archiving it: {}...", recorded[0]),
    );
}
