//! Delta restore onto an existing data directory (only what differs is copied, what the
//! backup does not list is removed, a running or foreign cluster is refused), a restore that
//! stops half-way leaving a directory PostgreSQL refuses to start, and a tampered manifest
//! (with a correct checksum) that tries to write outside the data directory.
//!
//! pgbench_accounts (scale 2: 26 MiB) is stored with a block index (issue 17): restore and
//! delta restore handle it block by block, which the first two tests show (blocks restored,
//! blocks rewritten in place, the others left alone, a damaged block or index refused).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use crate::backup::Restored;
use crate::fixture::{assert_error, label_of, Site};
use crate::harness::{self, chown_postgres};

fn delta_line(site: &Site) -> String {
    let log = fs::read_to_string(site.dir.join("log/main-restore.log")).unwrap();
    log.lines()
        .rev()
        .find(|l| l.contains("delta restore: "))
        .expect("delta line")
        .to_string()
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

fn mtime_of(path: &Path) -> (i64, i64) {
    let m = fs::metadata(path).unwrap();
    (m.mtime(), m.mtime_nsec())
}

fn ctime_of(path: &Path) -> (i64, i64) {
    let m = fs::metadata(path).unwrap();
    (m.ctime(), m.ctime_nsec())
}

/// The manifest's JSON line of `key` in backup `label`.
fn manifest_line(site: &Site, label: &str, key: &str) -> String {
    let manifest = site
        .repo
        .join(format!("backup/main/{label}/backup.manifest"));
    fs::read_to_string(manifest)
        .unwrap()
        .lines()
        .find(|l| l.starts_with(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} in the manifest"))
        .to_string()
}

/// The number of blocks of the block index of `key` in backup `label` (panics without one).
fn blocks_of(site: &Site, label: &str, key: &str) -> usize {
    let line = manifest_line(site, label, key);
    let (_, value) = line.split_once('=').unwrap();
    let v: serde_json::Value = serde_json::from_str(value).unwrap();
    v["block-index"]["offset"]
        .as_array()
        .unwrap_or_else(|| panic!("{key} has no block index: {line}"))
        .len()
}

/// The block of `relation`'s block index in backup `label` whose stored bytes hold
/// `stored_offset`.
fn damaged_block_of(site: &Site, label: &str, relation: &str, stored_offset: u64) -> usize {
    let line = manifest_line(site, label, &format!("pg_data/{relation}"));
    let (_, value) = line.split_once('=').unwrap();
    let v: serde_json::Value = serde_json::from_str(value).unwrap();
    let offsets: Vec<u64> = v["block-index"]["offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect();
    offsets.iter().filter(|&&o| o <= stored_offset).count() - 1
}

/// Temp files a restore left in `dir`.
fn temp_files_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".pgbr-tmp."))
                .collect()
        })
        .unwrap_or_default()
}

fn count_before(line: &str, marker: &str) -> u64 {
    let i = line
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {line}"));
    line[..i]
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap()
}

/// Every regular file under `dir`, relative path → SHA-1 of its content, except
/// postgresql.auto.conf, which each restore stamps with its own time.
fn tree(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() && !p.ends_with("postgresql.auto.conf") {
                let sum = hex::encode(Sha1::digest(fs::read(&p).unwrap()));
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), sum));
            }
        }
    }
    out.sort();
    out
}

/// A site with a pgbench cluster of scale 2, its accounts' count and balance sum, and a full
/// backup whose WAL is archived.
fn full_backup_of_pgbench() -> (Site, String, String) {
    let site = Site::local();
    site.cluster.pgbench(&["-i", "-q", "-s", "2"]);
    let expected = site
        .cluster
        .psql("select count(*), sum(abalance) from pgbench_accounts");
    let out = site.pgbr(&["backup", "--type=full", "--start-fast"]);
    assert_eq!(out.status, 0, "{out}");
    let label = label_of(&out);
    site.one_segment();
    (site, expected, label)
}

#[test]
fn delta_restore_copies_only_what_changed_and_removes_what_the_backup_lacks() {
    let (site, expected, label) = full_backup_of_pgbench();

    let detail = "--log-level-file=detail";
    let copy = Restored::restore(&site, "delta", Some(&label), &[detail]);
    let fresh = tree(&copy.data);
    let relation = site
        .cluster
        .psql("select pg_relation_filepath('pgbench_accounts')");
    let changed = copy.data.join(&relation);
    // Restored block by block, byte for byte what was backed up.
    let key = format!("pg_data/{relation}");
    let blocks = blocks_of(&site, &label, &key);
    assert!(blocks >= 4, "{blocks} blocks");
    let log = fs::read_to_string(site.dir.join("log/main-restore.log")).unwrap();
    assert!(
        log.contains(&format!(
            "restored '{}' in {blocks} blocks",
            changed.display()
        )),
        "{log}"
    );
    let mut bytes = fs::read(&changed).unwrap();
    assert!(
        manifest_line(&site, &label, &key).contains(&format!(
            "\"checksum\":\"{}\"",
            hex::encode(Sha1::digest(&bytes))
        )),
        "restored bytes differ from the backup's"
    );
    // Two of its blocks change: the second in its first pages (found by comparing them with
    // the stored block), the last one past them (found by the block's SHA-1 only).
    assert!(bytes.len() > 9 << 20, "{} bytes", bytes.len());
    let last = bytes.len() - 100;
    bytes[last] ^= 0xff;
    bytes[(8 << 20) + 5000] ^= 0xff;
    let last_block = bytes.len() as u64 - ((blocks as u64 - 1) << 23);
    fs::write(&changed, bytes).unwrap();
    let inode = fs::metadata(&changed).unwrap().ino();
    fs::remove_file(copy.data.join("PG_VERSION")).unwrap();
    fs::write(copy.data.join("base/stray-file"), b"not in the backup").unwrap();
    chown_postgres(&copy.data.join("base/stray-file"));
    harness::mkdir_postgres(&copy.data.join("stray-dir/sub"));
    chown_postgres(&copy.data.join("stray-dir"));

    let pg1 = format!("--pg1-path={}", copy.data.display());
    let set = format!("--set={label}");
    let out = site.pgbr(&["restore", "--delta", &pg1, &set, detail]);
    assert_eq!(out.status, 0, "{out}");
    let line = delta_line(&site);
    // Only the two changed blocks were rewritten, in place.
    let log = fs::read_to_string(site.dir.join("log/main-restore.log")).unwrap();
    let rewrote = format!(
        "delta restore rewrote 2 of {blocks} blocks ({} bytes) of '{}'",
        (8 << 20) + last_block,
        changed.display()
    );
    assert!(log.contains(&rewrote), "{rewrote}\n{log}");
    assert_eq!(
        fs::metadata(&changed).unwrap().ino(),
        inode,
        "mended in place"
    );
    // The changed relation, PG_VERSION, postgresql.auto.conf (rewritten by the first
    // restore's recovery settings) and pg_control (removed first, restored last) are copied;
    // everything else is kept.
    assert_eq!(count_before(&line, " restored"), 4, "{line}");
    assert!(count_before(&line, " files kept") > 900, "{line}");
    // The stray file and directory, and the first restore's recovery.signal (never part of a
    // backup; written again with the recovery settings).
    assert_eq!(
        count_before(&line, " unlisted entries removed"),
        3,
        "{line}"
    );
    let after = tree(&copy.data);
    let differing: Vec<_> = after
        .iter()
        .filter(|e| !fresh.contains(e))
        .chain(fresh.iter().filter(|e| !after.contains(e)))
        .map(|e| &e.0)
        .collect();
    assert!(
        differing.is_empty(),
        "the delta-restored directory differs from a fresh restore in {differing:?}"
    );

    // Nothing changed since but one file's mode and another's mtime: only the recovery
    // settings file differs again, and pg_control is rewritten as every delta restore does.
    // The two attributes are put back; every other kept file is left alone, its inode not
    // even written (its ctime stays).
    let branches = copy.data.join(
        site.cluster
            .psql("select pg_relation_filepath('pgbench_branches')"),
    );
    let tellers = copy.data.join(
        site.cluster
            .psql("select pg_relation_filepath('pgbench_tellers')"),
    );
    let untouched = copy.data.join(&relation);
    let (branches_mode, tellers_mtime) = (mode_of(&branches), mtime_of(&tellers));
    fs::set_permissions(&branches, fs::Permissions::from_mode(0o644)).unwrap();
    fs::File::options()
        .write(true)
        .open(&tellers)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))
        .unwrap();
    let untouched_ctime = ctime_of(&untouched);
    let out = site.pgbr(&["restore", "--delta", &pg1, &set]);
    assert_eq!(out.status, 0, "{out}");
    assert_eq!(
        count_before(&delta_line(&site), " restored"),
        2,
        "{}",
        delta_line(&site)
    );
    assert_eq!(mode_of(&branches), branches_mode, "mode put back");
    assert_eq!(mtime_of(&tellers), tellers_mtime, "mtime put back");
    assert_eq!(
        ctime_of(&untouched),
        untouched_ctime,
        "a kept file that was right was written to"
    );

    copy.start_and_wait_promoted();
    assert_eq!(
        copy.psql("select count(*), sum(abalance) from pgbench_accounts"),
        expected
    );

    // A running cluster is refused, with or without --force.
    assert_error(
        &site.pgbr(&["restore", "--delta", &pg1, &set]),
        38,
        "holds a running cluster",
    );
    assert_error(
        &site.pgbr(&["restore", "--delta", "--force", &pg1, &set]),
        38,
        "holds a running cluster",
    );
    copy.stop();

    // A directory that is not a data directory is refused: delta would wipe it.
    let stranger = site.dir.mkdir("not-a-cluster");
    fs::write(stranger.join("precious.txt"), b"keep me").unwrap();
    let stranger_pg1 = format!("--pg1-path={}", stranger.display());
    assert_error(
        &site.pgbr(&["restore", "--delta", &stranger_pg1, &set]),
        40,
        "does not look like a PostgreSQL data directory",
    );
    assert!(stranger.join("precious.txt").exists());

    // Another cluster's directory is refused unless forced.
    let other = harness::PgCluster::init(&site.dir.join("other"), &[]);
    let other_pg1 = format!("--pg1-path={}", other.data_dir().display());
    assert_error(
        &site.pgbr(&["restore", "--delta", &other_pg1, &set]),
        58,
        "holds another cluster",
    );
    let out = site.pgbr(&["restore", "--delta", "--force", &other_pg1, &set]);
    assert_eq!(out.status, 0, "{out}");
    let control = hex::encode(Sha1::digest(
        fs::read(other.data_dir().join("global/pg_control")).unwrap(),
    ));
    assert_eq!(
        &control,
        &fresh
            .iter()
            .find(|(p, _)| p == Path::new("global/pg_control"))
            .unwrap()
            .1,
        "forced delta restored the backup's pg_control"
    );
}

/// Re-renders a manifest canonically (sections and keys sorted, as pg_backrest writes them)
/// with a fresh checksum, as an attacker with write access to the repository could.
/// A restore stopped half-way (here by a damaged stored file; SIGKILL or a power loss stop it
/// at other points, with the same result) leaves no global/pg_control, so PostgreSQL refuses
/// the directory instead of starting a cluster with files missing; a delta restore removes
/// the old pg_control before it changes anything. Once the repository is repaired, a delta
/// restore finishes the job.
#[test]
fn an_unfinished_restore_leaves_no_pg_control_and_delta_finishes_it() {
    let (site, expected, label) = full_backup_of_pgbench();
    let (relation, stored) = site.stored_relation(&label, "pgbench_accounts");
    let good = fs::read(&stored).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;

    let data = site.dir.mkdir("half").join("pgdata");
    let pg1 = format!("--pg1-path={}", data.display());
    let set = format!("--set={label}");
    let refuses_to_start = |when: &str| {
        assert!(
            !data.join("global/pg_control").exists(),
            "{when}: pg_control must not be there"
        );
        let out = harness::run_as_postgres(
            format!("{}/pg_ctl", harness::PG_BIN),
            &["-D", &data.display().to_string(), "-w", "-t", "20", "start"],
        );
        assert!(!out.success(), "{when}: PostgreSQL started:\n{out}");
        assert!(!data.join("postmaster.pid").exists(), "{when}");
    };

    fs::write(&stored, &bad).unwrap();
    let out = site.pgbr(&["restore", &pg1, &set, "--process-max=2"]);
    assert_error(&out, 29, &format!("of stored file '{}'", stored.display()));
    assert!(data.join("base").is_dir(), "the restore had begun");
    let relation_dir = data.join(&relation).parent().unwrap().to_path_buf();
    assert!(
        !data.join(&relation).exists(),
        "a damaged file under its name"
    );
    assert!(temp_files_in(&relation_dir).is_empty(), "temp file left");
    refuses_to_start("plain restore stopped");

    // A block index that does not describe the stored file (its checksum of block 1, its
    // offset of block 2, as a tamperer with a correct manifest checksum could leave it) is
    // refused the same way: nothing written under the file's name.
    fs::write(&stored, &good).unwrap();
    let manifest = site
        .repo
        .join(format!("backup/main/{label}/backup.manifest"));
    let original = fs::read_to_string(&manifest).unwrap();
    let line = manifest_line(&site, &label, &format!("pg_data/{relation}"));
    let (_, value) = line.split_once('=').unwrap();
    let v: serde_json::Value = serde_json::from_str(value).unwrap();
    let sums = v["block-index"]["checksum"].as_str().unwrap().to_string();
    let offset2 = v["block-index"]["offset"][2].as_u64().unwrap();
    // Block 1's first hex digit: XXH3-128 sums are 32 hex digits each.
    assert_eq!(v["block-index"]["checksum-type"], "xxh3-128");
    let mut other_sums = sums.clone().into_bytes();
    other_sums[32] = if other_sums[32] == b'0' { b'1' } else { b'0' };
    let tampered = [
        (
            "checksum",
            line.replace(&sums, std::str::from_utf8(&other_sums).unwrap()),
            "block 1 of stored file",
        ),
        (
            "offset",
            line.replace(&format!(",{offset2},"), &format!(",{},", offset2 + 3)),
            "of stored file",
        ),
    ];
    for (what, bad_line, message) in tampered {
        assert_ne!(bad_line, line, "{what} not changed");
        let doctored = rechecksum(&original.replace(&line, &bad_line));
        for path in [&manifest, &manifest.with_extension("manifest.copy")] {
            fs::write(path, &doctored).unwrap();
            chown_postgres(path);
        }
        let dest = site.dir.mkdir(format!("tampered-{what}")).join("pgdata");
        let out = site.pgbr(&[
            "restore",
            &set,
            "--process-max=2",
            &format!("--pg1-path={}", dest.display()),
        ]);
        assert_error(&out, 29, message);
        assert!(
            out.stderr.contains(&format!("{relation}.gz")),
            "{what}: {out}"
        );
        assert!(
            !dest.join(&relation).exists(),
            "{what}: a wrong file restored"
        );
        let dir = dest.join(&relation).parent().unwrap().to_path_buf();
        assert!(temp_files_in(&dir).is_empty(), "{what}: temp file left");
        assert!(!dest.join("global/pg_control").exists(), "{what}");
    }
    for path in [&manifest, &manifest.with_extension("manifest.copy")] {
        fs::write(path, &original).unwrap();
        chown_postgres(path);
    }

    let out = site.pgbr(&["restore", "--delta", &pg1, &set]);
    assert_eq!(out.status, 0, "{out}");
    assert!(data.join("global/pg_control").exists());

    // The copy now differs in the damaged relation, in the block whose stored bytes are
    // damaged, so the delta restore must fetch that block. (A delta restore reads only the
    // blocks that differ: damage elsewhere in the stored file goes unnoticed there, as in a
    // file that is kept; verify finds it.)
    let local = data.join(&relation);
    let mut bytes = fs::read(&local).unwrap();
    let damaged_block = damaged_block_of(&site, &label, &relation, mid as u64);
    bytes[(damaged_block << 23) + 100_000] ^= 0xff;
    fs::write(&local, bytes).unwrap();
    fs::write(&stored, &bad).unwrap();
    let out = site.pgbr(&["restore", "--delta", &pg1, &set]);
    assert_error(
        &out,
        29,
        &format!(
            "block {damaged_block} of stored file '{}'",
            stored.display()
        ),
    );
    refuses_to_start("delta restore stopped");

    fs::write(&stored, &good).unwrap();
    let copy = Restored::restore(&site, "half", Some(&label), &["--delta"]);
    copy.start_and_wait_promoted();
    assert_eq!(
        copy.psql("select count(*), sum(abalance) from pgbench_accounts"),
        expected
    );
}

/// `text` (an info file or manifest) with its `backrest-checksum` recomputed, as a tamperer
/// would leave it (with pgBackRest's checksum, through the codec both tools share).
pub fn rechecksum(text: &str) -> String {
    let (doc, _) = pg_backrest::codec::parse_unverified(text).expect("a metadata file");
    let version = doc.backrest_version().unwrap_or_default();
    String::from_utf8(doc.render_as(&version)).unwrap()
}

#[test]
fn a_tampered_manifest_cannot_write_outside_the_data_directory() {
    let site = Site::local();
    let out = site.pgbr(&["backup", "--type=full", "--start-fast"]);
    let label = label_of(&out);
    let manifest = site
        .repo
        .join(format!("backup/main/{label}/backup.manifest"));
    let original = fs::read_to_string(&manifest).unwrap();
    let victim = site.dir.join("victim");
    let entry = original
        .lines()
        .find(|l| l.starts_with("pg_data/PG_VERSION="))
        .unwrap()
        .to_string();
    let value = entry.split_once('=').unwrap().1.to_string();
    let attacks = [
        (
            "a ../ key",
            format!("pg_data/../../victim/PG_VERSION={value}"),
        ),
        (
            "an absolute key",
            format!("{}/PG_VERSION={value}", victim.display()),
        ),
    ];
    for (what, line) in attacks {
        let doctored = rechecksum(&original.replace(&entry, &format!("{entry}\n{line}")));
        for path in [&manifest, &manifest.with_extension("manifest.copy")] {
            fs::write(path, &doctored).unwrap();
            chown_postgres(path);
        }
        let dest = site.dir.join(format!("restore-{}", what.len()));
        let out = site.pgbr(&["restore", &format!("--pg1-path={}", dest.display())]);
        assert_error(&out, 29, "is not inside the backup");
        assert!(!victim.exists(), "{what}: wrote outside the data directory");
        assert!(!dest.exists(), "{what}: restored anything at all");
    }
    // A link pointing anywhere but a tablespace is refused too.
    let doctored = rechecksum(&original.replace("[target:path]", "[target:link]\npg_data/base={\"destination\":\"/etc\",\"group\":\"postgres\",\"user\":\"postgres\"}\n\n[target:path]"));
    fs::write(&manifest, &doctored).unwrap();
    let out = site.pgbr(&[
        "restore",
        &format!("--pg1-path={}", site.dir.join("r3").display()),
    ]);
    assert_error(&out, 29, "is not a tablespace or pg_wal link");
}

/// psql in another database of the original cluster.
fn psql_in(site: &Site, db: &str, sql: &str) -> String {
    let out = harness::run(site.cluster.client_command(
        "psql",
        &[
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ],
    ));
    assert_eq!(out.status, 0, "{out}");
    out.stdout.trim().to_string()
}

#[test]
fn db_include_restores_only_the_chosen_databases() {
    let site = Site::local();
    site.cluster.psql("create database keep");
    site.cluster.psql("create database skip");
    psql_in(
        &site,
        "keep",
        "create table k as select generate_series(1, 5000) g",
    );
    psql_in(
        &site,
        "skip",
        "create table s as select generate_series(1, 5000) g",
    );
    let out = site.pgbr(&["backup", "--type=full", "--start-fast"]);
    assert_eq!(out.status, 0, "{out}");
    let label = label_of(&out);
    site.one_segment();

    let set = format!("--set={label}");
    let dest = site.dir.join("never");
    let pg1 = format!("--pg1-path={}", dest.display());
    assert_error(
        &site.pgbr(&["restore", &pg1, &set, "--db-include=nope"]),
        80,
        "database 'nope' of --db-include is not in the backup",
    );
    assert!(!dest.exists());

    let copy = Restored::restore(&site, "dbinc", Some(&label), &["--db-include=keep"]);
    let log = fs::read_to_string(site.dir.join("log/main-restore.log")).unwrap();
    assert!(
        log.contains("excluded databases restored as sparse zeroed files"),
        "{log}"
    );
    copy.start_and_wait_promoted();
    assert_eq!(
        copy.try_psql_in("keep", "select count(*), sum(g) from k")
            .unwrap(),
        "5000|12502500"
    );
    // The excluded database is listed but holds only zeros (even its catalog: connecting to it
    // would fail); it is dropped without connecting to it.
    assert_eq!(
        copy.psql("select count(*) from pg_database where datname = 'skip'"),
        "1"
    );
    copy.psql("drop database skip");
    assert_eq!(
        copy.psql("select count(*) from pg_database where datname = 'skip'"),
        "0"
    );
    assert_eq!(
        copy.try_psql_in("keep", "select count(*) from k").unwrap(),
        "5000"
    );
    copy.stop();
}
