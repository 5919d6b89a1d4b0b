//! What travels in `J` frames: the requests, one enum [`Request`] with a variant per op, and
//! the typed replies of the simple ones. Serialized with serde as the JSON object the wire
//! has always carried: `{"op": "<kebab-case name>", <fields>}` (docs/protocol.md), so this
//! typing changed nothing on the wire and the protocol version stayed the same.
//!
//! Why generic: the database-host requests (`walk`, `backup-file`, `backup-files`) carry
//! values that belong to the backup command (a source file, the per-file worker's copy
//! parameters, a tablespace). Naming those types here would make this module import the
//! command, and the command imports the client: the circle issue 15 cut. So the enum is
//! generic over a [`Payloads`] set; the backup command names its types
//! (`crate::command::remote::Backup`), storage and database clients, which send none of
//! them, use [`NoPayloads`]. Both produce the same JSON for the ops they share.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The types the database-host requests carry; protocol/ only moves them. (`Debug` because
/// the derived `Debug` of [`Request`] asks it of the parameter itself.)
pub trait Payloads: std::fmt::Debug {
    /// One file of the cluster to read (`backup-file`, `backup-files`).
    type Source: Serialize + DeserializeOwned + std::fmt::Debug;
    /// How to store it (`params`).
    type Params: Serialize + DeserializeOwned + std::fmt::Debug;
    /// A tablespace to walk besides the data directory (`walk`).
    type Tablespace: Serialize + DeserializeOwned + std::fmt::Debug;
}

/// For clients that send no database-host file request: storage and `db-query`.
#[derive(Debug, Serialize, Deserialize)]
pub enum NoPayloads {}

impl Payloads for NoPayloads {
    type Source = NoPayloads;
    type Params = NoPayloads;
    type Tablespace = NoPayloads;
}

/// Every request of the protocol. Paths of the storage requests are relative to the
/// server's repo1-path; docs/protocol.md says what each answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", bound = "")]
pub enum Request<P: Payloads> {
    /// → [`Names`]
    List { path: String },
    /// → [`Found`], then the file's `D` frames and `E` when found. With `range`
    /// (`[start, end]`), only those bytes: the server seeks. Only sent to a server whose
    /// greeting says it reads ranges; an older one would ignore the field and send the whole
    /// file.
    Read {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<[u64; 2]>,
    },
    /// No reply: `D` frames and a [`Commit`] (or `A`) follow, the commit is answered.
    /// `name`, when known at open, is the one the commit will give (object storage needs it).
    Write {
        dir: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// → [`Paths`]
    TempFiles { path: String },
    /// → [`Done`]
    Remove { path: String },
    /// → [`Done`]
    RemoveTree { path: String },
    /// → [`Done`]
    CreatePath { path: String },
    /// → [`Done`]
    CreateLink { target: String, link: String },
    /// → [`InfoReply`]
    Info { path: String },
    /// → [`Entries`]
    ListInfo { path: String },
    /// → [`Rows`], on the database session the server keeps for the protocol session.
    DbQuery { sql: String },
    /// → [`TreeReply`]
    Walk {
        pg_path: String,
        tablespaces: Vec<P::Tablespace>,
        version_dir: String,
    },
    /// → [`Found`], then when found `D` frames and [`EntryReply`].
    BackupFile { src: P::Source, params: P::Params },
    /// As many `backup-file` answers as `srcs`, back to back.
    BackupFiles {
        srcs: Vec<P::Source>,
        params: P::Params,
    },
    /// An op this build does not know, sent by a peer of another version. Only ever
    /// decoded (the server answers it with an error), never sent.
    #[serde(other)]
    Unknown,
}

impl<P: Payloads> Request<P> {
    /// The op name on the wire, for messages.
    pub fn op(&self) -> &'static str {
        match self {
            Request::List { .. } => "list",
            Request::Read { .. } => "read",
            Request::Write { .. } => "write",
            Request::TempFiles { .. } => "temp-files",
            Request::Remove { .. } => "remove",
            Request::RemoveTree { .. } => "remove-tree",
            Request::CreatePath { .. } => "create-path",
            Request::CreateLink { .. } => "create-link",
            Request::Info { .. } => "info",
            Request::ListInfo { .. } => "list-info",
            Request::DbQuery { .. } => "db-query",
            Request::Walk { .. } => "walk",
            Request::BackupFile { .. } => "backup-file",
            Request::BackupFiles { .. } => "backup-files",
            Request::Unknown => "unknown",
        }
    }
}

/// The frame that ends a write stream: the name the server commits the temp file under.
#[derive(Debug, Serialize, Deserialize)]
pub struct Commit {
    pub commit: String,
}

/// `list`: the names in a directory.
#[derive(Debug, Serialize, Deserialize)]
pub struct Names {
    pub names: Vec<String>,
}

/// `temp-files`: temp files below a directory, relative to it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Paths {
    pub paths: Vec<String>,
}

/// `read`, `backup-file`: whether the file exists (a data stream follows when it does).
#[derive(Debug, Serialize, Deserialize)]
pub struct Found {
    pub found: bool,
}

/// Requests that answer nothing but success: `{}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Done {}

/// `info`: what an entry is (`T` is the storage's entry type), null when missing.
#[derive(Debug, Serialize, Deserialize)]
pub struct InfoReply<T> {
    pub info: Option<T>,
}

/// `list-info`: every entry of a directory.
#[derive(Debug, Serialize, Deserialize)]
pub struct Entries<T> {
    pub entries: Vec<T>,
}

/// `db-query`: rows of text columns.
#[derive(Debug, Serialize, Deserialize)]
pub struct Rows {
    pub rows: Vec<Vec<Option<String>>>,
}

/// `walk`: the file list (`T` is the backup's tree type).
#[derive(Debug, Serialize, Deserialize)]
pub struct TreeReply<T> {
    pub tree: T,
}

/// The last reply of one file of `backup-file(s)`: its manifest entry (`T`).
#[derive(Debug, Serialize, Deserialize)]
pub struct EntryReply<T> {
    pub entry: T,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct S {
        key: String,
    }

    #[derive(Debug)]
    struct Test;
    impl Payloads for Test {
        type Source = S;
        type Params = u32;
        type Tablespace = String;
    }

    /// The wire form is the one docs/protocol.md shows: op in kebab-case beside the fields.
    #[test]
    fn requests_keep_the_documented_wire_form() {
        let r: Request<NoPayloads> = Request::CreateLink {
            target: "../t".into(),
            link: "l".into(),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"op": "create-link", "target": "../t", "link": "l"})
        );
        let r: Request<NoPayloads> = Request::TempFiles { path: "b".into() };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"op": "temp-files", "path": "b"})
        );
        let r: Request<Test> = Request::BackupFiles {
            srcs: vec![S { key: "k".into() }],
            params: 6,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({"op": "backup-files", "srcs": [{"key": "k"}], "params": 6})
        );
        // A storage client's request decodes with the backup payloads, as the server does.
        let v = serde_json::to_value(Request::<NoPayloads>::DbQuery { sql: "x".into() }).unwrap();
        let back: Request<Test> = serde_json::from_value(v).unwrap();
        assert_eq!(back.op(), "db-query");
    }

    /// Each variant's `op()` is its serde name, so messages name the op the wire carried.
    #[test]
    fn op_names_match_the_wire() {
        let all: Vec<Request<Test>> = vec![
            Request::List { path: "".into() },
            Request::Read {
                path: "".into(),
                range: Some([1, 2]),
            },
            Request::Write {
                dir: "".into(),
                name: None,
            },
            Request::TempFiles { path: "".into() },
            Request::Remove { path: "".into() },
            Request::RemoveTree { path: "".into() },
            Request::CreatePath { path: "".into() },
            Request::CreateLink {
                target: "".into(),
                link: "".into(),
            },
            Request::Info { path: "".into() },
            Request::ListInfo { path: "".into() },
            Request::DbQuery { sql: "".into() },
            Request::Walk {
                pg_path: "".into(),
                tablespaces: vec![],
                version_dir: "".into(),
            },
            Request::BackupFile {
                src: S { key: "".into() },
                params: 0,
            },
            Request::BackupFiles {
                srcs: vec![],
                params: 0,
            },
        ];
        for r in &all {
            let v = serde_json::to_value(r).unwrap();
            assert_eq!(v["op"], r.op(), "{r:?}");
        }
        let bogus: Request<Test> = serde_json::from_value(json!({"op": "bogus"})).unwrap();
        assert!(matches!(bogus, Request::Unknown));
    }
}
