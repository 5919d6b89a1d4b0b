//! The administration commands against real PostgreSQL 15 and, where the two tools meet,
//! the real pgBackRest 2.45: stop and start (the stop file both tools honour, `--force`
//! ending a running backup), stanza-upgrade on a re-initdb'd cluster (a second PostgreSQL
//! major is not installable on this machine, so a new system identifier stands for
//! pg_upgrade), stanza-delete's rules and its complete removal, repo-ls and repo-get
//! (compared with pgBackRest's own output), and annotations.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::fixture::{assert_error, Site, STANZA};
use crate::harness::{self, bin, postgres_command, run, wait_until, Out, PgCluster};

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// Every file under `dir` with its size, sorted: what "nothing written" compares.
fn tree(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                pending.push(e.path());
            } else {
                out.push((e.path(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// pgBackRest 2.45 as postgres, reading no config file: every path given here.
fn pgbackrest(args: &[&str]) -> Out {
    let mut all = vec!["--config=/dev/null", "--log-level-file=off"];
    all.extend_from_slice(args);
    run(postgres_command("pgbackrest", &all))
}

/// Our binary's stdout as bytes (repo-get writes compressed files).
fn raw_stdout(site: &Site, args: &[&str]) -> (i32, Vec<u8>) {
    let config = format!("--config={}", p(&site.conf));
    let mut all = vec![config.as_str()];
    all.extend_from_slice(args);
    let out = harness::pgbr(&all)
        .stdin(Stdio::null())
        .output()
        .expect("running pg_backrest");
    (out.status.code().unwrap_or(-1), out.stdout)
}

fn both(out: &Out) -> String {
    format!("{}{}", out.stdout, out.stderr)
}

#[test]
fn stop_forbids_backup_expire_archive_push_and_stanza_commands_until_start_in_both_tools() {
    let site = Site::local();
    let lock = site.dir.join("lock");
    let stop_file = lock.join(format!("{STANZA}.stop"));
    let lock_opt = format!("--lock-path={}", p(&lock));
    let stanza_opt = format!("--stanza={STANZA}");

    site.pgbr(&["stop"]).expect_ok("stop");
    assert!(stop_file.exists());
    let again = site.pgbr(&["stop"]).expect_ok("stop again");
    assert!(
        both(&again).contains("stop file already exists for stanza main"),
        "{again}"
    );

    let before = tree(&site.repo);
    let wal = site.dir.join("000000010000000000000001");
    std::fs::write(&wal, b"").unwrap();
    for args in [
        vec!["backup", "--type=full"],
        vec!["expire", "--repo1-retention-full=1"],
        vec!["archive-push", p(&wal)],
        vec!["stanza-create"],
        vec!["stanza-upgrade"],
    ] {
        assert_error(&site.pgbr(&args), 62, "stop file exists for stanza main");
    }
    // PostgreSQL's own archiving is refused too: a switched segment stays waiting.
    site.cluster
        .psql("create table written_while_stopped (i int)");
    let seg = site.cluster.psql("select pg_walfile_name(pg_switch_wal())");
    wait_until("archive_command to fail", Duration::from_secs(60), || {
        site.cluster
            .psql("select failed_count from pg_stat_archiver")
            .parse::<u64>()
            .unwrap_or(0)
            > 0
    });
    assert_eq!(
        tree(&site.repo),
        before,
        "a stopped command wrote to the repository"
    );
    assert!(site.stored(&seg).is_empty());

    // pgBackRest honours our stop file.
    for args in [
        vec![
            "expire",
            &stanza_opt,
            &lock_opt,
            "--repo1-path=/nonexistent",
        ],
        vec!["archive-push", &stanza_opt, &lock_opt, p(&wal)],
    ] {
        let out = pgbackrest(&args);
        assert_eq!(out.status, 62, "pgbackrest {args:?}:\n{out}");
        assert!(
            both(&out).contains("stop file exists for stanza main"),
            "{out}"
        );
    }

    site.pgbr(&["start"]).expect_ok("start");
    assert!(!stop_file.exists());
    let again = site.pgbr(&["start"]).expect_ok("start again");
    assert!(
        both(&again).contains("stop file does not exist for stanza main"),
        "{again}"
    );
    // The waiting segment goes through once started.
    wait_until(
        "the waiting segment to be archived",
        Duration::from_secs(120),
        || !site.stored(&seg).is_empty(),
    );

    // We honour pgBackRest's stop file, for one stanza and for all.
    pgbackrest(&["stop", &stanza_opt, &lock_opt]).expect_ok("pgbackrest stop");
    assert!(stop_file.exists());
    assert_error(
        &site.pgbr(&["backup", "--type=full"]),
        62,
        "stop file exists for stanza main",
    );
    site.pgbr(&["start"])
        .expect_ok("start after pgbackrest stop");
    pgbackrest(&["stop", &lock_opt]).expect_ok("pgbackrest stop (all stanzas)");
    assert!(lock.join("all.stop").exists());
    assert_error(
        &site.pgbr(&["expire"]),
        62,
        "stop file exists for all stanzas",
    );
    // archive-get is not stopped (restore_command must keep working).
    let fetched = site.dir.join("fetched");
    site.pgbr(&["archive-get", &seg, p(&fetched)])
        .expect_ok("archive-get while stopped");
    let config = format!("--config={}", p(&site.conf));
    run(harness::pgbr(&[&config, "start"])).expect_ok("start (all stanzas)");
    assert!(!lock.join("all.stop").exists());

    site.backup("full", &[]);
}

/// archive_command is made to fail so that a backup waits for its last WAL segment: a
/// backup that is really running, holding its lock.
fn backup_waiting_for_wal(site: &Site, waits_before: usize) -> std::process::Child {
    let config = format!("--config={}", p(&site.conf));
    let stanza = format!("--stanza={STANZA}");
    let child = harness::pgbr(&[
        &config,
        &stanza,
        "backup",
        "--type=full",
        "--start-fast",
        "--archive-timeout=600",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawning backup");
    wait_until(
        "the backup to wait for WAL",
        Duration::from_secs(120),
        || site.log("backup").matches("backup stop: LSN").count() > waits_before,
    );
    child
}

fn ended_by_sigterm(child: std::process::Child) {
    let out = child.wait_with_output().expect("backup output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(63), "{stderr}");
    assert!(stderr.contains("terminated by signal SIGTERM"), "{stderr}");
}

#[test]
fn stop_force_ends_a_running_backup_and_so_does_pgbackrests() {
    let site = Site::local();
    let lock = site.dir.join("lock");
    site.cluster.set_settings(&[("archive_command", "false")]);
    site.cluster.psql("select pg_reload_conf()");

    let running = backup_waiting_for_wal(&site, 0);
    let lock_text = std::fs::read_to_string(lock.join(format!("{STANZA}-backup.lock"))).unwrap();
    let record: serde_json::Value = serde_json::from_str(&lock_text).expect("JSON lock record");
    assert!(
        record["execId"].is_string() && record["pid"].is_u64(),
        "{lock_text}"
    );
    // Without --force the running backup is left alone.
    site.pgbr(&["stop"]).expect_ok("stop");
    site.pgbr(&["start"]).expect_ok("start");
    let out = site.pgbr(&["stop", "--force", "--log-level-console=info"]);
    assert!(out.success(), "{out}");
    assert!(
        out.stdout
            .contains(&format!("sent term signal to process {}", record["pid"])),
        "{out}"
    );
    ended_by_sigterm(running);
    assert_error(
        &site.pgbr(&["backup", "--type=full"]),
        62,
        "stop file exists",
    );
    site.pgbr(&["start"]).expect_ok("start");

    // pgBackRest reads our lock record and ends our backup the same way.
    let running = backup_waiting_for_wal(&site, 1);
    let lock_opt = format!("--lock-path={}", p(&lock));
    let stanza_opt = format!("--stanza={STANZA}");
    pgbackrest(&["stop", "--force", &stanza_opt, &lock_opt]).expect_ok("pgbackrest stop --force");
    ended_by_sigterm(running);
    site.pgbr(&["start"])
        .expect_ok("start after pgbackrest stop");

    site.cluster.psql("alter system reset archive_command");
    site.cluster.psql("select pg_reload_conf()");
    site.backup("full", &[]);
    assert_eq!(site.backup_labels().len(), 1);
}

#[test]
fn stanza_upgrade_binds_the_stanza_to_a_new_cluster_with_a_new_archive_id() {
    let site = Site::local();
    let first = site.backup("full", &[]);
    let archive_info = site.repo.join(format!("archive/{STANZA}/archive.info"));
    let backup_info = site.repo.join(format!("backup/{STANZA}/backup.info"));
    let (a0, b0) = (
        std::fs::read(&archive_info).unwrap(),
        std::fs::read(&backup_info).unwrap(),
    );
    let out = site
        .pgbr(&["stanza-upgrade", "--log-level-console=info"])
        .expect_ok("stanza-upgrade of an unchanged cluster");
    assert!(out.stdout.contains("is already up to date"), "{out}");
    assert_eq!(std::fs::read(&archive_info).unwrap(), a0);
    assert_eq!(std::fs::read(&backup_info).unwrap(), b0);

    // A new cluster in pg1-path (as after pg_upgrade: another system identifier).
    site.cluster.stop();
    std::fs::remove_dir_all(site.cluster.data_dir()).unwrap();
    let archive_command = format!(
        "{} --config={} --stanza={STANZA} archive-push %p",
        p(&bin()),
        p(&site.conf)
    );
    let new = PgCluster::init(
        site.cluster.dir(),
        &[
            ("archive_mode", "on"),
            ("archive_command", &archive_command),
        ],
    );
    new.start();
    let port = format!("--pg1-port={}", new.port());
    assert_error(
        &site.pgbr(&["backup", "--type=full", "--start-fast", &port]),
        51,
        "system-id",
    );

    site.pgbr(&["stanza-upgrade", &port])
        .expect_ok("stanza-upgrade");
    for file in [&archive_info, &backup_info] {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.contains("db-id=2\n"), "{text}");
        let history = text.split("[db:history]\n").nth(1).unwrap_or("");
        assert!(
            history.starts_with("1={") && history.contains("\n2={"),
            "{text}"
        );
    }
    let out = site
        .pgbr(&["stanza-upgrade", &port, "--log-level-console=info"])
        .expect_ok("stanza-upgrade again");
    assert!(out.stdout.contains("is already up to date"), "{out}");

    let second = site.backup("full", &[&port]);
    let seg = new.psql("select pg_walfile_name(pg_switch_wal())");
    let dir = site
        .repo
        .join(format!("archive/{STANZA}/15-2/{}", &seg[..16]));
    wait_until(
        "WAL of the new cluster in 15-2",
        Duration::from_secs(60),
        || {
            std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&seg))
        },
    );
    assert_eq!(site.backup_labels(), vec![first, second]);
    new.stop();
}

#[test]
fn stanza_delete_requires_stop_refuses_a_running_cluster_and_removes_the_stanza() {
    let site = Site::local();
    site.backup("full", &[]);
    let before = tree(&site.repo);
    assert_error(
        &site.pgbr(&["stanza-delete"]),
        55,
        "stop file does not exist for stanza 'main'",
    );
    site.pgbr(&["stop"]).expect_ok("stop");
    assert_error(
        &site.pgbr(&["stanza-delete"]),
        38,
        "looks like PostgreSQL is running",
    );
    assert_eq!(
        tree(&site.repo),
        before,
        "a refused stanza-delete removed something"
    );

    site.pgbr(&["stanza-delete", "--force"])
        .expect_ok("stanza-delete --force");
    for dir in ["archive", "backup"] {
        assert!(
            !site.repo.join(dir).join(STANZA).exists(),
            "{dir}/{STANZA} left"
        );
    }
    assert!(!site.dir.join(format!("lock/{STANZA}.stop")).exists());
    // Nothing left to delete: runs again without a stop file.
    site.pgbr(&["stanza-delete"])
        .expect_ok("stanza-delete of a deleted stanza");

    // Without --force, a stopped cluster is enough.
    site.pgbr(&["stanza-create"]).expect_ok("stanza-create");
    site.backup("full", &[]);
    site.cluster.stop();
    site.pgbr(&["stop"]).expect_ok("stop");
    site.pgbr(&["stanza-delete"]).expect_ok("stanza-delete");
    assert!(!site.repo.join("backup").join(STANZA).exists());
}

#[test]
fn repo_ls_and_repo_get_show_the_repository_as_pgbackrest_does() {
    let site = Site::local();
    let label = site.backup("full", &[]);
    let repo_opt = format!("--repo1-path={}", p(&site.repo));

    let out = site.pgbr(&["repo-ls"]).expect_ok("repo-ls");
    assert_eq!(out.stdout, "archive\nbackup\n");
    let out = site
        .pgbr(&["repo-ls", "backup/main", "--output=json"])
        .expect_ok("repo-ls json");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect(&out.stdout);
    let info_meta = std::fs::metadata(site.repo.join("backup/main/backup.info")).unwrap();
    assert_eq!(v["."]["type"], "path");
    assert_eq!(v["backup.info"]["type"], "file");
    assert_eq!(v["backup.info"]["size"], info_meta.len());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(v["backup.info"]["time"], info_meta.mtime());
    assert_eq!(v[label.as_str()], serde_json::json!({"type": "path"}));

    // Same JSON and text as pgBackRest's, with each option.
    for args in [
        vec!["--output=json"],
        vec!["--output=json", "backup/main", "--recurse"],
        vec!["--output=json", "backup", "--recurse", "--sort=desc"],
        vec!["--output=json", "archive", "--recurse", "--filter=\\.gz$"],
        vec!["backup/main", "--recurse", "--sort=desc"],
        vec!["archive/main", "--recurse", "--filter=history|info"],
        vec!["backup/main/backup.info", "--output=json"],
        vec!["no/such/path", "--output=json"],
    ] {
        let mut ours = vec!["repo-ls"];
        ours.extend_from_slice(&args);
        let ours = site.pgbr(&ours).expect_ok("repo-ls");
        let mut theirs = vec!["repo-ls", repo_opt.as_str()];
        theirs.extend_from_slice(&args);
        let theirs = pgbackrest(&theirs).expect_ok("pgbackrest repo-ls");
        assert_eq!(ours.stdout, theirs.stdout, "repo-ls {args:?}");
    }
    let ours = site
        .pgbr(&[
            "repo-ls",
            "backup/main",
            "--recurse",
            "--filter=backup\\.manifest$",
        ])
        .expect_ok("repo-ls filter");
    assert_eq!(ours.stdout, format!("{label}/backup.manifest\n"));
    let abs = format!("{}/backup", p(&site.repo));
    assert_eq!(
        site.pgbr(&["repo-ls", &abs]).expect_ok("abs").stdout,
        "main\n"
    );
    assert_error(&site.pgbr(&["repo-ls", "/etc"]), 96, "is not in base path");
    assert_error(&site.pgbr(&["repo-ls", "backup/../.."]), 96, "'..'");
    assert_error(&site.pgbr(&["repo-ls", "--filter=("]), 31, "filter");

    // repo-get: the stored bytes, compressed ones included, as pgBackRest gives them.
    let wal = tree(&site.repo.join("archive/main/15-1"))
        .into_iter()
        .map(|(path, _)| path)
        .find(|path| path.to_string_lossy().ends_with(".gz"))
        .expect("a stored WAL segment");
    let rel = wal
        .strip_prefix(&site.repo)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    for file in [rel.as_str(), "backup/main/backup.info"] {
        let (status, bytes) = raw_stdout(&site, &["repo-get", file]);
        assert_eq!(status, 0, "repo-get {file}");
        assert_eq!(
            bytes,
            std::fs::read(site.repo.join(file)).unwrap(),
            "{file}"
        );
        let theirs = postgres_command(
            "pgbackrest",
            &[
                "--config=/dev/null",
                "--log-level-file=off",
                &repo_opt,
                "repo-get",
                file,
            ],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
        assert_eq!(bytes, theirs.stdout, "pgbackrest repo-get {file}");
    }
    assert_error(
        &site.pgbr(&["repo-get", "backup/main/none"]),
        55,
        "unable to open missing file",
    );
    let (status, bytes) = raw_stdout(&site, &["repo-get", "backup/main/none", "--ignore-missing"]);
    assert_eq!((status, bytes.len()), (1, 0));
}

#[test]
fn repo_ls_and_repo_get_reach_a_remote_repository() {
    let site = Site::remote();
    let out = site
        .pgbr(&["repo-ls", "--output=json", "--recurse", "archive"])
        .expect_ok("repo-ls over ssh");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect(&out.stdout);
    assert_eq!(v["main/archive.info"]["type"], "file");
    let (status, bytes) = raw_stdout(&site, &["repo-get", "archive/main/archive.info"]);
    assert_eq!(status, 0);
    assert_eq!(
        bytes,
        std::fs::read(site.repo.join("archive/main/archive.info")).unwrap()
    );
}

#[test]
fn annotations_are_stored_where_pgbackrest_keeps_them_and_annotate_changes_them() {
    let site = Site::local();
    let label = site.backup(
        "full",
        &[
            "--annotation=source=nightly",
            "--annotation=ticket=42",
            "--annotation=empty=",
        ],
    );
    let manifest = site
        .repo
        .join(format!("backup/main/{label}/backup.manifest"));
    let manifest_text = std::fs::read_to_string(&manifest).unwrap();
    assert!(
        manifest_text
            .contains("[metadata]\nannotation={\"source\":\"nightly\",\"ticket\":\"42\"}\n"),
        "{manifest_text}"
    );
    let entry = |site: &Site| {
        let text = std::fs::read_to_string(site.repo.join("backup/main/backup.info")).unwrap();
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{label}=")))
            .unwrap_or_else(|| panic!("{label} not in backup.info:\n{text}"))
            .to_string();
        serde_json::from_str::<serde_json::Value>(&line).unwrap()
    };
    assert_eq!(
        entry(&site)["backup-annotation"],
        serde_json::json!({"source": "nightly", "ticket": "42"})
    );
    let set = format!("--set={label}");
    let out = site.pgbr(&["info", &set]).expect_ok("info --set");
    assert!(
        out.stdout.contains("annotation(s)") && out.stdout.contains("source: nightly"),
        "{out}"
    );
    assert_eq!(site.info_json()["backup"][0]["annotation"]["ticket"], "42");

    site.pgbr(&[
        "annotate",
        &set,
        "--annotation=ticket=",
        "--annotation=owner=dba",
    ])
    .expect_ok("annotate");
    assert_eq!(
        entry(&site)["backup-annotation"],
        serde_json::json!({"owner": "dba", "source": "nightly"})
    );
    // As in pgBackRest, the manifest keeps what the backup recorded.
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), manifest_text);
    site.pgbr(&[
        "annotate",
        &set,
        "--annotation=owner=",
        "--annotation=source=",
    ])
    .expect_ok("annotate removing all");
    assert!(entry(&site).get("backup-annotation").is_none());

    assert_error(
        &site.pgbr(&["annotate", "--set=20200101-000000F", "--annotation=a=b"]),
        75,
        "no backup set to annotate found",
    );
    assert_error(
        &site.pgbr(&["annotate", "--set=bad", "--annotation=a=b"]),
        31,
        "not a valid backup label format",
    );
}
