//! `backup.manifest`: everything a backup holds and everything restore needs to rebuild the
//! data directory: the backup's own facts (`[backup]`, `[backup:db]`, `[backup:option]`),
//! where each part of the cluster lives (`[backup:target]`), and every path, file and link
//! (`[target:path]`, `[target:file]`, `[target:link]`).
//!
//! The file is an info file (see [`crate::info`]): plain INI with JSON values and a checksum
//! of its own, so Python's configparser reads it. File keys are paths inside the backup
//! (`pg_data/base/5/16396`, `pg_tblspc/16385/PG_15_202209061/5/16400`); the stored copy is
//! `LABEL/<key>` plus `.gz` when compressed, in the backup named by `reference` when the
//! file's data lives in an earlier backup.
//!
//! While a backup runs, only `backup.manifest.copy` exists and is rewritten now and then with
//! the files copied so far: that is what a resumed backup trusts. `backup.manifest` appears
//! only when the backup is complete.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codec::Document;
use crate::error::{Error, Kind, Result};
use crate::info::backup::BackupSummary;
use crate::info::DbEntry;
use crate::label::is_label;
use crate::metafile;
use crate::pipeline::{Compress, CompressType};
use crate::storage::Storage;

pub use crate::label::BackupType;
pub use crate::repo::MANIFEST_FILE;

/// The backup's own facts: `[backup]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackupFacts {
    pub label: String,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    pub prior: Option<String>,
    pub timestamp_start: i64,
    pub timestamp_stop: Option<i64>,
    pub lsn_start: String,
    pub lsn_stop: Option<String>,
    pub archive_start: String,
    pub archive_stop: Option<String>,
    pub timeline: u32,
}

/// The options that shaped the backup: `[backup:option]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackupOptions {
    pub compress_type: String,
    pub compress_level: i32,
    pub process_max: u32,
    pub delta: bool,
    pub archive_check: bool,
    pub online: bool,
}

impl BackupOptions {
    /// How this backup's files are stored. A type this build has no decoder for (a
    /// repository written by another tool) is an error naming it, never a guess.
    pub fn compress(&self) -> Result<Compress> {
        let kind = CompressType::parse(&self.compress_type).ok_or_else(|| {
            Error::new(
                Kind::NotImplemented,
                format!(
                    "the backup's files are stored with compress-type '{}', which pg_backrest cannot read",
                    self.compress_type
                ),
            )
            .with_hint("use a backup stored with none, gz, bz2, lz4 or zst, or the tool that wrote this one")
        })?;
        // The level only matters for writing; one outside the type's range (written by
        // another tool) still names how to read the files.
        kind.with_level(Some(i64::from(self.compress_level)))
            .or_else(|_| kind.with_level(None))
    }
}

/// Where a part of the cluster lives on the database host: `[backup:target]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Target {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub mode: String,
    pub user: String,
    pub group: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FileEntry {
    pub size: u64,
    /// mtime, Unix seconds.
    pub timestamp: i64,
    /// SHA-1 of the original content.
    pub checksum: String,
    /// Bytes as stored in the repository.
    pub repo_size: u64,
    pub mode: String,
    pub user: String,
    pub group: String,
    /// The backup that holds the data, when not this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Whether page checksums were verified (relation files of a cluster with checksums).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum_page: Option<bool>,
    /// Blocks whose page checksum failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checksum_page_error: Vec<u32>,
    /// The second (Unix) at which reading the file for this copy began. A file whose mtime is
    /// still the recorded one and earlier than this second has not changed since it was read,
    /// which is what a resume or a later diff/incr may rely on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEntry {
    pub destination: String,
    pub user: String,
    pub group: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub backup: BackupFacts,
    pub db: DbEntry,
    pub options: BackupOptions,
    pub targets: BTreeMap<String, Target>,
    pub paths: BTreeMap<String, Owner>,
    pub files: BTreeMap<String, FileEntry>,
    pub links: BTreeMap<String, LinkEntry>,
    /// Databases by name → OID (`[db]`), so a restore can include only some. Empty in
    /// manifests written before the list was recorded.
    pub databases: BTreeMap<String, u32>,
}

fn to_json<T: Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::internal(format!("manifest encoding: {e}")))
}

impl Manifest {
    pub fn to_doc(&self) -> Result<Document> {
        let mut doc = Document::new();
        if let Value::Object(map) = to_json(&self.backup)? {
            for (k, v) in map {
                doc.set("backup", &format!("backup-{k}"), &v);
            }
        }
        let db = &self.db;
        doc.set("backup:db", "db-id", &Value::from(db.id));
        doc.set("backup:db", "db-system-id", &Value::from(db.system_id));
        doc.set("backup:db", "db-version", &Value::from(db.version.clone()));
        doc.set(
            "backup:db",
            "db-catalog-version",
            &Value::from(db.catalog_version.unwrap_or(0)),
        );
        doc.set(
            "backup:db",
            "db-control-version",
            &Value::from(db.control_version.unwrap_or(0)),
        );
        if let Value::Object(map) = to_json(&self.options)? {
            for (k, v) in map {
                doc.set("backup:option", &format!("option-{k}"), &v);
            }
        }
        for (k, v) in &self.targets {
            doc.set("backup:target", k, &to_json(v)?);
        }
        for (k, v) in &self.paths {
            doc.set("target:path", k, &to_json(v)?);
        }
        for (k, v) in &self.files {
            doc.set("target:file", k, &to_json(v)?);
        }
        for (k, v) in &self.links {
            doc.set("target:link", k, &to_json(v)?);
        }
        for (name, oid) in &self.databases {
            doc.set("db", name, &serde_json::json!({ "db-id": oid }));
        }
        Ok(doc)
    }

    pub fn from_doc(doc: &Document, what: &str) -> Result<Manifest> {
        let bad = |why: String| Error::integrity(format!("manifest '{what}' is invalid: {why}"));
        let section = |name: &str| -> BTreeMap<String, Value> {
            doc.section(name)
                .map(|s| {
                    s.iter()
                        .filter_map(|(k, v)| serde_json::from_str(v).ok().map(|v| (k.clone(), v)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let strip = |m: BTreeMap<String, Value>, prefix: &str| -> Value {
            Value::Object(
                m.into_iter()
                    .map(|(k, v)| (k.strip_prefix(prefix).unwrap_or(&k).to_string(), v))
                    .collect(),
            )
        };
        let backup: BackupFacts = serde_json::from_value(strip(section("backup"), "backup-"))
            .map_err(|e| bad(format!("[backup]: {e}")))?;
        let options: BackupOptions =
            serde_json::from_value(strip(section("backup:option"), "option-"))
                .map_err(|e| bad(format!("[backup:option]: {e}")))?;
        let dbs = section("backup:db");
        let num = |k: &str| dbs.get(k).and_then(Value::as_u64);
        let db = DbEntry {
            id: num("db-id").ok_or_else(|| bad("[backup:db] db-id".into()))? as u32,
            system_id: num("db-system-id").ok_or_else(|| bad("[backup:db] db-system-id".into()))?,
            version: dbs
                .get("db-version")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("[backup:db] db-version".into()))?
                .to_string(),
            catalog_version: num("db-catalog-version").map(|n| n as u32),
            control_version: num("db-control-version").map(|n| n as u32),
        };
        fn typed<T: for<'de> Deserialize<'de>>(
            m: BTreeMap<String, Value>,
            name: &str,
            bad: &dyn Fn(String) -> Error,
        ) -> Result<BTreeMap<String, T>> {
            m.into_iter()
                .map(|(k, v)| {
                    let t =
                        serde_json::from_value(v).map_err(|e| bad(format!("[{name}] {k}: {e}")))?;
                    Ok((k, t))
                })
                .collect()
        }
        let manifest = Manifest {
            backup,
            db,
            options,
            targets: typed(section("backup:target"), "backup:target", &bad)?,
            paths: typed(section("target:path"), "target:path", &bad)?,
            files: typed(section("target:file"), "target:file", &bad)?,
            links: typed(section("target:link"), "target:link", &bad)?,
            databases: section("db")
                .into_iter()
                .filter_map(|(name, v)| Some((name, v.get("db-id")?.as_u64()? as u32)))
                .collect(),
        };
        manifest.check_keys().map_err(bad)?;
        Ok(manifest)
    }

    /// Keys become paths on restore, and targets and links places restore writes to: refuse
    /// anything a tampered manifest could use to write outside the cluster's directories.
    fn check_keys(&self) -> std::result::Result<(), String> {
        let plain_absolute = |p: &str| p.starts_with('/') && !p.split('/').any(|c| c == "..");
        let tablespace_key = |k: &str| {
            k.strip_prefix("pg_tblspc/")
                .is_some_and(|oid| !oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit()))
        };
        for (key, target) in &self.targets {
            if !(key == "pg_data" || tablespace_key(key)) || !plain_absolute(&target.path) {
                return Err(format!(
                    "target '{key}' -> '{}' is not a data directory or tablespace",
                    target.path
                ));
            }
        }
        for (key, link) in &self.links {
            let allowed =
                key == "pg_data/pg_wal" || key.strip_prefix("pg_data/").is_some_and(tablespace_key);
            if !allowed || !plain_absolute(&link.destination) {
                return Err(format!(
                    "link '{key}' -> '{}' is not a tablespace or pg_wal link",
                    link.destination
                ));
            }
        }
        // Labels become repository paths and WAL names are sliced and compared by position:
        // a tampered value must be an integrity error here, never a panic or a path later.
        let labels = std::iter::once(&self.backup.label)
            .chain(&self.backup.prior)
            .chain(self.files.values().filter_map(|f| f.reference.as_ref()));
        for label in labels {
            if !is_label(label) {
                return Err(format!("'{label}' is not a backup label"));
            }
        }
        for wal in std::iter::once(&self.backup.archive_start).chain(&self.backup.archive_stop) {
            if !crate::pg::wal::is_upper_hex(wal, 24) {
                return Err(format!("'{wal}' is not a WAL segment name"));
            }
        }
        let keys = self
            .paths
            .keys()
            .chain(self.files.keys())
            .chain(self.links.keys());
        for key in keys {
            let ok =
                (key == "pg_data" || key.starts_with("pg_data/") || key.starts_with("pg_tblspc/"))
                    && !key
                        .split('/')
                        .any(|c| c.is_empty() || c == "." || c == "..");
            if !ok {
                return Err(format!("path '{key}' is not inside the backup"));
            }
        }
        Ok(())
    }

    /// The stored name of a file of this manifest, relative to the backup directory of the
    /// backup that holds it.
    pub fn stored_name(&self, key: &str) -> String {
        // pgBackRest's rule (the type's name as extension) also names the files of a type
        // this build cannot read, so that they are reported as such and not as missing.
        match CompressType::parse(&self.options.compress_type) {
            Some(kind) => format!("{key}{}", kind.extension()),
            None => format!("{key}.{}", self.options.compress_type),
        }
    }

    /// Loads `LABEL/backup.manifest`, falling back to its copy; `None` when neither exists.
    pub fn load(storage: &dyn Storage, path: &str) -> Result<Option<Manifest>> {
        match metafile::load(storage, path)? {
            None => Ok(None),
            Some(l) => Manifest::from_doc(&l.doc, &storage.describe(path)).map(Some),
        }
    }

    /// Loads only the in-progress `.copy` (what a resumed backup may trust).
    pub fn load_copy(storage: &dyn Storage, path: &str) -> Result<Option<Manifest>> {
        let copy = metafile::copy_path(path);
        match metafile::load_one(storage, &copy) {
            Ok(Some(doc)) => Manifest::from_doc(&doc, &storage.describe(&copy)).map(Some),
            Ok(None) | Err(_) => Ok(None),
        }
    }

    /// Writes the finished manifest: the file and its copy.
    pub fn save(&self, storage: &dyn Storage, path: &str) -> Result<()> {
        metafile::save(storage, path, &self.to_doc()?)
    }

    /// Writes only the copy: the backup's progress so far.
    pub fn save_progress(&self, storage: &dyn Storage, path: &str) -> Result<()> {
        metafile::save_one(storage, &metafile::copy_path(path), &self.to_doc()?)
    }

    /// This backup's entry in backup.info's `[backup:current]`, as pgBackRest derives it from
    /// a manifest.
    pub fn summary(&self) -> BackupSummary {
        let s = self.sizes();
        BackupSummary {
            backrest_format: crate::codec::FORMAT,
            backrest_version: crate::codec::BACKREST_VERSION.to_string(),
            backup_annotation: None,
            backup_archive_start: Some(self.backup.archive_start.clone()),
            backup_archive_stop: self.backup.archive_stop.clone(),
            backup_error: Some(
                self.files
                    .values()
                    .any(|f| !f.checksum_page_error.is_empty()),
            ),
            backup_info_repo_size: s.repo_size,
            backup_info_repo_size_delta: s.repo_size_delta,
            backup_info_repo_size_map: None,
            backup_info_repo_size_map_delta: None,
            backup_info_size: s.size,
            backup_info_size_delta: s.size_delta,
            backup_lsn_start: Some(self.backup.lsn_start.clone()),
            backup_lsn_stop: self.backup.lsn_stop.clone(),
            backup_prior: self.backup.prior.clone(),
            backup_reference: self.references(),
            backup_timestamp_start: self.backup.timestamp_start,
            backup_timestamp_stop: self.backup.timestamp_stop.unwrap_or(0),
            backup_type: self.backup.backup_type,
            db_id: self.db.id,
            option_archive_check: self.options.archive_check,
            option_archive_copy: false,
            option_backup_standby: false,
            option_checksum_page: self.files.values().any(|f| f.checksum_page.is_some()),
            option_compress: self.options.compress_type != CompressType::None.name(),
            option_hardlink: false,
            option_online: self.options.online,
        }
    }

    /// Size of the database (original bytes) and of this backup's own part of it.
    pub fn sizes(&self) -> Sizes {
        let mut s = Sizes::default();
        for f in self.files.values() {
            s.size += f.size;
            s.repo_size += f.repo_size;
            if f.reference.is_none() {
                s.size_delta += f.size;
                s.repo_size_delta += f.repo_size;
            }
        }
        s
    }

    /// Labels of earlier backups whose files this one needs.
    pub fn references(&self) -> Vec<String> {
        let mut refs: Vec<String> = self
            .files
            .values()
            .filter_map(|f| f.reference.clone())
            .collect();
        refs.sort();
        refs.dedup();
        refs
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sizes {
    pub size: u64,
    pub size_delta: u64,
    pub repo_size: u64,
    pub repo_size_delta: u64,
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn sample() -> Manifest {
        let owner = Owner {
            mode: "0700".into(),
            user: "postgres".into(),
            group: "postgres".into(),
        };
        let mut m = Manifest {
            backup: BackupFacts {
                label: "20261122-101500F".into(),
                backup_type: BackupType::Full,
                prior: None,
                timestamp_start: 1_795_000_000,
                timestamp_stop: Some(1_795_000_100),
                lsn_start: "0/2000028".into(),
                lsn_stop: Some("0/2000138".into()),
                archive_start: "000000010000000000000002".into(),
                archive_stop: Some("000000010000000000000002".into()),
                timeline: 1,
            },
            db: DbEntry {
                id: 1,
                system_id: 7_300_000_000_000_000_001,
                version: "15".into(),
                catalog_version: Some(202209061),
                control_version: Some(1300),
            },
            options: BackupOptions {
                compress_type: "gz".into(),
                compress_level: 6,
                process_max: 2,
                delta: false,
                archive_check: true,
                online: true,
            },
            targets: BTreeMap::new(),
            paths: BTreeMap::new(),
            files: BTreeMap::new(),
            links: BTreeMap::new(),
            databases: BTreeMap::from([("postgres".to_string(), 5), ("app".to_string(), 16384)]),
        };
        m.targets.insert(
            "pg_data".into(),
            Target {
                path: "/var/lib/pg".into(),
                kind: "path".into(),
                tablespace_id: None,
                tablespace_name: None,
            },
        );
        m.paths.insert("pg_data".into(), owner.clone());
        m.files.insert(
            "pg_data/base/1/1259".into(),
            FileEntry {
                size: 8192,
                timestamp: 1_795_000_000,
                checksum: "a".repeat(40),
                repo_size: 100,
                mode: "0600".into(),
                user: "postgres".into(),
                group: "postgres".into(),
                reference: Some("20261121-101500F".into()),
                checksum_page: Some(true),
                checksum_page_error: vec![3],
                copied_at: Some(1_795_000_050),
            },
        );
        m
    }

    #[test]
    fn round_trips_through_ini() {
        let m = sample();
        let doc = m.to_doc().unwrap();
        let text = String::from_utf8(doc.render()).unwrap();
        assert!(
            text.contains("[backup]\nbackup-archive-start=\"000000010000000000000002\""),
            "{text}"
        );
        assert!(
            text.contains("[target:file]\npg_data/base/1/1259={"),
            "{text}"
        );
        assert_eq!(Manifest::from_doc(&doc, "m").unwrap(), m);
        assert_eq!(m.references(), vec!["20261121-101500F".to_string()]);
        assert_eq!(
            m.stored_name("pg_data/base/1/1259"),
            "pg_data/base/1/1259.gz"
        );
    }

    #[test]
    fn targets_and_links_that_escape_are_refused() {
        let link = |d: &str| LinkEntry {
            destination: d.into(),
            user: "u".into(),
            group: "g".into(),
        };
        let mut m = sample();
        m.links.insert("pg_data/base".into(), link("/etc"));
        let e = Manifest::from_doc(&m.to_doc().unwrap(), "m").unwrap_err();
        assert!(
            e.message.contains("is not a tablespace or pg_wal link"),
            "{e:?}"
        );
        let mut m = sample();
        m.links
            .insert("pg_data/pg_tblspc/16385".into(), link("/srv/../etc"));
        assert!(Manifest::from_doc(&m.to_doc().unwrap(), "m").is_err());
        let mut m = sample();
        let ts = Target {
            path: "/srv/ts".into(),
            kind: "link".into(),
            tablespace_id: None,
            tablespace_name: None,
        };
        m.targets.insert("pg_tblspc/x".into(), ts);
        assert!(Manifest::from_doc(&m.to_doc().unwrap(), "m").is_err());
        let mut m = sample();
        m.links
            .insert("pg_data/pg_tblspc/16385".into(), link("/srv/ts"));
        assert!(Manifest::from_doc(&m.to_doc().unwrap(), "m").is_ok());
    }

    #[test]
    fn labels_and_wal_names_are_checked_on_load() {
        assert!(is_label("20261122-050000F"));
        assert!(is_label("20261122-050000F_20261122-060000I"));
        assert!(is_label("20261122-050000F_20261122-060000D"));
        for bad in [
            "20261122-050000",
            "20261122-050000I",
            "2026112é-050000F",
            "../../../../etc/x",
            "20261122-050000F_20261122-060000F",
            "20261122-050000F_x",
        ] {
            assert!(!is_label(bad), "{bad}");
        }
        type Tamper = fn(&mut Manifest);
        let cases: [(Tamper, &str); 5] = [
            (|m| m.backup.label = "x".into(), "not a backup label"),
            (
                |m| m.backup.prior = Some("../x".into()),
                "not a backup label",
            ),
            (
                |m| {
                    let f = m.files.values_mut().next().unwrap();
                    f.reference = Some("../../elsewhere".into());
                },
                "not a backup label",
            ),
            (
                |m| m.backup.archive_start = "0000é".into(),
                "not a WAL segment",
            ),
            (
                |m| m.backup.archive_stop = Some("1".into()),
                "not a WAL segment",
            ),
        ];
        for (tamper, why) in cases {
            let mut m = sample();
            tamper(&mut m);
            let e = Manifest::from_doc(&m.to_doc().unwrap(), "m").unwrap_err();
            assert_eq!(e.kind, crate::error::Kind::Integrity);
            assert!(e.message.contains(why), "{e:?}");
        }
    }

    #[test]
    fn keys_that_leave_the_backup_are_refused() {
        for bad in [
            "pg_data/../../etc/passwd",
            "/etc/passwd",
            "pg_data//x",
            "other/x",
        ] {
            let mut m = sample();
            let entry = m.files.values().next().unwrap().clone();
            m.files.insert(bad.into(), entry);
            let e = Manifest::from_doc(&m.to_doc().unwrap(), "m").unwrap_err();
            assert!(
                e.message.contains("is not inside the backup"),
                "{bad}: {e:?}"
            );
        }
    }
}
