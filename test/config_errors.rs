//! Every configuration mistake a user can make, through the real binary: one `ERROR:` line
//! naming the file, section and key (or flag or variable), pgBackRest's exit code for that
//! kind of mistake, and nothing done. What pgBackRest only warns about (misplaced keys;
//! unknown ones outside `check`) is in config_compat.rs.

use crate::fixture::assert_error;
use crate::harness::{self, pgbr, pgbr_in, run, write_postgres, TestDir};

struct Case {
    file: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    expect: &'static str,
}

const PUSH: &[&str] = &[
    "--stanza=main",
    "archive-push",
    "/tmp/000000010000000000000001",
];

const CHECK: &[&str] = &["--stanza=main", "check"];

const CASES: &[Case] = &[
    // A key or section command no one knows only warns elsewhere (test/config_compat.rs);
    // check, run after editing the config, refuses it.
    Case { file: "[global]\nrepo1-paht=/x\n", args: CHECK, env: &[], expect: "unknown option 'repo1-paht' in section '[global]' of 'CONF' (nearest known option: 'repo1-path')" },
    Case { file: "[global:archive-pusj]\nrepo1-path=/x\n", args: CHECK, env: &[], expect: "section '[global:archive-pusj]' in 'CONF' names unknown command 'archive-pusj' (nearest known command: 'archive-push')" },
    Case { file: "[global]\ncompress-level=30\n", args: PUSH, env: &[], expect: "invalid value '30' for option 'compress-level' in section '[global]' of 'CONF': must be between -7 and 22" },
    Case { file: "[global]\nrepo1-path=relative\n", args: PUSH, env: &[], expect: "invalid value 'relative' for option 'repo1-path' in section '[global]' of 'CONF': must be an absolute path" },
    Case { file: "[main]\nstart-fast=perhaps\n", args: PUSH, env: &[], expect: "invalid value 'perhaps' for option 'start-fast' in section '[main]' of 'CONF': must be y or n" },
    Case { file: "", args: &["archive-push", "/tmp/x"], env: &[], expect: "option 'stanza' is required for command 'archive-push'" },
    Case { file: "", args: &["--stanza=main", "check"], env: &[], expect: "option 'pg1-path' is required for command 'check'" },
    Case { file: "", args: &["--stanza=main", "archive-get", "000000010000000000000001"], env: &[], expect: "command 'archive-get' requires WAL_NAME DEST_PATH, got 1" },
    Case { file: "", args: &["--stanza=main", "--compress-levle=1", "archive-push", "/tmp/x"], env: &[], expect: "invalid command line: unexpected argument '--compress-levle'" },
    Case { file: "", args: &["--stanza=main", "--start-fast", "archive-push", "/tmp/x"], env: &[], expect: "option '--start-fast' is not valid for command 'archive-push'" },
    Case { file: "", args: &["--stanza=main", "--lock-timeout=soon", "archive-push", "/tmp/x"], env: &[], expect: "invalid value 'soon' for option '--lock-timeout': must be a number of seconds, e.g. 30 or 0.5" },
    Case { file: "", args: PUSH, env: &[("PG_BACKREST_IO_TIMEOUT", "0")], expect: "invalid value '0' in environment variable 'PG_BACKREST_IO_TIMEOUT': must be between 0.1 and 3600 seconds" },
    Case { file: "", args: &["--stanza=main", "backupp"], env: &[], expect: "invalid command 'backupp'" },
    // Retention, expire and hooks.
    Case { file: "[global]\nrepo1-retention-full-type=weeks\n", args: &["--stanza=main", "expire"], env: &[], expect: "invalid value 'weeks' for option 'repo1-retention-full-type' in section '[global]' of 'CONF': must be one of: count, time" },
    Case { file: "[global]\nrepo1-retention-full=0\n", args: &["--stanza=main", "expire"], env: &[], expect: "invalid value '0' for option 'repo1-retention-full' in section '[global]' of 'CONF': must be between 1 and 9999999" },
    Case { file: "", args: &["--stanza=main", "--dry-run", "backup"], env: &[], expect: "option '--dry-run' is not valid for command 'backup'" },
    Case { file: "[global]\nhook-info-start=true\n", args: CHECK, env: &[], expect: "unknown option 'hook-info-start' in section '[global]' of 'CONF'" },
    Case { file: "", args: &["--stanza=main", "--hook-timeout=0", "expire"], env: &[], expect: "invalid value '0' for option '--hook-timeout': must be between 0.1 and 604800 seconds" },
    Case { file: "[global]\nio-timeout=0.05\n", args: PUSH, env: &[], expect: "invalid value '0.05' for option 'io-timeout' in section '[global]' of 'CONF': must be between 0.1 and 3600 seconds" },
    Case { file: "", args: &["--stanza=main", "--type=incr", "restore"], env: &[], expect: "invalid value 'incr' for option '--type': must be one of: default, immediate, time, xid, lsn, name, standby, none for restore" },
    Case { file: "", args: &["--stanza=main", "--hook-restore-start=", "restore"], env: &[], expect: "invalid value '' for option '--hook-restore-start': must not be empty" },
];

#[test]
fn every_config_mistake_is_one_error_line_with_the_config_exit_code() {
    harness::require_root();
    let dir = TestDir::new();
    for (i, case) in CASES.iter().enumerate() {
        let conf = dir.join(format!("case{i}.conf"));
        write_postgres(&conf, case.file, 0o640);
        let config = format!("--config={}", conf.display());
        let mut args = vec![config.as_str()];
        args.extend_from_slice(case.args);
        let mut cmd = pgbr_in(&dir, &args);
        for (k, v) in case.env {
            cmd.env(k, v);
        }
        let out = run(cmd);
        assert_error(
            &out,
            pgbackrest_code(case.expect),
            &case.expect.replace("CONF", &conf.display().to_string()),
        );
    }
}

/// pgBackRest's code for each class of mistake: option-invalid-value 32, option-required 37,
/// param-required 43, command-invalid 48, else option-invalid 31.
fn pgbackrest_code(expect: &str) -> i32 {
    if expect.starts_with("invalid value") {
        32
    } else if expect.contains("is required for command") {
        37
    } else if expect.starts_with("command '") && expect.contains("requires") {
        43
    } else if expect.starts_with("invalid command '") {
        48
    } else {
        31
    }
}

#[test]
fn unreadable_or_missing_config_file_is_a_config_error() {
    harness::require_root();
    let dir = TestDir::new();
    let conf = dir.join("secret.conf");
    write_postgres(&conf, "[global]\n", 0o000);
    let out = run(pgbr_in(
        &dir,
        &[
            &format!("--config={}", conf.display()),
            "--stanza=main",
            "archive-get",
            "000000010000000000000001",
            "/tmp/x",
        ],
    ));
    assert_error(
        &out,
        41,
        &format!(
            "unable to read config file '{}': Permission denied",
            conf.display()
        ),
    );
    let out = run(pgbr(&["--config=/nonexistent/pg_backrest.conf", "version"]));
    // pgBackRest: 55, "unable to open missing file".
    assert_error(
        &out,
        55,
        "unable to read config file '/nonexistent/pg_backrest.conf'",
    );
    let mut cmd = pgbr(&["version"]);
    cmd.env("PG_BACKREST_CONFIG", "/nonexistent/env.conf");
    assert_error(&run(cmd), 55, "'/nonexistent/env.conf'");
}

#[test]
fn version_and_help_come_from_the_tables() {
    let out = run(pgbr(&["version"]));
    assert_eq!(
        out.stdout.trim(),
        format!("pg_backrest {}", include_str!("../VERSION").trim())
    );
    let help = run(pgbr(&["help"])).expect_ok("help");
    assert!(help.stdout.contains("archive-push WAL_PATH"), "{help}");
    assert!(
        !help.stdout.contains("remote"),
        "hidden command listed:\n{help}"
    );
    let push = run(pgbr(&["help", "archive-push"])).expect_ok("help archive-push");
    assert!(push.stdout.contains("--compress-level=<-7..22>"), "{push}");
    let flag = run(pgbr(&["archive-get", "--help"])).expect_ok("--help");
    assert!(
        flag.stdout
            .starts_with("pg_backrest archive-get WAL_NAME DEST_PATH"),
        "{flag}"
    );
    // expire is available: its help lists its own options, and it runs (here against a
    // repository without the stanza, so it stops with the missing-stanza code).
    let expire = run(pgbr(&["help", "expire"])).expect_ok("help expire");
    for option in [
        "--dry-run",
        "--set=",
        "--force",
        "--repo1-retention-full-type=",
    ] {
        assert!(
            expire.stdout.contains(option),
            "{option} missing:\n{expire}"
        );
    }
    // Its own lock, log and repository paths: expire takes the backup lock.
    let dir = TestDir::new();
    assert_error(
        &run(pgbr_in(&dir, &["--stanza=main", "expire"])),
        // pgBackRest's expire: "expire command encountered 1 error(s)", command error 104.
        104,
        // expire reads backup.info first, and names the file that is missing.
        &format!(
            "stanza 'main' has no backup.info at '{}'",
            dir.join("repo/backup/main/backup.info").display()
        ),
    );
    assert!(dir.join("lock/main-backup.lock").exists());
}

/// One line is one option: a value ending in `\` is literal and does not swallow the next
/// line, so the lock-path below it still applies.
#[test]
fn a_trailing_backslash_does_not_join_the_next_line() {
    harness::require_root();
    let dir = TestDir::new();
    let conf = dir.join("pg_backrest.conf");
    let repo = dir.join("repo");
    let text = format!(
        "[global]\nrepo1-path={}\\\nlock-path={}\nlog-path={}\n",
        repo.display(),
        dir.join("my-lock").display(),
        dir.join("my-log").display()
    );
    write_postgres(&conf, &text, 0o640);
    let config = format!("--config={}", conf.display());
    let wal = dir.join("000000010000000000000001");
    let out = run(pgbr(&[
        &config,
        "--stanza=main",
        "archive-push",
        wal.to_str().unwrap(),
    ]));
    assert_error(&out, 55, "unable to open WAL file");
    assert!(
        dir.join("my-lock/main-archive.lock").exists(),
        "archive-push did not take its lock in the configured lock-path:\n{out}"
    );
    assert!(dir.join("my-log/main-archive-push.log").exists(), "{out}");
    // The backslash stays part of repo1-path.
    let out = run(pgbr(&[
        &config,
        "--stanza=main",
        "archive-get",
        "000000010000000000000001",
        dir.join("x").to_str().unwrap(),
    ]));
    assert_error(
        &out,
        103,
        &format!(
            "stanza 'main' has no archive.info at '{}\\/archive/main/archive.info'",
            repo.display()
        ),
    );
}

#[test]
fn a_line_that_is_not_key_value_names_its_line_and_a_bom_is_skipped() {
    harness::require_root();
    let dir = TestDir::new();
    let get = |text: &str| {
        let conf = dir.join("c.conf");
        write_postgres(&conf, text, 0o640);
        let out = run(pgbr_in(
            &dir,
            &[
                &format!("--config={}", conf.display()),
                "--stanza=main",
                "archive-get",
                "000000010000000000000001",
                dir.join("x").to_str().unwrap(),
            ],
        ));
        (conf, out)
    };
    let (conf, out) = get("# paths\n[global]\n\nrepo1-path\nlog-level-file=off\n");
    assert_error(
        &out,
        29,
        &format!(
            "unable to parse config file '{}' line 4: 'repo1-path' has no '='",
            conf.display()
        ),
    );
    let (conf, out) = get("[global]\nlog-level-file: off\n");
    assert_error(
        &out,
        29,
        &format!(
            "unable to parse config file '{}' line 2: 'log-level-file: off' has no '='",
            conf.display()
        ),
    );
    // A BOM before the first section is skipped: the file parses, and archive-get goes on to
    // the repository (which has no stanza).
    let (_, out) = get("\u{feff}[global]\nlog-level-file=off\n");
    assert_error(&out, 103, "stanza 'main' has no archive.info");
}

#[test]
fn bad_stanza_names_and_empty_arguments_are_config_errors() {
    harness::require_root();
    let dir = TestDir::new();
    for name in ["..", ".", "-x", ".hidden"] {
        let stanza = format!("--stanza={name}");
        let out = run(pgbr_in(
            &dir,
            &[&stanza, "archive-push", "/tmp/000000010000000000000001"],
        ));
        assert_error(&out, 32, &format!("invalid stanza name '{name}'"));
        let out = run(pgbr_in(&dir, &[&stanza, "expire"]));
        assert_error(&out, 32, &format!("invalid stanza name '{name}'"));
    }
    let out = run(pgbr_in(&dir, &["--stanza=main", "archive-push", ""]));
    assert_error(&out, 96, "WAL path is empty for command 'archive-push'");
    let out = run(pgbr_in(
        &dir,
        &["--stanza=main", "archive-get", "", "/tmp/x"],
    ));
    assert_error(&out, 96, "WAL file name is empty for command 'archive-get'");
    let out = run(pgbr_in(
        &dir,
        &[
            "--stanza=main",
            "archive-get",
            "000000010000000000000001",
            "",
        ],
    ));
    assert_error(
        &out,
        96,
        "destination path is empty for command 'archive-get'",
    );
    // Nothing was written anywhere: the errors come before the lock and the repository.
    assert!(!dir.join("lock").exists() && !dir.join("repo").exists());
}
