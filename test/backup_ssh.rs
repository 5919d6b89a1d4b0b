//! Backups in the two-host layout: the backup runs on the repository host and reaches the
//! database host through pg1-host over the harness's real sshd. The database queries, the
//! file walk, SHA-1 and gzip all run on the database host; the restore runs on the database
//! host through repo1-host.

use std::fs;

use crate::fixture::{Options, Site};
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
    let label = out
        .stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("backup ")
                .and_then(|r| r.strip_suffix(" complete"))
        })
        .expect("label")
        .to_string();
    // The backup was taken by the repository host: its log is there.
    let log = fs::read_to_string(site.dir.join("repo-log/main-backup.log")).unwrap();
    assert!(log.contains(&format!("backup {label} complete")), "{log}");

    site.cluster.pgbench(&["-n", "-c", "2", "-t", "300"]);
    let out = site.pgbr_repo_host(&["--type=incr", "--start-fast", "backup"]);
    assert_eq!(out.status, 0, "{out}");
    let expected = site.cluster.psql("select count(*), sum(abalance), (select count(*) from pgbench_history) from pgbench_accounts").replace('|', "|");
    site.one_segment();

    // Restore on the database host, through repo1-host, into a new directory.
    let target = site.dir.join("restored");
    let out = site.pgbr(&[
        &format!("--pg1-path={}", target.display()),
        "--process-max=2",
        "restore",
    ]);
    assert_eq!(out.status, 0, "{out}");
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
    let _ = harness::tail("", 1);
}
