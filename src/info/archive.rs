//! `archive.info`: which cluster the stanza's WAL archive belongs to, and the archive ids of
//! every cluster it has belonged to (newest first is the search order of archive-get).

use super::DbInfo;
use crate::codec::Document;
use crate::error::Result;
use crate::metafile;
use crate::repo::RepoLayout;
use crate::storage::Storage;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveInfo {
    pub db: DbInfo,
    /// Loaded from the `.copy` because the main file was damaged or missing.
    pub from_copy: bool,
}

impl ArchiveInfo {
    pub fn load(storage: &dyn Storage, layout: &RepoLayout) -> Result<Option<ArchiveInfo>> {
        let path = layout.archive_info();
        let Some(loaded) = metafile::load(storage, &path)? else {
            return Ok(None);
        };
        let db = DbInfo::read_from(&loaded.doc, &storage.describe(&path))?;
        Ok(Some(ArchiveInfo {
            db,
            from_copy: loaded.from_copy,
        }))
    }

    pub fn save(&self, storage: &dyn Storage, layout: &RepoLayout) -> Result<()> {
        metafile::save(storage, &layout.archive_info(), &self.to_doc())
    }

    /// The document pgBackRest writes: `[db]` and `[db:history]` without catalog versions.
    pub fn to_doc(&self) -> Document {
        let mut doc = Document::new();
        self.db.write_to(&mut doc, false);
        doc
    }

    /// Archive ids to search for a WAL file, newest cluster first.
    pub fn archive_ids_newest_first(&self) -> Vec<String> {
        self.db
            .history
            .iter()
            .rev()
            .map(|h| h.archive_id())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!("../../test/data/pgbackrest-2.45/archive.info");

    #[test]
    fn archive_info_written_by_pgbackrest_reads_and_writes_back_byte_for_byte() {
        let doc = crate::codec::parse(FIXTURE).unwrap();
        let info = ArchiveInfo {
            db: DbInfo::read_from(&doc, "archive.info").unwrap(),
            from_copy: false,
        };
        assert_eq!(info.archive_ids_newest_first(), vec!["15-1".to_string()]);
        assert_eq!(info.db.current.system_id, 7714710211506830604);
        assert_eq!(
            String::from_utf8(info.to_doc().render()).unwrap(),
            String::from_utf8(FIXTURE.to_vec()).unwrap()
        );
    }
}
