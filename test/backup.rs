//! Backup and restore end to end: full, diff and incr backups taken under a pgbench load each
//! restore to a cluster that recovers, promotes and holds the recorded data (checked with
//! pg_amcheck and pg_checksums); the same over SSH; a SIGKILLed backup is resumed; files that
//! vanish during the copy and corrupt pages are handled; locks and unsafe restore targets are
//! refused; the manifest is plain INI that Python's configparser reads.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pg_backrest::pipeline;

use crate::fixture::{assert_error, label_of, Site, STANZA};
use crate::harness::{self, free_port, run, wait_until, PgCluster, PG_BIN};

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Runs a backup with `--start-fast` and the given extra arguments; panics unless it exits 0.
fn backup(site: &Site, args: &[&str]) -> (String, harness::Out) {
    let mut all = vec!["backup", "--start-fast"];
    all.extend_from_slice(args);
    let out = site.pgbr(&all);
    if !out.success() {
        panic!(
            "backup {args:?} failed:\n{out}\n--- main-backup.log (tail) ---\n{}",
            harness::tail(&backup_log(site), 40)
        );
    }
    (label_of(&out), out)
}

fn backup_log(site: &Site) -> String {
    fs::read_to_string(site.dir.join("log").join(format!("{STANZA}-backup.log")))
        .unwrap_or_default()
}

/// The counters of the `backup <label> complete: ...` line in the backup log.
#[derive(Debug, Clone, Copy)]
struct Completion {
    copied: u64,
    referenced: u64,
    resumed: u64,
    vanished: u64,
}

fn completion(site: &Site, label: &str) -> Completion {
    let log = backup_log(site);
    let prefix = format!("backup {label} complete: ");
    let line = log
        .lines()
        .rev()
        .find_map(|l| l.find(&prefix).map(|i| l[i + prefix.len()..].to_string()))
        .unwrap_or_else(|| {
            panic!(
                "no completion line for {label} in log:\n{}",
                harness::tail(&log, 30)
            )
        });
    // "N files copied (B bytes), R referenced from the prior backup, S resumed (SB bytes),
    //  V vanished during the copy; ..."
    let num_before = |marker: &str| -> u64 {
        let at = line
            .find(marker)
            .unwrap_or_else(|| panic!("{marker:?} not in completion line {line:?}"));
        line[..at]
            .rsplit(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no number before {marker:?} in {line:?}"))
    };
    Completion {
        copied: num_before(" files copied"),
        referenced: num_before(" referenced from"),
        resumed: num_before(" resumed ("),
        vanished: num_before(" vanished"),
    }
}

/// A minimal INI reader: section -> (key -> raw value), in file order within a BTreeMap.
fn read_ini(path: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1].to_string();
            out.entry(section.clone()).or_default();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}: line without '=': {line:?}", path.display()));
        out.entry(section.clone())
            .or_default()
            .insert(k.to_string(), v.to_string());
    }
    out
}

/// How many `[target:file]` entries of a (possibly missing) manifest copy are over 1 MB.
fn big_files_in_copy(path: &Path) -> usize {
    let Ok(text) = fs::read_to_string(path) else {
        return 0;
    };
    let mut in_files = false;
    let mut n = 0;
    for line in text.lines() {
        if line.starts_with('[') {
            in_files = line == "[target:file]";
        } else if in_files {
            let size = line
                .split_once("\"size\":")
                .and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|d| d.parse::<u64>().ok())
                .unwrap_or(0);
            if size > 1 << 20 {
                n += 1;
            }
        }
    }
    n
}

/// The stored copy of the largest data file of `label` is standard gzip (GNU gzip reads it)
/// and, the backup using compress-level 6, within 1 % of what `gzip -6` makes of the same
/// bytes: level N means zlib's level N (see src/pipeline/gzip.rs).
fn assert_stored_like_gzip_6(site: &Site, label: &str) {
    fn walk(dir: &Path, best: &mut Option<(u64, PathBuf)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, best);
            } else if path.extension().is_some_and(|e| e == "gz") {
                let len = fs::metadata(&path).unwrap().len();
                if best.as_ref().is_none_or(|(l, _)| len > *l) {
                    *best = Some((len, path));
                }
            }
        }
    }
    let mut best = None;
    walk(&backup_dir(site).join(label).join("pg_data"), &mut best);
    let (stored, path) = best.expect("a stored .gz file");
    let plain = site.dir.join("largest-file");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"gzip -dc "$1" > "$2" && gzip -6 -c "$2" | wc -c"#)
        .args(["sh", p(&path), p(&plain)])
        .output()
        .unwrap();
    assert!(out.status.success(), "gzip: {out:?}");
    let theirs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let original = fs::metadata(&plain).unwrap().len();
    fs::remove_file(&plain).unwrap();
    let ratio = stored as f64 / theirs;
    assert!(
        original > 16 << 20 && (0.99..=1.01).contains(&ratio),
        "{}: {original} bytes stored in {stored}, gzip -6 makes {theirs}: ratio {ratio:.4}",
        path.display()
    );
    // Taken at process-max 2, a file this large is compressed in blocks on two threads past
    // its first PARALLEL_AFTER bytes (pipeline::gzip), and gzip -d above read it as one member. Each
    // block ends with the empty stored block of a sync flush, 00 00 ff ff, which a single
    // stream does not emit; count them to be sure that is the path this test covered.
    let bytes = fs::read(&path).unwrap();
    let flushes = bytes
        .windows(4)
        .filter(|w| *w == [0, 0, 0xff, 0xff])
        .count() as u64;
    let blocks = (original - pipeline::PARALLEL_AFTER) / pipeline::PARALLEL_BLOCK as u64;
    assert!(
        flushes >= blocks,
        "{}: {flushes} sync flushes, expected one per parallel block ({blocks})",
        path.display()
    );
}

/// The original bytes of one block of a block index, decoded alone from the stored file's
/// bytes `stored[start..end]`, as a restore on several threads reads it: raw inflate for gz
/// (a fresh inflater: a reference to anything before the block fails), the frames of the
/// range for lz4 and zst, the bytes themselves for none.
fn decode_block(compress: &str, range: &[u8], len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::with_capacity(len + 1);
    if compress == "gz" {
        // With a sync flush: a block before the last ends on one, without a stream end.
        let mut inflate = flate2::Decompress::new(false);
        loop {
            let before = (inflate.total_in(), inflate.total_out());
            let status = inflate
                .decompress_vec(
                    &range[inflate.total_in() as usize..],
                    &mut out,
                    flate2::FlushDecompress::Sync,
                )
                .unwrap_or_else(|e| panic!("inflating a gz block: {e}"));
            let stalled = (inflate.total_in(), inflate.total_out()) == before;
            if status == flate2::Status::StreamEnd || out.len() == out.capacity() || stalled {
                return out;
            }
        }
    }
    let kind = pipeline::CompressType::parse(compress).expect("a compress type");
    pipeline::decoder(range, kind)
        .unwrap()
        .take(len as u64 + 1)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("decoding a {compress} block: {e}"));
    out
}

/// Checks the block index (issue 17) of every file of backup `label` larger than one index
/// block: present unless the backup is bz2, one block per 8 MiB; each block of the stored file
/// (in this backup or the one it references) decodes alone from its offset to bytes with its
/// XXH3-128 checksum, and the blocks together have the file's SHA-1 and size. Returns the keys
/// of the files with an index.
pub fn check_block_indexes(site: &Site, label: &str) -> Vec<String> {
    use sha1::{Digest, Sha1};
    let manifest = read_ini(&manifest_path(site, label));
    let compress = manifest["backup:option"]["option-compress-type"].trim_matches('"');
    let ext = pipeline::CompressType::parse(compress)
        .expect("a compress type")
        .extension();
    let block_size = pipeline::INDEX_BLOCK as u64;
    let mut indexed = Vec::new();
    for (key, value) in &manifest["target:file"] {
        let entry: serde_json::Value = serde_json::from_str(value).unwrap();
        let size = entry["size"].as_u64().unwrap();
        let index = &entry["block-index"];
        if size <= block_size || compress == "bz2" {
            assert!(index.is_null(), "{label} {key}: {size} bytes of {compress}");
            continue;
        }
        assert!(index.is_object(), "{label} {key}: no block-index: {value}");
        assert_eq!(index["block-size"], block_size, "{key}");
        let offsets: Vec<u64> = index["offset"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_u64().unwrap())
            .collect();
        assert_eq!(index["checksum-type"], "xxh3-128", "{label} {key}");
        let sums = hex::decode(index["checksum"].as_str().unwrap()).unwrap();
        let blocks = size.div_ceil(block_size) as usize;
        assert_eq!((offsets.len(), sums.len()), (blocks, 16 * blocks), "{key}");
        let holder = entry["reference"].as_str().unwrap_or(label);
        let stored = fs::read(backup_dir(site).join(holder).join(format!("{key}{ext}"))).unwrap();
        let mut whole = Sha1::new();
        let mut total = 0u64;
        for (i, &start) in offsets.iter().enumerate() {
            let end = offsets.get(i + 1).map_or(stored.len(), |&e| e as usize);
            let len = block_size.min(size - i as u64 * block_size) as usize;
            let bytes = decode_block(compress, &stored[start as usize..end], len);
            assert_eq!(bytes.len(), len, "{label} {key}: block {i} decoded alone");
            assert_eq!(
                twox_hash::XxHash3_128::oneshot(&bytes).to_be_bytes()[..],
                sums[16 * i..16 * (i + 1)],
                "{label} {key}: XXH3-128 of block {i}"
            );
            whole.update(&bytes);
            total += len as u64;
        }
        assert_eq!(total, size, "{key}");
        assert_eq!(
            Some(hex::encode(whole.finalize()).as_str()),
            entry["checksum"].as_str(),
            "{label} {key}: the blocks make the file"
        );
        indexed.push(key.clone());
    }
    indexed
}

fn backup_dir(site: &Site) -> PathBuf {
    site.repo.join("backup").join(STANZA)
}

fn manifest_path(site: &Site, label: &str) -> PathBuf {
    backup_dir(site).join(label).join("backup.manifest")
}

/// `info --output=json` parsed; the backups of our stanza.
fn info_backups(site: &Site) -> Vec<serde_json::Value> {
    let out = site
        .pgbr(&["info", "--output=json"])
        .expect_ok("info --output=json");
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("info json: {e}\n{out}"));
    let stanzas = v
        .as_array()
        .unwrap_or_else(|| panic!("info json is not an array:\n{out}"));
    let stanza = stanzas
        .iter()
        .find(|s| s["name"] == STANZA)
        .unwrap_or_else(|| panic!("stanza {STANZA} not in info:\n{out}"));
    stanza["backup"].as_array().cloned().unwrap_or_default()
}

/// Load that runs pgbench against the cluster until `stop` is set; returns the error text of
/// the first failing round, if any.
fn pgbench_loop(cluster: &PgCluster, stop: &AtomicBool, rounds: &AtomicU64) -> Option<String> {
    while !stop.load(Ordering::Relaxed) {
        let out = run(cluster.client_command("pgbench", &["-n", "-c", "2", "-T", "2"]));
        if !out.success() {
            return Some(out.to_string());
        }
        rounds.fetch_add(1, Ordering::Relaxed);
    }
    None
}

/// The data a restored copy must hold: pgbench_accounts count and balance sum, history rows.
fn pgbench_state(psql: impl Fn(&str) -> String) -> String {
    psql(
        "select (select count(*) from pgbench_accounts) || ' ' || \
                (select sum(abalance) from pgbench_accounts) || ' ' || \
                (select count(*) from pgbench_history) || ' ' || \
                (select sum(tbalance) from pgbench_tellers) || ' ' || \
                (select sum(bbalance) from pgbench_branches)",
    )
}

/// A cluster started from a restored data directory, on its own port and socket directory.
pub struct Restored {
    pub data: PathBuf,
    pub socket: PathBuf,
    log: PathBuf,
    pub port: u16,
}

impl Restored {
    /// Restores `set` (None: latest) into `<site dir>/<name>` with `extra` args.
    pub fn restore(site: &Site, name: &str, set: Option<&str>, extra: &[&str]) -> Restored {
        let restored = Restored::at(site, name);
        let data = restored.data.clone();
        let pg1 = format!("--pg1-path={}", p(&data));
        let mut args = vec!["restore", pg1.as_str()];
        let set_arg = set.map(|s| format!("--set={s}"));
        if let Some(s) = &set_arg {
            args.push(s);
        }
        args.extend_from_slice(extra);
        let out = site.pgbr(&args);
        if !out.success() {
            panic!(
                "restore {set:?} failed:\n{out}\n--- main-restore.log (tail) ---\n{}",
                harness::tail(
                    &fs::read_to_string(site.dir.join("log").join(format!("{STANZA}-restore.log")))
                        .unwrap_or_default(),
                    30
                )
            );
        }
        assert!(
            data.join("recovery.signal").exists(),
            "restore writes recovery.signal"
        );
        restored
    }

    /// Where `<site dir>/<name>` will hold a restored copy, for a test that restores into
    /// it by other means (pgBackRest itself, say).
    pub fn at(site: &Site, name: &str) -> Restored {
        let data = site.dir.join(name).join("pgdata");
        let parent = site.dir.mkdir(name);
        let socket = site.dir.mkdir(format!("{name}/socket"));
        Restored {
            data,
            socket,
            log: parent.join("pg.log"),
            port: free_port(),
        }
    }

    fn pg_log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts it (archive_mode off, own port and socket) and waits until recovery has
    /// replayed the archive and promoted.
    pub fn start_and_wait_promoted(&self) {
        self.start("archive_mode = off\n");
        self.wait_for("select pg_is_in_recovery()", "f", "promotion");
    }

    /// Waits until `sql` answers `expected` (recovery reaching its target, say).
    pub fn wait_for(&self, sql: &str, expected: &str, what: &str) {
        let start = Instant::now();
        loop {
            if self.try_psql(sql).as_deref() == Ok(expected) {
                return;
            }
            if start.elapsed() > Duration::from_secs(180) {
                panic!(
                    "restored copy never reached {what}:\n{}",
                    harness::tail(&self.pg_log(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts it on its own port and socket, with `extra` postgresql.auto.conf lines.
    pub fn start(&self, extra: &str) {
        let auto = self.data.join("postgresql.auto.conf");
        let mut text = fs::read_to_string(&auto).unwrap_or_default();
        text.push_str(&format!(
            "\n# restored copy under test\nport = {}\nunix_socket_directories = '{}'\n{extra}",
            self.port,
            p(&self.socket)
        ));
        fs::write(&auto, text).unwrap();
        harness::chown_postgres(&auto);
        let out = run(harness::postgres_command(
            format!("{PG_BIN}/pg_ctl"),
            &[
                "-D",
                p(&self.data),
                "-l",
                p(&self.log),
                "-w",
                "-t",
                "120",
                "start",
            ],
        ));
        if !out.success() {
            panic!(
                "pg_ctl start of restored copy failed:\n{out}\n--- log ---\n{}",
                harness::tail(&self.pg_log(), 60)
            );
        }
    }

    fn try_psql(&self, sql: &str) -> Result<String, String> {
        self.try_psql_in("postgres", sql)
    }

    /// psql in database `db` of the restored copy.
    pub fn try_psql_in(&self, db: &str, sql: &str) -> Result<String, String> {
        let port = self.port.to_string();
        let out = run(harness::postgres_command(
            format!("{PG_BIN}/psql"),
            &[
                "-h",
                p(&self.socket),
                "-p",
                &port,
                "-U",
                "postgres",
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
                db,
            ],
        ));
        if out.success() {
            Ok(out.stdout.trim().to_string())
        } else {
            Err(out.to_string())
        }
    }

    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql).unwrap_or_else(|e| {
            panic!(
                "psql on restored copy {sql:?}: {e}\n--- log ---\n{}",
                harness::tail(&self.pg_log(), 30)
            )
        })
    }

    /// pg_amcheck over every database (installing amcheck where missing); panics on findings.
    fn amcheck(&self) {
        let port = self.port.to_string();
        let out = run(harness::postgres_command(
            format!("{PG_BIN}/pg_amcheck"),
            &[
                "-h",
                p(&self.socket),
                "-p",
                &port,
                "-U",
                "postgres",
                "--all",
                "--install-missing",
                "--heapallindexed",
            ],
        ));
        assert!(
            out.success(),
            "pg_amcheck on the restored copy found problems:\n{out}"
        );
    }

    pub fn stop(&self) {
        let out = run(harness::postgres_command(
            format!("{PG_BIN}/pg_ctl"),
            &["-D", p(&self.data), "-w", "-t", "120", "-m", "fast", "stop"],
        ));
        assert!(out.success(), "stopping the restored copy:\n{out}");
    }

    /// pg_checksums --check on the stopped copy.
    fn checksums(&self) {
        let out = run(harness::postgres_command(
            format!("{PG_BIN}/pg_checksums"),
            &["--check", "-D", p(&self.data)],
        ));
        assert!(
            out.success(),
            "pg_checksums --check on the restored copy:\n{out}"
        );
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let _ = run(harness::postgres_command(
                format!("{PG_BIN}/pg_ctl"),
                &[
                    "-D",
                    p(&self.data),
                    "-w",
                    "-t",
                    "60",
                    "-m",
                    "immediate",
                    "stop",
                ],
            ));
        }
    }
}

/// Restores `set`, starts it, checks its pgbench state equals `expected`, runs pg_amcheck,
/// stops it and runs pg_checksums. Removes the copy afterwards.
fn verify_restore(site: &Site, name: &str, set: &str, expected: &str) {
    let r = Restored::restore(site, name, Some(set), &["--process-max=2"]);
    r.start_and_wait_promoted();
    let got = pgbench_state(|sql| r.psql(sql));
    assert_eq!(
        got, expected,
        "restored copy of {set} does not hold the recorded state"
    );
    r.amcheck();
    r.stop();
    r.checksums();
    drop(r);
    let _ = fs::remove_dir_all(site.dir.join(name));
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn full_diff_incr_under_load_each_restore_to_the_recorded_state() {
    let site = Site::local();
    site.cluster.pgbench(&["-i", "-q", "-s", "5"]);
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    let (full, diff, incr, load_error) = std::thread::scope(|s| {
        let load = s.spawn(|| pgbench_loop(&site.cluster, &stop, &rounds));
        let wait_rounds = |n: u64| {
            wait_until("pgbench rounds", Duration::from_secs(60), || {
                rounds.load(Ordering::Relaxed) >= n || load.is_finished()
            })
        };
        wait_rounds(1);
        let (full, _) = backup(&site, &["--type=full", "--process-max=2"]);
        let r = rounds.load(Ordering::Relaxed);
        wait_rounds(r + 1);
        site.cluster
            .psql("create table after_full as select g from generate_series(1, 10000) g");
        let (diff, _) = backup(&site, &["--type=diff", "--process-max=2"]);
        let r = rounds.load(Ordering::Relaxed);
        wait_rounds(r + 1);
        site.cluster
            .psql("create table after_diff as select g from generate_series(1, 10000) g");
        let (incr, _) = backup(&site, &["--type=incr", "--process-max=2"]);
        stop.store(true, Ordering::Relaxed);
        let err = load.join().expect("load thread");
        (full, diff, incr, err)
    });
    assert!(
        load_error.is_none(),
        "pgbench load failed: {}",
        load_error.unwrap()
    );
    assert!(full.ends_with('F'), "{full}");
    assert!(
        diff.starts_with(&format!("{}_", &full[..16])) && diff.ends_with('D'),
        "{diff}"
    );
    assert!(
        incr.starts_with(&format!("{}_", &full[..16])) && incr.ends_with('I'),
        "{incr}"
    );

    let c_full = completion(&site, &full);
    let c_diff = completion(&site, &diff);
    let c_incr = completion(&site, &incr);
    assert!(
        c_full.copied > 0 && c_full.referenced == 0,
        "full: {c_full:?}"
    );
    assert!(
        c_diff.referenced > 0,
        "diff references unchanged files of the full: {c_diff:?}"
    );
    assert!(
        c_incr.referenced > 0,
        "incr references unchanged files: {c_incr:?}"
    );

    let backups = info_backups(&site);
    let find = |label: &str| {
        backups
            .iter()
            .find(|b| b["label"] == label)
            .unwrap_or_else(|| panic!("{label} not in info: {backups:?}"))
            .clone()
    };
    assert_eq!(find(&full)["type"], "full");
    assert_eq!(find(&diff)["type"], "diff");
    assert_eq!(
        find(&diff)["prior"],
        full.as_str(),
        "diff's prior is the full"
    );
    assert_eq!(find(&incr)["type"], "incr");
    assert_eq!(
        find(&incr)["prior"],
        diff.as_str(),
        "incr's prior is the diff"
    );

    // Recovery replays the archive to its end: record the final state and archive it.
    let expected = pgbench_state(|sql| site.cluster.psql(sql));
    site.one_segment();

    assert_stored_like_gzip_6(&site, &incr);
    // pgbench_accounts (64 MB) and its index: a block index in the full, kept by the diff and
    // incr whether they copy the file again or reference the full's copy.
    let accounts = site
        .cluster
        .psql("select pg_relation_filepath('pgbench_accounts')");
    for label in [&full, &diff, &incr] {
        let indexed = check_block_indexes(&site, label);
        assert!(
            indexed.contains(&format!("pg_data/{accounts}")) && indexed.len() >= 2,
            "{label}: {indexed:?}"
        );
    }
    verify_restore(&site, "r-full", &full, &expected);
    verify_restore(&site, "r-diff", &diff, &expected);
    verify_restore(&site, "r-incr", &incr, &expected);
}

#[test]
fn full_backup_over_ssh_under_load_restores_to_the_recorded_state() {
    let site = Site::remote();
    site.cluster.pgbench(&["-i", "-q", "-s", "5"]);
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    let (full, load_error) = std::thread::scope(|s| {
        let load = s.spawn(|| pgbench_loop(&site.cluster, &stop, &rounds));
        wait_until("pgbench round", Duration::from_secs(60), || {
            rounds.load(Ordering::Relaxed) >= 1 || load.is_finished()
        });
        let (full, _) = backup(&site, &["--type=full", "--process-max=2"]);
        stop.store(true, Ordering::Relaxed);
        (full, load.join().expect("load thread"))
    });
    assert!(
        load_error.is_none(),
        "pgbench load failed: {}",
        load_error.unwrap()
    );
    assert!(
        manifest_path(&site, &full).exists(),
        "manifest in the repository on the repo host"
    );
    // Copied by pg1-host's remote, the large files come back with their block index.
    assert!(
        check_block_indexes(&site, &full).len() >= 2,
        "pgbench_accounts and its index have a block index"
    );
    let expected = pgbench_state(|sql| site.cluster.psql(sql));
    site.one_segment();
    verify_restore(&site, "r-full", &full, &expected);
}

#[test]
fn killed_backup_resumes_copying_only_what_was_missing() {
    const TABLES: usize = 12;
    let site = Site::local();
    // ~400 MB of poorly compressible text spread over several tables, so the backup has
    // several big files and a kill leaves some copied and some not.
    for i in 0..TABLES {
        site.cluster.psql(&format!(
            "create table big{i}(id int, v text); \
             insert into big{i} select g, md5(random()::text) || md5(random()::text) || \
             md5(random()::text) || md5(random()::text) from generate_series(1, 180000) g"
        ));
    }
    let state = || {
        (0..TABLES)
            .map(|i| {
                site.cluster.psql(&format!(
                    "select count(*) || ':' || sum(hashtext(v)::bigint) from big{i}"
                ))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let expected = state();

    let config = format!("--config={}", p(&site.conf));
    let stanza = format!("--stanza={STANZA}");
    let mut child = harness::pgbr(&[
        &config,
        &stanza,
        "backup",
        "--type=full",
        "--start-fast",
        "--compress-level=9",
        "--process-max=1",
    ])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("spawning backup");

    // Wait until a manifest copy exists and the log shows at least 20% progress.
    let progress = |log: &str| -> u64 {
        log.lines()
            .filter_map(|l| {
                let i = l.find("backup progress: ")?;
                l[i + "backup progress: ".len()..]
                    .split('%')
                    .next()?
                    .parse()
                    .ok()
            })
            .max()
            .unwrap_or(0)
    };
    let mut label = None;
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "backup finished ({status}) before it could be killed; make the data bigger:\n{}",
                harness::tail(&backup_log(&site), 20)
            );
        }
        // A manifest copy that already records at least one big (> 1 MB) copied file.
        let dir_with_copy = fs::read_dir(backup_dir(&site))
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| big_files_in_copy(&e.path().join("backup.manifest.copy")) > 0)
            .map(|e| e.file_name().to_string_lossy().into_owned());
        if let Some(l) = dir_with_copy {
            if progress(&backup_log(&site)) >= 20 {
                label = Some(l);
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut tree = harness::descendants(child.id());
    tree.push(child.id());
    harness::signal(&tree, "KILL");
    let _ = child.wait();
    let killed = label.unwrap_or_else(|| {
        panic!(
            "no progress >= 20% with a manifest copy:\n{}",
            backup_log(&site)
        )
    });
    let progress_at_kill = progress(&backup_log(&site));
    assert!(
        progress_at_kill < 100,
        "backup had already finished copying when killed ({progress_at_kill}%)"
    );
    assert!(
        !manifest_path(&site, &killed).exists(),
        "a killed backup has no final manifest"
    );
    // A full creates the cluster's directories before it copies (as pgBackRest); the
    // resumed run finds them there.
    let notify = backup_dir(&site).join(&killed).join("pg_data/pg_notify");
    assert!(notify.is_dir(), "empty directories exist before the copy");

    let info = read_ini(&backup_dir(&site).join("backup.info"));
    assert!(
        info.get("backup:current").is_none_or(|s| s.is_empty()),
        "backup.info lists no backup after the kill: {info:?}"
    );
    assert!(
        info_backups(&site).is_empty(),
        "info shows no backup after the kill"
    );

    // The same command again (the worker count may differ).
    let (label, out) = backup(
        &site,
        &["--type=full", "--compress-level=9", "--process-max=2"],
    );
    assert_eq!(
        label, killed,
        "the resumed backup keeps the interrupted one's label\n{out}"
    );
    let log = backup_log(&site);
    assert!(
        log.contains(&format!("resuming interrupted backup {killed}")),
        "log says it resumes:\n{}",
        harness::tail(&log, 30)
    );
    let c = completion(&site, &label);
    let total = read_ini(&manifest_path(&site, &label))["target:file"].len() as u64;
    assert!(c.resumed > 0, "some files resumed: {c:?}");
    assert!(
        c.copied < total,
        "copied only what was missing ({c:?} of {total} files)"
    );
    assert_eq!(info_backups(&site).len(), 1);
    assert!(
        notify.is_dir(),
        "empty directories kept by the resumed backup"
    );
    // Resumed files keep the block index they were copied with.
    assert!(
        check_block_indexes(&site, &label).len() >= TABLES,
        "every big table's file has a block index"
    );

    site.one_segment();
    let r = Restored::restore(&site, "r", Some(&label), &["--process-max=2"]);
    r.start_and_wait_promoted();
    let got = (0..TABLES)
        .map(|i| {
            r.psql(&format!(
                "select count(*) || ':' || sum(hashtext(v)::bigint) from big{i}"
            ))
        })
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(got, expected, "restored resumed backup holds the data");
    r.stop();
    r.checksums();
}

#[test]
fn tables_dropped_during_the_backup() {
    let site = Site::local();
    let mut sql = String::new();
    for i in 0..200 {
        sql.push_str(&format!(
            "create table d{i}(id int primary key, v text); insert into d{i} select g, md5(g::text) from generate_series(1, 200) g;"
        ));
    }
    site.cluster.psql(&sql);
    site.cluster.psql("checkpoint");
    let stop = AtomicBool::new(false);
    let dropped = AtomicU64::new(0);
    let out = std::thread::scope(|s| {
        let churn = s.spawn(|| {
            let mut i = 0u64;
            let mut next = 1000u64;
            while !stop.load(Ordering::Relaxed) {
                let sql = if i < 200 {
                    format!(
                        "drop table d{i}; create table d{next}(id int primary key, v text); \
                         insert into d{next} select g, md5(g::text) from generate_series(1, 200) g"
                    )
                } else {
                    format!(
                        "drop table d{}; create table d{next}(id int primary key, v text); \
                         insert into d{next} select g, md5(g::text) from generate_series(1, 200) g",
                        next - 200
                    )
                };
                if let Err(e) = site.cluster.try_psql(&sql) {
                    return Some(e);
                }
                dropped.fetch_add(1, Ordering::Relaxed);
                i += 1;
                next += 1;
            }
            None
        });
        wait_until("churn started", Duration::from_secs(30), || {
            dropped.load(Ordering::Relaxed) >= 5 || churn.is_finished()
        });
        let out = site.pgbr(&["backup", "--type=full", "--start-fast", "--process-max=2"]);
        stop.store(true, Ordering::Relaxed);
        let err = churn.join().expect("churn thread");
        assert!(err.is_none(), "table churn failed: {err:?}");
        out
    });
    assert_eq!(
        out.status,
        0,
        "backup while tables are dropped:\n{out}\n--- log ---\n{}",
        harness::tail(&backup_log(&site), 30)
    );
    let label = label_of(&out);
    let c = completion(&site, &label);
    eprintln!(
        "tables_dropped_during_the_backup: {} tables dropped during the run, {} files vanished",
        dropped.load(Ordering::Relaxed),
        c.vanished
    );
    let expected = site
        .cluster
        .psql("select count(*) from pg_class where relname ~ '^d[0-9]+$' and relkind = 'r'");
    site.one_segment();
    let r = Restored::restore(&site, "r", Some(&label), &["--process-max=2"]);
    r.start_and_wait_promoted();
    assert_eq!(
        r.psql("select count(*) from pg_class where relname ~ '^d[0-9]+$' and relkind = 'r'"),
        expected
    );
    r.amcheck();
    r.stop();
    r.checksums();
}

#[test]
fn corrupted_page_is_detected_and_reported() {
    let site = Site::local();
    site.cluster.psql(
        "create table t(id int, v text) with (autovacuum_enabled = off); \
         insert into t select g, md5(g::text) from generate_series(1, 2000) g",
    );
    site.cluster.psql("checkpoint");
    let rel = site.cluster.psql("select pg_relation_filepath('t')");
    site.cluster.stop();
    let file = site.cluster.data_dir().join(&rel);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("relation file");
        f.seek(SeekFrom::Start(4000)).unwrap();
        f.write_all(b"corrupted by the test!").unwrap();
        f.sync_all().unwrap();
    }
    site.cluster.start();
    let (label, out) = backup(&site, &["--type=full"]);
    let warn = out
        .stderr
        .lines()
        .find(|l| l.contains("invalid page checksums found in file"))
        .unwrap_or_else(|| panic!("no checksum WARN on stderr:\n{out}"));
    assert!(warn.contains("WARN"), "{warn}");
    assert!(warn.contains(&rel), "WARN names the file {rel}: {warn}");
    assert!(warn.ends_with("at blocks 0"), "WARN names block 0: {warn}");

    let manifest = read_ini(&manifest_path(&site, &label));
    let key = format!("pg_data/{rel}");
    let raw = manifest["target:file"]
        .get(&key)
        .unwrap_or_else(|| panic!("{key} not in manifest"));
    let v: serde_json::Value = serde_json::from_str(raw).unwrap();
    assert_eq!(v["checksum-page"], false, "{raw}");
    assert_eq!(v["checksum-page-error"], serde_json::json!([0]), "{raw}");
    // Other relation files were verified and found fine.
    let good = manifest["target:file"]
        .iter()
        .filter(|(k, _)| k.starts_with("pg_data/base/"))
        .filter(|(_, v)| v.contains("\"checksum-page\":true"))
        .count();
    assert!(
        good > 10,
        "other relation files are marked checksum-page true ({good})"
    );
}

#[test]
fn concurrent_backups_are_refused_with_the_lock_code() {
    let site = Site::local();
    let lock = site.dir.join("lock/main-backup.lock");
    let mut holder = harness::postgres_command("flock", &[p(&lock), "sleep", "30"])
        .spawn()
        .unwrap();
    wait_until("lock file held", Duration::from_secs(10), || {
        run(harness::postgres_command(
            "flock",
            &["-n", p(&lock), "true"],
        ))
        .status
            != 0
    });
    let out = site.pgbr(&["backup", "--type=full", "--start-fast"]);
    let out_timeout = site.pgbr(&["backup", "--type=full", "--start-fast", "--lock-timeout=1"]);
    let mut tree = harness::descendants(holder.id());
    tree.push(holder.id());
    harness::signal(&tree, "KILL");
    let _ = holder.wait();
    assert_error(&out, 50, "unable to acquire lock");
    assert_error(&out_timeout, 50, "unable to acquire lock");
    let left: Vec<_> = fs::read_dir(backup_dir(&site))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("backup.info"))
        .collect();
    assert!(left.is_empty(), "a refused backup leaves nothing: {left:?}");
    let (label, _) = backup(&site, &["--type=full"]);
    assert!(label.ends_with('F'));
}

#[test]
fn restore_refuses_non_empty_or_running_targets() {
    let site = Site::local();
    let (label, _) = backup(&site, &["--type=full"]);

    // Its own (running) data directory, the configured pg1-path.
    let before: Vec<_> = fs::read_dir(site.cluster.data_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let out = site.pgbr(&["restore", &format!("--set={label}")]);
    assert_error(&out, 38, "holds a running cluster");
    assert!(
        !site.cluster.data_dir().join("recovery.signal").exists(),
        "nothing written"
    );
    let after: Vec<_> = fs::read_dir(site.cluster.data_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before.len(), after.len(), "running data dir untouched");

    // A non-empty directory.
    let target = site.dir.mkdir("target");
    harness::write_postgres(&target.join("keep-me"), "x", 0o600);
    let out = site.pgbr(&["restore", &format!("--pg1-path={}", p(&target))]);
    assert_error(&out, 40, "is not empty");
    let entries: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        entries,
        vec!["keep-me".to_string()],
        "nothing written into the target"
    );
    assert_eq!(fs::read_to_string(target.join("keep-me")).unwrap(), "x");
}

#[test]
fn manifest_parses_with_python_configparser() {
    let site = Site::local();
    site.cluster.pgbench(&["-i", "-q", "-s", "1"]);
    let (full, _) = backup(&site, &["--type=full"]);
    site.cluster.pgbench(&["-n", "-t", "200"]);
    let (diff, _) = backup(&site, &["--type=diff"]);

    let script = r#"
import configparser, json, os, sys
def load(path):
    # strict=False: pgBackRest's format closes every file with a second [backrest] section
    # (its checksum), which configparser merges into the first.
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.optionxform = str
    with open(path) as f:
        cp.read_file(f)
    return cp
root = sys.argv[1]
info = load(os.path.join(root, 'backup.info'))
assert 'backup:current' in info.sections(), info.sections()
for label in sys.argv[2:]:
    assert label in info['backup:current'], (label, list(info['backup:current']))
    json.loads(info['backup:current'][label])
    m = load(os.path.join(root, label, 'backup.manifest'))
    for s in ('backup', 'backup:db', 'target:file'):
        assert s in m.sections(), (s, m.sections())
    v = json.loads(m['target:file']['pg_data/PG_VERSION'])
    for k in ('size', 'timestamp', 'checksum'):
        assert k in v, (k, v)
    assert v['size'] == 3, v
    for sec in m.sections():
        for k, raw in m[sec].items():
            json.loads(raw)
    missing = []
    for key, raw in m['target:file'].items():
        v = json.loads(raw)
        where = v.get('reference', label)
        if not os.path.exists(os.path.join(root, where, key + '.gz')):
            missing.append((key, where))
    assert not missing, missing[:20]
    print(label, len(m['target:file']), 'files ok')
    # pgBackRest's history copy of the finished manifest: the same bytes, gzip-compressed.
    import gzip
    hist = os.path.join(root, 'backup.history', label[:4], label + '.manifest.gz')
    with gzip.open(hist, 'rb') as f, open(os.path.join(root, label, 'backup.manifest'), 'rb') as g:
        assert f.read() == g.read(), hist
"#;
    let out = run(std::process::Command::new("python3").args([
        "-c",
        script,
        p(&backup_dir(&site)),
        &full,
        &diff,
    ]));
    assert!(out.success(), "configparser check failed:\n{out}");
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.ends_with("files ok"))
            .count(),
        2,
        "{out}"
    );
    let diff_manifest = read_ini(&manifest_path(&site, &diff));
    assert!(
        diff_manifest["target:file"]
            .values()
            .any(|v| v.contains("\"reference\"")),
        "the diff references files of the full"
    );
}

#[test]
fn diff_or_incr_without_full_becomes_full() {
    let site = Site::local();
    let (label, out) = backup(&site, &["--type=incr"]);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains("changed to full")),
        "WARN that incr became full:\n{out}"
    );
    assert!(label.ends_with('F') && label.len() == 16, "{label}");
    let b = info_backups(&site);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0]["type"], "full");
    assert!(b[0]["prior"].is_null(), "{:?}", b[0]);
    let (diff, out) = backup(&site, &["--type=diff"]);
    assert!(!out.stderr.contains("changed to full"), "{out}");
    assert!(diff.ends_with('D'), "{diff}");
}

#[test]
fn tablespaces_are_backed_up_and_their_links_restored() {
    let site = Site::local();
    let ts_dir = site.dir.mkdir("ts1");
    site.cluster
        .psql(&format!("create tablespace ts1 location '{}'", p(&ts_dir)));
    site.cluster.psql("create table in_ts tablespace ts1 as select g, md5(g::text) from generate_series(1, 50000) g");
    let expected = site.cluster.psql("select count(*), sum(g) from in_ts");
    let (label, _) = backup(&site, &["--type=full"]);
    let manifest = read_ini(&manifest_path(&site, &label));
    let oid = site
        .cluster
        .psql("select oid from pg_tablespace where spcname = 'ts1'");
    assert!(
        manifest["backup:target"].contains_key(&format!("pg_tblspc/{oid}")),
        "{:?}",
        manifest["backup:target"]
    );
    assert!(manifest["target:link"].contains_key(&format!("pg_data/pg_tblspc/{oid}")));
    assert!(
        manifest["target:file"]
            .keys()
            .any(|k| k.starts_with(&format!("pg_tblspc/{oid}/PG_15_"))),
        "tablespace files are keyed pg_tblspc/OID/..."
    );
    site.one_segment();

    // The restore recreates the tablespace at its recorded location, which must be empty:
    // with the original still there it is refused; moved aside, the restore succeeds.
    let target = site.dir.join("restored");
    let out = site.pgbr(&["restore", &format!("--pg1-path={}", p(&target))]);
    assert_error(
        &out,
        40,
        &format!("tablespace 'pg_tblspc/{oid}' '{}' is not empty", p(&ts_dir)),
    );
    assert!(!target.exists(), "nothing restored after the refusal");

    // Mapped elsewhere, it restores next to the running original.
    let mapped = site.dir.join("ts1-mapped");
    let r = Restored::restore(
        &site,
        "restored-mapped",
        None,
        &[&format!("--tablespace-map=ts1={}", p(&mapped))],
    );
    assert_eq!(
        fs::read_link(r.data.join(format!("pg_tblspc/{oid}"))).unwrap(),
        mapped
    );
    r.start_and_wait_promoted();
    assert_eq!(r.psql("select count(*), sum(g) from in_ts"), expected);
    r.stop();
    site.cluster.stop();
    fs::rename(&ts_dir, site.dir.join("ts1-original")).unwrap();
    let r = Restored::restore(&site, "restored-ts", None, &[]);
    let link = r.data.join(format!("pg_tblspc/{oid}"));
    assert_eq!(
        fs::read_link(&link).unwrap(),
        ts_dir,
        "tablespace link recreated"
    );
    r.start_and_wait_promoted();
    assert_eq!(r.psql("select count(*), sum(g) from in_ts"), expected);
    r.stop();
    r.checksums();
}
