//! Hooks around real commands: a start hook that fails or outlives hook-timeout stops the
//! backup before it writes anything (exit 90, the hook's last stderr line quoted) and the
//! failure hook then runs; success and failure hooks see the stanza, command, backup label
//! and type, exit code and error; a failing success or failure hook is only a warning; hook
//! output reaches the log and the hook's command line does not. archive-push and archive-get,
//! PostgreSQL's own commands, have hooks too: a failing start hook stores or fetches nothing,
//! and archive-get's "not in the archive" (exit 1) runs the success hook.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::fixture::{assert_error, label_of, Site};
use crate::harness::{self, wait_until};

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A hook command that saves its PG_BACKREST_* environment to `file`, then runs `then`.
fn env_hook(option: &str, file: &Path, then: &str) -> String {
    format!(
        "--{option}=env | grep ^PG_BACKREST_ | sort > {}; {then}",
        p(file)
    )
}

/// The environment an [`env_hook`] saved.
fn saved_env(file: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("hook did not run ({}): {e}", file.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(env: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    env.get(key).map(String::as_str)
}

#[test]
fn a_start_hook_that_fails_or_times_out_stops_the_backup_and_the_failure_hook_runs() {
    let site = Site::local();
    let before = site.backup_dir_entries();
    let failed_env = site.dir.join("failure.env");
    let failure = env_hook("hook-backup-failure", &failed_env, "true");

    let out = site.pgbr(&[
        "backup",
        "--type=full",
        "--start-fast",
        "--hook-backup-start=echo preparing; echo 'snapshot failed: disk full' >&2; exit 3",
        &failure,
    ]);
    assert_error(
        &out,
        90,
        "hook-backup-start exited with code 3: 'snapshot failed: disk full'",
    );
    assert_eq!(
        site.backup_dir_entries(),
        before,
        "nothing new in the repository"
    );
    let env = saved_env(&failed_env);
    assert_eq!(get(&env, "PG_BACKREST_HOOK"), Some("failure"));
    assert_eq!(get(&env, "PG_BACKREST_COMMAND"), Some("backup"));
    assert_eq!(get(&env, "PG_BACKREST_STANZA"), Some("main"));
    assert_eq!(get(&env, "PG_BACKREST_EXIT_CODE"), Some("90"));
    assert!(get(&env, "PG_BACKREST_ERROR")
        .is_some_and(|e| e.starts_with("hook-backup-start exited with code 3")));
    assert_eq!(
        get(&env, "PG_BACKREST_BACKUP_LABEL"),
        None,
        "no label chosen yet"
    );
    let log = site.log("backup");
    assert!(log.contains("hook-backup-start: preparing"), "{log}");
    assert!(
        log.contains("hook-backup-start: stderr: snapshot failed: disk full"),
        "{log}"
    );
    assert!(log.contains("--hook-backup-start=<redacted>"), "{log}");
    assert!(
        !log.contains("exit 3"),
        "the hook's command line is not logged:\n{log}"
    );

    // A hook that hangs is killed with what it started after hook-timeout.
    std::fs::remove_file(&failed_env).unwrap();
    let sleeper = site.dir.join("sleeper.pid");
    let hanging = format!(
        "--hook-backup-start=echo about to hang >&2; sleep 120 & echo $! > {}; wait",
        p(&sleeper)
    );
    let t = Instant::now();
    let out = site.pgbr(&[
        "backup",
        "--type=full",
        "--start-fast",
        "--hook-timeout=1",
        &hanging,
        &failure,
    ]);
    assert_error(
        &out,
        90,
        "hook-backup-start did not finish within hook-timeout (1s) and was killed: 'about to hang'",
    );
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let pid: u32 = std::fs::read_to_string(&sleeper)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until(
        "the hook's child is killed",
        Duration::from_secs(10),
        || harness::is_dead(pid),
    );
    assert_eq!(
        site.backup_dir_entries(),
        before,
        "nothing new in the repository"
    );
    let env = saved_env(&failed_env);
    assert_eq!(get(&env, "PG_BACKREST_EXIT_CODE"), Some("90"));
    assert!(get(&env, "PG_BACKREST_ERROR").is_some_and(|e| e.contains("hook-timeout (1s)")));
}

#[test]
fn success_and_failure_hooks_see_the_backup_and_their_own_failure_is_a_warning() {
    let site = Site::local();
    let success_env = site.dir.join("success.env");
    let out = site.pgbr(&[
        "backup",
        "--type=full",
        "--start-fast",
        &env_hook("hook-backup-success", &success_env, "exit 4"),
    ]);
    assert!(
        out.success(),
        "a failing success hook does not fail the backup:\n{out}"
    );
    let full = label_of(&out);
    assert!(
        out.stderr
            .contains("WARN: hook-backup-success exited with code 4: (nothing on stderr)"),
        "{out}"
    );
    let env = saved_env(&success_env);
    assert_eq!(get(&env, "PG_BACKREST_HOOK"), Some("success"));
    assert_eq!(get(&env, "PG_BACKREST_COMMAND"), Some("backup"));
    assert_eq!(get(&env, "PG_BACKREST_STANZA"), Some("main"));
    assert_eq!(get(&env, "PG_BACKREST_BACKUP_LABEL"), Some(full.as_str()));
    assert_eq!(get(&env, "PG_BACKREST_BACKUP_TYPE"), Some("full"));
    assert_eq!(get(&env, "PG_BACKREST_EXIT_CODE"), None);
    assert_eq!(get(&env, "PG_BACKREST_ERROR"), None);

    // A backup that fails once its label is chosen: its WAL never reaches the archive.
    let archive_command = site.cluster.psql("show archive_command");
    site.cluster.set_settings(&[("archive_command", "false")]);
    site.cluster.reload();
    let failure_env = site.dir.join("failure.env");
    let out = site.pgbr(&[
        "backup",
        "--type=incr",
        "--start-fast",
        "--archive-timeout=2",
        &env_hook(
            "hook-backup-failure",
            &failure_env,
            "echo 'pager unreachable' >&2; exit 9",
        ),
    ]);
    site.cluster
        .set_settings(&[("archive_command", archive_command.as_str())]);
    site.cluster.reload();
    assert_eq!(out.status, 82, "{out}");
    assert!(
        out.stderr
            .contains("WARN: hook-backup-failure exited with code 9: 'pager unreachable'"),
        "{out}"
    );
    let env = saved_env(&failure_env);
    assert_eq!(get(&env, "PG_BACKREST_HOOK"), Some("failure"));
    assert_eq!(get(&env, "PG_BACKREST_EXIT_CODE"), Some("82"));
    assert_eq!(get(&env, "PG_BACKREST_BACKUP_TYPE"), Some("incr"));
    let label = get(&env, "PG_BACKREST_BACKUP_LABEL").unwrap_or_default();
    assert!(
        label.starts_with(&format!("{full}_")) && label.ends_with('I'),
        "{label}"
    );
    assert!(get(&env, "PG_BACKREST_ERROR").is_some_and(|e| !e.is_empty()));

    // restore's start hook learns the --set label, and failing stops the restore before it
    // creates its target.
    let target = site.dir.join("restored");
    let seen = site.dir.join("restore-label");
    let out = site.pgbr(&[
        "restore",
        &format!("--set={full}"),
        &format!("--pg1-path={}", p(&target)),
        &format!(
            "--hook-restore-start=echo $PG_BACKREST_COMMAND $PG_BACKREST_BACKUP_LABEL > {}; \
             echo 'not now' >&2; exit 2",
            p(&seen)
        ),
    ]);
    assert_error(&out, 90, "hook-restore-start exited with code 2: 'not now'");
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap().trim(),
        format!("restore {full}")
    );
    assert!(!target.exists(), "restore did not start");

    // expire has hooks too: a failing start hook stops it before it removes anything.
    let second = site.backup("full", &[]);
    let out = site.pgbr(&[
        "expire",
        "--repo1-retention-full=1",
        "--hook-expire-start=exit 1",
    ]);
    assert_error(
        &out,
        90,
        "hook-expire-start exited with code 1: (nothing on stderr)",
    );
    assert_eq!(site.backup_labels(), vec![full.clone(), second.clone()]);
    let expire_env = site.dir.join("expire.env");
    site.pgbr(&[
        "expire",
        "--repo1-retention-full=1",
        &env_hook("hook-expire-success", &expire_env, "true"),
    ])
    .expect_ok("expire");
    assert_eq!(site.backup_labels(), vec![second]);
    let env = saved_env(&expire_env);
    assert_eq!(get(&env, "PG_BACKREST_COMMAND"), Some("expire"));
    assert_eq!(get(&env, "PG_BACKREST_HOOK"), Some("success"));
    assert_eq!(get(&env, "PG_BACKREST_BACKUP_LABEL"), None);
}

#[test]
fn archive_push_and_archive_get_run_their_hooks_and_a_failing_start_hook_stores_nothing() {
    let site = Site::local();
    let seg = site.one_segment();
    let source = site.originals.join(&seg);
    for stored in site.stored(&seg) {
        std::fs::remove_file(stored).unwrap();
    }

    // A failing start hook stops archive-push before it writes into the repository; PostgreSQL
    // sees exit 90 and keeps the segment for its next attempt.
    let failed_env = site.dir.join("push-failure.env");
    let out = site.pgbr(&[
        "archive-push",
        p(&source),
        "--hook-archive-push-start=echo 'archive volume not mounted' >&2; exit 7",
        &env_hook("hook-archive-push-failure", &failed_env, "true"),
    ]);
    assert_error(
        &out,
        90,
        "hook-archive-push-start exited with code 7: 'archive volume not mounted'",
    );
    assert!(site.stored(&seg).is_empty(), "{:?}", site.stored(&seg));
    assert!(site.temp_files().is_empty(), "{:?}", site.temp_files());
    let env = saved_env(&failed_env);
    assert_eq!(get(&env, "PG_BACKREST_COMMAND"), Some("archive-push"));
    assert_eq!(get(&env, "PG_BACKREST_HOOK"), Some("failure"));
    assert_eq!(get(&env, "PG_BACKREST_EXIT_CODE"), Some("90"));

    let pushed_env = site.dir.join("push-success.env");
    site.pgbr(&[
        "archive-push",
        p(&source),
        &env_hook("hook-archive-push-success", &pushed_env, "true"),
    ])
    .expect_ok("archive-push");
    assert_eq!(site.stored(&seg).len(), 1, "{:?}", site.stored(&seg));
    let env = saved_env(&pushed_env);
    assert_eq!(get(&env, "PG_BACKREST_COMMAND"), Some("archive-push"));
    assert_eq!(get(&env, "PG_BACKREST_HOOK"), Some("success"));
    assert_eq!(get(&env, "PG_BACKREST_STANZA"), Some("main"));

    // archive-get: a failing start hook leaves the destination unwritten; a segment that is not
    // in the archive (exit 1) is an answer, not a failure, so the success hook runs.
    let dest = site.dir.join("fetched");
    harness::mkdir_postgres(&dest);
    let fetched = dest.join("RECOVERYXLOG");
    let out = site.pgbr(&[
        "archive-get",
        &seg,
        p(&fetched),
        "--hook-archive-get-start=exit 3",
    ]);
    assert_error(
        &out,
        90,
        "hook-archive-get-start exited with code 3: (nothing on stderr)",
    );
    assert!(!fetched.exists());
    let missing_env = site.dir.join("get-missing.env");
    let out = site.pgbr(&[
        "archive-get",
        "0000000100000099000000FE",
        p(&fetched),
        &env_hook("hook-archive-get-success", &missing_env, "true"),
    ]);
    assert_eq!(out.status, 1, "{out}");
    let env = saved_env(&missing_env);
    assert_eq!(get(&env, "PG_BACKREST_COMMAND"), Some("archive-get"));
    assert_eq!(get(&env, "PG_BACKREST_HOOK"), Some("success"));
    site.pgbr(&["archive-get", &seg, p(&fetched)])
        .expect_ok("archive-get");
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        std::fs::read(&source).unwrap()
    );
}
