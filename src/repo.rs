//! The repository layout, built in one place: every repository path pg_backrest reads or
//! writes comes from here, so the layout fixed by the contract is encoded exactly once.
//!
//! ```text
//! archive/STANZA/archive.info (+ .copy)
//! archive/STANZA/ARCHIVE_ID/TIMELINE.history
//! archive/STANZA/ARCHIVE_ID/<first 16 hex>/<segment>-<sha1>[.gz]
//! backup/STANZA/backup.info (+ .copy)
//! backup/STANZA/LABEL/backup.manifest (+ .copy)
//! backup/STANZA/LABEL/pg_data/... and pg_tblspc/OID/...   one file per data file
//! ```

use crate::pg::wal::{WalKind, WalName};
use crate::pipeline::Compress;

pub const COPY_SUFFIX: &str = ".copy";

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
        format!(
            "backup/{}/{label}/{}",
            self.stanza,
            crate::manifest::MANIFEST_FILE
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
    /// SHA-1 of the original content, when the name carries it (not for history files).
    pub sha1: Option<String>,
    pub compressed: bool,
}

impl StoredWal {
    /// The stored name of `wal` with this content checksum. History files keep their plain
    /// name, uncompressed, as the contract's layout has them.
    pub fn new(wal: &WalName, sha1: &str, compress: Compress) -> StoredWal {
        if wal.kind == WalKind::History {
            return StoredWal {
                file_name: wal.name.clone(),
                sha1: None,
                compressed: false,
            };
        }
        StoredWal {
            file_name: format!("{}-{sha1}{}", wal.name, compress.extension()),
            sha1: Some(sha1.to_string()),
            compressed: compress != Compress::None,
        }
    }

    /// Recognizes the stored copies of `wal` among directory entries.
    pub fn find(wal: &WalName, entries: &[String]) -> Vec<StoredWal> {
        entries
            .iter()
            .filter_map(|e| StoredWal::parse(wal, e))
            .collect()
    }

    fn parse(wal: &WalName, entry: &str) -> Option<StoredWal> {
        if wal.kind == WalKind::History {
            return (entry == wal.name).then(|| StoredWal {
                file_name: entry.to_string(),
                sha1: None,
                compressed: false,
            });
        }
        let rest = entry.strip_prefix(&wal.name)?.strip_prefix('-')?;
        let (sha1, compressed) = match rest.strip_suffix(".gz") {
            Some(s) => (s, true),
            None => (rest, false),
        };
        let is_sha1 = sha1.len() == 40 && sha1.bytes().all(|b| b.is_ascii_hexdigit());
        is_sha1.then(|| StoredWal {
            file_name: entry.to_string(),
            sha1: Some(sha1.to_string()),
            compressed,
        })
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
        assert!(found[0].compressed && !found[1].compressed);
        assert_eq!(found[0].sha1.as_deref(), Some(sha.as_str()));
    }
}
