//! `archive.info`: which cluster the stanza's WAL archive belongs to, and the archive ids of
//! every cluster it has belonged to (newest first is the search order of archive-get).

use super::{DbInfo, IniDoc};
use crate::error::Result;
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
        let Some(loaded) = super::load(storage, &path)? else {
            return Ok(None);
        };
        let db = DbInfo::read_from(&loaded.doc, &storage.describe(&path))?;
        Ok(Some(ArchiveInfo {
            db,
            from_copy: loaded.from_copy,
        }))
    }

    pub fn save(&self, storage: &dyn Storage, layout: &RepoLayout) -> Result<()> {
        let mut doc = IniDoc::default();
        self.db.write_to(&mut doc, false);
        super::save(storage, &layout.archive_info(), &mut doc)
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
