//! A pgBackRest configuration carried over as it is: keys no one knows and pgBackRest options
//! pg_backrest lacks warn and archive_command keeps archiving (check alone fails on the
//! unknown ones); options that would change what is stored are refused before anything is
//! written; pgBackRest's config-path, conf.d and `PGBACKREST_*` variables are read; and
//! called through a symlink named `pgbackrest`, the binary answers as pgBackRest.

use std::path::Path;

use pg_backrest::error::Kind;

use crate::fixture::{assert_error, Options, Site, STANZA};
use crate::harness::{self, pgbr, pgbr_as, pgbr_in, run, write_postgres, TestDir};

const VERSION: &str = include_str!("../VERSION");

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn unknown_and_ignored_keys_warn_while_archiving_goes_on_and_check_fails() {
    // archive_command and stanza-create run with this config: before, each exited 31.
    let site = Site::new(Options {
        global: "repo1-paht=/nowhere\narchive-header-check=n\nlog-level-stderr=warn\n",
        ..Options::default()
    });
    let seg = site.one_segment();
    site.cluster.assert_archiving_never_failed();

    // Pushing it again (same content) succeeds, with the warnings on stderr.
    let original = site.originals.join(&seg);
    let out = site
        .pgbr(&["archive-push", p(&original)])
        .expect_ok("archive-push");
    let conf = site.conf.display().to_string();
    assert!(
        out.stderr.contains(&format!(
            "WARN: unknown option 'repo1-paht' in section '[global]' of '{conf}' \
             (nearest known option: 'repo1-path'), ignored"
        )),
        "{out}"
    );
    assert!(
        out.stderr.contains(&format!(
            "WARN: option 'archive-header-check' in section '[global]' of '{conf}' is ignored: \
             pg_backrest always checks the WAL header against archive.info"
        )),
        "{out}"
    );
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("WARN: option 'archive-header-check'"))
            .count(),
        1,
        "one warning per option:\n{out}"
    );
    assert!(!out.stderr.contains("ERROR"), "{out}");

    let out = site.pgbr(&["check"]);
    assert_error(
        &out,
        31,
        &format!("unknown option 'repo1-paht' in section '[global]' of '{conf}' (nearest known option: 'repo1-path')"),
    );
}

#[test]
fn misplaced_keys_warn_as_pgbackrest_does() {
    let dir = TestDir::new();
    let conf = dir.join("misplaced.conf");
    write_postgres(
        &conf,
        "[global]\npg1-path=/data\n[global:archive-get]\nstart-fast=y\n[main]\nstanza=main\n",
        0o640,
    );
    let config = format!("--config={}", conf.display());
    let out = run(pgbr_in(
        &dir,
        &[
            &config,
            "--stanza=main",
            "--log-level-stderr=warn",
            "archive-get",
            "000000010000000000000001",
            "/tmp/x",
        ],
    ));
    // It got as far as the repository (no archive.info: the config itself was accepted).
    assert_ne!(out.status, 31, "{out}");
    for expect in [
        "option 'pg1-path' in section '[global]'",
        "option 'start-fast' in section '[global:archive-get]'",
        "option 'stanza' in section '[main]'",
    ] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with("WARN: ") && l.contains(expect)),
            "no warning with {expect:?}:\n{out}"
        );
    }
}

#[test]
fn options_that_would_change_what_is_stored_are_refused_before_anything_is_written() {
    let dir = TestDir::new();
    let code = Kind::NotImplemented.exit_code();
    for (i, (file, expect)) in [
        (
            "[global]\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=secret\n",
            "option 'repo1-cipher-type' in section '[global]' of 'CONF' is set to 'aes-256-cbc', which pg_backrest does not support",
        ),
        (
            "[global]\nrepo-type=azure\n",
            "option 'repo-type' (pgBackRest's deprecated name of 'repo1-type') in section '[global]' of 'CONF' is set to 'azure'",
        ),
        (
            "[main]\nrepo2-path=/var/lib/pgbackrest2\n",
            "option 'repo2-path' in section '[main]' of 'CONF' configures repository repo2",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let conf = dir.join(format!("refused{i}.conf"));
        write_postgres(&conf, file, 0o640);
        let config = format!("--config={}", conf.display());
        let out = run(pgbr_in(
            &dir,
            &[
                &config,
                "--stanza=main",
                "archive-push",
                "/tmp/000000010000000000000001",
            ],
        ));
        assert_error(&out, code, &expect.replace("CONF", &conf.display().to_string()));
        assert!(!out.stderr.contains("secret"), "{out}");
        assert!(!dir.join("repo").exists(), "something was written:\n{out}");
    }
}

#[test]
fn pgbackrest_environment_and_config_path_with_conf_d() {
    let site = Site::local();
    let seg = site.one_segment();
    let lock = site.dir.join("lock");
    let log = site.dir.join("log");

    // PGBACKREST_* variables alone locate the repository.
    let mut cmd = pgbr(&["--stanza=main", "info"]);
    cmd.env("PGBACKREST_REPO1_PATH", &site.repo)
        .env("PGBACKREST_LOCK_PATH", &lock)
        .env("PGBACKREST_LOG_PATH", &log);
    let out = run(cmd).expect_ok("info with PGBACKREST_*");
    assert!(out.stdout.contains(&format!("stanza: {STANZA}")), "{out}");

    // pgBackRest's layout: --config-path holds pgbackrest.conf, conf.d/*.conf add to it.
    let etc = site.dir.mkdir("etc-pgbackrest");
    let conf_d = site.dir.mkdir("etc-pgbackrest/conf.d");
    write_postgres(
        &etc.join("pgbackrest.conf"),
        &format!(
            "[global]\nrepo1-path={}\nlock-path={}\nlog-path={}\n",
            p(&site.repo),
            p(&lock),
            p(&log)
        ),
        0o640,
    );
    write_postgres(
        &conf_d.join("main.conf"),
        &format!(
            "[{STANZA}]\npg1-path={}\npg1-socket-path={}\npg1-port={}\n",
            p(&site.cluster.data_dir()),
            p(&site.cluster.socket_dir()),
            site.cluster.port()
        ),
        0o640,
    );
    write_postgres(&conf_d.join("notes.txt"), "not a config\n", 0o640);
    let config_path = format!("--config-path={}", etc.display());
    let original = site.originals.join(&seg);
    let mut cmd = pgbr(&[&config_path, "--stanza=main", "archive-push", p(&original)]);
    cmd.env_remove("PG_BACKREST_CONFIG");
    run(cmd).expect_ok("archive-push with --config-path");
    // pg1-path comes from conf.d: without it stanza-create would be refused (31).
    let mut cmd = pgbr(&["--stanza=main", "stanza-create"]);
    cmd.env_remove("PG_BACKREST_CONFIG")
        .env("PGBACKREST_CONFIG_PATH", &etc);
    run(cmd).expect_ok("stanza-create with PGBACKREST_CONFIG_PATH");
}

#[test]
fn called_pgbackrest_it_answers_as_pgbackrest() {
    harness::require_root();
    let dir = TestDir::new();
    let link = dir.join("pgbackrest");
    std::os::unix::fs::symlink(harness::bin(), &link).expect("symlink");
    let version = VERSION.trim();

    let out = run(pgbr_as(&link, &["version"])).expect_ok("pgbackrest version");
    // Exactly pgBackRest's line: monitoring parses it as a version number (monitoring.rs).
    assert_eq!(out.stdout, "pgBackRest 2.45\n");
    let out = run(pgbr_as(&link, &["help"])).expect_ok("pgbackrest help");
    assert!(
        out.stdout
            .starts_with(&format!("pgBackRest 2.45 (pg_backrest {version}) - ")),
        "{out}"
    );
    assert!(
        out.stdout.contains("Usage:\n    pgbackrest [OPTIONS]"),
        "{out}"
    );
    let out = run(pgbr_as(&link, &["help", "backup"])).expect_ok("pgbackrest help backup");
    for default in [
        "[default: /var/lib/pgbackrest]",
        "[default: /tmp/pgbackrest]",
        "[default: /var/log/pgbackrest]",
        "[default: /etc/pgbackrest/pgbackrest.conf]",
    ] {
        assert!(out.stdout.contains(default), "{default}:\n{out}");
    }
    // Under its own name nothing changes.
    let out = run(pgbr(&["version"])).expect_ok("pg_backrest version");
    assert_eq!(out.stdout.trim(), format!("pg_backrest {version}"));
    let out = run(pgbr(&["help", "backup"])).expect_ok("pg_backrest help backup");
    assert!(
        out.stdout.contains("[default: /var/lib/pg_backrest]"),
        "{out}"
    );

    // The name works for real commands: archive-push and info through the link.
    let site = Site::local();
    let seg = site.one_segment();
    let config = format!("--config={}", site.conf.display());
    let original = site.originals.join(&seg);
    run(pgbr_as(
        &link,
        &[&config, "--stanza=main", "archive-push", p(&original)],
    ))
    .expect_ok("pgbackrest archive-push");
    let out = run(pgbr_as(&link, &[&config, "--stanza=main", "info"])).expect_ok("pgbackrest info");
    assert!(out.stdout.contains(&format!("stanza: {STANZA}")), "{out}");

    // The stop file's hint names the binary as it was called.
    run(pgbr_as(&link, &[&config, "--stanza=main", "stop"])).expect_ok("pgbackrest stop");
    let push = |program: &Path| {
        run(pgbr_as(
            program,
            &[&config, "--stanza=main", "archive-push", p(&original)],
        ))
    };
    let out = push(&link);
    assert_error(&out, 62, "stop file exists for stanza main");
    assert!(
        out.stderr
            .contains("HINT: run 'pgbackrest start --stanza=main' when it may run again"),
        "{out}"
    );
    let out = push(&harness::bin());
    assert_error(&out, 62, "stop file exists for stanza main");
    assert!(
        out.stderr
            .contains("HINT: run 'pg_backrest start --stanza=main' when it may run again"),
        "{out}"
    );
    run(pgbr_as(&link, &[&config, "--stanza=main", "start"])).expect_ok("pgbackrest start");
    push(&link).expect_ok("archive-push after start");
}

/// `--reset-NAME` gives an option its default whatever the config file and the environment
/// say, as pgBackRest's; its mistakes are pgBackRest's option-invalid (31), checked against
/// the real pgBackRest 2.45.
#[test]
fn reset_options_take_their_default_over_the_config_file() {
    let site = Site::new(Options {
        global: "archive-check=n
",
        ..Options::default()
    });
    let pgbackrest = |args: &[&str]| {
        let mut cmd = harness::postgres_command("/usr/bin/pgbackrest", args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PGBACKREST_") {
                cmd.env_remove(&key);
            }
        }
        run(cmd)
    };
    let config = format!("--config={}", site.conf.display());
    let both = |args: &[&str], code: i32, ours: &str| {
        let mut all = vec![config.as_str(), "--stanza=main"];
        all.extend_from_slice(args);
        let theirs = pgbackrest(&all);
        assert_eq!(theirs.status, code, "pgBackRest {all:?}:\n{theirs}");
        assert_error(&site.pgbr(args), code, ours);
    };
    both(
        &["--reset-bogus", "backup"],
        31,
        "invalid option '--reset-bogus'",
    );
    both(
        &["--reset-stanza", "backup"],
        31,
        "option 'reset-stanza' cannot be reset",
    );
    both(
        &["--reset-type", "backup"],
        31,
        "option 'reset-type' cannot be reset",
    );
    both(
        &["--reset-start-fast=y", "backup"],
        31,
        "option 'reset-start-fast' does not allow an argument",
    );
    both(
        &["--reset-start-fast", "--start-fast", "backup"],
        31,
        "option 'start-fast' cannot be set and reset",
    );
    both(
        &["--reset-start-fast", "--reset-start-fast", "backup"],
        31,
        "option 'start-fast' is reset multiple times",
    );
    both(
        &["--reset-no-start-fast", "backup"],
        31,
        "'--reset-no-start-fast'",
    );
    both(
        &["--reset-pg1-path", "expire"],
        31,
        "is not valid for command 'expire'",
    );

    // The site's config says archive-check=n (and io-timeout, repo1-path...): reset, the
    // default applies. Reset the repository path and backup looks in the default one.
    let out = site.pgbr(&["--reset-repo1-path", "backup"]);
    assert_error(&out, 55, "'/var/lib/pg_backrest/backup/main/backup.info'");
    // A reset option set in the environment is reset too.
    let mut cmd = pgbr(&[&config, "--stanza=main", "--reset-repo1-path", "backup"]);
    cmd.env("PG_BACKREST_REPO1_PATH", p(&site.repo));
    assert_error(
        &run(cmd),
        55,
        "'/var/lib/pg_backrest/backup/main/backup.info'",
    );

    // archive-check=n in the config, reset on the command line: the backup checks its WAL,
    // as its manifest records.
    let label = site.backup("full", &["--reset-archive-check"]);
    let manifest = std::fs::read_to_string(
        site.repo
            .join(format!("backup/{STANZA}/{label}/backup.manifest")),
    )
    .unwrap();
    assert!(
        manifest.contains("\noption-archive-check=true\n"),
        "{manifest}"
    );
}

#[test]
fn expire_auto_n_leaves_retention_to_a_separate_expire() {
    let site = Site::new(Options {
        global: "repo1-retention-full=1\nexpire-auto=n\n",
        ..Options::default()
    });
    let first = site.backup("full", &[]);
    let second = site.backup("full", &[]);
    assert_eq!(site.backup_labels(), vec![first, second.clone()]);
    site.pgbr(&["expire"]).expect_ok("expire");
    assert_eq!(site.backup_labels(), vec![second]);
}

#[test]
fn s3_credentials_from_the_file_and_the_environment_never_reach_the_log_or_ps() {
    let dir = TestDir::new();
    let conf = dir.join("s3.conf");
    // An endpoint nothing listens on: only the configuration is under test here.
    write_postgres(
        &conf,
        "[global]\nrepo1-type=s3\nrepo1-s3-bucket=bucket\nrepo1-s3-endpoint=127.0.0.1:9\n\
         repo1-s3-region=us-east-1\nrepo1-s3-key=KEYID1234\nrepo1-s3-token=TOKEN5678\n\
         repo1-s3-uri-style=path\nio-timeout=1\nlog-level-file=info\n",
        0o640,
    );
    let config = format!("--config={}", conf.display());
    let args = [
        config.as_str(),
        "--stanza=main",
        "--log-level-console=info",
        "info",
    ];
    let mut cmd = pgbr_in(&dir, &args);
    cmd.env("PGBACKREST_REPO1_S3_KEY_SECRET", "SECRET9012");
    let out = run(cmd);
    let begin = out
        .stdout
        .lines()
        .find(|l| l.contains("info command begin"))
        .unwrap_or_else(|| panic!("no begin line:\n{out}"));
    for masked in [
        "--repo1-s3-key=<redacted>",
        "--repo1-s3-key-secret=<redacted>",
        "--repo1-s3-token=<redacted>",
    ] {
        assert!(begin.contains(masked), "{masked}: {begin}");
    }
    let log = std::fs::read_to_string(dir.join("log/main-info.log")).unwrap_or_default();
    for secret in ["KEYID1234", "SECRET9012", "TOKEN5678"] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret) && !log.contains(secret),
            "{secret} shown:\n{out}\n{log}"
        );
    }

    // On the command line, where ps shows it to everyone, refused as pgBackRest refuses it.
    let secret_arg = "--repo1-s3-key-secret=SECRET9012";
    let ours = run(pgbr_in(
        &dir,
        &[&config, "--stanza=main", secret_arg, "info"],
    ));
    let theirs = run(harness::postgres_command(
        harness::PGBACKREST,
        &[&config, "--stanza=main", secret_arg, "info"],
    ));
    let expect = "option 'repo1-s3-key-secret' is not allowed on the command-line";
    assert_error(&ours, Kind::OptionInvalid.exit_code(), expect);
    assert_eq!(theirs.status, ours.status, "{theirs}");
    assert!(theirs.stderr.contains(expect), "{theirs}");
    assert!(!ours.stderr.contains("SECRET9012"), "{ours}");
}
