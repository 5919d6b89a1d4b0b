//! The repository layout, built in one place: every repository path pg_backrest reads or
//! writes comes from here, so the layout fixed by the contract is encoded exactly once.
//!
//! ```text
//! archive/STANZA/archive.info (+ .copy)
//! archive/STANZA/ARCHIVE_ID/TIMELINE.history
//! archive/STANZA/ARCHIVE_ID/<first 16 hex>/<segment>-<sha1>[.gz]
//! archive/STANZA/ARCHIVE_ID/<first 16 hex>/<segment>.partial-<sha1>[.gz]
//! archive/STANZA/ARCHIVE_ID/<first 16 hex>/<segment>.<offset>.backup   (plain, as pgBackRest)
//! archive/STANZA/ARCHIVE_ID/<first 16 hex>/TTTTTTTT.LLLLLLLL.SSSSSSSS.dropped   a gap: see [`dropped`]
//! backup/STANZA/backup.info (+ .copy)
//! backup/STANZA/LABEL/backup.manifest (+ .copy)
//! backup/STANZA/LABEL/pg_data/... and pg_tblspc/OID/...   one file per data file
//! ```
//!
//! Every command that walks the archive reads it through [`ArchiveIdListing`] and
//! [`WalDirListing`], the one place that says what each entry is.

pub mod dropped;
pub mod location;

pub use location::{open, workers, RepoLocation};

use crate::error::Result;
use crate::pg::wal::{is_upper_hex, WalKind, WalName};
use crate::pipeline::{Compress, CompressType};
use crate::storage::Storage;

pub const COPY_SUFFIX: &str = ".copy";
pub const MANIFEST_FILE: &str = "backup.manifest";

#[derive(Debug, Clone)]
pub struct RepoLayout {
    stanza: String,
}

impl RepoLayout {
    pub fn new(stanza: &str) -> RepoLayout {
        RepoLayout {
            stanza: stanza.to_string(),
        }
    }

    pub fn archive_info(&self) -> String {
        format!("archive/{}/archive.info", self.stanza)
    }

    pub fn backup_info(&self) -> String {
        format!("backup/{}/backup.info", self.stanza)
    }

    /// Where the stanza's backups live.
    pub fn backup_root(&self) -> String {
        format!("backup/{}", self.stanza)
    }

    /// One backup's directory.
    pub fn backup_path(&self, label: &str) -> String {
        format!("backup/{}/{label}", self.stanza)
    }

    pub fn manifest(&self, label: &str) -> String {
        format!("backup/{}/{label}/{}", self.stanza, MANIFEST_FILE)
    }

    /// The gzip copy of a finished backup's manifest that pgBackRest keeps in
    /// `backup.history/YYYY/` (the label's year).
    pub fn backup_history(&self, label: &str) -> String {
        let year = label.get(..4).unwrap_or(label);
        format!(
            "backup/{}/backup.history/{year}/{label}.manifest.gz",
            self.stanza
        )
    }

    /// A stored file of a backup (`stored_name` from the manifest, e.g. `pg_data/PG_VERSION.gz`).
    pub fn backup_file(&self, label: &str, stored_name: &str) -> String {
        format!("backup/{}/{label}/{stored_name}", self.stanza)
    }

    /// The directory of one archive id: history files and one subdirectory per 16-hex prefix.
    pub fn archive_id_path(&self, archive_id: &str) -> String {
        format!("archive/{}/{archive_id}", self.stanza)
    }

    /// The directory a WAL file of this archive id lives in.
    pub fn wal_dir(&self, archive_id: &str, wal: &WalName) -> String {
        match wal.archive_subdir() {
            Some(sub) => format!("archive/{}/{archive_id}/{sub}", self.stanza),
            None => format!("archive/{}/{archive_id}", self.stanza),
        }
    }
}

/// A WAL file as stored: its name in the archive directory, and what the name tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWal {
    pub file_name: String,
    /// The WAL file PostgreSQL handed over (segment, `.partial`, `.backup` or history).
    pub wal: WalName,
    /// SHA-1 of the original content, when the name carries it (not for history files).
    pub sha1: Option<String>,
    /// How it is stored, from its extension; `None` for an extension no compression type
    /// has (`.xz`, from another tool): the file cannot be read.
    pub compress: Option<CompressType>,
    /// What follows the checksum: `""`, `".gz"`, `".zst"`..., or an extension this build
    /// cannot read (a repository written by another tool).
    pub extension: String,
}

impl StoredWal {
    /// The stored name of `wal` with this content checksum. As pgBackRest stores them,
    /// segments and `.partial` files carry the checksum and the compression extension;
    /// timeline history and backup history files keep their plain name, uncompressed.
    pub fn new(wal: &WalName, sha1: &str, compress: Compress) -> StoredWal {
        if matches!(wal.kind, WalKind::History | WalKind::Backup) {
            return StoredWal::plain(wal.clone());
        }
        StoredWal {
            file_name: format!("{}-{sha1}{}", wal.name, compress.extension()),
            wal: wal.clone(),
            sha1: Some(sha1.to_string()),
            compress: Some(compress.kind()),
            extension: compress.extension().to_string(),
        }
    }

    fn plain(wal: WalName) -> StoredWal {
        StoredWal {
            file_name: wal.name.clone(),
            wal,
            sha1: None,
            compress: Some(CompressType::None),
            extension: String::new(),
        }
    }

    /// Recognizes the stored copies of `wal` among the entries of its directory
    /// ([`RepoLayout::wal_dir`]).
    pub fn find(wal: &WalName, entries: &[String]) -> Vec<StoredWal> {
        if wal.kind == WalKind::History {
            return entries
                .iter()
                .filter(|e| **e == wal.name)
                .map(|_| StoredWal::plain(wal.clone()))
                .collect();
        }
        entries
            .iter()
            .filter_map(|e| StoredWal::classify(e))
            .filter(|s| s.wal == *wal)
            .collect()
    }

    /// What an entry of a WAL directory holds: `<segment>-<sha1>[ext]`,
    /// `<segment>.partial-<sha1>[ext]` or `<segment>.<offset>.backup[-<sha1>][ext]`.
    /// `None`: not a name pg_backrest (or pgBackRest) stores WAL under.
    pub fn classify(entry: &str) -> Option<StoredWal> {
        let (wal, sha1, extension) = match entry.split_once('-') {
            Some((name, rest)) => {
                let sha1 = rest.get(..40)?;
                if !sha1.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                (WalName::parse(name).ok()?, Some(sha1), &rest[40..])
            }
            // A backup history file may be stored without a checksum in its name.
            None => {
                let wal = WalName::parse(entry.get(..40)?).ok()?;
                if wal.kind != WalKind::Backup {
                    return None;
                }
                (wal, None, &entry[40..])
            }
        };
        let ext_ok = extension.is_empty()
            || extension.strip_prefix('.').is_some_and(|e| {
                (1..=8).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        if wal.kind == WalKind::History || !ext_ok {
            return None;
        }
        Some(StoredWal {
            file_name: entry.to_string(),
            wal,
            sha1: sha1.map(String::from),
            compress: CompressType::from_extension(extension),
            extension: extension.to_string(),
        })
    }

    /// The 24-hex-digit segment the file is about (its timeline, log and segment number),
    /// the key archive ranges sort and compare by. A history file has none.
    pub fn segment(&self) -> Option<&str> {
        (self.wal.kind != WalKind::History).then(|| &self.wal.name[..24])
    }

    /// Whether this build can read the stored content back.
    pub fn readable(&self) -> bool {
        self.compress.is_some()
    }
}

/// One entry of an archive id directory, by what its name says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveIdEntry {
    /// `0000000100000002` (16 upper-case hex digits): the WAL directory of one timeline's
    /// log number.
    WalDir(String),
    /// `00000002.history`: a timeline's history file.
    History(WalName),
    /// Anything else: nothing pg_backrest writes.
    Unknown(String),
}

impl ArchiveIdEntry {
    pub fn classify(name: &str) -> ArchiveIdEntry {
        if is_upper_hex(name, 16) {
            return ArchiveIdEntry::WalDir(name.to_string());
        }
        match WalName::parse(name) {
            Ok(wal) if wal.kind == WalKind::History => ArchiveIdEntry::History(wal),
            _ => ArchiveIdEntry::Unknown(name.to_string()),
        }
    }
}

/// An archive id directory read by kind: what every command that walks the archive lists,
/// so that none mistakes a history file for a WAL directory, or the reverse. Each sorted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ArchiveIdListing {
    pub wal_dirs: Vec<String>,
    pub history: Vec<WalName>,
    pub unknown: Vec<String>,
}

impl ArchiveIdListing {
    /// Lists `dir` (from [`RepoLayout::archive_id_path`]); a missing directory is empty.
    pub fn read(repo: &dyn Storage, dir: &str) -> Result<ArchiveIdListing> {
        Ok(ArchiveIdListing::of(repo.list(dir)?))
    }

    pub fn of(entries: Vec<String>) -> ArchiveIdListing {
        let mut out = ArchiveIdListing::default();
        for entry in entries {
            match ArchiveIdEntry::classify(&entry) {
                ArchiveIdEntry::WalDir(d) => out.wal_dirs.push(d),
                ArchiveIdEntry::History(h) => out.history.push(h),
                ArchiveIdEntry::Unknown(u) => out.unknown.push(u),
            }
        }
        out.wal_dirs.sort();
        out.history.sort_by(|a, b| a.name.cmp(&b.name));
        out.unknown.sort();
        out
    }
}

/// A WAL directory read by kind: stored WAL files (segments, `.partial`, `.backup`) in
/// name order, the segments recorded as dropped ([`dropped`]), and entries that are none of
/// these.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WalDirListing {
    pub stored: Vec<StoredWal>,
    /// Segments with a `.dropped` record ([`dropped::file_name`]), sorted.
    pub dropped: Vec<WalName>,
    pub unknown: Vec<String>,
}

impl WalDirListing {
    pub fn read(repo: &dyn Storage, dir: &str) -> Result<WalDirListing> {
        Ok(WalDirListing::of(repo.list(dir)?))
    }

    pub fn of(entries: Vec<String>) -> WalDirListing {
        let mut out = WalDirListing::default();
        for entry in entries {
            if let Some(s) = StoredWal::classify(&entry) {
                out.stored.push(s);
            } else if let Some(d) = dropped::classify(&entry) {
                out.dropped.push(d);
            } else {
                out.unknown.push(entry);
            }
        }
        out.stored.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        out.dropped.sort_by(|a, b| a.name.cmp(&b.name));
        out.unknown.sort();
        out
    }

    /// The segments (not `.partial` or `.backup` files) it holds, sorted.
    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &StoredWal> {
        self.stored
            .iter()
            .filter(|s| s.wal.kind == WalKind::Segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_contract() {
        let l = RepoLayout::new("main");
        let seg = WalName::parse("000000010000000100000023").unwrap();
        assert_eq!(l.archive_info(), "archive/main/archive.info");
        assert_eq!(l.backup_info(), "backup/main/backup.info");
        assert_eq!(
            l.wal_dir("15-1", &seg),
            "archive/main/15-1/0000000100000001"
        );
        let hist = WalName::parse("00000002.history").unwrap();
        assert_eq!(l.wal_dir("15-1", &hist), "archive/main/15-1");
        let sha = "a".repeat(40);
        let s = StoredWal::new(&seg, &sha, Compress::Gz(6));
        assert_eq!(s.file_name, format!("000000010000000100000023-{sha}.gz"));
        assert_eq!(
            StoredWal::new(&hist, &sha, Compress::Gz(6)).file_name,
            "00000002.history"
        );
        // pgBackRest stores backup history files plain, beside the segments.
        let backup = WalName::parse("000000010000000100000023.00000028.backup").unwrap();
        let s = StoredWal::new(&backup, &sha, Compress::Gz(6));
        assert_eq!(s.file_name, "000000010000000100000023.00000028.backup");
        assert!(s.compress == Some(CompressType::None) && s.sha1.is_none());
        assert_eq!(
            l.wal_dir("15-1", &backup),
            "archive/main/15-1/0000000100000001"
        );
        assert_eq!(
            StoredWal::find(&backup, std::slice::from_ref(&s.file_name)),
            vec![s]
        );
    }

    /// Every type pgBackRest stores WAL with is named by its extension and read back; an
    /// extension no type has stays unreadable (and is reported, never guessed at).
    #[test]
    fn every_compression_type_names_and_recognizes_its_wal_files() {
        let seg = WalName::parse("000000010000000100000023").unwrap();
        let sha = "d".repeat(40);
        for (compress, ext) in [
            (Compress::None, ""),
            (Compress::Gz(6), ".gz"),
            (Compress::Bz2(9), ".bz2"),
            (Compress::Lz4(1), ".lz4"),
            (Compress::Zst(3), ".zst"),
        ] {
            let stored = StoredWal::new(&seg, &sha, compress);
            assert_eq!(stored.file_name, format!("{}-{sha}{ext}", seg.name));
            let found = StoredWal::classify(&stored.file_name).unwrap();
            assert_eq!(found.compress, Some(compress.kind()), "{ext}");
            assert!(found.readable());
        }
        let xz = StoredWal::classify(&format!("{}-{sha}.xz", seg.name)).unwrap();
        assert!(!xz.readable() && xz.extension == ".xz");
    }

    #[test]
    fn finds_stored_copies_and_ignores_lookalikes() {
        let seg = WalName::parse("000000010000000100000023").unwrap();
        let sha = "b".repeat(40);
        let entries = vec![
            format!("000000010000000100000023-{sha}.gz"),
            format!("000000010000000100000023.partial-{sha}.gz"),
            format!("000000010000000100000024-{sha}.gz"),
            "000000010000000100000023-short.gz".to_string(),
            format!("000000010000000100000023-{sha}"),
        ];
        let found = StoredWal::find(&seg, &entries);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].compress, Some(CompressType::Gz));
        assert_eq!(found[1].compress, Some(CompressType::None));
        assert_eq!(found[0].sha1.as_deref(), Some(sha.as_str()));
    }

    #[test]
    fn classifies_archive_id_entries() {
        let l = ArchiveIdListing::of(
            [
                "0000000200000000",
                "00000002.history",
                "0000000100000000",
                "0000000a00000000",
                "00000002.history.gz",
                "notes.txt",
                "0000000A.history",
            ]
            .map(String::from)
            .to_vec(),
        );
        assert_eq!(l.wal_dirs, vec!["0000000100000000", "0000000200000000"]);
        let hist: Vec<(&str, u32)> = l
            .history
            .iter()
            .map(|h| (h.name.as_str(), h.timeline()))
            .collect();
        assert_eq!(
            hist,
            vec![("00000002.history", 2), ("0000000A.history", 10)]
        );
        assert_eq!(
            l.unknown,
            vec!["00000002.history.gz", "0000000a00000000", "notes.txt"]
        );
    }

    #[test]
    fn classifies_wal_dir_entries() {
        let sha = "c".repeat(40);
        let seg = "000000020000000000000005";
        let l = WalDirListing::of(vec![
            format!("{seg}-{sha}.gz"),
            format!("{seg}.partial-{sha}.gz"),
            format!("{seg}.00000028.backup-{sha}"),
            format!("{seg}.00000060.backup"),
            format!("000000020000000000000006-{sha}.xz"),
            format!("000000020000000000000007-{sha}"),
            format!("{seg}-{sha}.gz.bak~"),
            format!("{seg}-short"),
            "00000002.00000000.00000005.dropped".to_string(),
            format!("00000002.history-{sha}"),
            "garbage".to_string(),
            seg.to_string(),
        ]);
        let kinds: Vec<(WalKind, Option<&str>, bool, &str)> = l
            .stored
            .iter()
            .map(|s| {
                (
                    s.wal.kind,
                    s.segment(),
                    s.sha1.is_some(),
                    s.extension.as_str(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                (WalKind::Segment, Some(seg), true, ".gz"),
                (WalKind::Backup, Some(seg), true, ""),
                (WalKind::Backup, Some(seg), false, ""),
                (WalKind::Partial, Some(seg), true, ".gz"),
                (
                    WalKind::Segment,
                    Some("000000020000000000000006"),
                    true,
                    ".xz"
                ),
                (WalKind::Segment, Some("000000020000000000000007"), true, ""),
            ]
        );
        assert_eq!(l.dropped, vec![WalName::parse(seg).unwrap()]);
        assert_eq!(l.stored[0].compress, Some(CompressType::Gz));
        assert!(l.stored[0].readable());
        assert_eq!(l.stored[4].compress, None);
        assert!(!l.stored[4].readable());
        assert!(l.stored[5].readable());
        assert_eq!(
            l.unknown,
            vec![
                "00000002.history-cccccccccccccccccccccccccccccccccccccccc".to_string(),
                seg.to_string(),
                format!("{seg}-{sha}.gz.bak~"),
                format!("{seg}-short"),
                "garbage".to_string(),
            ]
        );
        let segs: Vec<&str> = l.segments().filter_map(StoredWal::segment).collect();
        assert_eq!(
            segs,
            vec![seg, "000000020000000000000006", "000000020000000000000007"]
        );
        // A history file is found by its plain name in the archive id directory.
        let hist = WalName::parse("00000002.history").unwrap();
        let found = StoredWal::find(&hist, &["00000002.history".to_string()]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].segment(), None);
    }
}
