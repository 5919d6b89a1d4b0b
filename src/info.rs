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

use crate::error::{Error, Kind, Result};
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
                out.push_str(&render_key(k, v));
                out.push('=');
                out.push_str(v);
                out.push('\n');
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

    /// Reads the strict INI that [`IniDoc::render`] writes (pgBackRest's "strict" reading):
    /// one line per key, nothing trimmed, no comments, every value JSON. A key ends at the
    /// first `=` after which the rest of the line is valid JSON, so keys may hold `=`, `:` or
    /// any other character a file name can (JSON text never holds a bare `=`).
    fn parse(text: &str) -> std::result::Result<IniDoc, String> {
        let mut doc = IniDoc::default();
        let mut section: Option<String> = None;
        for (number, line) in text.split('\n').enumerate() {
            let number = number + 1;
            if line.is_empty() {
                continue;
            }
            if line.starts_with('[') && line.ends_with(']') {
                let name = &line[1..line.len() - 1];
                if doc.sections.contains_key(name) {
                    return Err(format!("section '[{name}]' appears twice (line {number})"));
                }
                doc.sections.insert(name.to_string(), BTreeMap::new());
                section = Some(name.to_string());
                continue;
            }
            let Some(name) = &section else {
                return Err(format!("line {number} is outside any section"));
            };
            let (key, value) = split_key_value(line)
                .ok_or_else(|| format!("line {number} is not a key and a JSON value"))?;
            let keys = doc.sections.get_mut(name).expect("section inserted above");
            if keys.insert(key, value.to_string()).is_some() {
                return Err(format!("line {number} repeats a key of section '[{name}]'"));
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

/// Splits one `key=value` line where the value is JSON: the key ends at the first `=` that
/// leaves valid JSON behind it. A key written JSON-quoted by [`render_key`] is unquoted.
fn split_key_value(line: &str) -> Option<(String, &str)> {
    let mut from = 0;
    while let Some(at) = line[from..].find('=').map(|i| from + i) {
        let (raw_key, value) = (&line[..at], &line[at + 1..]);
        let key = if raw_key.starts_with('"') {
            serde_json::from_str::<String>(raw_key).ok()
        } else {
            Some(raw_key.to_string())
        };
        if let Some(key) = key.filter(|k| !k.is_empty()) {
            if serde_json::from_str::<serde::de::IgnoredAny>(value).is_ok() {
                return Some((key, value));
            }
        }
        from = at + 1;
    }
    None
}

/// A key as written: plain when [`split_key_value`] reads the line back to the same key and
/// value (always so for pgBackRest's keys and PostgreSQL's own file names), else as a JSON
/// string. Only names that could not survive a line-based file are quoted: line breaks,
/// or a leading `"` or `[` that would make the key look quoted or like a section.
fn render_key(key: &str, value: &str) -> String {
    let plain = !key.is_empty()
        && !key.starts_with('"')
        && !key.starts_with('[')
        && !key.contains(['\n', '\r'])
        // A key without `=` always splits at the separator, so only keys holding one are
        // tried (a manifest has a key per file and is saved every few seconds).
        && (!key.contains('=')
            || split_key_value(&format!("{key}={value}"))
                .is_some_and(|(k, v)| k == key && v == value));
    if plain {
        key.to_string()
    } else {
        Value::from(key).to_string()
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
        (main, copy) => {
            // pgBackRest's rule for the pair: the type both failures share, else the one
            // that is not a missing file, else file-open.
            let kind = |r: &Option<std::result::Result<IniDoc, String>>| match r {
                None => Kind::FileMissing,
                Some(Err(e)) if e.contains("checksum") => Kind::Checksum,
                _ => Kind::Format,
            };
            let kind = match (kind(&main), kind(&copy)) {
                (a, b) if a == b => a,
                (Kind::FileMissing, k) | (k, Kind::FileMissing) => k,
                _ => Kind::FileOpen,
            };
            Err(Error::new(
                kind,
                format!(
                    "'{}' is unusable ({}) and so is '{}' ({})",
                    storage.describe(path),
                    why(&main),
                    storage.describe(&copy_path),
                    why(&copy)
                ),
            )
            .with_hint("restore the info file from a copy of the repository; do not delete it"))
        }
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
    IniDoc::parse_verified(&text).map(Some).map_err(|why| {
        let kind = if why.contains("checksum") {
            Kind::Checksum
        } else {
            Kind::Format
        };
        Error::new(
            kind,
            format!("'{}' is unusable: {why}", storage.describe(path)),
        )
    })
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

        // Both damaged, differently (checksum, format): pgBackRest's file-open for the pair.
        std::fs::write(tmp.path().join("a/x.info.copy"), "garbage").unwrap();
        let e = load(&s, "a/x.info").unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::FileOpen);

        assert!(
            e.message.contains("checksum does not match"),
            "{}",
            e.message
        );
    }

    #[test]
    fn any_key_a_file_name_can_be_round_trips() {
        let keys = [
            "pg_data/postgresql.conf:old",
            "pg_data/a=b",
            "pg_data/x={}",
            "pg_data/q=\"1\"",
            "pg_data/line\nbreak",
            "pg_data/cr\rhere",
            "pg_data/ lead and trail ",
            "pg_data/#hash;semi",
            "pg_data/ünïcødé",
            "\"quoted\"",
            "[bracket]",
            "=leading-equals",
        ];
        let mut doc = sample();
        for (i, k) in keys.iter().enumerate() {
            doc.set("target:file", k, &serde_json::json!({"size": i}));
            doc.set("target:file", &format!("{k}-str"), &Value::from(*k));
        }
        let text = doc.render();
        assert!(
            text.contains("\npg_data/postgresql.conf:old={\"size\":0}\n"),
            "{text}"
        );
        assert!(text.contains("\npg_data/a=b={\"size\":1}\n"), "{text}");
        assert_eq!(IniDoc::parse(&text).unwrap(), doc);
    }

    #[test]
    fn malformed_files_are_refused_with_the_line() {
        for (text, why) in [
            ("k=1\n", "line 1 is outside any section"),
            ("[a]\nk=1\n\n[a]\nj=2\n", "appears twice"),
            ("[a]\nk=1\nk=2\n", "line 3 repeats a key"),
            ("[a]\nno equals\n", "line 2 is not a key"),
            ("[a]\nk=not json\n", "line 2 is not a key"),
            ("[a]\n=1\n", "line 2 is not a key"),
        ] {
            let e = IniDoc::parse(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
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
