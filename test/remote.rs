//! The repository on another host, reached through the harness's real sshd: SSH failures and
//! silent peers fail fast with the remote error code and leave nothing behind, errors keep
//! their kind across hosts, and the SSH master connection persists between invocations.

use std::fs;
use std::time::{Duration, Instant};

use crate::archive::craft_big_segment;
use crate::fixture::{assert_error, Options, Site};
use crate::harness::{self, wait_until};

fn control_sockets(site: &Site) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for d in fs::read_dir(site.dir.join("lock"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if d.file_name().to_string_lossy().starts_with("ssh-") {
            for c in fs::read_dir(d.path()).into_iter().flatten().flatten() {
                let ctl = c.path().join("master");
                if ctl.exists() {
                    out.push(ctl);
                }
            }
        }
    }
    out
}

#[test]
fn a_silent_peer_fails_with_the_remote_code_within_io_timeout_and_recovery_follows() {
    let mut site = Site::new(Options {
        remote: true,
        global: "io-timeout=3",
        ..Default::default()
    });
    let seg = site.one_segment();
    let dest = site.dir.join("dest");
    let get = |site: &Site| site.pgbr(&["archive-get", &seg, dest.to_str().unwrap()]);
    assert_eq!(get(&site).status, 0);
    fs::remove_file(&dest).unwrap();

    site.sshd.as_mut().unwrap().pause();
    let start = Instant::now();
    let out = get(&site);
    let took = start.elapsed();
    site.sshd.as_mut().unwrap().resume();
    // The TCP connection is made (the kernel accepts it) and then nothing answers: the
    // protocol code, 39 (a refused connection is host-connect, 49, below).
    assert_error(&out, 39, "repo1-host '127.0.0.1'");
    assert!(!dest.exists(), "nothing written on failure");
    // Bounded by io-timeout (3 s) and the connect timeout, not by a TCP or SSH default.
    assert!(
        took < Duration::from_secs(20),
        "took {took:?} with io-timeout=3"
    );

    // The wedged connection was retired: the next command works.
    let out = get(&site);
    assert_eq!(out.status, 0, "{out}");
    assert_eq!(
        fs::read(&dest).unwrap(),
        fs::read(site.originals.join(&seg)).unwrap()
    );
}

#[test]
fn sshd_killed_mid_push_gives_the_remote_code_and_no_final_file_then_the_retry_succeeds() {
    let mut site = Site::new(Options {
        remote: true,
        global: "io-timeout=5",
        ..Default::default()
    });
    let seg = site.one_segment();
    let big = craft_big_segment(&site, &seg, "000000010000000A00000007");
    let mut child = harness::pgbr(&[
        &format!("--config={}", site.conf.display()),
        "--stanza=main",
        "--compress-level=9",
        "archive-push",
        big.to_str().unwrap(),
    ])
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    wait_until(
        "a temp file in the remote repository",
        Duration::from_secs(30),
        || !site.temp_files().is_empty(),
    );
    site.sshd.as_mut().unwrap().stop();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(39), "{stderr}");
    assert!(stderr.starts_with("ERROR: [039]: "), "{stderr}");
    assert!(
        site.stored("000000010000000A00000007").is_empty(),
        "no final name"
    );

    site.sshd.as_mut().unwrap().start_again();
    let out = site.pgbr(&["archive-push", big.to_str().unwrap()]);
    assert_eq!(out.status, 0, "retry:\n{out}");
    let dest = site.dir.join("fetched");
    assert_eq!(
        site.pgbr(&[
            "archive-get",
            "000000010000000A00000007",
            dest.to_str().unwrap()
        ])
        .status,
        0
    );
    assert!(fs::read(&dest).unwrap() == fs::read(&big).unwrap());
}

#[test]
fn unreachable_host_bad_remote_command_and_bad_remote_config_are_remote_errors() {
    let site = Site::remote();
    let dest = site.dir.join("d");
    let get = |extra: &str| {
        site.pgbr(&[
            extra,
            "archive-get",
            "000000010000000000000001",
            dest.to_str().unwrap(),
        ])
    };
    let closed = harness::free_port().to_string();
    assert_error(
        &get(&format!("--repo1-host-port={closed}")),
        49,
        "unable to connect to repo1-host '127.0.0.1'",
    );
    assert_error(
        &get("--repo1-host-cmd=/nonexistent/pg_backrest"),
        39,
        "repo1-host '127.0.0.1'",
    );
    let bad = site.dir.join("bad-repo.conf");
    // An unknown key only warns (as in pgBackRest); a bad value stops the remote side.
    harness::write_postgres(&bad, "[global]\nrepo1-path=relative\n", 0o640);
    let out = get(&format!("--repo1-host-config={}", bad.display()));
    assert_error(&out, 39, "invalid value 'relative' for option 'repo1-path'");
    assert!(!dest.exists());
}

#[test]
fn errors_keep_their_kind_across_hosts_and_the_ssh_master_persists() {
    let site = Site::remote();
    // check works through the remote repository as it does locally.
    let out = site.pgbr(&["--log-level-console=info", "check"]);
    assert_eq!(out.status, 0, "{out}");
    assert!(
        out.stdout
            .contains("successfully archived to '127.0.0.1:archive/main/15-1/"),
        "{out}"
    );
    let seg = site.one_segment();
    assert_eq!(
        control_sockets(&site).len(),
        1,
        "one persistent master after archiving"
    );
    let original = site.originals.join(&seg);
    let altered = site.dir.join(&seg);
    let mut data = fs::read(&original).unwrap();
    data[200_000] ^= 1;
    fs::write(&altered, data).unwrap();
    harness::chown_postgres(&altered);
    assert_error(
        &site.pgbr(&["archive-push", altered.to_str().unwrap()]),
        45,
        "different checksum",
    );
    // Corrupt stored file over SSH: integrity, not "missing".
    let stored = site.stored(&seg).remove(0);
    let mut bytes = fs::read(&stored).unwrap();
    let n = bytes.len();
    bytes.truncate(n - 100);
    fs::write(&stored, bytes).unwrap();
    assert_eq!(
        site.pgbr(&["archive-get", &seg, site.dir.join("x").to_str().unwrap()])
            .status,
        29
    );
    assert_eq!(
        control_sockets(&site).len(),
        1,
        "commands reused the master"
    );

    // ssh-persist=0: the connection closes with the command.
    let other = Site::new(Options {
        remote: true,
        global: "ssh-persist=0",
        ..Default::default()
    });
    let seg = other.one_segment();
    assert!(other.stored(&seg).len() == 1);
    assert!(
        control_sockets(&other).is_empty(),
        "no master left behind with ssh-persist=0"
    );
}
