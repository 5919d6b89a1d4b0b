//! `backup.info`: which cluster the stanza's backups belong to (with the control and catalog
//! versions a restore must match). The list of backups joins it with the backup command.

use super::{DbInfo, IniDoc};
use crate::error::Result;
use crate::repo::RepoLayout;
use crate::storage::Storage;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub db: DbInfo,
    pub from_copy: bool,
}

impl BackupInfo {
    pub fn load(storage: &dyn Storage, layout: &RepoLayout) -> Result<Option<BackupInfo>> {
        let path = layout.backup_info();
        let Some(loaded) = super::load(storage, &path)? else {
            return Ok(None);
        };
        let db = DbInfo::read_from(&loaded.doc, &storage.describe(&path))?;
        Ok(Some(BackupInfo {
            db,
            from_copy: loaded.from_copy,
        }))
    }

    pub fn save(&self, storage: &dyn Storage, layout: &RepoLayout) -> Result<()> {
        let mut doc = IniDoc::default();
        self.db.write_to(&mut doc, true);
        super::save(storage, &layout.backup_info(), &mut doc)
    }
}
