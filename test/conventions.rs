//! pgBackRest's conventions, checked against the real pgBackRest 2.45 where both tools can run
//! the same command: the exit code of each condition (pgBackRest's error table), warnings and
//! errors on stderr (log-level-stderr=warn), and nothing on stdout from a successful backup,
//! expire, archive-push, check or restore at the default levels, so a cron job that sends
//! stdout to /dev/null keeps its warnings.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::fixture::{assert_error, Site, CONSOLE_INFO, STANZA};
use crate::harness::{self, pgbr, postgres_command, run, write_postgres, Out, TestDir};

const PGBACKREST: &str = "/usr/bin/pgbackrest";

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The real pgBackRest as postgres, with none of the test environment's `PGBACKREST_*`.
fn pgbackrest(args: &[&str]) -> Out {
    assert!(
        Path::new(PGBACKREST).exists(),
        "pgBackRest 2.45 is not installed; run test/setup.sh"
    );
    let mut cmd = postgres_command(PGBACKREST, args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PGBACKREST_") {
            cmd.env_remove(&key);
        }
    }
    run(cmd)
}

/// Runs `args` with both tools and checks both exit `code`; ours with its one ERROR line.
fn both_exit(args: &[&str], code: i32, ours_says: &str) {
    let theirs = pgbackrest(args);
    assert_eq!(theirs.status, code, "pgBackRest {args:?}:\n{theirs}");
    assert_error(&run(pgbr(args)), code, ours_says);
}

#[test]
fn config_and_command_line_mistakes_exit_with_pgbackrests_codes() {
    harness::require_root();
    let dir = TestDir::new();
    let conf = dir.join("both.conf");
    write_postgres(
        &conf,
        &format!(
            "[global]\nrepo1-path={}\nlock-path={}\nlog-path={}\nlog-level-file=off\n\n\
             [{STANZA}]\npg1-path={}\n",
            p(&dir.join("repo")),
            p(&dir.join("lock")),
            p(&dir.join("log")),
            p(&dir.join("pg"))
        ),
        0o640,
    );
    let config = format!("--config={}", p(&conf));
    let stanza = format!("--stanza={STANZA}");
    let wal = p(&dir.join("000000010000000000000001")).to_string();
    let (c, s, w) = (config.as_str(), stanza.as_str(), wal.as_str());
    both_exit(
        &[c, s, "--compress-level=99", "archive-push", w],
        32,
        "'--compress-level'",
    );
    both_exit(
        &[c, s, "--log-level-stderr=loud", "archive-push", w],
        32,
        "'--log-level-stderr'",
    );
    both_exit(&[c, s, "--bogus", "archive-push", w], 31, "'--bogus'");
    both_exit(
        &[c, s, "--start-fast", "archive-push", w],
        31,
        "'--start-fast' is not valid",
    );
    both_exit(&[c, "archive-push", w], 37, "option 'stanza' is required");
    both_exit(&[c, s, "frob"], 48, "invalid command 'frob'");
    both_exit(&[c, s, "archive-push"], 43, "requires WAL_PATH, got 0");
    both_exit(&[c, s, "archive-push", w, "extra"], 43, "got 2");
    both_exit(
        &[c, s, "archive-get", "000000010000000000000001"],
        43,
        "requires WAL_NAME DEST_PATH",
    );
    both_exit(&[c, s, "version", "extra"], 96, "takes no arguments");
    both_exit(
        &["--config=/nonexistent/both.conf", s, "archive-push", w],
        55,
        "'/nonexistent/both.conf'",
    );
    // Option values are checked before anything is loaded: a type the command does not
    // have is option-invalid-value (32) though the stanza has no backup.info (55 otherwise).
    both_exit(&[c, s, "--type=bogus", "backup"], 32, "'--type'");
    both_exit(&[c, s, "--type=xid", "backup"], 32, "'--type'");
    both_exit(&[c, s, "--type=bogus", "restore"], 32, "'--type'");
    both_exit(&[c, s, "--type=full", "restore"], 32, "'--type'");
    // Time options take fractional seconds within pgBackRest's ranges.
    both_exit(
        &[c, s, "--io-timeout=0.5", "backup"],
        55,
        "has no backup.info",
    );
    both_exit(
        &[c, s, "--db-timeout=1.25", "backup"],
        55,
        "has no backup.info",
    );
    both_exit(&[c, s, "--io-timeout=0.05", "backup"], 32, "'--io-timeout'");
    both_exit(&[c, s, "--io-timeout=3601", "backup"], 32, "'--io-timeout'");
    both_exit(
        &[c, s, "--archive-timeout=86401", "backup"],
        32,
        "'--archive-timeout'",
    );
    both_exit(
        &[c, s, "--protocol-timeout=abc", "backup"],
        32,
        "'--protocol-timeout'",
    );
    // No stanza in the repository: expire reports a command error, restore no backup set.
    both_exit(&[c, s, "expire"], 104, "has no backup.info");
    both_exit(&[c, s, "--set=bad", "restore"], 75, "has no backup.info");
}

/// Holds the stanza's backup lock with flock(1), as any holder would, until killed.
fn hold_backup_lock(site: &Site) -> Child {
    let lock = site.dir.join(format!("lock/{STANZA}-backup.lock"));
    let ready = site.dir.join("lock-held");
    let script = format!("touch {}; exec sleep 120", p(&ready));
    let child = postgres_command("flock", &["-n", p(&lock), "sh", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawning flock");
    harness::wait_until("the lock is held", Duration::from_secs(20), || {
        ready.exists()
    });
    child
}

#[test]
fn conditions_on_a_live_cluster_exit_with_pgbackrests_codes() {
    let site = Site::local();
    let config = format!("--config={}", p(&site.conf));
    let data = format!("--pg1-path={}", p(&site.cluster.data_dir()));

    // Another process holds the backup lock: 50 from both.
    let mut holder = hold_backup_lock(&site);
    let stanza = format!("--stanza={STANZA}");
    both_exit(
        &[&config, &stanza, "backup", "--type=full"],
        50,
        "unable to acquire lock",
    );
    holder.kill().expect("ending flock");
    let _ = holder.wait();

    // A stanza the repository does not have: backup 55 (no backup.info), archive-push 103
    // (no valid repository), from both.
    let other = "--stanza=nosuch";
    both_exit(
        &[&config, other, &data, "backup", "--type=full"],
        55,
        "stanza 'nosuch' has no backup.info",
    );
    let seg = site.one_segment();
    let original = site.originals.join(&seg);
    both_exit(
        &[&config, other, &data, "archive-push", p(&original)],
        103,
        "stanza 'nosuch' has no archive.info",
    );

    // A different segment under an archived name: archive-duplicate.
    let changed = site.dir.join(&seg);
    let mut bytes = fs::read(&original).unwrap();
    bytes[100_000] ^= 1;
    fs::write(&changed, bytes).unwrap();
    harness::chown_postgres(&changed);
    assert_error(
        &site.pgbr(&["archive-push", p(&changed)]),
        45,
        "already exists in the archive with a different checksum",
    );

    // Stored uncompressed, then altered: archive-get finds its checksum wrong (26).
    for stored in site.stored(&seg) {
        fs::remove_file(stored).unwrap();
    }
    site.pgbr(&["archive-push", "--compress-type=none", p(&original)])
        .expect_ok("push uncompressed");
    let stored = site.stored(&seg).remove(0);
    let mut bytes = fs::read(&stored).unwrap();
    bytes[200_000] ^= 1;
    fs::write(&stored, bytes).unwrap();
    let dest = site.dir.join("RECOVERYXLOG");
    assert_error(
        &site.pgbr(&["archive-get", &seg, p(&dest)]),
        26,
        "checksum mismatch",
    );
    assert!(!dest.exists());
}

#[test]
fn warnings_reach_stderr_when_stdout_goes_to_dev_null() {
    let site = Site::local();
    let seg = site.one_segment();
    let original = site.originals.join(&seg);
    let config = format!("--config={}", p(&site.conf));
    let stanza = format!("--stanza={STANZA}");
    let push = |extra: &[&str]| -> Out {
        let mut args = vec![config.as_str(), stanza.as_str()];
        args.extend_from_slice(extra);
        args.extend(["archive-push", p(&original)]);
        let mut cmd: Command = pgbr(&args);
        let out = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
            .expect("archive-push");
        Out {
            status: out.status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    // Already archived with the same content: a warning, exit 0.
    let out = push(&[]);
    assert_eq!(out.status, 0, "{out}");
    assert!(
        out.stderr.lines().any(|l| l.starts_with("WARN: WAL file '")
            && l.ends_with("already exists in the archive with the same checksum")),
        "the warning is lost with stdout:\n{out}"
    );
    // log-level-stderr=off sends it back to the console (stdout), as pgBackRest does.
    let out = site.pgbr(&["--log-level-stderr=off", "archive-push", p(&original)]);
    assert_eq!(out.status, 0, "{out}");
    assert!(out.stderr.is_empty(), "{out}");
    assert!(out.stdout.contains("WARN: WAL file '"), "{out}");
    // INFO below log-level-stderr=warn goes to stdout at log-level-console=info, never both.
    let out = site.pgbr(&["--log-level-console=info", "archive-push", p(&original)]);
    assert!(
        out.stdout.contains("INFO: archive-push command begin"),
        "{out}"
    );
    assert!(!out.stdout.contains("WARN:"), "{out}");
    assert!(!out.stderr.contains("INFO:"), "{out}");
}

#[test]
fn successful_backup_expire_archive_push_check_and_restore_print_nothing_at_default_levels() {
    let site = Site::local();
    // The site's config asks for INFO on the console for backup and expire; this one keeps
    // pgBackRest's defaults.
    let text = fs::read_to_string(&site.conf).unwrap();
    assert!(text.contains(CONSOLE_INFO));
    let quiet = site.dir.join("quiet.conf");
    write_postgres(&quiet, &text.replace(CONSOLE_INFO, ""), 0o640);
    let config = format!("--config={}", p(&quiet));
    let stanza = format!("--stanza={STANZA}");
    let run_quiet = |extra: &[&str]| -> Out {
        let mut args = vec![config.as_str(), stanza.as_str()];
        args.extend_from_slice(extra);
        run(pgbr(&args))
    };
    let silent = |what: &str, out: &Out| {
        assert_eq!(out.status, 0, "{what}:\n{out}");
        assert_eq!(out.stdout, "", "{what} printed on stdout:\n{out}");
        assert_eq!(out.stderr, "", "{what} printed on stderr:\n{out}");
    };
    // (With retention set: without it both tools warn that the repository keeps growing.)
    for _ in 0..2 {
        silent(
            "backup",
            &run_quiet(&[
                "backup",
                "--type=full",
                "--start-fast",
                "--repo1-retention-full=2",
            ]),
        );
    }
    silent(
        "expire",
        &run_quiet(&["expire", "--repo1-retention-full=1"]),
    );
    assert_eq!(
        site.backup_labels().len(),
        1,
        "expire removed the older full"
    );
    silent("check", &run_quiet(&["check"]));
    let restored = site.dir.join("restored");
    let data = format!("--pg1-path={}", p(&restored));
    silent("restore", &run_quiet(&[&data, "restore"]));
    assert!(restored.join("PG_VERSION").exists());
    // At log-level-console=info each says what it did, as an INFO line as pgBackRest's.
    let out = run_quiet(&["--log-level-console=info", "check"]);
    assert_eq!(out.status, 0, "{out}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("INFO: WAL segment '")
                && l.contains("' successfully archived to '")),
        "{out}"
    );
    let again = site.dir.join("restored-again");
    let data = format!("--pg1-path={}", p(&again));
    let out = run_quiet(&["--log-level-console=info", &data, "restore"]);
    assert_eq!(out.status, 0, "{out}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("INFO: restore of backup ")
                && l.ends_with(&format!(" into '{}' complete", p(&again)))),
        "{out}"
    );

    let seg = site.one_segment();
    for stored in site.stored(&seg) {
        fs::remove_file(stored).unwrap();
    }
    let original = site.originals.join(&seg);
    silent("archive-push", &run_quiet(&["archive-push", p(&original)]));
    assert_eq!(site.stored(&seg).len(), 1);
}
