//! `backup.info`: which cluster the stanza's backups belong to (with the control and catalog
//! versions a restore must match), and the list of complete backups in `[backup:current]`,
//! one JSON summary per label, with pgBackRest's keys. A backup is added here only after its
//! manifest is complete.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::DbInfo;
use crate::codec::Document;
use crate::error::{Error, Result};
use crate::label::BackupType;
pub use crate::label::{is_label, label_type};
use crate::metafile;
use crate::repo::RepoLayout;
use crate::storage::Storage;

/// One backup as `[backup:current]` records it: pgBackRest's keys, in its (name) order, with
/// the keys it omits when unset omitted too. pgBackRest reads the entry key by key in name
/// order and skips keys it does not know; it rewrites only the keys it knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackupSummary {
    // Defaults only for entries written by pg_backrest 0.1, which lacked these keys.
    #[serde(default = "format5")]
    pub backrest_format: u64,
    /// The release that wrote the backup (pgBackRest's version, or [`crate::codec::BACKREST_VERSION`]).
    pub backrest_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_annotation: Option<Value>,
    /// `null` for an offline backup, as pgBackRest writes it.
    #[serde(default)]
    pub backup_archive_start: Option<String>,
    #[serde(default)]
    pub backup_archive_stop: Option<String>,
    /// Whether a page checksum failed; absent in entries older than the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_error: Option<bool>,
    pub backup_info_repo_size: u64,
    pub backup_info_repo_size_delta: u64,
    /// Block incremental only (which pg_backrest does not write; kept when read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_info_repo_size_map: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_info_repo_size_map_delta: Option<u64>,
    pub backup_info_size: u64,
    pub backup_info_size_delta: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_lsn_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_lsn_stop: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_prior: Option<String>,
    /// Earlier backups this one needs; absent for a full backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backup_reference: Vec<String>,
    pub backup_timestamp_start: i64,
    pub backup_timestamp_stop: i64,
    pub backup_type: BackupType,
    pub db_id: u32,
    #[serde(default)]
    pub option_archive_check: bool,
    #[serde(default)]
    pub option_archive_copy: bool,
    #[serde(default)]
    pub option_backup_standby: bool,
    #[serde(default)]
    pub option_checksum_page: bool,
    #[serde(default)]
    pub option_compress: bool,
    #[serde(default)]
    pub option_hardlink: bool,
    #[serde(default)]
    pub option_online: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub db: DbInfo,
    /// Complete backups by label; labels sort by time.
    pub backups: BTreeMap<String, BackupSummary>,
    pub from_copy: bool,
}

const CURRENT: &str = "backup:current";

fn format5() -> u64 {
    crate::codec::FORMAT
}

#[cfg(test)]
impl BackupSummary {
    /// A complete summary of type `t` for tests to adjust.
    pub fn sample(t: BackupType) -> BackupSummary {
        BackupSummary {
            backrest_format: crate::codec::FORMAT,
            backrest_version: crate::codec::BACKREST_VERSION.into(),
            backup_annotation: None,
            backup_archive_start: Some("000000010000000000000002".into()),
            backup_archive_stop: Some("000000010000000000000002".into()),
            backup_error: Some(false),
            backup_info_repo_size: 1,
            backup_info_repo_size_delta: 1,
            backup_info_repo_size_map: None,
            backup_info_repo_size_map_delta: None,
            backup_info_size: 1,
            backup_info_size_delta: 1,
            backup_lsn_start: Some("0/2000028".into()),
            backup_lsn_stop: Some("0/2000100".into()),
            backup_prior: None,
            backup_reference: vec![],
            backup_timestamp_start: 1,
            backup_timestamp_stop: 2,
            backup_type: t,
            db_id: 1,
            option_archive_check: true,
            option_archive_copy: false,
            option_backup_standby: false,
            option_checksum_page: false,
            option_compress: true,
            option_hardlink: false,
            option_online: true,
        }
    }
}

impl BackupInfo {
    pub fn load(storage: &dyn Storage, layout: &RepoLayout) -> Result<Option<BackupInfo>> {
        let path = layout.backup_info();
        let Some(loaded) = metafile::load(storage, &path)? else {
            return Ok(None);
        };
        let mut info = BackupInfo::from_doc(&loaded.doc, &storage.describe(&path))?;
        info.from_copy = loaded.from_copy;
        Ok(Some(info))
    }

    /// Reads backup.info's content; `what` names the file in errors.
    pub fn from_doc(doc: &Document, what: &str) -> Result<BackupInfo> {
        let db = DbInfo::read_from(doc, what)?;
        let mut backups = BTreeMap::new();
        for (label, raw) in doc.section(CURRENT).into_iter().flatten() {
            let summary: BackupSummary = serde_json::from_str(raw).map_err(|e| {
                Error::integrity(format!(
                    "'{what}' has an invalid entry for backup '{}': {e}",
                    label.escape_debug()
                ))
            })?;
            check_labels(what, label, &summary)?;
            backups.insert(label.clone(), summary);
        }
        Ok(BackupInfo {
            db,
            backups,
            from_copy: false,
        })
    }

    pub fn save(&self, storage: &dyn Storage, layout: &RepoLayout) -> Result<()> {
        metafile::save(storage, &layout.backup_info(), &self.to_doc()?)
    }

    /// The document pgBackRest writes: `[backup:current]` by label, then `[db]` and
    /// `[db:history]`.
    pub fn to_doc(&self) -> Result<Document> {
        let mut doc = Document::new();
        for (label, summary) in &self.backups {
            let v = serde_json::to_value(summary)
                .map_err(|e| Error::internal(format!("backup.info encoding: {e}")))?;
            doc.set(CURRENT, label, &v);
        }
        self.db.write_to(&mut doc, true);
        Ok(doc)
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

/// Every label backup.info names (the backup's own, its prior and its references) becomes a
/// path in the repository, so one that is not a label backup could have written (`..`, a
/// slash, a type that disagrees with the entry) means the file was altered after its
/// checksum was recomputed: refused here, once, rather than by every command that uses it.
fn check_labels(what: &str, label: &str, summary: &BackupSummary) -> Result<()> {
    let bad = |l: &str, role: &str| {
        Error::integrity(format!(
            "'{what}' names an invalid backup label '{}' ({role}): not YYYYMMDD-HHMMSSF or \
             FULL_YYYYMMDD-HHMMSSD|I",
            l.escape_debug()
        ))
        .with_hint("backup.info was altered; restore it from a copy of the repository")
    };
    match label_type(label) {
        Some(t) if t == summary.backup_type => {}
        Some(t) => {
            return Err(Error::integrity(format!(
                "'{what}' has backup '{label}' recorded as {}, but its label says {}",
                summary.backup_type.name(),
                t.name()
            ))
            .with_hint("backup.info was altered; restore it from a copy of the repository"))
        }
        None => return Err(bad(label, "a backup")),
    }
    if let Some(prior) = &summary.backup_prior {
        if !is_label(prior) {
            return Err(bad(prior, &format!("prior of {label}")));
        }
    }
    if let Some(r) = summary.backup_reference.iter().find(|r| !is_label(r)) {
        return Err(bad(r, &format!("referenced by {label}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use crate::info::DbEntry;
    use crate::storage::posix::PosixStorage;

    fn summary(t: BackupType, prior: Option<&str>, refs: &[&str]) -> BackupSummary {
        BackupSummary {
            backup_prior: prior.map(String::from),
            backup_reference: refs.iter().map(|r| r.to_string()).collect(),
            ..BackupSummary::sample(t)
        }
    }

    const FIXTURE: &[u8] = include_bytes!("../../test/data/pgbackrest-2.45/backup.info");

    #[test]
    fn backup_info_written_by_pgbackrest_reads_and_writes_back_byte_for_byte() {
        let doc = crate::codec::parse(FIXTURE).unwrap();
        let info = BackupInfo::from_doc(&doc, "backup.info").unwrap();
        assert_eq!(info.db.current.archive_id(), "15-1");
        assert_eq!(info.db.current.catalog_version, Some(202209061));
        let full = &info.backups["20261202-141549F"];
        assert_eq!(full.backup_type, BackupType::Full);
        assert!(full.backup_reference.is_empty() && full.backup_prior.is_none());
        assert_eq!(full.backup_lsn_stop.as_deref(), Some("0/2000100"));
        assert_eq!(full.backup_error, Some(false));
        let incr = &info.backups["20261202-141549F_20261202-141553I"];
        assert_eq!(incr.backup_reference, vec!["20261202-141549F".to_string()]);
        assert!(incr.option_compress && incr.option_online && !incr.option_hardlink);
        let rendered = info.to_doc().unwrap().render();
        assert_eq!(
            String::from_utf8(rendered).unwrap(),
            String::from_utf8(FIXTURE.to_vec()).unwrap()
        );
    }

    /// backup.info written with a valid checksum (as a tamperer who recomputes it would) but
    /// holding `backups`; what loading it gives.
    fn load_with(backups: &[(&str, BackupSummary)]) -> Result<Option<BackupInfo>> {
        let tmp = tempfile::tempdir().unwrap();
        let repo = PosixStorage::new(tmp.path());
        let layout = RepoLayout::new("main");
        BackupInfo {
            db: DbInfo::new(DbEntry {
                id: 1,
                system_id: 7,
                version: "15".into(),
                catalog_version: Some(202209061),
                control_version: Some(1300),
            }),
            backups: backups
                .iter()
                .map(|(l, s)| (l.to_string(), s.clone()))
                .collect(),
            from_copy: false,
        }
        .save(&repo, &layout)
        .unwrap();
        BackupInfo::load(&repo, &layout)
    }

    #[test]
    fn a_tampered_label_in_backup_info_is_an_integrity_error_naming_it() {
        const F: &str = "20261122-044646F";
        const I: &str = "20261122-044646F_20261122-050000I";
        let full = summary(BackupType::Full, None, &[]);
        let incr = summary(BackupType::Incr, Some(F), &[F]);
        let ok = load_with(&[(F, full.clone()), (I, incr.clone())])
            .unwrap()
            .unwrap();
        assert_eq!(ok.backups.len(), 2);
        for (label, s, says) in [
            ("..", full.clone(), "invalid backup label '..' (a backup)"),
            ("../../x", full.clone(), "invalid backup label '../../x'"),
            (
                I,
                summary(BackupType::Incr, Some("../x"), &[F]),
                "'../x' (prior of",
            ),
            (
                I,
                summary(BackupType::Incr, Some(F), &["x/.."]),
                "'x/..' (referenced by",
            ),
            (
                "20261122-044646F",
                incr.clone(),
                "recorded as incr, but its label says full",
            ),
        ] {
            let e = load_with(&[(label, s)]).unwrap_err();
            assert_eq!(e.kind, Kind::Integrity, "{label}: {e:?}");
            assert!(e.message.contains("backup.info"), "{e:?}");
            assert!(e.message.contains(says), "{says}: {e:?}");
        }
    }
}
