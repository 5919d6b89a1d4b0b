//! Every compression type (none, gz, bz2, lz4, zst) end to end against a real PostgreSQL 15:
//! files stored under pgBackRest's extensions, backups restored and started, WAL pushed by
//! PostgreSQL's archiver and fetched back byte-identical, an incr in another type than its
//! full, and verify reading them all.

use std::fs;

use crate::backup::Restored;
use crate::fixture::{Site, STANZA};
use crate::harness;

/// (compress-type, extension of stored files).
const TYPES: [(&str, &str); 5] = [
    ("none", ""),
    ("gz", ".gz"),
    ("bz2", ".bz2"),
    ("lz4", ".lz4"),
    ("zst", ".zst"),
];

fn state(psql: impl Fn(&str) -> String) -> String {
    psql("select count(*) || ':' || sum(abalance) from pgbench_accounts")
}

/// A full backup in each type (process-max 2, so pgbench_accounts, past 8 MiB, is compressed
/// on two threads), then an incr in zst on top of the lz4 full: restore reads each file in
/// its own backup's type, and the restored cluster starts with the data it had.
#[test]
fn backups_in_every_type_restore_and_start() {
    let site = Site::local();
    site.cluster.pgbench(&["-i", "-q", "-s", "2"]);
    let expected = state(|sql| site.cluster.psql(sql));
    let accounts = site
        .cluster
        .psql("select pg_relation_filepath('pgbench_accounts')");
    for (kind, ext) in TYPES {
        let label = site.backup(
            "full",
            &[&format!("--compress-type={kind}"), "--process-max=2"],
        );
        let backup_dir = site.repo.join(format!("backup/{STANZA}/{label}"));
        for file in ["pg_data/PG_VERSION", &format!("pg_data/{accounts}")] {
            let stored = backup_dir.join(format!("{file}{ext}"));
            assert!(stored.is_file(), "{kind}: {} missing", stored.display());
        }
        let manifest = fs::read_to_string(backup_dir.join("backup.manifest")).unwrap();
        assert!(
            manifest.contains(&format!("option-compress-type=\"{kind}\"")),
            "{kind}: manifest records the type"
        );
        // pgbench_accounts (past 8 MiB) gets a block index in every type but bz2 (issue 17).
        let line = manifest
            .lines()
            .find(|l| l.starts_with(&format!("pg_data/{accounts}=")))
            .unwrap_or_else(|| panic!("{kind}: {accounts} in the manifest"));
        assert_eq!(
            line.contains("\"block-index\":{\"block-size\":8388608,"),
            kind != "bz2",
            "{kind}: {line}"
        );
        let restored = Restored::restore(&site, &format!("r-{kind}"), Some(&label), &[]);
        restored.start_and_wait_promoted();
        assert_eq!(
            state(|sql| restored.psql(sql)),
            expected,
            "{kind}: restored data"
        );
        restored.stop();
    }

    // An incr in another type than the full it builds on.
    let full_lz4 = site.backup("full", &["--compress-type=lz4"]);
    site.cluster
        .pgbench(&["-n", "-c", "1", "-t", "200", "-b", "simple-update"]);
    let expected = state(|sql| site.cluster.psql(sql));
    let incr = site.backup("incr", &["--compress-type=zst"]);
    let incr_dir = site.repo.join(format!("backup/{STANZA}/{incr}"));
    assert!(incr_dir.join(format!("pg_data/{accounts}.zst")).is_file());
    assert!(
        !incr_dir.join("pg_data/PG_VERSION.zst").exists(),
        "unchanged files stay in the full ({full_lz4}), as lz4"
    );
    let restored = Restored::restore(&site, "r-incr", Some(&incr), &[]);
    restored.start_and_wait_promoted();
    assert_eq!(state(|sql| restored.psql(sql)), expected, "incr restored");
    restored.stop();

    let verify = site.pgbr(&["verify"]);
    assert_eq!(verify.status, 0, "verify reads every type:\n{verify}");
}

/// PostgreSQL's archiver pushes a segment in each type; each is stored under the type's
/// extension and archive-get gives back the original bytes. verify then reads them all.
#[test]
fn wal_pushed_in_every_type_comes_back_identical() {
    let site = Site::local();
    let base_conf = fs::read_to_string(&site.conf).unwrap();
    let fetched = site.dir.mkdir("fetched");
    for (kind, ext) in TYPES {
        // archive-push's own section, read on its next run (the site's file may end with
        // another command's section).
        let conf = format!("{base_conf}\n[global:archive-push]\ncompress-type={kind}\n");
        fs::write(&site.conf, conf).unwrap();
        harness::chown_postgres(&site.conf);
        let seg = site.one_segment();
        let stored = site.stored(&seg);
        assert_eq!(stored.len(), 1, "{kind}: {seg} stored once: {stored:?}");
        let name = stored[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let sha_and_ext = name.split_once('-').unwrap().1;
        assert_eq!(&sha_and_ext[40..], ext, "{kind}: stored as {name}");
        let dest = fetched.join(&seg);
        let out = site.pgbr(&["archive-get", &seg, dest.to_str().unwrap()]);
        assert_eq!(out.status, 0, "{kind}: archive-get {seg}:\n{out}");
        assert!(
            fs::read(&dest).unwrap() == fs::read(site.originals.join(&seg)).unwrap(),
            "{kind}: {seg} differs after archive-get"
        );
    }
    let verify = site.pgbr(&["verify"]);
    assert_eq!(verify.status, 0, "verify reads every type:\n{verify}");
}

/// A level outside the type's range is refused as pgBackRest refuses it, before anything is
/// stored; the same number is fine for a type whose range holds it.
#[test]
fn a_level_outside_the_types_range_is_an_invalid_value() {
    let site = Site::local();
    let seg = site.one_segment();
    let original = site.originals.join(&seg);
    let out = site.pgbr(&[
        "--compress-type=gz",
        "--compress-level=12",
        "archive-push",
        original.to_str().unwrap(),
    ]);
    crate::fixture::assert_error(
        &out,
        32,
        "'12' is out of range for 'compress-level' option when 'compress-type' option = 'gz'",
    );
    let out = site.pgbr(&[
        "--compress-type=zst",
        "--compress-level=12",
        "archive-push",
        original.to_str().unwrap(),
    ]);
    assert_eq!(out.status, 0, "{out}");
}
