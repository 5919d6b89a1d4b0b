//! The repository's info files (`archive.info`, `backup.info`): INI files that any plain INI
//! reader can parse, each carrying a SHA-1 of its own content and always written twice (the
//! file and `.copy`), so that a damaged file is recovered from its copy.
//!
//! The checksum is the SHA-1 of the file's canonical rendering without the
//! `backrest-checksum` line; values are JSON (strings quoted), as pgBackRest writes them.

pub mod archive;
pub mod backup;

use std::collections::BTreeMap;

use serde_json::Value;
use sha1::{Digest, Sha1};

use crate::error::{Error, Result};
use crate::repo::COPY_SUFFIX;
use crate::storage::{self, Storage};

pub const FORMAT: u32 = 5;
const BACKREST: &str = "backrest";
const CHECKSUM_KEY: &str = "backrest-checksum";

/// Sections of key → JSON value text, rendered in name order (which puts `[backrest]` first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IniDoc {
    pub sections: BTreeMap<String, BTreeMap<String, String>>,
}

impl IniDoc {
    pub fn set(&mut self, section: &str, key: &str, value: &Value) {
        self.sections
            .entry(section.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
    }

    pub fn get(&self, section: &str, key: &str) -> Option<Value> {
        let raw = self.sections.get(section)?.get(key)?;
        serde_json::from_str(raw).ok()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, (name, keys)) in self.sections.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&format!("[{name}]\n"));
            for (k, v) in keys {
                out.push_str(&format!("{k}={v}\n"));
            }
        }
        out
    }

    fn checksum(&self) -> String {
        let mut doc = self.clone();
        if let Some(s) = doc.sections.get_mut(BACKREST) {
            s.remove(CHECKSUM_KEY);
        }
        hex::encode(Sha1::digest(doc.render().as_bytes()))
    }

    fn parse(text: &str) -> std::result::Result<IniDoc, String> {
        let opt = ini::ParseOption {
            enabled_quote: false,
            enabled_escape: false,
            ..Default::default()
        };
        let ini =
            ini::Ini::load_from_str_opt(text, opt).map_err(|e| format!("not an INI file: {e}"))?;
        let mut doc = IniDoc::default();
        for (name, props) in ini.iter() {
            let Some(name) = name else {
                if props.is_empty() {
                    continue;
                }
                return Err("key outside any section".into());
            };
            let section = doc.sections.entry(name.to_string()).or_default();
            for (k, v) in props.iter() {
                section.insert(k.to_string(), v.to_string());
            }
        }
        Ok(doc)
    }

    /// Parses and checks the embedded checksum.
    fn parse_verified(text: &str) -> std::result::Result<IniDoc, String> {
        let doc = IniDoc::parse(text)?;
        let stored = doc
            .get(BACKREST, CHECKSUM_KEY)
            .and_then(|v| v.as_str().map(String::from));
        match stored {
            None => Err("it has no checksum".into()),
            Some(s) if s != doc.checksum() => Err("its checksum does not match its content".into()),
            Some(_) => Ok(doc),
        }
    }
}

/// How an info file was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub doc: IniDoc,
    /// The main file was missing or damaged and the copy was used: rewrite both.
    pub from_copy: bool,
}

/// Loads `path`, falling back to `path.copy`. `None` when neither exists; an error when what
/// exists is damaged beyond recovery.
pub fn load(storage: &dyn Storage, path: &str) -> Result<Option<Loaded>> {
    let copy_path = format!("{path}{COPY_SUFFIX}");
    let attempt = |p: &str| -> Result<Option<std::result::Result<IniDoc, String>>> {
        Ok(
            storage::read_small(storage, p)?.map(|bytes| match String::from_utf8(bytes) {
                Ok(text) => IniDoc::parse_verified(&text),
                Err(_) => Err("it is not text".into()),
            }),
        )
    };
    let main = attempt(path)?;
    if let Some(Ok(doc)) = main {
        return Ok(Some(Loaded {
            doc,
            from_copy: false,
        }));
    }
    let copy = attempt(&copy_path)?;
    let why = |r: &Option<std::result::Result<IniDoc, String>>| match r {
        None => "it is missing".to_string(),
        Some(Err(e)) => e.clone(),
        Some(Ok(_)) => String::new(),
    };
    match (main, copy) {
        (None, None) => Ok(None),
        (main, Some(Ok(doc))) => {
            crate::warn!(
                "'{}' is unusable ({}); using its copy '{}'",
                storage.describe(path),
                why(&main),
                storage.describe(&copy_path)
            );
            Ok(Some(Loaded {
                doc,
                from_copy: true,
            }))
        }
        (main, copy) => Err(Error::integrity(format!(
            "'{}' is unusable ({}) and so is '{}' ({})",
            storage.describe(path),
            why(&main),
            storage.describe(&copy_path),
            why(&copy)
        ))
        .with_hint("restore the info file from a copy of the repository; do not delete it")),
    }
}

/// Stamps format, version and checksum, then writes the file and its copy atomically.
pub fn save(storage: &dyn Storage, path: &str, doc: &mut IniDoc) -> Result<()> {
    save_one(storage, path, doc)?;
    save_one(storage, &format!("{path}{COPY_SUFFIX}"), doc)
}

/// Stamps format, version and checksum, then writes one file atomically.
pub fn save_one(storage: &dyn Storage, path: &str, doc: &mut IniDoc) -> Result<()> {
    doc.set(BACKREST, "backrest-format", &Value::from(FORMAT));
    doc.set(BACKREST, "backrest-version", &Value::from(crate::VERSION));
    doc.set(BACKREST, CHECKSUM_KEY, &Value::from(""));
    let sum = doc.checksum();
    doc.set(BACKREST, CHECKSUM_KEY, &Value::from(sum));
    storage::write_small(storage, path, doc.render().as_bytes())
}

/// Loads one file without falling back to a copy; `None` when missing, an integrity error
/// when damaged.
pub fn load_one(storage: &dyn Storage, path: &str) -> Result<Option<IniDoc>> {
    let Some(bytes) = storage::read_small(storage, path)? else {
        return Ok(None);
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::integrity(format!("'{}' is not text", storage.describe(path))))?;
    IniDoc::parse_verified(&text)
        .map(Some)
        .map_err(|why| Error::integrity(format!("'{}' is unusable: {why}", storage.describe(path))))
}

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

    fn write_to(&self, doc: &mut IniDoc, with_catalog: bool) {
        let c = &self.current;
        doc.set("db", "db-id", &Value::from(c.id));
        doc.set("db", "db-system-id", &Value::from(c.system_id));
        doc.set("db", "db-version", &Value::from(c.version.clone()));
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
                // pgBackRest's archive.info names the system id "db-id" in its history.
                v.insert("db-id".into(), h.system_id.into());
            }
            v.insert("db-version".into(), h.version.clone().into());
            doc.set("db:history", &h.id.to_string(), &Value::Object(v));
        }
    }

    fn read_from(doc: &IniDoc, file: &str) -> Result<DbInfo> {
        let bad = |what: &str| Error::integrity(format!("'{file}' has no valid {what}"));
        let num = |s: &str, k: &str| doc.get(s, k).and_then(|v| v.as_u64());
        let id = num("db", "db-id").ok_or_else(|| bad("db-id"))? as u32;
        let mut history = Vec::new();
        for (key, raw) in doc.sections.get("db:history").into_iter().flatten() {
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
    use crate::storage::posix::PosixStorage;

    fn sample() -> IniDoc {
        let mut doc = IniDoc::default();
        DbInfo::new(DbEntry {
            id: 1,
            system_id: 7_300_000_000_000_000_001,
            version: "15".into(),
            catalog_version: None,
            control_version: None,
        })
        .write_to(&mut doc, false);
        doc
    }

    #[test]
    fn save_load_and_recover_from_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let s = PosixStorage::new(tmp.path());
        assert_eq!(load(&s, "a/x.info").unwrap(), None);
        let mut doc = sample();
        save(&s, "a/x.info", &mut doc).unwrap();
        let l = load(&s, "a/x.info").unwrap().unwrap();
        assert_eq!(
            l,
            Loaded {
                doc: doc.clone(),
                from_copy: false
            }
        );
        let info = DbInfo::read_from(&l.doc, "x").unwrap();
        assert_eq!(info.current.archive_id(), "15-1");
        assert_eq!(info.current.system_id, 7_300_000_000_000_000_001);

        // Damage the main file: the copy is used.
        let main = tmp.path().join("a/x.info");
        let text = std::fs::read_to_string(&main)
            .unwrap()
            .replace("\"15\"", "\"16\"");
        std::fs::write(&main, text).unwrap();
        let l = load(&s, "a/x.info").unwrap().unwrap();
        assert!(l.from_copy);
        assert_eq!(l.doc, doc);

        // Both damaged: a clear integrity error.
        std::fs::write(tmp.path().join("a/x.info.copy"), "garbage").unwrap();
        let e = load(&s, "a/x.info").unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::Integrity);
        assert!(
            e.message.contains("checksum does not match"),
            "{}",
            e.message
        );
    }

    #[test]
    fn rendering_is_plain_ini() {
        let mut doc = sample();
        doc.set(BACKREST, CHECKSUM_KEY, &Value::from("x"));
        let text = doc.render();
        assert!(text.starts_with("[backrest]\nbackrest-checksum=\"x\"\n\n[db]\ndb-id=1\n"));
        assert!(text
            .contains("[db:history]\n1={\"db-id\":7300000000000000001,\"db-version\":\"15\"}\n"));
    }
}
