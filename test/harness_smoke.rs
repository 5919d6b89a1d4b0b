//! Smoke tests for the harness itself: the PostgreSQL cluster fixture (init, start, psql,
//! pgbench, settings reload, stop, crash restart) and the sshd fixture (key login as postgres,
//! pause/resume, stop killing live sessions, restart on the same port).

use crate::harness::{self, PgCluster, Sshd, TestDir};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn test_dir_and_run_as_postgres() {
    harness::require_root();
    let dir = TestDir::new();
    let meta = std::fs::metadata(dir.path()).expect("stat test dir");
    assert_eq!(
        meta.uid(),
        harness::postgres_ids().0,
        "test dir must be owned by postgres"
    );
    assert_eq!(meta.mode() & 0o777, 0o755);
    let out = harness::run_as_postgres(
        "sh",
        &[
            "-c",
            "id -un && touch \"$1/x\"",
            "sh",
            dir.path().to_str().unwrap(),
        ],
    )
    .expect_ok("sh as postgres");
    assert_eq!(out.stdout.trim(), "postgres");
    assert!(dir.join("x").exists());
    let path = dir.path().to_path_buf();
    drop(dir);
    if std::env::var("PGBR_KEEP").as_deref() != Ok("1") {
        assert!(!path.exists(), "TestDir must be removed on drop");
    }
    let (a, b) = (harness::free_port(), harness::free_port());
    assert_ne!(a, b);
}

#[test]
fn pg_cluster_lifecycle() {
    harness::require_root();
    let dir = TestDir::new();
    let pg = PgCluster::init(
        &dir.join("pg"),
        &[("archive_mode", "on"), ("archive_command", "/bin/true %p")],
    );
    pg.start();
    assert_eq!(pg.psql("SELECT 1"), "1");
    assert_eq!(pg.psql("SHOW data_checksums"), "on");
    assert_eq!(pg.psql("SHOW port"), pg.port().to_string());
    assert_eq!(pg.psql("SHOW archive_mode"), "on");
    assert_eq!(pg.psql("SHOW wal_level"), "replica");
    assert!(pg.try_psql("SELECT * FROM no_such_table").is_err());

    pg.pgbench(&["-i", "-s", "1", "-q"]);
    pg.pgbench(&["-t", "20", "-c", "2"]);
    assert_eq!(pg.psql("SELECT count(*) FROM pgbench_branches"), "1");

    // Change archive_command at runtime; reload is asynchronous, so wait for it to apply.
    pg.set_settings(&[("archive_command", "/bin/true 'quoted' %p")]);
    pg.reload();
    harness::wait_until("archive_command reload", Duration::from_secs(30), || {
        pg.psql("SHOW archive_command") == "/bin/true 'quoted' %p"
    });
    pg.psql("SELECT pg_switch_wal()");

    pg.stop();
    assert!(!pg.is_running());
    assert!(
        pg.try_psql("SELECT 1").is_err(),
        "psql must fail when the server is stopped"
    );

    // Crash and recover.
    pg.start();
    pg.psql("CREATE TABLE t AS SELECT 42 AS v");
    pg.stop_immediate();
    pg.start();
    assert_eq!(pg.psql("SELECT v FROM t"), "42");
    assert!(
        pg.log().contains("database system was interrupted"),
        "expected crash recovery in log"
    );
    // Left running on purpose: Drop must stop it before TestDir removes the directory.
}

#[test]
fn sshd_login_pause_resume_stop() {
    harness::require_root();
    let dir = TestDir::new();
    let mut sshd = Sshd::start(dir.path());

    let out = harness::run_as_postgres(
        "ssh",
        &[
            "-F",
            sshd.ssh_config_path().to_str().unwrap(),
            "-p",
            &sshd.port().to_string(),
            "postgres@127.0.0.1",
            "true",
        ],
    );
    assert!(
        out.success(),
        "ssh login as postgres failed:\n{out}\n--- sshd log ---\n{}",
        sshd.log()
    );
    assert_eq!(
        sshd.ssh(&[], "id -un")
            .expect_ok("ssh id -un")
            .stdout
            .trim(),
        "postgres"
    );

    // A live session: stop() must kill its per-connection sshd and remote command too.
    let mut session = harness::postgres_command("ssh", &["-F"])
        .arg(sshd.ssh_config_path())
        .args([
            "-p",
            &sshd.port().to_string(),
            "postgres@127.0.0.1",
            "echo up; exec sleep 300",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning long ssh session");
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(session.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .expect("reading session output");
        assert_eq!(line.trim(), "up");
    }

    // Paused: TCP connects, but no banner, so ConnectTimeout fires.
    sshd.pause();
    let out = sshd.ssh(&["-o", "ConnectTimeout=3"], "true");
    assert!(!out.success(), "ssh must fail while sshd is paused:\n{out}");
    sshd.resume();
    sshd.ssh(&["-o", "ConnectTimeout=10"], "true")
        .expect_ok("ssh after resume");

    let daemon = sshd.pid().unwrap();
    let tree = harness::descendants(daemon);
    assert!(
        tree.len() >= 2,
        "expected per-connection sshd and remote sleep under the daemon: {tree:?}"
    );
    sshd.stop();
    assert!(
        harness::is_dead(daemon),
        "sshd daemon {daemon} still alive after stop"
    );
    for pid in tree {
        assert!(
            harness::is_dead(pid),
            "process {pid} of the sshd tree survived stop"
        );
    }
    harness::wait_until(
        "ssh session to end after sshd stop",
        Duration::from_secs(30),
        || matches!(session.try_wait(), Ok(Some(_))),
    );
    assert!(
        TcpStream::connect(("127.0.0.1", sshd.port())).is_err(),
        "port still open after stop"
    );

    sshd.start_again();
    sshd.ssh(&[], "true").expect_ok("ssh after start_again");
    sshd.stop();
}
