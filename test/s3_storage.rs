//! The S3 storage driver itself against the real S3 server of the harness (s3s-fs behind
//! TLS and the fault proxy): the Storage interface's promises on object storage (listing,
//! atomic appearance at commit, multipart, aborted uploads), retries bounded by io-timeout,
//! and the errors a DBA sees. The commands on S3 are tested in `s3.rs`.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use pg_backrest::error::Kind;
use pg_backrest::storage::s3::{S3Credentials, S3Options, S3Storage, Secret, UriStyle};
use pg_backrest::storage::{read_small, write_small, EntryKind, Storage};

use crate::harness::{self, Fault, FaultKind, S3Server, TestDir};

fn options(s3: &S3Server, bucket: &str, prefix: &str) -> S3Options {
    S3Options {
        bucket: bucket.into(),
        endpoint: s3.host().into(),
        storage_host: None,
        port: Some(s3.port()),
        region: s3.region().into(),
        uri_style: UriStyle::Path,
        credentials: S3Credentials::Shared {
            key: s3.key().into(),
            secret: Secret::new(s3.secret()),
            token: None,
        },
        kms_key_id: None,
        verify_tls: true,
        ca_file: Some(s3.ca_file()),
        ca_path: None,
        chunk_size: 5 << 20,
        prefix: prefix.into(),
        io_timeout: Duration::from_secs(3),
    }
}

fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn read_all(s: &dyn Storage, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    s.open_read(path)
        .unwrap()
        .unwrap_or_else(|| panic!("{path} missing"))
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn objects_appear_whole_at_commit_and_list_as_a_tree() {
    harness::require_root();
    let dir = TestDir::new();
    let s3 = S3Server::start(dir.path());
    s3.create_bucket("pgbr");
    let s = S3Storage::new(&options(&s3, "pgbr", "/repo/main")).unwrap();

    write_small(&s, "archive/db/archive.info", b"[db]\n").unwrap();
    write_small(&s, "archive/db/15-1/0000000100000000/a.gz", b"x").unwrap();
    assert_eq!(
        std::fs::read(s3.data_dir().join("pgbr/repo/main/archive/db/archive.info")).unwrap(),
        b"[db]\n",
        "keys are repo1-path without its leading / and the relative path"
    );
    assert_eq!(s.list("archive/db").unwrap(), vec!["15-1", "archive.info"]);
    assert_eq!(s.list("").unwrap(), vec!["archive"]);
    assert!(
        s.list("backup").unwrap().is_empty(),
        "a missing directory lists empty"
    );
    assert_eq!(
        read_small(&s, "archive/db/archive.info").unwrap().unwrap(),
        b"[db]\n"
    );
    assert!(s.open_read("archive/db/nope").unwrap().is_none());

    let info = s.info("archive/db/archive.info").unwrap().unwrap();
    assert_eq!((info.kind, info.size), (EntryKind::File, 5));
    assert!(
        info.mtime > 1_700_000_000,
        "mtime from Last-Modified: {}",
        info.mtime
    );
    assert_eq!(s.info("archive/db").unwrap().unwrap().kind, EntryKind::Path);
    assert!(s.info("archive/none").unwrap().is_none());
    let listed = s.list_info("archive/db").unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].kind),
        ("15-1", EntryKind::Path)
    );
    assert_eq!(
        (listed[1].name.as_str(), listed[1].size),
        ("archive.info", 5)
    );

    // Multipart: 11 MiB in 5 MiB parts (S3's smallest). Nothing is visible until commit.
    let data = pseudo_random((11 << 20) + 7, 7);
    let mut w = s
        .open_write_named("backup/db/L/pg_data/base/1", "16384")
        .unwrap();
    w.write_all(&data).unwrap();
    assert!(
        s.list("backup/db/L/pg_data/base/1").unwrap().is_empty(),
        "two parts are up, but no object before commit"
    );
    w.commit("16384").unwrap();
    assert!(read_all(&s, "backup/db/L/pg_data/base/1/16384") == data);
    let parts = s3
        .faults()
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.target.contains("partNumber="))
        .count();
    assert_eq!(parts, 3, "11 MiB + 7 in 5 MiB parts");

    // A writer dropped without commit leaves nothing, however many parts it sent.
    let mut w = s
        .open_write_named("backup/db/L/pg_data/base/1", "16385")
        .unwrap();
    w.write_all(&data).unwrap();
    drop(w);
    assert_eq!(s.list("backup/db/L/pg_data/base/1").unwrap(), vec!["16384"]);
    assert!(
        s3.faults()
            .requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.target.contains("uploadId=")),
        "the dropped writer aborted its upload"
    );

    // An empty object, and one written without its name up front (one part at most).
    write_small(&s, "backup/db/L/empty", b"").unwrap();
    assert_eq!(s.info("backup/db/L/empty").unwrap().unwrap().size, 0);
    let mut w = s.open_write("backup/db/L").unwrap();
    w.write_all(b"named late").unwrap();
    w.commit("late").unwrap();
    assert_eq!(read_all(&s, "backup/db/L/late"), b"named late");
    let mut w = s.open_write("backup/db/L").unwrap();
    let e = w.write_all(&data).unwrap_err();
    assert!(e.to_string().contains("before its name is known"), "{e}");

    // Connections are reused: 40 writes, reads (to the end, and stopped short of it) and
    // removes use the pool, not a TCP and TLS handshake each.
    let before = s3.faults().connections();
    for i in 0..10 {
        write_small(&s, &format!("pool/{i}"), b"0123456789").unwrap();
        assert_eq!(
            read_small(&s, &format!("pool/{i}")).unwrap().unwrap(),
            b"0123456789"
        );
        let mut r = s.open_read(&format!("pool/{i}")).unwrap().unwrap();
        r.read_exact(&mut [0u8; 10]).unwrap();
        drop(r);
        s.remove(&format!("pool/{i}")).unwrap();
    }
    let opened = s3.faults().connections() - before;
    assert!(opened <= 2, "40 requests opened {opened} connections");

    // No links on S3.
    assert!(!s.supports_links());

    // remove and remove_tree (batched delete), missing ones are no error.
    s.remove("backup/db/L/late").unwrap();
    s.remove("backup/db/L/late").unwrap();
    s.remove_tree("backup/db").unwrap();
    s.remove_tree("backup/db").unwrap();
    assert!(s.list("backup").unwrap().is_empty());
    assert_eq!(s.list("archive/db").unwrap(), vec!["15-1", "archive.info"]);
    assert_eq!(s.describe("archive/db"), "s3://pgbr/repo/main/archive/db");
}

#[test]
fn server_errors_are_retried_within_io_timeout_and_others_named() {
    harness::require_root();
    let dir = TestDir::new();
    let mut s3 = S3Server::start(dir.path());
    s3.create_bucket("pgbr");
    let s = S3Storage::new(&options(&s3, "pgbr", "/repo")).unwrap();

    // 500 then 503 SlowDown: retried, and the write succeeds.
    s3.faults().fail_next(FaultKind::InternalError, 1);
    s3.faults().fail_next(FaultKind::SlowDown, 1);
    write_small(&s, "a/one", b"1").unwrap();
    assert_eq!(read_small(&s, "a/one").unwrap().unwrap(), b"1");
    // A dropped connection on a read: retried.
    s3.faults()
        .inject(Fault::new(FaultKind::Drop, 2).method("GET"));
    assert_eq!(read_small(&s, "a/one").unwrap().unwrap(), b"1");

    // 403: not retried; the error names the bucket, the key and the status.
    s3.faults()
        .inject(Fault::new(FaultKind::AccessDenied, 1).method("PUT"));
    let e = write_small(&s, "a/two", b"2").unwrap_err();
    assert_eq!(e.kind, Kind::Access, "{e:?}");
    assert!(
        e.message.contains("s3://pgbr/repo/a/two") && e.message.contains("403"),
        "{}",
        e.message
    );
    assert!(s.list("a").unwrap() == vec!["one"], "nothing half-written");

    // A wrong secret: the server's own 403, with a hint about the credentials.
    let mut wrong = options(&s3, "pgbr", "/repo");
    wrong.credentials = S3Credentials::Shared {
        key: s3.key().into(),
        secret: Secret::new("wrong-secret"),
        token: None,
    };
    let e = S3Storage::new(&wrong).unwrap().list("a").unwrap_err();
    assert_eq!(e.kind, Kind::Access, "{e:?}");
    assert!(
        !format!("{e:?}").contains(s3.secret()),
        "no secret in errors"
    );

    // Throttled without end: fails after about io-timeout, saying how often it tried.
    s3.faults().fail_next(FaultKind::SlowDown, 1000);
    let started = Instant::now();
    let e = read_small(&s, "a/one").unwrap_err();
    let took = started.elapsed();
    s3.faults().clear();
    assert!(
        e.message.contains("503") && e.message.contains("attempts"),
        "{}",
        e.message
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(6),
        "retries are bounded by io-timeout (3 s): took {took:?}"
    );

    // A stopped server: connection refused, retried until io-timeout, then HostConnect.
    s3.stop();
    let started = Instant::now();
    let e = read_small(&s, "a/one").unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.kind, Kind::HostConnect, "{e:?}");
    assert!(
        took < Duration::from_secs(6),
        "bounded by io-timeout: {took:?}"
    );
    s3.start_again();
    assert_eq!(read_small(&s, "a/one").unwrap().unwrap(), b"1");

    // A server that accepts but never answers (paused): the same bound.
    s3.pause();
    let started = Instant::now();
    let e = read_small(&s, "a/one").unwrap_err();
    let took = started.elapsed();
    s3.resume();
    assert_eq!(e.kind, Kind::HostConnect, "{e:?}");
    assert!(
        took < Duration::from_secs(8),
        "bounded by io-timeout: {took:?}"
    );
}

#[test]
fn tls_is_verified_unless_turned_off() {
    harness::require_root();
    let dir = TestDir::new();
    let s3 = S3Server::start(dir.path());
    s3.create_bucket("pgbr");
    // The system's CAs do not know the test CA.
    let mut opts = options(&s3, "pgbr", "/repo");
    opts.ca_file = None;
    let e = S3Storage::new(&opts).unwrap().list("").unwrap_err();
    assert_eq!(e.kind, Kind::Crypto, "{e:?}");
    assert!(
        e.hint
            .as_deref()
            .unwrap_or("")
            .contains("repo1-storage-ca-file"),
        "{e:?}"
    );
    // A CA directory.
    let ca_dir = dir.join("ca");
    std::fs::create_dir(&ca_dir).unwrap();
    std::fs::copy(s3.ca_file(), ca_dir.join("test-ca.pem")).unwrap();
    opts.ca_path = Some(ca_dir);
    S3Storage::new(&opts).unwrap().list("").unwrap();
    // Verification off.
    opts.ca_path = None;
    opts.verify_tls = false;
    S3Storage::new(&opts).unwrap().list("").unwrap();
}

#[test]
fn instance_credentials_that_cannot_be_had_are_one_clear_error() {
    harness::require_root();
    let dir = TestDir::new();
    let s3 = S3Server::start(dir.path());
    s3.create_bucket("pgbr");
    // No instance metadata service here (not an EC2 instance): key-type=auto fails once,
    // saying where it looked and what to configure instead.
    let mut opts = options(&s3, "pgbr", "/repo");
    opts.credentials = S3Credentials::Auto { role: None };
    opts.io_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let e = S3Storage::new(&opts).unwrap().list("").unwrap_err();
    assert_eq!(e.kind, Kind::HostConnect, "{e:?}");
    assert!(e.message.contains("instance metadata"), "{}", e.message);
    assert!(
        e.hint
            .as_deref()
            .unwrap_or("")
            .contains("repo1-s3-key-type=shared"),
        "{e:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_read_cut_short_resumes_where_it_was() {
    harness::require_root();
    let dir = TestDir::new();
    let mut s3 = S3Server::start(dir.path());
    s3.create_bucket("pgbr");
    let mut opts = options(&s3, "pgbr", "/repo");
    opts.io_timeout = Duration::from_secs(10);
    let s = S3Storage::new(&opts).unwrap();
    let data = pseudo_random(48 << 20, 11);
    let mut w = s.open_write_named("big", "file").unwrap();
    w.write_all(&data).unwrap();
    w.commit("file").unwrap();

    // The server dies after the first MiB was read, and comes back: the reader asks for the
    // rest and the bytes are the object's.
    let mut r = s.open_read("big/file").unwrap().unwrap();
    let mut got = vec![0u8; 1 << 20];
    r.read_exact(&mut got).unwrap();
    s3.stop();
    s3.start_again();
    r.read_to_end(&mut got).unwrap();
    assert!(
        got.len() == data.len() && got == data,
        "resumed read returned other bytes"
    );
    let gets = s3
        .faults()
        .requests()
        .iter()
        .filter(|q| q.method == "GET" && q.target.contains("big/file"))
        .count();
    assert!(gets >= 2, "the read was resumed with a second GET ({gets})");

    // A ranged read (restore's blocks of a large file): exactly the range, resumed within
    // it after the server comes back; fewer bytes where the object ends, none past it.
    let (a, b) = (5 << 20, 40 << 20);
    let mut r = s.open_read_range("big/file", a, b).unwrap().unwrap();
    let mut got = vec![0u8; 1 << 20];
    r.read_exact(&mut got).unwrap();
    s3.stop();
    s3.start_again();
    r.read_to_end(&mut got).unwrap();
    assert!(
        got[..] == data[a as usize..b as usize],
        "resumed ranged read returned other bytes ({} bytes)",
        got.len()
    );
    let range = |a: u64, b: u64| {
        let mut out = Vec::new();
        s.open_read_range("big/file", a, b)
            .unwrap()
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    assert!(range(47 << 20, 50 << 20)[..] == data[47 << 20..]);
    assert!(range(50 << 20, 51 << 20).is_empty());
    assert!(range(7, 7).is_empty());
    assert!(s.open_read_range("big/none", 0, 10).unwrap().is_none());
}
