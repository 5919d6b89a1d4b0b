//! The repository's info files (`archive.info`, `backup.info`) in pgBackRest's format: what
//! they mean. Their bytes and checksum are [`crate::codec`]'s; loading them (with the `.copy`
//! fallback) and saving them (file and copy) is [`crate::metafile`]'s.

pub mod archive;
pub mod backup;

use serde_json::Value;

use crate::codec::Document;
use crate::error::{Error, Result};

/// The `[db]` and `[db:history]` sections both info files share: which cluster the stanza
/// belongs to now, and every cluster (by db-id) it has belonged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbEntry {
    pub id: u32,
    pub system_id: u64,
    pub version: String,
    /// Only backup.info records these.
    pub catalog_version: Option<u32>,
    pub control_version: Option<u32>,
}

impl DbEntry {
    /// The archive id of this entry, e.g. `15-1`.
    pub fn archive_id(&self) -> String {
        format!("{}-{}", self.version, self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbInfo {
    pub current: DbEntry,
    /// Every entry, ascending by id; includes the current one.
    pub history: Vec<DbEntry>,
}

impl DbInfo {
    pub fn new(first: DbEntry) -> DbInfo {
        DbInfo {
            history: vec![first.clone()],
            current: first,
        }
    }

    /// Writes `[db]` and `[db:history]` as pgBackRest does: backup.info (`with_catalog`)
    /// with the catalog and control versions, archive.info naming the system id `db-id` in
    /// its history; history by ascending id.
    fn write_to(&self, doc: &mut Document, with_catalog: bool) {
        let c = &self.current;
        if with_catalog {
            doc.set(
                "db",
                "db-catalog-version",
                &Value::from(c.catalog_version.unwrap_or(0)),
            );
            doc.set(
                "db",
                "db-control-version",
                &Value::from(c.control_version.unwrap_or(0)),
            );
        }
        doc.set("db", "db-id", &Value::from(c.id));
        doc.set("db", "db-system-id", &Value::from(c.system_id));
        doc.set("db", "db-version", &Value::from(c.version.clone()));
        for h in &self.history {
            let mut v = serde_json::Map::new();
            if with_catalog {
                v.insert(
                    "db-catalog-version".into(),
                    h.catalog_version.unwrap_or(0).into(),
                );
                v.insert(
                    "db-control-version".into(),
                    h.control_version.unwrap_or(0).into(),
                );
                v.insert("db-system-id".into(), h.system_id.into());
            } else {
                v.insert("db-id".into(), h.system_id.into());
            }
            v.insert("db-version".into(), h.version.clone().into());
            doc.set("db:history", &h.id.to_string(), &Value::Object(v));
        }
    }

    fn read_from(doc: &Document, file: &str) -> Result<DbInfo> {
        let bad = |what: &str| Error::integrity(format!("'{file}' has no valid {what}"));
        let num = |s: &str, k: &str| doc.get(s, k).and_then(|v| v.as_u64());
        let id = num("db", "db-id").ok_or_else(|| bad("db-id"))? as u32;
        let mut history = Vec::new();
        for (key, raw) in doc.section("db:history").into_iter().flatten() {
            let v: Value = serde_json::from_str(raw).map_err(|_| bad("db:history entry"))?;
            let hid: u32 = key.parse().map_err(|_| bad("db:history id"))?;
            let system_id = v
                .get("db-system-id")
                .or_else(|| v.get("db-id"))
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("db:history system id"))?;
            history.push(DbEntry {
                id: hid,
                system_id,
                version: v
                    .get("db-version")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("db-version"))?
                    .into(),
                catalog_version: v
                    .get("db-catalog-version")
                    .and_then(Value::as_u64)
                    .map(|n| n as u32),
                control_version: v
                    .get("db-control-version")
                    .and_then(Value::as_u64)
                    .map(|n| n as u32),
            });
        }
        history.sort_by_key(|h| h.id);
        let current = history
            .iter()
            .find(|h| h.id == id)
            .cloned()
            .ok_or_else(|| bad("current db entry"))?;
        Ok(DbInfo { current, history })
    }

    /// Refuses a cluster that is not the stanza's current one.
    pub fn check_cluster(&self, system_id: u64, version: &str, what: &str) -> Result<()> {
        let c = &self.current;
        if c.system_id != system_id || c.version != version {
            return Err(Error::integrity(format!(
                "{what} is from PostgreSQL {version} system-id {system_id}, but the stanza's \
                 repository belongs to PostgreSQL {} system-id {}",
                c.version, c.system_id
            ))
            .with_hint(
                "check that --stanza and pg1-path name the same cluster as the repository",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_sections_are_written_as_pgbackrest_writes_them() {
        let entry = |id: u32, sys: u64| DbEntry {
            id,
            system_id: sys,
            version: "15".into(),
            catalog_version: Some(202209061),
            control_version: Some(1300),
        };
        let mut db = DbInfo::new(entry(1, 7));
        for id in 2..=10 {
            db.history.push(entry(id, 7 + u64::from(id)));
        }
        db.current = entry(10, 17);
        let mut doc = Document::new();
        db.write_to(&mut doc, true);
        let text = String::from_utf8(doc.render()).unwrap();
        assert!(
            text.contains(
                "[db]\ndb-catalog-version=202209061\ndb-control-version=1300\ndb-id=10\n\
                 db-system-id=17\ndb-version=\"15\"\n"
            ),
            "{text}"
        );
        // By id, not by name: 9 before 10.
        assert!(text.contains("\n9={\"db-catalog-version\":202209061,\"db-control-version\":1300,\"db-system-id\":16,\"db-version\":\"15\"}\n10="), "{text}");
        let back = DbInfo::read_from(&crate::codec::parse(text.as_bytes()).unwrap(), "x").unwrap();
        assert_eq!(back, db);
    }
}
