//! The stanza's backup lock between real commands: a second backup, or an expire, meeting a
//! running backup fails at once with the lock-held code naming the holder, or waits with
//! lock-timeout and then succeeds; a running expire keeps backups out the same way;
//! archive-push is never held up by either; `info` shows who runs; and the lock file a
//! SIGKILLed holder leaves behind never blocks the next command.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::expire::{expire_paused_at, kill};
use crate::fixture::{assert_error, label_of, Site, STANZA};
use crate::harness::{self, wait_until};

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The pid the holder wrote into the stanza's backup lock file.
fn recorded_pid(site: &Site) -> u32 {
    let text = std::fs::read_to_string(site.dir.join(format!("lock/{STANZA}-backup.lock")))
        .expect("lock file");
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["pid"].as_u64())
        .map(|p| p as u32)
        .unwrap_or_else(|| panic!("no pid in lock file: {text:?}"))
}

/// Archives one more segment while the lock is held and checks it reached the repository.
fn archive_push_goes_through(site: &Site) {
    let seg = site.one_segment();
    assert!(!site.stored(&seg).is_empty(), "{seg} not archived");
}

#[test]
fn a_running_backup_refuses_a_second_backup_and_expire_until_lock_timeout_lets_them_wait() {
    let site = Site::local();
    let first = site.backup("full", &[]);

    // The start hook runs once the lock is held: a backup parked in it holds the lock.
    let parked = site.dir.join("parked");
    let release = site.dir.join("release");
    // (Bounded, so a failing test leaves no process parked for ever.)
    let hook = format!(
        "--hook-backup-start=touch {}; i=0; while [ ! -e {} ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done",
        p(&parked),
        p(&release)
    );
    let config = format!("--config={}", p(&site.conf));
    let stanza = format!("--stanza={STANZA}");
    let running = harness::pgbr(&[
        &config,
        &stanza,
        "backup",
        "--type=full",
        "--start-fast",
        &hook,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawning backup");
    wait_until("backup holds the lock", Duration::from_secs(30), || {
        parked.exists()
    });
    let pid = recorded_pid(&site);
    assert!(
        harness::descendants(running.id()).contains(&pid),
        "the lock names pid {pid}, not the running backup"
    );
    let holder = format!("held by pid {pid} (backup, started ");

    // Refused before its start hook, but its failure hook hears about it.
    let refused = site.dir.join("refused");
    let out = site.pgbr(&[
        "backup",
        "--type=incr",
        &format!("--hook-backup-start=touch {}.start", p(&refused)),
        &format!(
            "--hook-backup-failure=echo $PG_BACKREST_EXIT_CODE > {}",
            p(&refused)
        ),
    ]);
    assert_error(&out, 50, &holder);
    assert_eq!(std::fs::read_to_string(&refused).unwrap().trim(), "50");
    assert!(!site.dir.join("refused.start").exists());
    assert_error(
        &site.pgbr(&["expire", "--repo1-retention-full=1"]),
        50,
        &holder,
    );
    let info = site.info_json();
    assert_eq!(info["running"]["command"], "backup", "{info}");
    assert_eq!(info["running"]["pid"], pid, "{info}");
    assert_eq!(info["status"]["lock"]["backup"]["held"], true, "{info}");
    let text = site.pgbr(&["info"]).expect_ok("info");
    assert!(
        text.stdout
            .contains(&format!("running now: backup (pid {pid}, started ")),
        "{text}"
    );
    assert!(
        text.stdout
            .contains("    status: ok (backup/expire running)\n"),
        "{text}"
    );
    archive_push_goes_through(&site);

    // With lock-timeout the expire waits for the backup instead of failing, then runs.
    let mut waiting = harness::pgbr(&[
        &config,
        &stanza,
        "expire",
        "--lock-timeout=120",
        "--repo1-retention-full=1",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawning expire");
    // Release the backup only once expire has opened the lock file and is waiting on it, so
    // that the success below proves it waited rather than arrived after the release.
    let lock_file = site.dir.join(format!("lock/{STANZA}-backup.lock"));
    wait_until(
        "expire to open the backup lock and wait on it",
        Duration::from_secs(60),
        || {
            harness::holds_open(waiting.id(), &lock_file)
                || matches!(waiting.try_wait(), Ok(Some(_)))
        },
    );
    let status = waiting.try_wait().expect("try_wait");
    assert!(
        status.is_none(),
        "expire did not wait for the lock: {status:?}"
    );
    std::fs::write(&release, "").unwrap();
    let out = waiting.wait_with_output().expect("expire output");
    let out = harness::Out {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(out.success(), "{out}");
    let done = running.wait_with_output().expect("backup output");
    assert!(done.status.success(), "backup: {done:?}");
    let second = label_of(&harness::Out {
        status: 0,
        stdout: String::from_utf8_lossy(&done.stdout).into_owned(),
        stderr: String::new(),
    });
    assert!(out.stdout.contains("removed 1 backup(s)"), "{out}");
    assert_eq!(site.backup_labels(), vec![second]);
    assert_ne!(first, site.backup_labels()[0]);
    assert!(site.info_json()["running"].is_null());
    assert_eq!(site.info_json()["status"]["lock"]["backup"]["held"], false);
}

#[test]
#[cfg_attr(not(feature = "test-pause"), ignore = "needs --features test-pause")]
fn a_running_expire_refuses_a_backup_and_its_killed_lock_never_blocks() {
    let site = Site::local();
    site.backup("full", &[]);
    let kept = site.backup("full", &[]);

    let expire = expire_paused_at(&site, "manifest-removed", &["--repo1-retention-full=1"]);
    let pid = recorded_pid(&site);
    assert_error(
        &site.pgbr(&["backup", "--type=incr"]),
        50,
        &format!("held by pid {pid} (expire, started "),
    );
    // lock-timeout that runs out names how long it waited.
    assert_error(
        &site.pgbr(&["backup", "--type=incr", "--lock-timeout=1"]),
        50,
        "after waiting 1s: held by pid",
    );
    assert_eq!(site.info_json()["running"]["command"], "expire");
    archive_push_goes_through(&site);

    kill(expire);
    let lock_file = site.dir.join(format!("lock/{STANZA}-backup.lock"));
    assert!(lock_file.exists(), "the killed holder's lock file stays");
    assert!(
        site.info_json()["running"].is_null(),
        "a dead holder is not running"
    );
    assert_eq!(
        site.info_json()["status"]["lock"]["backup"]["held"],
        false,
        "the kernel released a killed holder's lock"
    );
    // The next backup takes the same file at once, without lock-timeout.
    let incr = site.backup("incr", &[]);
    assert_ne!(recorded_pid(&site), pid);
    let out = site
        .pgbr(&["expire", "--repo1-retention-full=1"])
        .expect_ok("expire");
    assert!(out.stdout.contains("removed 1 backup(s)"), "{out}");
    assert_eq!(site.backup_labels(), vec![kept, incr]);
}
