//! Backups in the two-host layout: the backup runs on the repository host and reaches the
//! database host through pg1-host over the harness's real sshd. The database queries, the
//! file walk, SHA-1 and gzip all run on the database host; the restore runs on the database
//! host through repo1-host.

use std::fs;

use crate::fixture::{label_of, Options, Site};
use crate::harness::{self, free_port, postgres_command, run, run_as_postgres, wait_until};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn aggregates(socket: &str, port: &str) -> String {
    let out = run_as_postgres(
        format!("{PG_BIN}/psql"),
        &["-h", socket, "-p", port, "-X", "-A", "-t", "-c",
          "select count(*), sum(abalance), (select count(*) from pgbench_history) from pgbench_accounts", "postgres"],
    );
    assert_eq!(out.status, 0, "{out}");
    out.stdout.trim().to_string()
}

#[test]
fn backup_from_the_repository_host_through_pg1_host_restores_exactly() {
    let site = Site::new(Options {
        remote: true,
        pg_host: true,
        ..Default::default()
    });
    site.cluster.pgbench(&["-i", "-q", "-s", "3"]);
    site.cluster.pgbench(&["-n", "-c", "2", "-t", "500"]);

    // check and stanza-create also work from the repository host through pg1-host.
    let out = site.pgbr_repo_host(&["check"]);
    assert_eq!(out.status, 0, "{out}");
    let out = site.pgbr_repo_host(&["stanza-create"]);
    assert_eq!(out.status, 0, "{out}");

    let out = site.pgbr_repo_host(&["--type=full", "--start-fast", "--process-max=2", "backup"]);
    assert_eq!(out.status, 0, "{out}");
    let label = label_of(&out);
    // The backup was taken by the repository host: its log is there.
    let log = fs::read_to_string(site.dir.join("repo-log/main-backup.log")).unwrap();
    assert!(log.contains(&format!("backup {label} complete")), "{log}");

    site.cluster.pgbench(&["-n", "-c", "2", "-t", "300"]);
    let out = site.pgbr_repo_host(&["--type=incr", "--start-fast", "backup"]);
    assert_eq!(out.status, 0, "{out}");
    let expected = site.cluster.psql("select count(*), sum(abalance), (select count(*) from pgbench_history) from pgbench_accounts");
    site.one_segment();

    // Restore on the database host, through repo1-host, into a new directory.
    let target = site.dir.join("restored");
    let out = site.pgbr(&[
        &format!("--pg1-path={}", target.display()),
        "--process-max=2",
        "--log-level-file=detail",
        "restore",
    ]);
    assert_eq!(out.status, 0, "{out}");
    // pgbench_accounts (39 MiB), stored with a block index by the database host's remote,
    // came back block by block: each block a ranged read through repo1-host.
    let accounts = site
        .cluster
        .psql("select pg_relation_filepath('pgbench_accounts')");
    let log = fs::read_to_string(site.dir.join("log/main-restore.log")).unwrap();
    let restored = format!("restored '{}' in ", target.join(&accounts).display());
    assert!(
        log.lines()
            .any(|l| l.contains(&restored) && l.ends_with(" blocks")),
        "{log}"
    );
    let socket = site.dir.mkdir("restored-socket");
    let port = free_port().to_string();
    let auto = target.join("postgresql.auto.conf");
    let mut conf = fs::read_to_string(&auto).unwrap();
    conf.push_str(&format!(
        "port = {port}\nunix_socket_directories = '{}'\narchive_mode = off\n",
        socket.display()
    ));
    fs::write(&auto, conf).unwrap();
    let log = site.dir.join("restored.log");
    let out = run(postgres_command(
        format!("{PG_BIN}/pg_ctl"),
        &[
            "-D",
            target.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "120",
            "start",
        ],
    ));
    assert_eq!(
        out.status,
        0,
        "{out}\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    let sock = socket.to_str().unwrap().to_string();
    wait_until(
        "restored cluster promoted",
        std::time::Duration::from_secs(60),
        || {
            let out = run_as_postgres(
                format!("{PG_BIN}/psql"),
                &[
                    "-h",
                    &sock,
                    "-p",
                    &port,
                    "-X",
                    "-A",
                    "-t",
                    "-c",
                    "select pg_is_in_recovery()",
                    "postgres",
                ],
            );
            out.stdout.trim() == "f"
        },
    );
    assert_eq!(aggregates(&sock, &port), expected);
    let out = run(postgres_command(
        format!("{PG_BIN}/pg_ctl"),
        &["-D", target.to_str().unwrap(), "-m", "fast", "-w", "stop"],
    ));
    assert_eq!(out.status, 0, "{out}");
    let out = run_as_postgres(
        format!("{PG_BIN}/pg_checksums"),
        &["--check", "-D", target.to_str().unwrap()],
    );
    assert_eq!(out.status, 0, "{out}");
}

fn backup_log(site: &Site) -> String {
    let log = fs::read_to_string(site.dir.join("repo-log/main-backup.log")).unwrap_or_default();
    harness::tail(&log, 30)
}

/// The label and counters from the repository host's backup log completion line.
fn completion(site: &Site, label: &str) -> (u64, u64) {
    let log = fs::read_to_string(site.dir.join("repo-log/main-backup.log")).unwrap();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(&format!("backup {label} complete:")))
        .expect("completion line");
    let num_before = |word: &str| -> u64 {
        let i = line.find(word).unwrap();
        line[..i]
            .split_whitespace()
            .last()
            .unwrap()
            .trim_start_matches('(')
            .parse()
            .unwrap()
    };
    (num_before(" files copied"), num_before(" resumed"))
}

#[test]
fn a_connection_lost_mid_backup_fails_with_the_remote_code_and_the_next_run_resumes() {
    let mut site = Site::new(Options {
        remote: true,
        pg_host: true,
        // Killing sshd closes the connection at once; io-timeout only bounds a hang. A short
        // one (it was 5 s) can run out while a starved remote is merely slow on a loaded
        // machine, failing the backup before the cut.
        global: "io-timeout=30",
        ..Default::default()
    });
    // Several tables of poorly compressible data, so that some are safely copied (and
    // recorded for resume) while others are still to come when the connection drops.
    // Their files must not change between the two backups, or the second one rightly copies
    // them again and resumes nothing: autovacuum (which a table of 200000 new rows triggers
    // within its naptime) would set hint bits and freeze them in between, and under load
    // the runs are slow enough for it to come. So autovacuum is off for them, and a vacuum
    // freeze now leaves nothing for anyone to write later.
    for t in 0..8 {
        site.cluster.psql(&format!(
            "create table big{t} with (autovacuum_enabled = off) as \
             select g, md5(g::text) || md5((g * 7)::text) || md5((g * {t} + 13)::text) as pad \
             from generate_series(1, 200000) g"
        ));
    }
    site.cluster.psql("vacuum (freeze, analyze)");
    site.cluster.psql("checkpoint");
    // A file is resumed only if its mtime is before the second its copy began: let the
    // checkpoint's writes fall in an earlier second than any copy.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut child = harness::pgbr(&[
        &format!("--config={}", site.repo_conf.display()),
        "--stanza=main",
        "--type=full",
        "--start-fast",
        "--compress-level=9",
        "backup",
    ])
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let backup_root = site.repo.join("backup/main");
    // Wait until the in-progress manifest records at least three large copied files.
    let recorded = || {
        fs::read_dir(&backup_root)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let copy =
                    fs::read_to_string(e.path().join("backup.manifest.copy")).unwrap_or_default();
                copy.lines()
                    .filter_map(|l| l.split("\"size\":").nth(1))
                    .filter_map(|rest| {
                        rest.split(|c: char| !c.is_ascii_digit())
                            .next()?
                            .parse::<u64>()
                            .ok()
                    })
                    .filter(|&size| size > 10_000_000)
                    .count()
                    >= 3
            })
    };
    // The cut must find the backup still running: one that ended on its own tests nothing.
    let assert_still_running = |child: &mut std::process::Child, site: &Site| {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            panic!(
                "backup ended ({status}) before the connection was cut:\n{stderr}\n{}",
                backup_log(site)
            );
        }
    };
    let start = std::time::Instant::now();
    while !recorded() {
        assert_still_running(&mut child, &site);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(300),
            "no progress saved:\n{}",
            backup_log(&site)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Freeze the database host's side first: from now on the backup cannot get further, so
    // it is still running when the connection is cut, however late this thread got here.
    site.sshd.as_mut().unwrap().pause();
    assert_still_running(&mut child, &site);
    site.sshd.as_mut().unwrap().stop();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(39), "{stderr}");
    assert!(stderr.starts_with("ERROR: [039]: "), "{stderr}");
    let info = site.pgbr_repo_host(&["info", "--output=json"]);
    assert!(
        info.stdout.contains("\"backup\":[]"),
        "no complete backup after the failure:\n{info}"
    );

    site.sshd.as_mut().unwrap().start_again();
    let out = site.pgbr_repo_host(&["--type=full", "--start-fast", "backup"]);
    assert_eq!(out.status, 0, "{out}");
    let label = label_of(&out);
    let log = fs::read_to_string(site.dir.join("repo-log/main-backup.log")).unwrap();
    assert!(
        log.contains(&format!("resuming interrupted backup {label}")),
        "{log}"
    );
    let (copied, resumed) = completion(&site, &label);
    assert!(resumed > 0, "files resumed: {resumed}");
    assert!(copied > 0, "the rest was copied: {copied}");
}
