//! Metadata files in the repository (`archive.info`, `backup.info`, `backup.manifest`)
//! loaded and saved through [`Storage`], each with its `.copy`: the layer above
//! [`crate::codec`], which knows the bytes, and below the modules that know what the files
//! mean ([`crate::info`], [`crate::manifest`]).
//!
//! As pgBackRest: a file is saved first, then its copy (each atomically), and loaded from the
//! copy when the file itself is missing or damaged.

use crate::codec::{self, CodecError, Document};
use crate::error::{Error, Result};
use crate::repo::COPY_SUFFIX;
use crate::storage::{self, Storage};

/// A loaded file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub doc: Document,
    /// The main file was missing or damaged and the copy was used: rewrite both.
    pub from_copy: bool,
}

/// The `.copy` of `path`.
pub fn copy_path(path: &str) -> String {
    format!("{path}{COPY_SUFFIX}")
}

/// Reads and decodes one file: `None` when it does not exist, `Some(Err)` when it is damaged.
fn attempt(
    storage: &dyn Storage,
    path: &str,
) -> Result<Option<std::result::Result<Document, CodecError>>> {
    Ok(storage::read_small(storage, path)?.map(|bytes| codec::parse(&bytes)))
}

/// Loads `path`, falling back to `path.copy`. `None` when neither exists; an integrity error
/// naming both when what exists is damaged beyond recovery.
pub fn load(storage: &dyn Storage, path: &str) -> Result<Option<Loaded>> {
    let copy_path = copy_path(path);
    let main = attempt(storage, path)?;
    if let Some(Ok(doc)) = main {
        return Ok(Some(Loaded {
            doc,
            from_copy: false,
        }));
    }
    let copy = attempt(storage, &copy_path)?;
    let why = |r: &Option<std::result::Result<Document, CodecError>>| match r {
        None => "it is missing".to_string(),
        Some(Err(e)) => e.to_string(),
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

/// Loads one file without falling back to a copy; `None` when missing, an integrity error
/// when damaged.
pub fn load_one(storage: &dyn Storage, path: &str) -> Result<Option<Document>> {
    match attempt(storage, path)? {
        None => Ok(None),
        Some(Ok(doc)) => Ok(Some(doc)),
        Some(Err(why)) => Err(Error::integrity(format!(
            "'{}' is unusable: {why}",
            storage.describe(path)
        ))),
    }
}

/// Writes the file, then its copy, each atomically.
pub fn save(storage: &dyn Storage, path: &str, doc: &Document) -> Result<()> {
    let bytes = doc.render();
    storage::write_small(storage, path, &bytes)?;
    storage::write_small(storage, &copy_path(path), &bytes)
}

/// Writes one file atomically (for a manifest in progress, only its copy).
pub fn save_one(storage: &dyn Storage, path: &str, doc: &Document) -> Result<()> {
    storage::write_small(storage, path, &doc.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::posix::PosixStorage;
    use serde_json::Value;

    fn sample() -> Document {
        let mut doc = Document::new();
        doc.set("db", "db-id", &Value::from(1));
        doc
    }

    #[test]
    fn save_load_and_recover_from_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let s = PosixStorage::new(tmp.path());
        assert_eq!(load(&s, "a/x.info").unwrap(), None);
        save(&s, "a/x.info", &sample()).unwrap();
        let main = std::fs::read(tmp.path().join("a/x.info")).unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join("a/x.info.copy")).unwrap(),
            main
        );
        let l = load(&s, "a/x.info").unwrap().unwrap();
        assert!(!l.from_copy);
        assert_eq!(l.doc.get("db", "db-id"), Some(Value::from(1)));

        std::fs::write(tmp.path().join("a/x.info"), b"[db]\ndb-id=2\n").unwrap();
        let l = load(&s, "a/x.info").unwrap().unwrap();
        assert!(l.from_copy);
        assert_eq!(l.doc.get("db", "db-id"), Some(Value::from(1)));

        std::fs::remove_file(tmp.path().join("a/x.info")).unwrap();
        assert!(load(&s, "a/x.info").unwrap().unwrap().from_copy);

        std::fs::write(tmp.path().join("a/x.info.copy"), b"junk").unwrap();
        let e = load(&s, "a/x.info").unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::Integrity);
        assert!(e.message.contains("it is missing"), "{}", e.message);
        assert!(e.message.contains("line 1"), "{}", e.message);

        let e = load_one(&s, "a/x.info.copy").unwrap_err();
        assert!(
            e.message.contains("x.info.copy' is unusable"),
            "{}",
            e.message
        );
    }
}
