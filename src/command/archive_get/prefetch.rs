//! The spool's `in` directory: WAL segments the `archive-get:async` worker fetched ahead of
//! recovery, and the rules that decide whether one may be handed to PostgreSQL.
//!
//! ```text
//! SPOOL/archive/STANZA/in/RUN/SEGMENT-SHA1      a prefetched segment (decompressed, verified)
//! SPOOL/archive/STANZA/in/RUN/SEGMENT.missing   the worker found SEGMENT missing (this run)
//! SPOOL/archive/STANZA/in/RUN/fetching          the segments the worker is fetching now
//! ```
//!
//! `RUN` names one run of one cluster against one repository: the postmaster's PID and start
//! time (from `postmaster.pid` in the data directory PostgreSQL runs restore_command in),
//! and a hash of the cluster's system identifier (pg_control) and the repository
//! fingerprint. Everything under another `RUN` was written for an earlier run, another
//! cluster or another repository, and is removed unread: pgBackRest handed over such stale
//! files (and stale "missing" notes) and broke recoveries with them.
//!
//! Even a file of this run is checked before it is handed over: its page header must give
//! this cluster's system identifier and the name's timeline and position, and its content
//! must hash to the SHA-1 in its name (the stored file's checksum). A damaged, truncated or
//! planted file is removed and the segment fetched from the repository instead.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::pg::wal::{is_upper_hex, segment_number, WalHeader, WalName, LONG_HEADER_SIZE};
use crate::spool::{self, Spool};
use crate::storage::posix::sync_dir;

/// The worker's note of the segments it is fetching right now.
pub const FETCHING: &str = "fetching";
const MISSING_SUFFIX: &str = ".missing";

/// One run of one cluster against one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub name: String,
    pub system_id: u64,
}

impl Run {
    /// The run of the cluster whose data directory is `data_dir`, as restore_command sees
    /// it; `None` when `data_dir` holds no running cluster (archive-get called by hand, or
    /// from a directory that is not a data directory): then nothing is prefetched.
    pub fn of(data_dir: &Path, repo_fingerprint: &str) -> Option<Run> {
        let pid_file = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
        let mut lines = pid_file.lines();
        let pid: u32 = lines.next()?.trim().parse().ok()?;
        let _data_dir = lines.next()?;
        let start: u64 = lines.next()?.trim().parse().ok()?;
        let system_id = control_system_id(data_dir)?;
        let mut h = Sha1::new();
        h.update(format!("{system_id}\n{repo_fingerprint}\n").as_bytes());
        let hash = hex::encode(h.finalize());
        Some(Run {
            name: format!("{pid}-{start}-{}", &hash[..16]),
            system_id,
        })
    }
}

/// The system identifier of the cluster in `data_dir`: the first 8 bytes of pg_control,
/// in every PostgreSQL version.
fn control_system_id(data_dir: &Path) -> Option<u64> {
    let mut f = File::open(data_dir.join("global").join("pg_control")).ok()?;
    let mut b = [0u8; 8];
    f.read_exact(&mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// The run's directory in the spool.
pub fn run_dir(cfg: &Config, stanza: &str, run: &Run) -> Result<PathBuf> {
    Ok(Spool::new(cfg, stanza)?.in_dir().join(&run.name))
}

/// Removes every run directory but `keep` (earlier runs, other clusters, other repositories)
/// and anything else found in `in/`.
pub fn remove_other_runs(in_dir: &Path, keep: &str) -> Result<()> {
    let entries = match fs::read_dir(in_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", in_dir, e)),
    };
    let mut removed = false;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy() == keep {
            continue;
        }
        let path = entry.path();
        let r = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match r {
            Ok(()) => {
                removed = true;
                crate::info!(
                    "removed '{}' from the spool: prefetched for another run, cluster or repository",
                    path.display()
                );
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &path, e)),
        }
    }
    if removed {
        sync_dir(in_dir)?;
    }
    Ok(())
}

/// A prefetched segment file in a run directory.
#[derive(Debug, Clone)]
pub struct Prefetched {
    pub wal: String,
    pub sha1: String,
    pub path: PathBuf,
    pub size: u64,
}

/// The prefetched segments in `dir` (temp files and notes left out); empty when `dir` does
/// not exist.
pub fn list(dir: &Path) -> Result<Vec<Prefetched>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((wal, sha1)) = parse_name(&name) else {
            continue;
        };
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(Prefetched {
            wal: wal.to_string(),
            sha1: sha1.to_string(),
            path: entry.path(),
            size,
        });
    }
    out.sort_by(|a, b| a.wal.cmp(&b.wal));
    Ok(out)
}

/// `SEGMENT-SHA1` split, or `None` for any other name.
fn parse_name(name: &str) -> Option<(&str, &str)> {
    let (wal, sha1) = name.split_once('-')?;
    (is_upper_hex(wal, 24)
        && sha1.len() == 40
        && sha1
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some((wal, sha1))
}

pub fn file_name(wal: &str, sha1: &str) -> String {
    format!("{wal}-{sha1}")
}

pub fn missing_path(dir: &Path, wal: &str) -> PathBuf {
    dir.join(format!("{wal}{MISSING_SUFFIX}"))
}

/// Whether a prefetched file may be handed over.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The page header names this cluster and exactly this segment, and the content hashes
    /// to the name's SHA-1.
    Valid,
    /// The file is gone since the spool was listed: someone removed the spool (or the run's
    /// directory). Nothing is wrong with the archive; the segment is fetched from the
    /// repository.
    Vanished,
    /// Why the file must not be handed over.
    Invalid(String),
}

/// Checks a prefetched file before it is handed over.
pub fn check(p: &Prefetched, wal: &WalName, system_id: u64) -> Result<Verdict> {
    let mut f = match File::open(&p.path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Verdict::Vanished),
        Err(e) => return Err(Error::io("open", &p.path, e)),
    };
    let source = p.path.display().to_string();
    let size = f
        .metadata()
        .map_err(|e| Error::io("stat", &p.path, e))?
        .len();
    let mut page = [0u8; LONG_HEADER_SIZE];
    if f.read_exact(&mut page).is_err() {
        return Ok(Verdict::Invalid(format!(
            "{size} bytes, shorter than a page header"
        )));
    }
    let header = match WalHeader::parse(&page, &source) {
        Ok(h) => h,
        Err(e) => return Ok(Verdict::Invalid(e.message)),
    };
    if header.system_id != system_id {
        return Ok(Verdict::Invalid(format!(
            "its page header gives system identifier {}, this cluster's is {system_id}",
            header.system_id
        )));
    }
    if let Err(e) = header.check_matches_name(wal, size, &source) {
        return Ok(Verdict::Invalid(e.message));
    }
    let mut h = Sha1::new();
    h.update(page);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", &p.path, e)),
        };
        h.update(&buf[..n]);
    }
    let sha1 = hex::encode(h.finalize());
    if sha1 != p.sha1 {
        return Ok(Verdict::Invalid(format!(
            "its content has SHA-1 {sha1}, not the archived {}",
            p.sha1
        )));
    }
    Ok(Verdict::Valid)
}

/// Moves a checked prefetched file to `dest_dir/dest_name`: a rename when both are on one
/// filesystem, else a copy into a temp file, fsync and rename. Either way the destination
/// appears only complete, and its directory is synced. `false` when the prefetched file
/// vanished after it was checked (the spool was removed): nothing was written.
pub fn hand_over(p: &Prefetched, dest_dir: &Path, dest_name: &str) -> Result<bool> {
    let dest = dest_dir.join(dest_name);
    match fs::rename(&p.path, &dest) {
        Ok(()) => {
            sync_dir(dest_dir)?;
            return Ok(true);
        }
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {}
        // ENOENT names no side: only a missing source is the spool's removal.
        Err(e) if e.kind() == io::ErrorKind::NotFound && !p.path.exists() => return Ok(false),
        Err(e) => return Err(Error::io("move prefetched WAL file to", &dest, e)),
    }
    let mut src = match File::open(&p.path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("open", &p.path, e)),
    };
    let mut w = crate::storage::posix::PosixWriter::create(dest_dir.to_path_buf())?;
    io::copy(&mut src, &mut w).map_err(|e| Error::io("copy to", &dest, e))?;
    crate::storage::AtomicWrite::commit(Box::new(w), dest_name)?;
    spool::remove_file(&p.path)?;
    Ok(true)
}

/// The name of the segment after `wal` (a 24-hex-digit segment name) with `segment_size`
/// byte segments, on the same timeline.
pub fn next_segment(wal: &str, segment_size: u64) -> Option<String> {
    let n = segment_number(wal, segment_size)? + 1;
    let per_log = 0x1_0000_0000u64 / segment_size.max(1);
    let log = n / per_log;
    (log <= u64::from(u32::MAX)).then(|| format!("{}{:08X}{:08X}", &wal[..8], log, n % per_log))
}

/// The segment size a segment file's page header gives.
pub fn segment_size_of(path: &Path) -> Option<u64> {
    let mut f = File::open(path).ok()?;
    let mut page = [0u8; LONG_HEADER_SIZE];
    f.read_exact(&mut page).ok()?;
    WalHeader::parse(&page, "")
        .ok()
        .map(|h| u64::from(h.segment_size))
}

/// Bytes of prefetched segments in `dir`.
pub fn queued_bytes(dir: &Path) -> u64 {
    list(dir)
        .map(|l| l.iter().map(|p| p.size).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_segment_crosses_log_files_and_keeps_the_timeline() {
        assert_eq!(
            next_segment("000000020000000000000005", 16 << 20).unwrap(),
            "000000020000000000000006"
        );
        assert_eq!(
            next_segment("0000000200000000000000FF", 16 << 20).unwrap(),
            "000000020000000100000000"
        );
        assert_eq!(
            next_segment("000000010000000A0000003F", 64 << 20).unwrap(),
            "000000010000000B00000000"
        );
    }

    #[test]
    fn only_segment_sha1_names_are_prefetched_files() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let name = format!("000000010000000000000003-{sha}");
        assert_eq!(parse_name(&name), Some(("000000010000000000000003", sha)));
        assert!(parse_name("000000010000000000000003.missing").is_none());
        assert!(parse_name(FETCHING).is_none());
        assert!(parse_name(&format!("00000001.history-{sha}")).is_none());
        assert!(parse_name(&format!("000000010000000000000003-{}", &sha[1..])).is_none());
    }

    /// The spool may be removed at any time (a DBA clearing it, a tmpfs remounted): a file
    /// listed a moment ago and gone now is not a damaged file, and nothing is written for it.
    #[test]
    fn a_prefetched_file_removed_after_listing_is_vanished_not_invalid() {
        let spool = tempfile::tempdir().unwrap();
        let pg_wal = tempfile::tempdir().unwrap();
        let wal = WalName::parse("000000010000000000000003").unwrap();
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let path = spool.path().join(file_name(&wal.name, sha));
        fs::write(&path, b"short").unwrap();
        let p = list(spool.path()).unwrap().pop().unwrap();
        assert!(matches!(check(&p, &wal, 7).unwrap(), Verdict::Invalid(_)));

        fs::remove_file(&path).unwrap();
        assert_eq!(check(&p, &wal, 7).unwrap(), Verdict::Vanished);
        assert!(!hand_over(&p, pg_wal.path(), "RECOVERYXLOG").unwrap());
        assert_eq!(fs::read_dir(pg_wal.path()).unwrap().count(), 0);

        // A missing destination directory is an error, not a vanished file.
        fs::write(&path, b"short").unwrap();
        let err = hand_over(&p, &pg_wal.path().join("gone"), "RECOVERYXLOG").unwrap_err();
        assert!(
            err.message.contains("move prefetched WAL file"),
            "{}",
            err.message
        );
        assert!(path.exists());
    }
}
