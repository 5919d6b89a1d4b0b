//! pgBackRest's metadata file format (repository format 5), shared by `archive.info`,
//! `backup.info` and `backup.manifest`: bytes to [`Document`] and back, and the checksum that
//! every such file carries. Knows nothing of storage, of which file it is, or of `.copy`
//! files: loading and saving sit above it ([`crate::metafile`]).
//!
//! The format, as pgBackRest 2.45..2.59 reads and writes it:
//! - INI read strictly: one `key=value` per line, nothing trimmed, no comments, every value
//!   JSON. A key ends at the first `=` after which the rest of the line is valid JSON, so keys
//!   may hold `=`. Sections may appear more than once (the checksum closes the file in a
//!   second `[backrest]`).
//! - Written: `[backrest]` with `backrest-format=5` and `backrest-version` first, then the
//!   sections in name order (keys in the order the document holds them), then a last
//!   `[backrest]` holding only `backrest-checksum`.
//! - The checksum is the SHA-1 of the document rendered as compact JSON in file order,
//!   `{"section":{"key":value,...},...}`, values as written in the file, keys as JSON strings
//!   escaped as pgBackRest escapes them, and the `backrest-checksum` key left out.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::Value;
use sha1::{Digest, Sha1};

/// The repository format this build reads and writes.
pub const FORMAT: u64 = 5;

/// The `backrest-version` written into every file: the pgBackRest release whose format this
/// build speaks. pgBackRest only shows it (`info`), except that a backup resumes a manifest
/// only when the version matches its own; "2.45" keeps the files indistinguishable from
/// that release's.
pub const BACKREST_VERSION: &str = "2.45";

pub const SECTION_BACKREST: &str = "backrest";
pub const KEY_CHECKSUM: &str = "backrest-checksum";
pub const KEY_FORMAT: &str = "backrest-format";
pub const KEY_VERSION: &str = "backrest-version";

/// Why bytes are not a valid metadata file. The variants follow pgBackRest's error types:
/// [`CodecError::Syntax`] and [`CodecError::Format`] are its FormatError, the two checksum
/// variants its ChecksumError.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// Not UTF-8 text (an encrypted or binary file).
    NotText,
    /// A line that is not a section, a key and a JSON value, or that repeats a key.
    Syntax { line: usize, why: String },
    /// `backrest-format` is not [`FORMAT`].
    Format { found: String },
    /// No `backrest-checksum`.
    NoChecksum { actual: String },
    /// `backrest-checksum` differs from the content's.
    ChecksumMismatch { expected: String, actual: String },
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::NotText => write!(f, "it is not text"),
            CodecError::Syntax { line, why } => write!(f, "line {line} {why}"),
            CodecError::Format { found } => {
                write!(f, "expected format {FORMAT} but found {found}")
            }
            CodecError::NoChecksum { actual } => {
                write!(f, "it has no checksum (actual '{actual}')")
            }
            CodecError::ChecksumMismatch { expected, actual } => write!(
                f,
                "its checksum does not match its content (actual '{actual}' but expected '{expected}')"
            ),
        }
    }
}

impl std::error::Error for CodecError {}

/// One section: keys in the order they were set or read, each with its value as JSON text.
#[derive(Debug, Clone, Default)]
pub struct Section {
    entries: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl PartialEq for Section {
    fn eq(&self, other: &Section) -> bool {
        self.entries == other.entries
    }
}

impl Eq for Section {}

impl Section {
    /// Sets `key` to the JSON text `raw`: replaced in place when present, else appended.
    pub fn set_raw(&mut self, key: &str, raw: String) {
        match self.index.get(key) {
            Some(&i) => self.entries[i].1 = raw,
            None => {
                self.index.insert(key.to_string(), self.entries.len());
                self.entries.push((key.to_string(), raw));
            }
        }
    }

    pub fn set(&mut self, key: &str, value: &Value) {
        self.set_raw(key, value.to_string());
    }

    /// The JSON text of `key`.
    pub fn get_raw(&self, key: &str) -> Option<&str> {
        self.index.get(key).map(|&i| self.entries[i].1.as_str())
    }

    pub fn get(&self, key: &str) -> Option<Value> {
        serde_json::from_str(self.get_raw(key)?).ok()
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.index.remove(key)?;
        let (_, raw) = self.entries.remove(i);
        for (k, _) in &self.entries[i..] {
            *self.index.get_mut(k).expect("indexed") -= 1;
        }
        Some(raw)
    }

    /// Keys and JSON texts in order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<'a> IntoIterator for &'a Section {
    type Item = (&'a String, &'a String);
    type IntoIter = Box<dyn Iterator<Item = (&'a String, &'a String)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// A metadata file's content: sections by name (written in name order), each an ordered list
/// of keys with JSON values. The `[backrest]` section of a parsed file is kept (so its
/// `backrest-version` can be read) but never written back: [`Document::render`] stamps its
/// own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    pub sections: BTreeMap<String, Section>,
}

impl Document {
    pub fn new() -> Document {
        Document::default()
    }

    /// The section `name`, created empty when missing.
    pub fn section_mut(&mut self, name: &str) -> &mut Section {
        self.sections.entry(name.to_string()).or_default()
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.get(name)
    }

    pub fn set(&mut self, section: &str, key: &str, value: &Value) {
        self.section_mut(section).set(key, value);
    }

    pub fn set_raw(&mut self, section: &str, key: &str, raw: String) {
        self.section_mut(section).set_raw(key, raw);
    }

    pub fn get(&self, section: &str, key: &str) -> Option<Value> {
        self.sections.get(section)?.get(key)
    }

    pub fn get_raw(&self, section: &str, key: &str) -> Option<&str> {
        self.sections.get(section)?.get_raw(key)
    }

    /// The `backrest-version` of a parsed file (the pgBackRest or pg_backrest release that
    /// wrote it).
    pub fn backrest_version(&self) -> Option<String> {
        match self.get(SECTION_BACKREST, KEY_VERSION)? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The file's bytes, stamped with `backrest-version` [`BACKREST_VERSION`].
    pub fn render(&self) -> Vec<u8> {
        self.render_as(BACKREST_VERSION)
    }

    /// The file's bytes as pgBackRest writes them, with `version` as `backrest-version`.
    pub fn render_as(&self, version: &str) -> Vec<u8> {
        self.render_with_checksum(version).0.into_bytes()
    }

    /// The checksum [`Document::render`] writes for this document.
    pub fn checksum(&self) -> String {
        self.render_with_checksum(BACKREST_VERSION).1
    }

    fn render_with_checksum(&self, version: &str) -> (String, String) {
        let stamp = stamp(version);
        let mut out = String::new();
        let mut sum = Checksum::new();
        let mut first = true;
        let mut write = |name: &str, section: &Section, out: &mut String| {
            if !first {
                out.push('\n');
            }
            first = false;
            out.push('[');
            out.push_str(name);
            out.push_str("]\n");
            for (key, raw) in section.iter() {
                sum.value(name, key, raw);
                out.push_str(&render_key(key, raw));
                out.push('=');
                out.push_str(raw);
                out.push('\n');
            }
        };
        let mut stamped = false;
        for (name, section) in &self.sections {
            if !stamped && name.as_str() >= SECTION_BACKREST {
                write(SECTION_BACKREST, &stamp, &mut out);
                stamped = true;
            }
            if name != SECTION_BACKREST && !section.is_empty() {
                write(name, section, &mut out);
            }
        }
        if !stamped {
            write(SECTION_BACKREST, &stamp, &mut out);
        }
        let sum = sum.finish();
        out.push_str(&format!(
            "\n[{SECTION_BACKREST}]\n{KEY_CHECKSUM}={}\n",
            json_string(&sum)
        ));
        (out, sum)
    }
}

/// The `[backrest]` section pgBackRest writes first.
fn stamp(version: &str) -> Section {
    let mut s = Section::default();
    s.set(KEY_FORMAT, &Value::from(FORMAT));
    s.set(KEY_VERSION, &Value::from(version));
    s
}

/// Parses a metadata file and verifies its format and checksum, as pgBackRest does when it
/// loads one.
pub fn parse(bytes: &[u8]) -> Result<Document, CodecError> {
    let text = std::str::from_utf8(bytes).map_err(|_| CodecError::NotText)?;
    let (doc, actual) = parse_unverified(text)?;
    if let Some(format) = doc.get_raw(SECTION_BACKREST, KEY_FORMAT) {
        if serde_json::from_str::<u64>(format).ok() != Some(FORMAT) {
            return Err(CodecError::Format {
                found: format.to_string(),
            });
        }
    }
    match doc.get(SECTION_BACKREST, KEY_CHECKSUM) {
        Some(Value::String(expected)) if expected == actual => Ok(doc),
        // Written by pg_backrest before it spoke pgBackRest's format: still read, so an
        // existing repository keeps working; every save rewrites it in pgBackRest's format.
        Some(Value::String(expected)) if expected == legacy_checksum(&doc) => Ok(doc),
        Some(Value::String(expected)) => Err(CodecError::ChecksumMismatch { expected, actual }),
        _ => Err(CodecError::NoChecksum { actual }),
    }
}

/// Parses without verifying; returns the document and the checksum its content has.
pub fn parse_unverified(text: &str) -> Result<(Document, String), CodecError> {
    let mut doc = Document::default();
    let mut sum = Checksum::new();
    let mut section: Option<String> = None;
    let syntax = |line: usize, why: &str| CodecError::Syntax {
        line,
        why: why.to_string(),
    };
    for (number, line) in text.split('\n').enumerate() {
        let number = number + 1;
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') && line.len() >= 2 {
            let name = &line[1..line.len() - 1];
            if name.is_empty() {
                return Err(syntax(number, "is an empty section name"));
            }
            doc.section_mut(name);
            section = Some(name.to_string());
            continue;
        }
        let Some(name) = &section else {
            return Err(syntax(number, "is outside any section"));
        };
        let (key, value) =
            split_key_value(line).ok_or_else(|| syntax(number, "is not a key and a JSON value"))?;
        let keys = doc.sections.get_mut(name).expect("section inserted above");
        if keys.get_raw(&key).is_some() {
            return Err(syntax(
                number,
                &format!("repeats a key of section '[{name}]'"),
            ));
        }
        if !(name == SECTION_BACKREST && key == KEY_CHECKSUM) {
            sum.value(name, &key, value);
        }
        keys.set_raw(&key, value.to_string());
    }
    Ok((doc, sum.finish()))
}

/// The checksum pg_backrest 0.1 wrote: SHA-1 of the INI text rendered with sections and
/// keys in name order, one empty line between sections, without the checksum line.
fn legacy_checksum(doc: &Document) -> String {
    let mut hash = Sha1::new();
    let mut first = true;
    for (name, section) in &doc.sections {
        if !first {
            hash.update(b"\n");
        }
        first = false;
        hash.update(format!("[{name}]\n").as_bytes());
        let mut keys: Vec<(&String, &String)> = section
            .iter()
            .filter(|(k, _)| !(name == SECTION_BACKREST && *k == KEY_CHECKSUM))
            .collect();
        keys.sort();
        for (key, raw) in keys {
            hash.update(format!("{}={raw}\n", render_key(key, raw)).as_bytes());
        }
    }
    hex::encode(hash.finalize())
}

/// The running checksum: compact JSON of the values in file order, as pgBackRest streams it
/// into SHA-1 (a section that reappears after another opens a second object of that name).
struct Checksum {
    hash: Sha1,
    last: Option<String>,
}

impl Checksum {
    fn new() -> Checksum {
        let mut hash = Sha1::new();
        hash.update(b"{");
        Checksum { hash, last: None }
    }

    fn value(&mut self, section: &str, key: &str, raw: &str) {
        if self.last.as_deref() == Some(section) {
            self.hash.update(b",");
        } else {
            if self.last.is_some() {
                self.hash.update(b"},");
            }
            self.hash.update(json_string(section).as_bytes());
            self.hash.update(b":{");
            self.last = Some(section.to_string());
        }
        self.hash.update(json_string(key).as_bytes());
        self.hash.update(b":");
        self.hash.update(raw.as_bytes());
    }

    fn finish(mut self) -> String {
        self.hash
            .update(if self.last.is_some() { "}}" } else { "}" });
        hex::encode(self.hash.finalize())
    }
}

/// A JSON string as pgBackRest writes one: only `"`, `\`, and the five control characters
/// with short escapes are escaped (other control characters pass through as they are).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Splits one `key=value` line where the value is JSON: the key ends at the first `=` that
/// leaves valid JSON behind it (pgBackRest's rule). A key written JSON-quoted by
/// [`render_key`] is unquoted.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `archive.info` and `backup.info` as pgBackRest 2.45 (Debian's package) wrote them:
    /// `initdb` of a PostgreSQL 15 scratch cluster, `pgbackrest stanza-create`, then
    /// `backup --type=full`, `--type=incr` and `--type=diff`; and the full backup's manifest
    /// (test/data/pgbackrest-2.45/README.md).
    const ARCHIVE_INFO: &[u8] = include_bytes!("../test/data/pgbackrest-2.45/archive.info");
    const BACKUP_INFO: &[u8] = include_bytes!("../test/data/pgbackrest-2.45/backup.info");
    const MANIFEST: &[u8] = include_bytes!("../test/data/pgbackrest-2.45/backup.manifest");

    #[test]
    fn files_written_by_pgbackrest_verify_and_render_back_byte_for_byte() {
        for bytes in [ARCHIVE_INFO, BACKUP_INFO, MANIFEST] {
            let doc = parse(bytes).unwrap();
            assert_eq!(doc.backrest_version().as_deref(), Some("2.45"));
            assert_eq!(
                String::from_utf8(doc.render_as("2.45")).unwrap(),
                String::from_utf8(bytes.to_vec()).unwrap()
            );
        }
        let doc = parse(ARCHIVE_INFO).unwrap();
        assert_eq!(
            doc.get_raw("db:history", "1"),
            Some("{\"db-id\":7714710211506830604,\"db-version\":\"15\"}")
        );
        assert_eq!(doc.section("backup:current"), None);
        let doc = parse(BACKUP_INFO).unwrap();
        assert_eq!(doc.section("backup:current").unwrap().len(), 3);
    }

    #[test]
    fn a_changed_value_or_key_fails_the_checksum() {
        let text = String::from_utf8(ARCHIVE_INFO.to_vec()).unwrap();
        for (from, to) in [
            ("db-id=1", "db-id=2"),
            ("db-version=\"15\"", "db-version=\"14\""),
            ("\n[db]\n", "\n[dc]\n"),
            ("backrest-version=\"2.45\"", "backrest-version=\"2.46\""),
        ] {
            let bad = text.replacen(from, to, 1);
            assert_ne!(bad, text);
            match parse(bad.as_bytes()) {
                Err(CodecError::ChecksumMismatch { expected, actual }) => {
                    assert_eq!(expected, "341a2556ba8f76d39017a56f7c80760515c73e1c");
                    assert_ne!(actual, expected);
                }
                other => panic!("{from}: {other:?}"),
            }
        }
        let no_sum: String = text
            .lines()
            .filter(|l| !l.starts_with(KEY_CHECKSUM))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(matches!(
            parse(no_sum.as_bytes()),
            Err(CodecError::NoChecksum { .. })
        ));
        let format4 = text.replace("backrest-format=5", "backrest-format=4");
        assert_eq!(
            parse(format4.as_bytes()),
            Err(CodecError::Format { found: "4".into() })
        );
        assert_eq!(parse(b"\xff\xfe"), Err(CodecError::NotText));
    }

    #[test]
    fn files_of_pg_backrest_0_1_are_still_read() {
        let legacy = "[backrest]\nbackrest-checksum=\"bb701100799923e75848c5f2a60dbdef1b1dc1dd\"\n\
                      backrest-format=5\nbackrest-version=\"0.1.0\"\n\n[db]\ndb-id=1\n\
                      db-system-id=7710841986905122693\ndb-version=\"15\"\n\n[db:history]\n\
                      1={\"db-id\":7710841986905122693,\"db-version\":\"15\"}\n";
        let doc = parse(legacy.as_bytes()).unwrap();
        assert_eq!(doc.get("db", "db-id"), Some(Value::from(1)));
        assert!(matches!(
            parse(legacy.replace("db-id=1", "db-id=2").as_bytes()),
            Err(CodecError::ChecksumMismatch { .. })
        ));
        // Rewritten in pgBackRest's format.
        let text = String::from_utf8(doc.render()).unwrap();
        assert!(text.starts_with("[backrest]\nbackrest-format=5\nbackrest-version=\"2.45\"\n"));
        parse(text.as_bytes()).unwrap();
    }

    #[test]
    fn the_checksum_is_sha1_of_compact_json_in_file_order() {
        let mut doc = Document::new();
        doc.set("db", "db-id", &Value::from(1));
        doc.set("db:history", "1", &serde_json::json!({"db-version": "15"}));
        let json = "{\"backrest\":{\"backrest-format\":5,\"backrest-version\":\"2.45\"},\
                    \"db\":{\"db-id\":1},\"db:history\":{\"1\":{\"db-version\":\"15\"}}}";
        let want = hex::encode(Sha1::digest(json.as_bytes()));
        assert_eq!(doc.checksum(), want);
        let text = String::from_utf8(doc.render()).unwrap();
        assert!(
            text.ends_with(&format!("\n[backrest]\nbackrest-checksum=\"{want}\"\n")),
            "{text}"
        );
        // The order of keys is the document's, not sorted: pgBackRest writes history by id.
        let mut doc = Document::new();
        doc.set("db:history", "2", &Value::from(2));
        doc.set("db:history", "10", &Value::from(10));
        let text = String::from_utf8(doc.render()).unwrap();
        assert!(text.contains("[db:history]\n2=2\n10=10\n"), "{text}");
        assert_eq!(parse(text.as_bytes()).unwrap().checksum(), doc.checksum());
    }

    #[test]
    fn keys_are_escaped_in_the_checksum_as_pgbackrest_escapes_them() {
        assert_eq!(
            json_string("a\"b\\c\td\u{1}é/"),
            "\"a\\\"b\\\\c\\td\u{1}é/\""
        );
        let mut doc = Document::new();
        doc.set("target:file", "pg_data/a\tb", &Value::from(1));
        let json = "{\"backrest\":{\"backrest-format\":5,\"backrest-version\":\"2.45\"},\
                    \"target:file\":{\"pg_data/a\\tb\":1}}";
        assert_eq!(doc.checksum(), hex::encode(Sha1::digest(json.as_bytes())));
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
        let mut doc = Document::new();
        for (i, k) in keys.iter().enumerate() {
            doc.set("target:file", k, &serde_json::json!({"size": i}));
            doc.set("target:file", &format!("{k}-str"), &Value::from(*k));
        }
        let bytes = doc.render();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains("\npg_data/postgresql.conf:old={\"size\":0}\n"),
            "{text}"
        );
        assert!(text.contains("\npg_data/a=b={\"size\":1}\n"), "{text}");
        let back = parse(&bytes).unwrap();
        assert_eq!(back.section("target:file"), doc.section("target:file"));
    }

    #[test]
    fn malformed_files_are_refused_with_the_line() {
        for (text, why) in [
            ("k=1\n", "line 1 is outside any section"),
            ("[a]\nk=1\nk=2\n", "line 3 repeats a key"),
            ("[a]\nno equals\n", "line 2 is not a key"),
            ("[a]\nk=not json\n", "line 2 is not a key"),
            ("[a]\n=1\n", "line 2 is not a key"),
            ("[]\n", "line 1 is an empty section"),
        ] {
            let e = parse_unverified(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        // A section may reopen (pgBackRest closes every file with a second [backrest]).
        let (doc, _) = parse_unverified("[a]\nk=1\n\n[b]\nj=2\n\n[a]\nl=3\n").unwrap();
        assert_eq!(doc.section("a").unwrap().len(), 2);
    }

    #[test]
    fn section_keeps_order_through_replace_and_remove() {
        let mut s = Section::default();
        for k in ["c", "a", "b"] {
            s.set(k, &Value::from(k));
        }
        s.set("a", &Value::from(1));
        assert_eq!(s.remove("c").as_deref(), Some("\"c\""));
        s.set("d", &Value::from(2));
        let got: Vec<(&str, &str)> = s.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, vec![("a", "1"), ("b", "\"b\""), ("d", "2")]);
        assert_eq!(s.get_raw("b"), Some("\"b\""));
    }
}
