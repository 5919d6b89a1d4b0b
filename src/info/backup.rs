//! `backup.info`: which cluster the stanza's backups belong to (with the control and catalog
//! versions a restore must match), and the list of complete backups in `[backup:current]`,
//! one JSON summary per label. A backup is added here only after its manifest is complete.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DbInfo, IniDoc};
use crate::error::{Error, Result};
use crate::manifest::{BackupType, Manifest};
use crate::repo::RepoLayout;
use crate::storage::Storage;

/// What backup.info says about one backup (enough for info, expire and choosing a prior).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackupSummary {
    pub backup_type: BackupType,
    pub backup_prior: Option<String>,
    pub backup_reference: Vec<String>,
    pub backup_timestamp_start: i64,
    pub backup_timestamp_stop: i64,
    pub backup_lsn_start: String,
    pub backup_lsn_stop: String,
    pub backup_archive_start: String,
    pub backup_archive_stop: String,
    pub backup_info_size: u64,
    pub backup_info_size_delta: u64,
    pub backup_info_repo_size: u64,
    pub backup_info_repo_size_delta: u64,
    pub db_id: u32,
    pub backrest_version: String,
}

impl BackupSummary {
    pub fn of(m: &Manifest) -> BackupSummary {
        let s = m.sizes();
        BackupSummary {
            backup_type: m.backup.backup_type,
            backup_prior: m.backup.prior.clone(),
            backup_reference: m.references(),
            backup_timestamp_start: m.backup.timestamp_start,
            backup_timestamp_stop: m.backup.timestamp_stop.unwrap_or(0),
            backup_lsn_start: m.backup.lsn_start.clone(),
            backup_lsn_stop: m.backup.lsn_stop.clone().unwrap_or_default(),
            backup_archive_start: m.backup.archive_start.clone(),
            backup_archive_stop: m.backup.archive_stop.clone().unwrap_or_default(),
            backup_info_size: s.size,
            backup_info_size_delta: s.size_delta,
            backup_info_repo_size: s.repo_size,
            backup_info_repo_size_delta: s.repo_size_delta,
            db_id: m.db.id,
            backrest_version: crate::VERSION.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub db: DbInfo,
    /// Complete backups by label; labels sort by time.
    pub backups: BTreeMap<String, BackupSummary>,
    pub from_copy: bool,
}

const CURRENT: &str = "backup:current";

impl BackupInfo {
    pub fn load(storage: &dyn Storage, layout: &RepoLayout) -> Result<Option<BackupInfo>> {
        let path = layout.backup_info();
        let Some(loaded) = super::load(storage, &path)? else {
            return Ok(None);
        };
        let what = storage.describe(&path);
        let db = DbInfo::read_from(&loaded.doc, &what)?;
        let mut backups = BTreeMap::new();
        for (label, raw) in loaded.doc.sections.get(CURRENT).into_iter().flatten() {
            let summary: BackupSummary = serde_json::from_str(raw).map_err(|e| {
                Error::integrity(format!(
                    "'{what}' has an invalid entry for backup '{label}': {e}"
                ))
            })?;
            backups.insert(label.clone(), summary);
        }
        Ok(Some(BackupInfo {
            db,
            backups,
            from_copy: loaded.from_copy,
        }))
    }

    pub fn save(&self, storage: &dyn Storage, layout: &RepoLayout) -> Result<()> {
        let mut doc = IniDoc::default();
        self.db.write_to(&mut doc, true);
        for (label, summary) in &self.backups {
            let v = serde_json::to_value(summary)
                .map_err(|e| Error::internal(format!("backup.info encoding: {e}")))?;
            doc.set(CURRENT, label, &v);
        }
        super::save(storage, &layout.backup_info(), &mut doc)
    }

    /// The newest backup, of any type.
    pub fn latest(&self) -> Option<&str> {
        self.backups.keys().next_back().map(String::as_str)
    }

    /// The newest full backup.
    pub fn latest_full(&self) -> Option<&str> {
        self.backups
            .iter()
            .rev()
            .find(|(_, b)| b.backup_type == BackupType::Full)
            .map(|(l, _)| l.as_str())
    }
}
