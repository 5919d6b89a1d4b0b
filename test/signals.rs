//! SIGTERM, SIGINT and SIGHUP end a command with one ERROR line naming the signal (exit 63,
//! on stderr and in the log) and leave nothing behind: a backup stopped mid-copy releases its
//! lock, stops PostgreSQL's backup, leaves no temp file and resumes; a restore stopped
//! mid-copy leaves no temp file; a command waiting for a lock stops waiting. Temp files that a
//! killed process did leave are removed by the resumed backup and reported by verify.
//! archive-get, PostgreSQL's restore_command, ends with the status of a killed command.

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::fixture::{assert_error, label_of, only_error_line, Site, STANZA};
use crate::harness::{self, wait_until, Out};

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Whether any file (temp files included) exists below `dir`.
fn any_file_below(dir: &Path) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                return true;
            }
        }
    }
    false
}

/// Starts pg_backrest ARGS with the site's config and stanza, output captured.
fn spawn(site: &Site, args: &[&str]) -> Child {
    let config = format!("--config={}", p(&site.conf));
    let stanza = format!("--stanza={STANZA}");
    let mut all = vec![config.as_str(), stanza.as_str()];
    all.extend_from_slice(args);
    harness::pgbr(&all)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning pg_backrest")
}

/// The pg_backrest process itself: runuser's child.
fn pg_backrest_pid(child: &Child) -> u32 {
    let ours = harness::children(child.id());
    assert_eq!(ours.len(), 1, "the pg_backrest process: {ours:?}");
    ours[0]
}

fn finish(child: Child) -> Out {
    let out = child.wait_with_output().expect("waiting for pg_backrest");
    Out {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The command ended with the signal's one ERROR line, on stderr and in its log.
fn assert_terminated(site: &Site, command: &str, out: &Out, signal: &str) {
    let message = format!("terminated by signal {signal}");
    assert_error(out, 63, &message);
    let log = site.log(command);
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one ERROR line in the log:\n{log}");
    assert!(
        errors[0].contains(&message),
        "log error line: {}",
        errors[0]
    );
}

/// Waits for `ready` while `child` runs; panics (data too small) if it ends first.
fn wait_while_running(child: &mut Child, what: &str, mut ready: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(120), || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the command ended ({status}) before {what}; make the data bigger");
        }
        ready()
    });
}

#[test]
fn sigterm_stops_a_backup_cleanly_and_it_resumes_then_sigint_stops_a_restore() {
    let site = Site::local();
    // ~130 MB of poorly compressible text in a few big files, so that copying takes seconds.
    for i in 0..4 {
        site.cluster.psql(&format!(
            "create table big{i}(id int, v text); \
             insert into big{i} select g, md5(random()::text) || md5(random()::text) || \
             md5(random()::text) || md5(random()::text) from generate_series(1, 180000) g"
        ));
    }
    let backups = site.repo.join("backup").join(STANZA);
    let args = [
        "backup",
        "--type=full",
        "--start-fast",
        "--compress-level=9",
        "--process-max=1",
    ];

    // SIGTERM once the copy has begun (a file, even a temp one, is in the backup).
    let mut child = spawn(&site, &args);
    wait_while_running(&mut child, "the backup to copy a file", || {
        fs::read_dir(&backups)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| any_file_below(&e.path().join("pg_data")))
    });
    harness::signal(&[pg_backrest_pid(&child)], "TERM");
    let out = finish(child);
    assert_terminated(&site, "backup", &out, "SIGTERM");
    // The backups only: archive_command may be pushing a segment right now.
    assert!(
        harness::temp_files_under(&backups).is_empty(),
        "temp files left: {:?}",
        harness::temp_files_under(&backups)
    );
    let log = site.log("backup");
    assert!(
        log.contains("(pg_backup_stop)"),
        "the backup was stopped in PostgreSQL before exit:\n{}",
        harness::tail(&log, 20)
    );
    // Its session is gone, and PostgreSQL never had to abort a backup for a vanished client.
    wait_until(
        "the backup's session to end",
        Duration::from_secs(30),
        || {
            site.cluster.psql(
                "select count(*) from pg_stat_activity where application_name = 'pg_backrest'",
            ) == "0"
        },
    );
    assert!(
        !site
            .cluster
            .log()
            .contains("aborting backup due to backend exiting"),
        "{}",
        harness::tail(&site.cluster.log(), 20)
    );
    let interrupted: Vec<String> = fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with('F'))
        .collect();
    assert_eq!(interrupted.len(), 1, "{interrupted:?}");
    let label = &interrupted[0];

    // A temp file a killed writer would leave: the resumed backup removes it. The lock is
    // free at once (lock-timeout is 0).
    let planted = backups.join(label).join("pg_data/.pgbr-tmp.99999.0");
    fs::write(&planted, b"half a file").unwrap();
    let out = site.pgbr(&args[..4]);
    assert_eq!(out.status, 0, "resumed backup:\n{out}");
    assert_eq!(&label_of(&out), label, "the backup resumed");
    let log = site.log("backup");
    assert!(log.contains(&format!("resuming interrupted backup {label}")));
    assert!(
        log.contains("removing stray temp file"),
        "{}",
        harness::tail(&log, 30)
    );
    assert!(!planted.exists(), "the stray temp file was removed");
    site.one_segment();
    site.pgbr(&["verify"])
        .expect_ok("verify after the resumed backup");

    // verify reports a temp file in a backup directory, in text and JSON.
    let planted = backups.join(label).join("pg_data/base/.pgbr-tmp.x");
    fs::write(&planted, b"x").unwrap();
    let out = site.pgbr(&["verify"]);
    assert_error(&out, 91, "verify found problems");
    assert!(
        out.stdout.contains(&format!(
            "stray temp file: {label}/pg_data/base/.pgbr-tmp.x"
        )),
        "{out}"
    );
    let out = site.pgbr(&["verify", "--output=json"]);
    assert_eq!(out.status, 91, "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["temp_files"],
        serde_json::json!([format!("{label}/pg_data/base/.pgbr-tmp.x")])
    );
    fs::remove_file(&planted).unwrap();

    // SIGINT stops a restore once it has written a file; it leaves no temp file, and the
    // same restore (with delta) then completes.
    let target = site.dir.mkdir("restored");
    let pg1 = format!("--pg1-path={}", p(&target));
    let mut child = spawn(&site, &["restore", &pg1, "--process-max=1"]);
    wait_while_running(&mut child, "the restore to write a file", || {
        any_file_below(&target.join("base"))
    });
    harness::signal(&[pg_backrest_pid(&child)], "INT");
    let out = finish(child);
    assert_terminated(&site, "restore", &out, "SIGINT");
    assert!(
        harness::temp_files_under(&target).is_empty(),
        "temp files left: {:?}",
        harness::temp_files_under(&target)
    );
    site.pgbr(&["restore", &pg1, "--delta"])
        .expect_ok("restore after SIGINT");
}

/// SIGHUP while a backup waits for the lock another process holds: it stops waiting.
#[test]
fn sighup_stops_a_command_waiting_for_a_lock() {
    let site = Site::local();
    let lock = site.dir.mkdir("lock").join(format!("{STANZA}-backup.lock"));
    let held = site.dir.join("held");
    let mut holder = harness::postgres_command(
        "flock",
        &[
            p(&lock),
            "sh",
            "-c",
            &format!("touch {} && exec sleep 300", p(&held)),
        ],
    )
    .stdin(Stdio::null())
    .spawn()
    .expect("spawning flock");
    wait_until("the lock to be held", Duration::from_secs(30), || {
        held.exists()
    });

    let mut child = spawn(&site, &["backup", "--type=full", "--lock-timeout=300"]);
    wait_while_running(&mut child, "the backup to start", || {
        site.log("backup").contains("backup command begin")
    });
    harness::signal(&[pg_backrest_pid(&child)], "HUP");
    let out = finish(child);
    harness::kill_tree(holder.id());
    let _ = holder.wait();
    assert_terminated(&site, "backup", &out, "SIGHUP");
}

#[test]
fn a_signal_ends_archive_get_as_a_killed_restore_command() {
    let mut site = Site::remote();
    let segment = site.one_segment();
    let dest_dir = site.dir.mkdir("fetched");
    let dest = dest_dir.join(&segment);
    // Frozen repository host: archive-get waits for its answer until the signal.
    site.sshd.as_mut().expect("remote site").pause();
    let mut child = spawn(
        &site,
        &["--io-timeout=5", "archive-get", &segment, p(&dest)],
    );
    wait_while_running(&mut child, "archive-get to start", || {
        site.log("archive-get")
            .contains("archive-get command begin")
    });
    harness::signal(&[pg_backrest_pid(&child)], "TERM");
    wait_until("archive-get to end", Duration::from_secs(120), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    let out = finish(child);
    site.sshd.as_mut().expect("remote site").resume();
    // Not 1 (PostgreSQL would take the segment for missing and may end recovery) nor a plain
    // error code: the status of a command killed by SIGTERM, so PostgreSQL shuts down.
    assert_eq!(out.status, 143, "{out}");
    assert!(
        only_error_line(&out).starts_with("ERROR: [063]: terminated by signal SIGTERM"),
        "{out}"
    );
    assert!(!dest.exists(), "nothing fetched");
    assert!(harness::temp_files_under(&dest_dir).is_empty());
    // The same archive-get with the host answering again fetches the segment.
    let out = site.pgbr(&["archive-get", &segment, p(&dest)]);
    assert_eq!(out.status, 0, "{out}");
    assert!(dest.exists());
}
