//! archive-push refuses, before a byte reaches the repository, any file that is not what its
//! name says: a real PostgreSQL 15 segment under another segment's name, zero-byte and short
//! segments, short .partial files, history files that do not parse, and backup history files
//! that do not match their name; a real .backup from pg_backup_stop and the right segment
//! pushed afterwards under the right name succeed. Locally and over SSH.

use std::fs;
use std::path::{Path, PathBuf};

use crate::fixture::{assert_error, Site};
use crate::harness::chown_postgres;

/// Every file under the archive directory with its content, for "nothing changed" checks.
fn snapshot(site: &Site) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![site.repo.join("archive")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let data = fs::read(&path).unwrap();
                out.push((path, data));
            }
        }
    }
    out.sort();
    out
}

/// Writes `data` as `dir/name`, owned by postgres.
fn put(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, data).unwrap();
    chown_postgres(&path);
    path
}

/// The segment after `seg` (16 MB segments, not crossing a log file).
fn next_segment(seg: &str) -> String {
    let n = u32::from_str_radix(&seg[16..], 16).unwrap();
    format!("{}{:08X}", &seg[..16], n + 1)
}

fn push(site: &Site, path: &Path) -> crate::harness::Out {
    site.pgbr(&["archive-push", path.to_str().unwrap()])
}

/// A real segment under the name of the segment PostgreSQL archives next is refused and
/// nothing is stored; the real next segment, archived by PostgreSQL itself, then succeeds.
fn renamed_segment_is_refused_and_the_right_one_follows(site: &Site) {
    let seg = site.one_segment();
    let next = next_segment(&seg);
    let scratch = site.dir.mkdir("renamed");
    let renamed = put(
        &scratch,
        &next,
        &fs::read(site.originals.join(&seg)).unwrap(),
    );
    let before = snapshot(site);
    assert_error(
        &push(site, &renamed),
        29,
        &format!("'{}' is named for WAL position", renamed.display()),
    );
    let partial = put(
        &scratch,
        &format!("{next}.partial"),
        &fs::read(site.originals.join(&seg)).unwrap()[..100],
    );
    assert_error(
        &push(site, &partial),
        29,
        "is 100 bytes, but its header says segments are 16777216 bytes",
    );
    assert_eq!(snapshot(site), before, "repository unchanged");
    assert!(site.temp_files().is_empty());

    assert_eq!(site.one_segment(), next);
    assert_eq!(site.stored(&next).len(), 1);
    let dest = scratch.join("fetched");
    let out = site.pgbr(&["archive-get", &next, dest.to_str().unwrap()]);
    assert_eq!(out.status, 0, "{out}");
    assert!(fs::read(&dest).unwrap() == fs::read(site.originals.join(&next)).unwrap());
    site.cluster.assert_archiving_never_failed();
}

#[test]
fn malformed_or_misnamed_wal_files_are_refused_before_they_are_stored() {
    let site = Site::local();
    renamed_segment_is_refused_and_the_right_one_follows(&site);

    // A backup makes PostgreSQL archive a real .backup file through archive_command.
    site.backup("full", &[]);
    let mut found = None;
    crate::harness::wait_until(
        "the .backup file archived",
        std::time::Duration::from_secs(60),
        || {
            found = fs::read_dir(&site.originals)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.ends_with(".backup"));
            found.is_some()
        },
    );
    let backup_file = found.unwrap();
    let real_backup = fs::read(site.originals.join(&backup_file)).unwrap();
    let out = push(&site, &site.originals.join(&backup_file));
    assert_eq!(out.status, 0, "the real .backup again:\n{out}");
    assert!(out.stderr.contains("same checksum"), "{out}");

    let scratch = site.dir.mkdir("malformed");
    let seg = site.original_segments().pop().unwrap();
    let segment = fs::read(site.originals.join(&seg)).unwrap();
    let mut random = Vec::new();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..512 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        random.extend_from_slice(&x.to_le_bytes());
    }
    // The real .backup under a name with another start offset.
    let offset = u32::from_str_radix(&backup_file[25..33], 16).unwrap();
    let misnamed_backup = format!("{}.{:08X}.backup", &backup_file[..24], offset + 8);
    let before = snapshot(&site);
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "0000000100000000000000F0",
            &[],
            "is 0 bytes, too short to be a WAL segment",
        ),
        (
            "0000000100000000000000F1",
            &segment[..8192],
            "is 8192 bytes, but its header says",
        ),
        (
            "0000000100000000000000F2.partial",
            &[],
            "is 0 bytes, too short",
        ),
        (
            "00000002.history",
            &[],
            "(0 bytes) is not a valid timeline history file: no timeline entries",
        ),
        (
            "00000003.history",
            &random,
            "is not a valid timeline history file: line 1",
        ),
        (
            "00000004.history",
            b"1\t0/3000000\tok\n4\t0/4000000\tself\n",
            "timeline 4 is not an ancestor of timeline 4",
        ),
        (
            "0000000100000000000000F3.00000028.backup",
            &random,
            "is not a valid backup history file: it has no START WAL LOCATION line",
        ),
        (
            "0000000100000000000000F3.00000028.backup",
            &[],
            "no START WAL LOCATION line",
        ),
        (&misnamed_backup, &real_backup, "is not offset"),
    ];
    for (name, data, why) in cases {
        let path = put(&scratch, name, data);
        assert_error(&push(&site, &path), 29, why);
    }
    assert_eq!(snapshot(&site), before, "repository unchanged");
    assert!(site.temp_files().is_empty());
}

#[test]
fn malformed_or_misnamed_wal_files_are_refused_before_they_are_stored_over_ssh() {
    let site = Site::remote();
    renamed_segment_is_refused_and_the_right_one_follows(&site);
    let scratch = site.dir.mkdir("malformed");
    let before = snapshot(&site);
    for (name, why) in [
        (
            "0000000100000000000000F0",
            "is 0 bytes, too short to be a WAL segment",
        ),
        ("00000002.history", "no timeline entries"),
        (
            "0000000100000000000000F3.00000028.backup",
            "no START WAL LOCATION line",
        ),
    ] {
        let path = put(&scratch, name, &[]);
        assert_error(&push(&site, &path), 29, why);
    }
    assert_eq!(snapshot(&site), before, "repository unchanged");
}
