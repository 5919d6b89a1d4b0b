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
    /// Whether any page checksum failed in this backup (pgBackRest's `backup-error`); absent
    /// in entries written before it was recorded, which `info` then shows as unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_error: Option<bool>,
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
            backup_error: Some(
                m.files
                    .values()
                    .any(|f| !f.checksum_page_error.is_empty() || f.checksum_page == Some(false)),
            ),
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

/// `YYYYMMDD-HHMMSS` at the start of `s`, as backup labels carry it.
fn is_stamp(s: &[u8]) -> bool {
    s.len() == 15
        && s.iter().enumerate().all(|(i, b)| match i {
            8 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// The type a backup label names, when it has the only shapes backup ever writes: a full
/// `YYYYMMDD-HHMMSSF`, or a diff or incr `<full label>_YYYYMMDD-HHMMSS` + `D` or `I`. Labels
/// become directory names in the repository, so nothing else is trusted as one.
pub fn label_type(label: &str) -> Option<BackupType> {
    let b = label.as_bytes();
    match b.len() {
        16 if is_stamp(&b[..15]) && b[15] == b'F' => Some(BackupType::Full),
        // Bytes, not `&label[..16]`: a tampered label may have a multi-byte character there.
        33 if is_stamp(&b[..15]) && b[15] == b'F' && b[16] == b'_' && is_stamp(&b[17..32]) => {
            match b[32] {
                b'D' => Some(BackupType::Diff),
                b'I' => Some(BackupType::Incr),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether `name` is a backup label (see [`label_type`]).
pub fn is_label(name: &str) -> bool {
    label_type(name).is_some()
}

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
                    "'{what}' has an invalid entry for backup '{}': {e}",
                    label.escape_debug()
                ))
            })?;
            check_labels(&what, label, &summary)?;
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
            backup_type: t,
            backup_prior: prior.map(String::from),
            backup_reference: refs.iter().map(|r| r.to_string()).collect(),
            backup_timestamp_start: 1,
            backup_timestamp_stop: 2,
            backup_lsn_start: "0/2000028".into(),
            backup_lsn_stop: "0/2000100".into(),
            backup_archive_start: "000000010000000000000002".into(),
            backup_archive_stop: "000000010000000000000002".into(),
            backup_info_size: 1,
            backup_info_size_delta: 1,
            backup_info_repo_size: 1,
            backup_info_repo_size_delta: 1,
            db_id: 1,
            backrest_version: "0".into(),
            backup_error: None,
        }
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

    #[test]
    fn labels_have_only_the_shapes_backup_writes() {
        assert_eq!(label_type("20261122-044646F"), Some(BackupType::Full));
        assert_eq!(
            label_type("20261122-044646F_20261122-050000D"),
            Some(BackupType::Diff)
        );
        assert_eq!(
            label_type("20261122-044646F_20261122-050000I"),
            Some(BackupType::Incr)
        );
        for bad in [
            "",
            "..",
            "../../etc",
            "20261122-044646D",
            "20261122-04464xF",
            "2026112-0446460F",
            "20261122-044646F_20261122-050000F",
            "20261122-044646I_20261122-050000I",
            "20261122-044646F/20261122-050000I",
            "20261122-044646F_20261122-050000Ix",
            "20261122-044646F/../../../../../tmp",
            // 33 bytes with a two-byte character across byte 16: refused, never a panic.
            "20261122-044646\u{e9}20261122-050000I",
        ] {
            assert_eq!(label_type(bad), None, "{bad:?}");
        }
    }
}
