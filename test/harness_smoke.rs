//! Smoke tests for the harness itself: the PostgreSQL cluster fixture (init, start, psql,
//! pgbench, settings reload, stop, crash restart) the sshd fixture (key login as postgres,
//! pause/resume, stop killing live sessions, restart on the same port) and the S3 server fixture
//! (HTTPS with its CA, PUT/GET/ListObjectsV2, injected faults, stop/start, pause/resume).

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

/// Deterministic pseudo-random bytes (xorshift), so a wrong byte anywhere shows.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn s3_server_over_tls_put_get_list_and_injected_errors() {
    use harness::{curl_status, Fault, FaultKind, S3Server};
    harness::require_root();
    let dir = TestDir::new();
    let mut s3 = S3Server::start(dir.path());
    s3.create_bucket("pgbr");
    let obj = s3.url("/pgbr/dir/obj.bin");
    let got = dir.join("got.bin");
    let got_arg = got.to_str().unwrap().to_owned();
    let get = |s3: &S3Server| -> Vec<u8> {
        let _ = std::fs::remove_file(&got);
        let (status, _, out) = curl_status(s3, &["-o", &got_arg, &obj]);
        assert_eq!(status, 200, "GET {obj}:\n{out}\n{}", s3.log());
        std::fs::read(&got).expect("reading the GET output")
    };

    // PUT 2 MiB: over curl's 1 MiB threshold, so it sends `Expect: 100-continue` and the
    // proxy relays the interim answer.
    let payload = pseudo_random(2 * 1024 * 1024 + 17, 0x5eed);
    let src = dir.join("src.bin");
    std::fs::write(&src, &payload).unwrap();
    let data_arg = format!("@{}", src.display());
    let put = |s3: &S3Server| curl_status(s3, &["-X", "PUT", "--data-binary", &data_arg, &obj]);
    let (status, body, out) = put(&s3);
    assert_eq!(status, 200, "PUT {obj}: body {body:?}\n{out}\n{}", s3.log());
    assert!(get(&s3) == payload, "GET returned other bytes than PUT");
    assert!(
        std::fs::read(s3.data_dir().join("pgbr/dir/obj.bin")).unwrap() == payload,
        "s3s-fs stored other bytes than PUT"
    );

    // ListObjectsV2 with a prefix.
    let (status, body, out) = curl_status(&s3, &[&s3.url("/pgbr?list-type=2&prefix=dir%2F")]);
    assert_eq!(status, 200, "ListObjectsV2:\n{out}");
    assert!(
        body.contains("<Key>dir/obj.bin</Key>")
            && body.contains(&format!("<Size>{}</Size>", payload.len()))
            && body.contains("<KeyCount>1</KeyCount>"),
        "ListObjectsV2 body: {body}"
    );

    // GET of a key that is only a prefix ("dir"): S3's 404 NoSuchKey (the proxy's fix for
    // s3s-fs, which says 500 there).
    let (status, body, out) = curl_status(&s3, &[&s3.url("/pgbr/dir")]);
    assert!(
        status == 404 && body.contains("<Code>NoSuchKey</Code>"),
        "GET of a prefix:\n{out}"
    );

    // A wrong secret is refused by s3s-fs itself (the signature is really checked).
    let out = harness::run(
        std::process::Command::new("curl")
            .args([
                "-sS",
                "-w",
                "\n%{http_code}",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
            ])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .args(["--user", &format!("{}:wrong", s3.key()), "--cacert"])
            .arg(s3.ca_file())
            .arg(&obj),
    );
    assert!(
        out.stdout.ends_with("\n403") && out.stdout.contains("SignatureDoesNotMatch"),
        "GET with a wrong secret:\n{out}"
    );
    // Without the CA, curl rejects the self-signed certificate (60: peer certificate).
    let out = harness::run(std::process::Command::new("curl").args(["-sS", &obj]));
    assert_eq!(out.status, 60, "curl without --cacert:\n{out}");

    // Each injected error reaches the client with its status and S3 XML body, once.
    for (kind, status_want, code) in [
        (FaultKind::SlowDown, 503, "SlowDown"),
        (FaultKind::InternalError, 500, "InternalError"),
        (FaultKind::AccessDenied, 403, "AccessDenied"),
    ] {
        s3.faults().fail_next(kind, 1);
        let (status, body, out) = curl_status(&s3, &[&obj]);
        assert_eq!(status, status_want, "GET with {kind:?} injected:\n{out}");
        assert!(
            body.starts_with("<?xml")
                && body.contains(&format!("<Code>{code}</Code>"))
                && body.contains("<Resource>/pgbr/dir/obj.bin</Resource>"),
            "{kind:?} body: {body}"
        );
        assert_eq!(s3.faults().pending(), 0);
        assert!(
            get(&s3) == payload,
            "GET after {kind:?} returned other bytes"
        );
    }

    // Keep-alive: an error answer and then a passing one on the same connection.
    s3.faults().fail_next(FaultKind::SlowDown, 1);
    let out = harness::run(s3.curl(&[
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{num_connects}\n",
        &obj,
        &obj,
    ]));
    assert_eq!(
        out.stdout, "503 1\n200 0\n",
        "two GETs on one connection:\n{out}"
    );

    // Rules by method and target: GETs pass, the next two PUTs under dir/ get 503 (with
    // Expect: 100-continue: answered without reading the body, connection closed), the third
    // PUT stores new bytes.
    s3.faults().inject(
        Fault::new(FaultKind::SlowDown, 2)
            .method("PUT")
            .target_contains("/pgbr/dir/"),
    );
    assert!(get(&s3) == payload);
    let payload2 = pseudo_random(payload.len(), 0xbeef);
    std::fs::write(&src, &payload2).unwrap();
    for attempt in 1..=2 {
        let (status, body, out) = put(&s3);
        assert_eq!(
            status, 503,
            "PUT attempt {attempt} with SlowDown injected:\n{out}"
        );
        assert!(body.contains("<Code>SlowDown</Code>"), "body: {body}");
        assert!(get(&s3) == payload, "a refused PUT changed the object");
    }
    let (status, _, out) = put(&s3);
    assert_eq!(status, 200, "PUT after the faults:\n{out}");
    assert!(get(&s3) == payload2, "GET after the second PUT");

    // A chunked request body (no Expect: 100-continue) that gets a fault: the proxy reads the
    // whole body and answers, and the connection serves the next request.
    let small = dir.join("small.bin");
    std::fs::write(&small, pseudo_random(5000, 7)).unwrap();
    s3.faults().inject(
        Fault::new(FaultKind::InternalError, 1)
            .method("PUT")
            .target_contains("chunked"),
    );
    let mut args: Vec<String> = [
        "-X",
        "PUT",
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Expect:",
        "--data-binary",
        &format!("@{}", small.display()),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{num_connects}\n",
        &s3.url("/pgbr/chunked.bin"),
        "--next",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(s3.curl_auth_args());
    args.extend(
        [
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{num_connects}\n",
            &obj,
        ]
        .map(str::to_owned),
    );
    let out = harness::run(s3.curl(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    assert_eq!(
        out.stdout, "500 1\n200 0\n",
        "chunked PUT (faulted), then GET:\n{out}"
    );

    // A dropped connection: no HTTP answer at all, then the next request passes.
    s3.faults().fail_next(FaultKind::Drop, 1);
    let (status, _, out) = curl_status(&s3, &[&obj]);
    assert!(
        status == 0 && !out.success(),
        "GET with the connection dropped:\n{out}"
    );
    assert!(get(&s3) == payload2);

    let seen = s3.faults().requests();
    let faulted: Vec<_> = seen.iter().filter_map(|r| r.fault).collect();
    assert_eq!(
        faulted,
        [
            FaultKind::SlowDown,
            FaultKind::InternalError,
            FaultKind::AccessDenied,
            FaultKind::SlowDown,
            FaultKind::SlowDown,
            FaultKind::SlowDown,
            FaultKind::InternalError,
            FaultKind::Drop
        ],
        "requests seen: {seen:?}"
    );
    assert!(seen.iter().all(|r| r.fault.is_none()
        || r.target == "/pgbr/dir/obj.bin"
        || r.target == "/pgbr/chunked.bin"));

    // Stopped: connections refused (curl 7). Started again: same port, CA and data.
    s3.stop();
    let (status, _, out) = curl_status(&s3, &[&obj]);
    assert!(status == 0 && out.status == 7, "GET while stopped:\n{out}");
    s3.start_again();
    assert!(get(&s3) == payload2, "GET after restart");

    // Paused: TLS still answers, the request hangs until curl's timeout (28).
    s3.pause();
    let (status, _, out) = curl_status(&s3, &["--max-time", "2", &obj]);
    assert!(status == 0 && out.status == 28, "GET while paused:\n{out}");
    s3.resume();
    assert!(get(&s3) == payload2, "GET after resume");
}

/// The fixture serves a real S3 client too: pgBackRest 2.45 with `repo_options()` lists and
/// reads over HTTPS (certificate checked against the CA by name `localhost`), retries an
/// injected 503 SlowDown, and fails on an injected 403.
#[test]
fn s3_server_serves_pgbackrest_2_45_through_faults() {
    use harness::{Fault, FaultKind, S3Server, PGBACKREST};
    harness::require_root();
    let dir = TestDir::new();
    let s3 = S3Server::start(dir.path());
    s3.create_bucket("pgbr-compat");
    let conf = dir.join("pgbackrest.conf");
    harness::write_postgres(
        &conf,
        &format!(
            "[global]\n{}repo1-path=/repo\nlock-path={}\nlog-path={}\nlog-level-console=warn\n\
             log-level-file=off\n",
            s3.repo_options(1, "pgbr-compat"),
            dir.join("lock").display(),
            dir.join("log").display()
        ),
        0o640,
    );
    let conf_arg = format!("--config={}", conf.display());
    let pgbackrest = |args: &[&str]| {
        let mut all = vec![conf_arg.as_str()];
        all.extend_from_slice(args);
        harness::run_as_postgres(PGBACKREST, &all)
    };

    let content = "hello from the S3 fixture\n";
    let src = dir.join("hello.txt");
    std::fs::write(&src, content).unwrap();
    let (status, _, out) = harness::curl_status(
        &s3,
        &[
            "-X",
            "PUT",
            "--data-binary",
            &format!("@{}", src.display()),
            &s3.url("/pgbr-compat/repo/archive/hello.txt"),
        ],
    );
    assert_eq!(status, 200, "PUT through curl:\n{out}");

    let out = pgbackrest(&["repo-ls", "--recurse"]);
    assert!(
        out.success(),
        "pgbackrest repo-ls:\n{out}\n{}\n{:?}",
        s3.log(),
        s3.faults().requests()
    );
    assert_eq!(
        out.stdout, "archive\narchive/hello.txt\n",
        "repo-ls:\n{out}"
    );

    // 503 SlowDown twice: pgBackRest retries and gets the object.
    s3.faults().inject(
        Fault::new(FaultKind::SlowDown, 2)
            .method("GET")
            .target_contains("hello.txt"),
    );
    let out = pgbackrest(&["repo-get", "archive/hello.txt"]).expect_ok("repo-get after 503s");
    assert_eq!(out.stdout, content);
    assert_eq!(s3.faults().pending(), 0, "pgBackRest did not retry");

    // 403 AccessDenied: not retried past; pgBackRest reports the S3 error.
    s3.faults()
        .inject(Fault::new(FaultKind::AccessDenied, 10).method("GET"));
    let out = pgbackrest(&["repo-get", "archive/hello.txt"]);
    assert!(
        !out.success() && out.stderr.contains("403") && out.stderr.contains("AccessDenied"),
        "repo-get with 403 injected:\n{out}"
    );
    s3.faults().clear();
}
