//! archive-push and archive-get against a real PostgreSQL 15, with the repository local and
//! over SSH: PostgreSQL's own archiver under pgbench load, byte-identical fetches, and every
//! refusal and hard error a DBA can meet.

use std::fs;
use std::time::Duration;

use crate::fixture::{assert_error, Site};
use crate::harness::{self, chown_postgres, descendants, run_as_postgres, wait_until};

const MISSING: &str = "0000000100000000000000FE";

/// PostgreSQL archives 30+ segments under load; each one fetched back is byte-identical.
pub fn archive_and_fetch_back(site: &Site) {
    site.archive_under_load(31);
    let segments = site.original_segments();
    assert!(
        segments.len() >= 30,
        "only {} segments archived",
        segments.len()
    );
    let fetch_dir = site.dir.mkdir("fetched");
    for seg in &segments {
        assert_eq!(site.stored(seg).len(), 1, "{seg} stored once");
        let dest = fetch_dir.join(seg);
        let out = site.pgbr(&["archive-get", seg, dest.to_str().unwrap()]);
        assert_eq!(out.status, 0, "archive-get {seg}:\n{out}");
        let original = fs::read(site.originals.join(seg)).unwrap();
        assert!(
            fs::read(&dest).unwrap() == original,
            "{seg} differs after archive-get"
        );
    }
    assert!(
        site.temp_files().is_empty(),
        "temp files left: {:?}",
        site.temp_files()
    );
    // Stored compressed, with the repository's modes.
    use std::os::unix::fs::MetadataExt;
    let stored = &site.stored(&segments[0])[0];
    assert!(stored.to_string_lossy().ends_with(".gz"));
    assert_eq!(fs::metadata(stored).unwrap().mode() & 0o777, 0o640);
    assert_eq!(
        fs::metadata(stored.parent().unwrap()).unwrap().mode() & 0o777,
        0o750
    );
    let missing = site.pgbr(&[
        "archive-get",
        MISSING,
        fetch_dir.join("x").to_str().unwrap(),
    ]);
    assert_eq!(missing.status, 1, "missing segment must exit 1:\n{missing}");
    assert!(!fetch_dir.join("x").exists());
}

#[test]
fn postgres_archives_under_load_and_every_segment_comes_back_identical_local() {
    archive_and_fetch_back(&Site::local());
}

#[test]
fn postgres_archives_under_load_and_every_segment_comes_back_identical_over_ssh() {
    let site = Site::remote();
    archive_and_fetch_back(&site);
    // The repository side ran as a separate pg_backrest with its own config and log.
    assert!(site.dir.join("repo-log/main-remote.log").exists());
}

#[test]
fn same_segment_twice_succeeds_and_different_content_is_refused() {
    let site = Site::local();
    let seg = site.one_segment();
    let original = site.originals.join(&seg);
    let again = site.pgbr(&["archive-push", original.to_str().unwrap()]);
    assert_eq!(again.status, 0, "{again}");
    assert!(
        again.stderr.contains("WARN: WAL file '")
            && again
                .stderr
                .contains("already exists in the archive with the same checksum"),
        "{again}"
    );
    let before = site.stored(&seg);
    assert_eq!(before.len(), 1);
    let stored_bytes = fs::read(&before[0]).unwrap();

    // Same name, different content (past the page header, so the header checks pass).
    let altered_dir = site.dir.mkdir("altered");
    let altered = altered_dir.join(&seg);
    let mut data = fs::read(&original).unwrap();
    data[100_000] ^= 0xff;
    fs::write(&altered, data).unwrap();
    chown_postgres(&altered);
    let out = site.pgbr(&["archive-push", altered.to_str().unwrap()]);
    assert_error(
        &out,
        45,
        "already exists in the archive with a different checksum",
    );
    assert_eq!(site.stored(&seg), before, "nothing new stored");
    assert_eq!(
        fs::read(&before[0]).unwrap(),
        stored_bytes,
        "nothing overwritten"
    );
}

#[test]
fn segment_from_another_cluster_or_a_bad_file_is_refused() {
    let site = Site::local();
    // A second, separately initdb'd cluster: its first segment has another system id.
    let other = harness::PgCluster::init(&site.dir.join("other"), &[]);
    let foreign = other.data_dir().join("pg_wal/000000010000000000000001");
    let out = site.pgbr(&["archive-push", foreign.to_str().unwrap()]);
    assert_error(&out, 44, "system-id");
    assert!(site.stored("000000010000000000000001").is_empty());

    let scratch = site.dir.mkdir("bad");
    let short = scratch.join("000000010000000000000077");
    let mut data = fs::read(&foreign).unwrap();
    data.truncate(1 << 20);
    fs::write(&short, &data).unwrap();
    chown_postgres(&short);
    let out = site.pgbr(&["archive-push", short.to_str().unwrap()]);
    assert_error(
        &out,
        29,
        "bytes, but its header says segments are 16777216 bytes",
    );

    let notwal = scratch.join("000000010000000000000078");
    fs::write(&notwal, vec![0u8; 16 << 20]).unwrap();
    chown_postgres(&notwal);
    assert_error(
        &site.pgbr(&["archive-push", notwal.to_str().unwrap()]),
        29,
        "not a valid WAL segment",
    );
    assert_error(
        &site.pgbr(&["archive-push", "/tmp/RECOVERYXLOG"]),
        29,
        "is not a WAL segment",
    );
    assert_error(
        &site.pgbr(&["archive-push", "/nonexistent/000000010000000000000079"]),
        55,
        "unable to open WAL file",
    );
    assert!(site.temp_files().is_empty());
}

#[test]
fn damaged_repository_files_make_archive_get_fail_hard_never_exit_1() {
    let site = Site::local();
    let seg = site.one_segment();
    let stored = site.stored(&seg).remove(0);
    let good = fs::read(&stored).unwrap();
    let dest_dir = site.dir.mkdir("dest");
    let dest = dest_dir.join("RECOVERYXLOG");
    let get = || site.pgbr(&["archive-get", &seg, dest.to_str().unwrap()]);

    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    fs::write(&stored, &flipped).unwrap();
    let out = get();
    assert_eq!(out.status, 29, "corrupt file:\n{out}");
    assert!(!dest.exists(), "no partial destination");

    fs::write(&stored, &good[..good.len() / 2]).unwrap();
    let out = get();
    assert_error(&out, 29, "is damaged");
    assert!(!dest.exists());

    fs::write(&stored, &good).unwrap();
    assert_eq!(get().status, 0);
    assert_eq!(
        fs::read(&dest).unwrap(),
        fs::read(site.originals.join(&seg)).unwrap()
    );

    // A missing destination directory is path-missing, not "not in the archive".
    let out = site.pgbr(&["archive-get", &seg, "/proc/nope/RECOVERYXLOG"]);
    assert_error(&out, 73, "/proc/nope");

    // No archive.info (and no copy): the stanza is missing, which is not "segment missing".
    let info = site.repo.join("archive/main/archive.info");
    fs::rename(&info, site.dir.join("ai")).unwrap();
    fs::rename(
        site.repo.join("archive/main/archive.info.copy"),
        site.dir.join("aic"),
    )
    .unwrap();
    // pgBackRest's archive-get calls both "unable to find a valid repository" (103).
    assert_error(&get(), 103, "has no archive.info");
    // Damaged archive.info with its copy missing.
    fs::write(&info, "[db]\ndb-id=1\n").unwrap();
    assert_error(&get(), 103, "archive.info");
}

#[test]
fn archive_push_killed_mid_write_leaves_no_final_file_and_the_retry_succeeds() {
    let site = Site::local();
    let seg = site.one_segment();
    // A segment big enough to be caught mid-write: the stanza's real header claiming 256 MB
    // segments, followed by incompressible data, compressed at level 9.
    let big = craft_big_segment(&site, &seg, "000000010000000A00000006");
    let mut child = crate::harness::pgbr(&[
        &format!("--config={}", site.conf.display()),
        "--stanza=main",
        "--compress-level=9",
        "archive-push",
        big.to_str().unwrap(),
    ])
    .spawn()
    .unwrap();
    wait_until(
        "a temp file in the repository",
        Duration::from_secs(30),
        || !site.temp_files().is_empty(),
    );
    let pids = descendants(child.id());
    assert!(!pids.is_empty(), "pg_backrest process under runuser");
    crate::harness::signal(&pids, "KILL");
    let _ = child.wait();
    assert!(
        site.stored("000000010000000A00000006").is_empty(),
        "no file under a final name"
    );
    assert!(
        !site.temp_files().is_empty(),
        "the kill left only a temp file"
    );

    let out = site.pgbr(&["archive-push", big.to_str().unwrap()]);
    assert_eq!(out.status, 0, "retry:\n{out}");
    let dest = site.dir.join("fetched-big");
    let get = site.pgbr(&[
        "archive-get",
        "000000010000000A00000006",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(get.status, 0, "{get}");
    assert!(fs::read(&dest).unwrap() == fs::read(&big).unwrap());
}

/// Writes a 256 MB segment named `name` whose header is the stanza's (from `real_segment`),
/// with its segment size patched to 256 MB and its page address to the one `name` implies
/// (so `name` must be a valid name for 256 MB segments: at most 16 segments per log), and
/// pseudo-random content after the first page.
pub fn craft_big_segment(site: &Site, real_segment: &str, name: &str) -> std::path::PathBuf {
    let dir = site.dir.mkdir("big");
    let path = dir.join(name);
    let mut header = fs::read(site.originals.join(real_segment)).unwrap();
    header.truncate(8192);
    header[32..36].copy_from_slice(&(256u32 << 20).to_le_bytes());
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    assert!(seg < 16, "{name} is not a 256 MB segment name");
    header[8..16].copy_from_slice(&((log << 32) | (seg << 28)).to_le_bytes());
    let mut data = header;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while data.len() < 256 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    fs::write(&path, &data).unwrap();
    chown_postgres(&path);
    path
}

#[test]
fn log_file_has_time_pid_and_level_and_an_unwritable_log_path_only_warns() {
    let site = Site::new(crate::fixture::Options {
        global: "log-level-file=detail",
        ..Default::default()
    });
    let seg = site.one_segment();
    let log = fs::read_to_string(site.dir.join("log/main-archive-push.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("pushed WAL file '{seg}'")))
        .expect("push logged");
    // 2026-11-22 04:01:56.997 P15650   INFO: pushed ...
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(parts[0].len(), 10, "{line}");
    assert!(parts[1].contains(':') && parts[1].contains('.'), "{line}");
    assert!(
        parts[2].starts_with('P') && parts[2][1..].parse::<u32>().is_ok(),
        "{line}"
    );
    assert_eq!(parts[3], "INFO:", "{line}");

    // A log path that cannot be created: the push still succeeds, with a warning.
    let blocker = site.dir.join("blocker");
    fs::write(&blocker, "").unwrap();
    let original = site.originals.join(&seg);
    let out = site.pgbr(&[
        &format!("--log-path={}/sub", blocker.display()),
        "archive-push",
        original.to_str().unwrap(),
    ]);
    assert_eq!(out.status, 0, "{out}");
    assert!(
        out.stderr.contains("WARN: unable to create log path"),
        "{out}"
    );
}

#[test]
fn history_partial_and_backup_files_round_trip() {
    let site = Site::local();
    let seg = site.one_segment();
    let scratch = site.dir.mkdir("special");
    let files = [
        (
            "00000002.history".to_string(),
            b"1\t0/3000000\tno recovery target specified\n".to_vec(),
        ),
        (
            "000000010000000000000099.00000028.backup".to_string(),
            b"START WAL LOCATION: 0/99000028 (file 000000010000000000000099)\n\
              STOP WAL LOCATION: 0/99000100 (file 000000010000000000000099)\n"
                .to_vec(),
        ),
        (
            format!("{seg}.partial"),
            fs::read(site.originals.join(&seg)).unwrap(),
        ),
    ];
    for (name, data) in &files {
        let path = scratch.join(name);
        fs::write(&path, data).unwrap();
        chown_postgres(&path);
        let out = site.pgbr(&["archive-push", path.to_str().unwrap()]);
        assert_eq!(out.status, 0, "push {name}:\n{out}");
        let dest = scratch.join(format!("{name}.back"));
        let out = site.pgbr(&["archive-get", name, dest.to_str().unwrap()]);
        assert_eq!(out.status, 0, "get {name}:\n{out}");
        assert_eq!(&fs::read(&dest).unwrap(), data, "{name}");
    }
    // History files keep their plain name, directly in the archive id directory.
    assert!(site.archive_id_dir().join("00000002.history").is_file());
    let changed = scratch.join("00000002.history");
    fs::write(&changed, b"1\t0/4000000\tother\n").unwrap();
    assert_error(
        &site.pgbr(&["archive-push", changed.to_str().unwrap()]),
        45,
        "different checksum",
    );
    let out = site.pgbr(&[
        "archive-get",
        "00000003.history",
        scratch.join("h").to_str().unwrap(),
    ]);
    assert_eq!(out.status, 1, "{out}");
}

#[test]
fn relative_paths_are_relative_to_the_working_directory_never_pg1_path() {
    let site = Site::local();
    let seg = site.one_segment();
    let bin = crate::harness::bin();
    // PostgreSQL runs the commands in the data directory and passes pg_wal/NAME.
    let pgdata = site.cluster.data_dir();
    let out = run_as_postgres(
        "sh",
        &[
            "-c",
            &format!(
                "cd {} && {} --config={} --stanza=main archive-push pg_wal/{seg}",
                pgdata.display(),
                bin.display(),
                site.conf.display()
            ),
        ],
    );
    assert_eq!(out.status, 0, "{out}");
    assert!(out.stderr.contains("same checksum"), "{out}");
    // A restored copy recovering with the original's config: the segment lands in the copy's
    // pg_wal (the working directory), never in pg1-path's.
    let copy = site.dir.mkdir("copy");
    std::fs::create_dir_all(copy.join("pg_wal")).unwrap();
    chown_postgres(&copy.join("pg_wal"));
    let out = run_as_postgres(
        "sh",
        &[
            "-c",
            &format!(
                "cd {} && {} --config={} --stanza=main archive-get {seg} pg_wal/RECOVERYXLOG",
                copy.display(),
                bin.display(),
                site.conf.display()
            ),
        ],
    );
    assert_eq!(out.status, 0, "{out}");
    assert!(copy.join("pg_wal/RECOVERYXLOG").is_file());
    assert!(
        !pgdata.join("pg_wal/RECOVERYXLOG").exists(),
        "wrote into pg1-path's pg_wal"
    );
}
