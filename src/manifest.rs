//! `backup.manifest`: everything a backup holds and everything restore needs to rebuild the
//! data directory: the backup's own facts (`[backup]`, `[backup:db]`, `[backup:option]`),
//! where each part of the cluster lives (`[backup:target]`), and every path, file and link
//! (`[target:path]`, `[target:file]`, `[target:link]`).
//!
//! The file is in pgBackRest's metadata format ([`crate::codec`]): INI with JSON values and a
//! checksum of its own (Python's configparser reads it with `strict=False`). File keys are paths inside the backup
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFacts {
    pub label: String,
    pub backup_type: BackupType,
    pub prior: Option<String>,
    /// `backup-reference`: the backups of this backup's chain, oldest first, ending with this
    /// one. pgBackRest refuses a manifest where a file references a label missing here.
    pub reference: Vec<String>,
    pub timestamp_start: i64,
    /// When copying files began (after `pg_backup_start` returned).
    pub timestamp_copy_start: i64,
    /// `None` while the backup runs (pgBackRest writes 0 then, and so do we).
    pub timestamp_stop: Option<i64>,
    pub lsn_start: String,
    pub lsn_stop: Option<String>,
    pub archive_start: String,
    pub archive_stop: Option<String>,
}

impl BackupFacts {
    /// The timeline the backup started on. pgBackRest does not record it: the first WAL
    /// segment's name does (checked to be 24 hex digits when the manifest is loaded).
    pub fn timeline(&self) -> u32 {
        self.archive_start
            .get(..8)
            .and_then(|t| u32::from_str_radix(t, 16).ok())
            .unwrap_or(0)
    }
}

/// The options that shaped the backup: `[backup:option]`, with pgBackRest's keys. Those
/// pgBackRest may leave out are `Option`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupOptions {
    pub archive_check: bool,
    pub archive_copy: bool,
    pub backup_standby: bool,
    pub buffer_size: Option<u64>,
    pub checksum_page: Option<bool>,
    pub compress_type: String,
    pub compress_level: i32,
    pub compress_level_network: Option<u32>,
    pub delta: bool,
    pub hardlink: bool,
    pub online: bool,
    pub process_max: u32,
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

/// Owner and mode of a path. A user or group that had no name on the database host is the
/// empty string (pgBackRest writes `false`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub mode: String,
    pub user: String,
    pub group: String,
}

/// Serialized with serde only on the remote protocol (a database host's file copy); the
/// manifest's own form is written by [`Manifest::to_doc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FileEntry {
    pub size: u64,
    /// mtime, Unix seconds.
    pub timestamp: i64,
    /// SHA-1 of the original content (that of no bytes for an empty file, which pgBackRest
    /// does not write).
    pub checksum: String,
    /// SHA-1 of the stored bytes (`rck`), when recorded.
    pub checksum_repo: Option<String>,
    /// Bytes as stored in the repository.
    pub repo_size: u64,
    pub mode: String,
    pub user: String,
    pub group: String,
    /// The backup that holds the data, when not this one.
    pub reference: Option<String>,
    /// Whether page checksums were verified (relation files of a cluster with checksums):
    /// `Some(true)` when all were valid.
    pub checksum_page: Option<bool>,
    /// Blocks whose page checksum failed.
    pub checksum_page_error: Vec<u32>,
    /// The second (Unix) at which reading the file for this copy began. A file whose mtime is
    /// still the recorded one and earlier than this second has not changed since it was read,
    /// which is what a resume or a later diff/incr may rely on. Stored as `copied-at` in the
    /// file's JSON, a key pgBackRest's reader skips.
    pub copied_at: Option<i64>,
    /// Where the independently decompressible blocks of the stored copy start, with each
    /// block's checksum, when the backup recorded them (large files of gz, lz4, zst and
    /// uncompressed backups).
    pub block_index: Option<BlockIndex>,
}

/// The blocks of a large stored file that restore can inflate, check and write on several
/// threads, and that delta restore compares one by one instead of hashing the whole file on
/// one thread (issue 17). The stored file stays one ordinary gzip member, or one run of
/// zstd or LZ4 frames, that pgBackRest and the format's own tools read: a block starts
/// where the compressor flushed to a byte boundary without referring to any earlier input
/// (a full flush for gz, a new frame for lz4 and zst).
///
/// Stored as `block-index` in the file's JSON, a key pgBackRest's reader skips (it reads
/// keys in sorted order and passes over ones it does not know); a file without one restores
/// as one stream, as before. The whole-file SHA-1 stays the manifest's `checksum`: the block
/// checksums were computed from the same bytes when the file was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockIndex {
    /// Original bytes per block; the last block holds what remains.
    pub block_size: u64,
    /// Where each block's compressed bytes start in the stored file; a block ends where the
    /// next one starts, the last one at the stored file's end.
    pub offsets: Vec<u64>,
    /// The checksum of each block's original bytes, all of one [`BlockHash`].
    pub checksums: Vec<BlockSum>,
}

/// How the blocks of a [`BlockIndex`] are hashed: `checksum-type` in the index's JSON,
/// absent for SHA-1 (what the first indexes recorded).
///
/// Backups record XXH3-128: a delta restore of an unchanged copy is reading and hashing and
/// nothing else, and XXH3 costs a tenth of the read where BLAKE3 (what the indexes recorded
/// before) and SHA-1 cost as much CPU as the read took time (docs/repository.md has the
/// figures). These checksums tell a changed block from an
/// unchanged one and a damaged stored block from a sound one, the job pgBackRest gives
/// XXH3-128 in its own block incremental backups; they are not a defence against whoever
/// can write the repository and the manifest (that is `repo-cipher-type`'s). What pgBackRest
/// reads, the whole file's SHA-1, is unchanged; BLAKE3 and SHA-1 indexes are still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockHash {
    Sha1,
    Blake3,
    Xxh3,
}

impl BlockHash {
    /// The value of `checksum-type`.
    pub fn name(self) -> &'static str {
        match self {
            BlockHash::Sha1 => "sha1",
            BlockHash::Blake3 => "blake3",
            BlockHash::Xxh3 => "xxh3-128",
        }
    }

    /// Bytes in one digest.
    pub fn digest_len(self) -> usize {
        match self {
            BlockHash::Sha1 => 20,
            BlockHash::Blake3 => 32,
            BlockHash::Xxh3 => 16,
        }
    }

    fn named(name: &str) -> Option<BlockHash> {
        [BlockHash::Sha1, BlockHash::Blake3, BlockHash::Xxh3]
            .into_iter()
            .find(|h| h.name() == name)
    }
}

/// One block's checksum, of the [`BlockHash`] its index records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockSum {
    Sha1([u8; 20]),
    Blake3([u8; 32]),
    /// The 128-bit hash in its canonical (big-endian) bytes.
    Xxh3([u8; 16]),
}

impl BlockSum {
    pub fn hash(&self) -> BlockHash {
        match self {
            BlockSum::Sha1(_) => BlockHash::Sha1,
            BlockSum::Blake3(_) => BlockHash::Blake3,
            BlockSum::Xxh3(_) => BlockHash::Xxh3,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            BlockSum::Sha1(b) => b,
            BlockSum::Blake3(b) => b,
            BlockSum::Xxh3(b) => b,
        }
    }

    /// The digest `bytes` of a `hash` (of its length; any other is a bug).
    fn of(hash: BlockHash, bytes: &[u8]) -> BlockSum {
        match hash {
            BlockHash::Sha1 => BlockSum::Sha1(bytes.try_into().expect("SHA-1 length")),
            BlockHash::Blake3 => BlockSum::Blake3(bytes.try_into().expect("BLAKE3 length")),
            BlockHash::Xxh3 => BlockSum::Xxh3(bytes.try_into().expect("XXH3-128 length")),
        }
    }
}

#[cfg(test)]
impl BlockSum {
    /// This checksum with one bit changed: a tampered index, for tests.
    pub fn flipped(&self) -> BlockSum {
        let mut bytes = self.as_bytes().to_vec();
        bytes[7] ^= 1;
        BlockSum::of(self.hash(), &bytes)
    }
}

impl std::fmt::Display for BlockSum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", hex::encode(self.as_bytes()))
    }
}

/// One block of a [`BlockIndex`], placed in the original file and in the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub number: usize,
    /// Offset of its first original byte.
    pub start: u64,
    /// Original bytes in it.
    pub len: u64,
    /// Its compressed bytes in the stored file: `stored_start..stored_end`.
    pub stored_start: u64,
    pub stored_end: u64,
    pub checksum: BlockSum,
}

impl BlockIndex {
    /// The blocks of a file of `size` original bytes stored in `repo_size` bytes. Call
    /// [`BlockIndex::check`] first (the manifest reader does).
    pub fn blocks(&self, size: u64, repo_size: u64) -> impl Iterator<Item = Block> + '_ {
        (0..self.offsets.len()).map(move |number| {
            let start = number as u64 * self.block_size;
            Block {
                number,
                start,
                len: self.block_size.min(size - start),
                stored_start: self.offsets[number],
                stored_end: self.offsets.get(number + 1).copied().unwrap_or(repo_size),
                checksum: self.checksums[number],
            }
        })
    }

    /// Whether the index can describe a file of `size` bytes stored in `repo_size`: one
    /// block per `block_size` bytes, each with a checksum, starting in order inside the
    /// stored file. What it says about the stored bytes is checked as they are read.
    pub fn check(&self, size: u64, repo_size: u64) -> std::result::Result<(), String> {
        if self.block_size == 0 {
            return Err("block-index has a block size of 0".into());
        }
        let expected = size.div_ceil(self.block_size);
        if self.offsets.len() as u64 != expected || self.checksums.len() as u64 != expected {
            return Err(format!(
                "block-index lists {} offsets and {} checksums for {expected} blocks",
                self.offsets.len(),
                self.checksums.len()
            ));
        }
        if let Some(first) = self.checksums.first() {
            if self.checksums.iter().any(|c| c.hash() != first.hash()) {
                return Err("block-index mixes checksum types".into());
            }
        }
        let in_order = self.offsets.windows(2).all(|w| w[0] < w[1]);
        if !in_order || self.offsets.last().is_some_and(|&o| o >= repo_size) {
            return Err("block-index offsets are not in order inside the stored file".into());
        }
        Ok(())
    }

    fn to_value(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("block-size".into(), self.block_size.into());
        let bytes: Vec<u8> = self
            .checksums
            .iter()
            .flat_map(|c| c.as_bytes().iter().copied())
            .collect();
        m.insert("checksum".into(), hex::encode(bytes).into());
        match self.checksums.first().map(BlockSum::hash) {
            Some(BlockHash::Sha1) | None => {}
            Some(hash) => {
                m.insert("checksum-type".into(), hash.name().into());
            }
        }
        m.insert("offset".into(), self.offsets.clone().into());
        Value::Object(m)
    }

    /// `Ok(None)` for an index whose `checksum-type` this version does not know (a later
    /// one's): the file is then restored as one stream and checked by its whole SHA-1, as
    /// a file without an index; `Err` for one that is malformed.
    fn from_value(v: &Value) -> std::result::Result<Option<BlockIndex>, ()> {
        let hash = match v.get("checksum-type") {
            None => BlockHash::Sha1,
            Some(name) => match BlockHash::named(name.as_str().ok_or(())?) {
                Some(hash) => hash,
                None => return Ok(None),
            },
        };
        Self::parse(v, hash).map(Some).ok_or(())
    }

    fn parse(v: &Value, hash: BlockHash) -> Option<BlockIndex> {
        let block_size = v.get("block-size")?.as_u64()?;
        let offsets = v
            .get("offset")?
            .as_array()?
            .iter()
            .map(Value::as_u64)
            .collect::<Option<Vec<u64>>>()?;
        let bytes = hex::decode(v.get("checksum")?.as_str()?).ok()?;
        if bytes.len() % hash.digest_len() != 0 {
            return None;
        }
        let checksums = bytes
            .chunks_exact(hash.digest_len())
            .map(|c| BlockSum::of(hash, c))
            .collect();
        Some(BlockIndex {
            block_size,
            offsets,
            checksums,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEntry {
    pub destination: String,
    pub user: String,
    pub group: String,
}

/// A database of the cluster (`[db]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbOid {
    pub id: u32,
    /// The highest OID of a system database (template0's), as pgBackRest records it.
    pub last_system_id: u32,
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
    /// Databases by name (`[db]`), so a restore can include only some. Empty in manifests
    /// written before the list was recorded.
    pub databases: BTreeMap<String, DbOid>,
    /// `[metadata] annotation`: what `backup --annotation` attached, kept as written.
    pub annotation: Option<Value>,
}

/// SHA-1 of no bytes: the checksum of every empty file.
pub const SHA1_EMPTY: &str = "da39a3ee5e6b4b0d3255bfef95601890afd80709";

/// pgBackRest's owner value: a name, or `false` when the id had no name.
fn owner_value(name: &str) -> Value {
    if name.is_empty() {
        Value::Bool(false)
    } else {
        Value::from(name)
    }
}

fn owner_name(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(false) => Some(String::new()),
        _ => None,
    }
}

/// Page numbers as pgBackRest lists them: runs of consecutive pages as `[first,last]`.
fn page_list_value(pages: &[u32]) -> Value {
    let mut out: Vec<Value> = Vec::new();
    let mut i = 0;
    while i < pages.len() {
        let mut j = i;
        while j + 1 < pages.len() && pages[j + 1] == pages[j] + 1 {
            j += 1;
        }
        out.push(if j == i {
            Value::from(pages[i])
        } else {
            serde_json::json!([pages[i], pages[j]])
        });
        i = j + 1;
    }
    Value::Array(out)
}

fn page_list(v: &Value) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for item in v.as_array()? {
        match item {
            Value::Number(n) => out.push(u32::try_from(n.as_u64()?).ok()?),
            Value::Array(r) if r.len() == 2 => {
                let (a, b) = (r[0].as_u64()?, r[1].as_u64()?);
                if b < a || b - a > 1 << 20 {
                    return None;
                }
                out.extend((a..=b).map(|p| p as u32));
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The mode files get by default: the data directory's, without execute and group write
/// (pgBackRest's rule, so both write the same `[target:file:default]`).
fn file_mode_default(path_mode: &str) -> String {
    let mode = u32::from_str_radix(path_mode, 8).unwrap_or(0o700);
    format!("{:04o}", mode & 0o640)
}

fn compress_level_default(compress_type: &str) -> i32 {
    CompressType::parse(compress_type).map_or(0, CompressType::default_level)
}

fn to_json<T: Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::internal(format!("manifest encoding: {e}")))
}

impl Manifest {
    /// The manifest as pgBackRest writes it: keys equal to their section's default, an
    /// empty file's checksum and a `repo-size` equal to `size` are left out.
    pub fn to_doc(&self) -> Result<Document> {
        let mut doc = Document::new();
        let mut set = |section: &str, key: &str, v: Value| doc.set(section, key, &v);

        let b = &self.backup;
        set(
            "backup",
            "backup-archive-start",
            b.archive_start.clone().into(),
        );
        if let Some(stop) = &b.archive_stop {
            set("backup", "backup-archive-stop", stop.clone().into());
        }
        set("backup", "backup-label", b.label.clone().into());
        set("backup", "backup-lsn-start", b.lsn_start.clone().into());
        if let Some(stop) = &b.lsn_stop {
            set("backup", "backup-lsn-stop", stop.clone().into());
        }
        if let Some(prior) = &b.prior {
            set("backup", "backup-prior", prior.clone().into());
        }
        set(
            "backup",
            "backup-reference",
            self.reference_list().join(",").into(),
        );
        set(
            "backup",
            "backup-timestamp-copy-start",
            b.timestamp_copy_start.into(),
        );
        set("backup", "backup-timestamp-start", b.timestamp_start.into());
        set(
            "backup",
            "backup-timestamp-stop",
            b.timestamp_stop.unwrap_or(0).into(),
        );
        set("backup", "backup-type", b.backup_type.name().into());

        let db = &self.db;
        set(
            "backup:db",
            "db-catalog-version",
            db.catalog_version.unwrap_or(0).into(),
        );
        set(
            "backup:db",
            "db-control-version",
            db.control_version.unwrap_or(0).into(),
        );
        set("backup:db", "db-id", db.id.into());
        set("backup:db", "db-system-id", db.system_id.into());
        set("backup:db", "db-version", db.version.clone().into());

        let o = &self.options;
        let opt = "backup:option";
        set(opt, "option-archive-check", o.archive_check.into());
        set(opt, "option-archive-copy", o.archive_copy.into());
        set(opt, "option-backup-standby", o.backup_standby.into());
        if let Some(n) = o.buffer_size {
            set(opt, "option-buffer-size", n.into());
        }
        if let Some(c) = o.checksum_page {
            set(opt, "option-checksum-page", c.into());
        }
        set(opt, "option-compress", (o.compress_type != "none").into());
        set(opt, "option-compress-level", o.compress_level.into());
        if let Some(n) = o.compress_level_network {
            set(opt, "option-compress-level-network", n.into());
        }
        set(opt, "option-compress-type", o.compress_type.clone().into());
        set(opt, "option-delta", o.delta.into());
        set(opt, "option-hardlink", o.hardlink.into());
        set(opt, "option-online", o.online.into());
        set(opt, "option-process-max", o.process_max.into());

        for (k, v) in &self.targets {
            set("backup:target", k, to_json(v)?);
        }
        for (name, d) in &self.databases {
            set(
                "db",
                name,
                serde_json::json!({"db-id": d.id, "db-last-system-id": d.last_system_id}),
            );
        }
        if let Some(a) = &self.annotation {
            set("metadata", "annotation", a.clone());
        }

        // Defaults are the data directory's owner and mode, as pgBackRest takes them.
        let base = self
            .paths
            .get("pg_data")
            .or_else(|| self.paths.values().next())
            .cloned()
            .unwrap_or(Owner {
                mode: "0700".into(),
                user: String::new(),
                group: String::new(),
            });
        let file_mode = file_mode_default(&base.mode);
        let owner_keys = |map: &mut serde_json::Map<String, Value>, user: &str, group: &str| {
            if group != base.group {
                map.insert("group".into(), owner_value(group));
            }
            if user != base.user {
                map.insert("user".into(), owner_value(user));
            }
        };

        for (k, f) in &self.files {
            let mut m = serde_json::Map::new();
            // Keys sorted, as pgBackRest's reader requires: `block-index` sorts between
            // its `bim` and `bni`, so it passes over ours on the way to `bni`.
            if let Some(index) = &f.block_index {
                m.insert("block-index".into(), index.to_value());
            }
            if f.size != 0 {
                m.insert("checksum".into(), f.checksum.clone().into());
            }
            if let Some(ok) = f.checksum_page {
                m.insert("checksum-page".into(), ok.into());
                if !f.checksum_page_error.is_empty() {
                    m.insert(
                        "checksum-page-error".into(),
                        page_list_value(&f.checksum_page_error),
                    );
                }
            }
            if let Some(t) = f.copied_at {
                m.insert("copied-at".into(), t.into());
            }
            owner_keys(&mut m, &f.user, &f.group);
            if f.mode != file_mode {
                m.insert("mode".into(), f.mode.clone().into());
            }
            if let Some(r) = &f.checksum_repo {
                m.insert("rck".into(), r.clone().into());
            }
            if let Some(r) = &f.reference {
                m.insert("reference".into(), r.clone().into());
            }
            if f.repo_size != f.size {
                m.insert("repo-size".into(), f.repo_size.into());
            }
            m.insert("size".into(), f.size.into());
            m.insert("timestamp".into(), f.timestamp.into());
            set("target:file", k, Value::Object(m));
        }
        set("target:file:default", "group", owner_value(&base.group));
        set("target:file:default", "mode", file_mode.clone().into());
        set("target:file:default", "user", owner_value(&base.user));

        for (k, l) in &self.links {
            let mut m = serde_json::Map::new();
            m.insert("destination".into(), l.destination.clone().into());
            owner_keys(&mut m, &l.user, &l.group);
            set("target:link", k, Value::Object(m));
        }
        if !self.links.is_empty() {
            set("target:link:default", "group", owner_value(&base.group));
            set("target:link:default", "user", owner_value(&base.user));
        }

        for (k, p) in &self.paths {
            let mut m = serde_json::Map::new();
            owner_keys(&mut m, &p.user, &p.group);
            if p.mode != base.mode {
                m.insert("mode".into(), p.mode.clone().into());
            }
            set("target:path", k, Value::Object(m));
        }
        set("target:path:default", "group", owner_value(&base.group));
        set("target:path:default", "mode", base.mode.clone().into());
        set("target:path:default", "user", owner_value(&base.user));
        Ok(doc)
    }

    /// Reads a manifest written by pg_backrest or by pgBackRest (format 5). A backup that
    /// uses a feature whose stored form pg_backrest cannot read is refused by name.
    pub fn from_doc(doc: &Document, what: &str) -> Result<Manifest> {
        let bad = |why: String| Error::integrity(format!("manifest '{what}' is invalid: {why}"));
        let section = |name: &str| -> Result<BTreeMap<String, Value>> {
            let mut out = BTreeMap::new();
            for (k, raw) in doc.section(name).into_iter().flatten() {
                let v = serde_json::from_str(raw)
                    .map_err(|_| bad(format!("[{name}] {k} is not a JSON value")))?;
                out.insert(k.clone(), v);
            }
            Ok(out)
        };
        let backup = section("backup")?;
        refuse_unsupported(doc, &backup, what)?;

        let string = |m: &BTreeMap<String, Value>, s: &str, k: &str| -> Result<Option<String>> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(v)) => Ok(Some(v.clone())),
                Some(_) => Err(bad(format!("[{s}] {k} is not a string"))),
            }
        };
        let int = |m: &BTreeMap<String, Value>, s: &str, k: &str| -> Result<Option<i64>> {
            match m.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| bad(format!("[{s}] {k} is not an integer"))),
            }
        };
        let required =
            |v: Option<String>, s: &str, k: &str| v.ok_or_else(|| bad(format!("[{s}] has no {k}")));

        let label = required(
            string(&backup, "backup", "backup-label")?,
            "backup",
            "backup-label",
        )?;
        let type_name = required(
            string(&backup, "backup", "backup-type")?,
            "backup",
            "backup-type",
        )?;
        let backup_type = BackupType::parse(&type_name)
            .ok_or_else(|| bad(format!("[backup] backup-type '{type_name}' is unknown")))?;
        let timestamp_start = int(&backup, "backup", "backup-timestamp-start")?
            .ok_or_else(|| bad("[backup] has no backup-timestamp-start".into()))?;
        let facts = BackupFacts {
            prior: string(&backup, "backup", "backup-prior")?,
            reference: string(&backup, "backup", "backup-reference")?
                .map(|r| {
                    r.split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            timestamp_start,
            timestamp_copy_start: int(&backup, "backup", "backup-timestamp-copy-start")?
                .unwrap_or(timestamp_start),
            timestamp_stop: int(&backup, "backup", "backup-timestamp-stop")?.filter(|t| *t != 0),
            lsn_start: required(
                string(&backup, "backup", "backup-lsn-start")?,
                "backup",
                "backup-lsn-start",
            )?,
            lsn_stop: string(&backup, "backup", "backup-lsn-stop")?,
            archive_start: required(
                string(&backup, "backup", "backup-archive-start")?,
                "backup",
                "backup-archive-start",
            )?,
            archive_stop: string(&backup, "backup", "backup-archive-stop")?,
            label,
            backup_type,
        };

        let dbs = section("backup:db")?;
        let num = |k: &str| dbs.get(k).and_then(Value::as_u64);
        let db = DbEntry {
            id: num("db-id").ok_or_else(|| bad("[backup:db] has no db-id".into()))? as u32,
            system_id: num("db-system-id")
                .ok_or_else(|| bad("[backup:db] has no db-system-id".into()))?,
            version: dbs
                .get("db-version")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("[backup:db] has no db-version".into()))?
                .to_string(),
            catalog_version: num("db-catalog-version").map(|n| n as u32),
            control_version: num("db-control-version").map(|n| n as u32),
        };

        let o = section("backup:option")?;
        let flag = |k: &str| -> Result<Option<bool>> {
            match o.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_bool()
                    .map(Some)
                    .ok_or_else(|| bad(format!("[backup:option] {k} is not a boolean"))),
            }
        };
        let unsigned = |k: &str| -> Result<Option<u64>> {
            match o.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| bad(format!("[backup:option] {k} is not a number"))),
            }
        };
        // Before option-compress-type existed, option-compress meant gz.
        let compress_type = match string(&o, "backup:option", "option-compress-type")? {
            Some(t) => t,
            None if flag("option-compress")?.unwrap_or(false) => "gz".into(),
            None => "none".into(),
        };
        let options = BackupOptions {
            archive_check: flag("option-archive-check")?.unwrap_or(false),
            archive_copy: flag("option-archive-copy")?.unwrap_or(false),
            backup_standby: flag("option-backup-standby")?.unwrap_or(false),
            buffer_size: unsigned("option-buffer-size")?,
            checksum_page: flag("option-checksum-page")?,
            // Levels go below zero (lz4, zst).
            compress_level: match int(&o, "backup:option", "option-compress-level")? {
                Some(n) => i32::try_from(n).map_err(|_| {
                    bad("[backup:option] option-compress-level is out of range".into())
                })?,
                None => compress_level_default(&compress_type),
            },
            compress_level_network: unsigned("option-compress-level-network")?.map(|n| n as u32),
            compress_type,
            delta: flag("option-delta")?.unwrap_or(false),
            hardlink: flag("option-hardlink")?.unwrap_or(false),
            online: flag("option-online")?.unwrap_or(false),
            process_max: unsigned("option-process-max")?.unwrap_or(1) as u32,
        };

        // Section defaults stand for every key an entry leaves out.
        let defaults = |name: &str| -> Result<BTreeMap<String, Value>> { section(name) };
        let file_default = defaults("target:file:default")?;
        let path_default = defaults("target:path:default")?;
        let link_default = defaults("target:link:default")?;
        let owner = |v: &serde_json::Map<String, Value>,
                     default: &BTreeMap<String, Value>,
                     key: &str,
                     entry: &str|
         -> Result<String> {
            v.get(key)
                .or_else(|| default.get(key))
                .and_then(owner_name)
                .ok_or_else(|| bad(format!("'{entry}' has no valid {key}")))
        };
        let mode = |v: &serde_json::Map<String, Value>,
                    default: &BTreeMap<String, Value>,
                    entry: &str|
         -> Result<String> {
            v.get("mode")
                .or_else(|| default.get("mode"))
                .and_then(Value::as_str)
                .filter(|m| u32::from_str_radix(m, 8).is_ok())
                .map(String::from)
                .ok_or_else(|| bad(format!("'{entry}' has no valid mode")))
        };
        let object = |v: Value, entry: &str| -> Result<serde_json::Map<String, Value>> {
            match v {
                Value::Object(m) => Ok(m),
                _ => Err(bad(format!("'{entry}' is not a JSON object"))),
            }
        };

        let mut files = BTreeMap::new();
        for (key, v) in section("target:file")? {
            let m = object(v, &key)?;
            let u64_of = |k: &str| m.get(k).and_then(Value::as_u64);
            let str_of = |k: &str| m.get(k).and_then(Value::as_str).map(String::from);
            let size = u64_of("size").ok_or_else(|| bad(format!("'{key}' has no size")))?;
            let checksum = match str_of("checksum") {
                Some(c) => c,
                None if size == 0 => SHA1_EMPTY.to_string(),
                None => return Err(bad(format!("'{key}' has no checksum"))),
            };
            let checksum_page_error = match m.get("checksum-page-error") {
                None => Vec::new(),
                Some(v) => page_list(v)
                    .ok_or_else(|| bad(format!("'{key}' has an invalid checksum-page-error")))?,
            };
            let repo_size = u64_of("repo-size").unwrap_or(size);
            let block_index = match m.get("block-index") {
                None => None,
                Some(v) => {
                    let index = BlockIndex::from_value(v)
                        .map_err(|()| bad(format!("'{key}' has an invalid block-index")))?;
                    if let Some(index) = &index {
                        index
                            .check(size, repo_size)
                            .map_err(|why| bad(format!("'{key}': {why}")))?;
                    }
                    index
                }
            };
            let entry = FileEntry {
                size,
                timestamp: m
                    .get("timestamp")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| bad(format!("'{key}' has no timestamp")))?,
                checksum,
                checksum_repo: str_of("rck"),
                repo_size,
                mode: mode(&m, &file_default, &key)?,
                user: owner(&m, &file_default, "user", &key)?,
                group: owner(&m, &file_default, "group", &key)?,
                reference: str_of("reference"),
                checksum_page: m.get("checksum-page").and_then(Value::as_bool),
                checksum_page_error,
                copied_at: m.get("copied-at").and_then(Value::as_i64),
                block_index,
            };
            files.insert(key, entry);
        }
        let mut paths = BTreeMap::new();
        for (key, v) in section("target:path")? {
            let m = object(v, &key)?;
            let entry = Owner {
                mode: mode(&m, &path_default, &key)?,
                user: owner(&m, &path_default, "user", &key)?,
                group: owner(&m, &path_default, "group", &key)?,
            };
            paths.insert(key, entry);
        }
        let mut links = BTreeMap::new();
        for (key, v) in section("target:link")? {
            let m = object(v, &key)?;
            let entry = LinkEntry {
                destination: m
                    .get("destination")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("'{key}' has no destination")))?
                    .to_string(),
                user: owner(&m, &link_default, "user", &key)?,
                group: owner(&m, &link_default, "group", &key)?,
            };
            links.insert(key, entry);
        }
        let mut targets = BTreeMap::new();
        for (key, v) in section("backup:target")? {
            if v.get("file").is_some() {
                return Err(Error::new(
                    Kind::NotImplemented,
                    format!(
                        "backup '{}' has a link to a single file ('{key}'), which pg_backrest \
                         cannot restore",
                        facts.label
                    ),
                )
                .with_hint("restore this backup with pgBackRest"));
            }
            let t: Target = serde_json::from_value(v)
                .map_err(|e| bad(format!("[backup:target] {key}: {e}")))?;
            targets.insert(key, t);
        }
        let mut databases = BTreeMap::new();
        for (name, v) in section("db")? {
            let id = v
                .get("db-id")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad(format!("[db] {name} has no db-id")))?;
            let last = v.get("db-last-system-id").and_then(Value::as_u64);
            let oid = DbOid {
                id: id as u32,
                last_system_id: last.unwrap_or(0) as u32,
            };
            databases.insert(name, oid);
        }

        let manifest = Manifest {
            backup: facts,
            db,
            options,
            targets,
            paths,
            files,
            links,
            databases,
            annotation: section("metadata")?.remove("annotation"),
        };
        manifest.check_keys().map_err(bad)?;
        Ok(manifest)
    }

    /// `backup-reference` as written: the recorded chain, or for a manifest that has none
    /// (written before pgBackRest 2.42 or by an earlier pg_backrest), every label a file
    /// references and this backup's own.
    pub fn reference_list(&self) -> Vec<String> {
        let mut list = if self.backup.reference.is_empty() {
            self.references()
        } else {
            self.backup.reference.clone()
        };
        for r in self.references() {
            if !list.contains(&r) {
                list.push(r);
            }
        }
        if !list.contains(&self.backup.label) {
            list.push(self.backup.label.clone());
        }
        list.sort();
        list
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
            .chain(&self.backup.reference)
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
            let ok = (key == "pg_data"
                || key == "pg_tblspc"
                || key.starts_with("pg_data/")
                || key.starts_with("pg_tblspc/"))
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

    /// Writes the gzip copy of a finished manifest that pgBackRest keeps for every backup it
    /// completes (`backup.history/YYYY/LABEL.manifest.gz`, level 9 as pgBackRest): its backup
    /// takes the newest one into account when it makes a new label, and a DBA can read what an
    /// expired backup held.
    pub fn save_history(&self, storage: &dyn Storage, path: &str) -> Result<()> {
        metafile::save_gz(storage, path, &self.to_doc()?)
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
            backup_annotation: self.annotation.clone(),
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
            // pgBackRest's: the manifest's chain without the backup itself.
            backup_reference: self
                .reference_list()
                .into_iter()
                .filter(|l| *l != self.backup.label)
                .collect(),
            backup_timestamp_start: self.backup.timestamp_start,
            backup_timestamp_stop: self.backup.timestamp_stop.unwrap_or(0),
            backup_type: self.backup.backup_type,
            db_id: self.db.id,
            option_archive_check: self.options.archive_check,
            option_archive_copy: self.options.archive_copy,
            option_backup_standby: self.options.backup_standby,
            option_checksum_page: self
                .options
                .checksum_page
                .unwrap_or_else(|| self.files.values().any(|f| f.checksum_page.is_some())),
            option_compress: self.options.compress_type != CompressType::None.name(),
            option_hardlink: self.options.hardlink,
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

/// pgBackRest's file bundling (`repo-bundle`) and block incremental (`repo-block`) store
/// files in a form pg_backrest does not read: refuse such a backup by name rather than
/// restore or verify it wrongly.
fn refuse_unsupported(doc: &Document, backup: &BTreeMap<String, Value>, what: &str) -> Result<()> {
    let on = |k: &str| backup.get(k).and_then(Value::as_bool).unwrap_or(false);
    let files = doc.section("target:file");
    let any_file = |key: &str| files.is_some_and(|f| f.iter().any(|(_, v)| v.contains(key)));
    let feature = if on("backup-block-incr") || any_file("\"bi\":") {
        "block incremental (repo-block)"
    } else if on("backup-bundle") || any_file("\"bni\":") {
        "file bundling (repo-bundle)"
    } else {
        return Ok(());
    };
    let label = backup
        .get("backup-label")
        .and_then(Value::as_str)
        .unwrap_or(what);
    Err(Error::new(
        Kind::NotImplemented,
        format!("backup '{label}' was written by pgBackRest with {feature}, which pg_backrest cannot read"),
    )
    .with_hint("restore this backup with pgBackRest; for backups pg_backrest can read, set repo1-bundle=n and repo1-block=n in pgBackRest's configuration"))
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
                label: "20261122-101500F_20261122-111500I".into(),
                backup_type: BackupType::Incr,
                prior: Some("20261122-101500F".into()),
                reference: vec![
                    "20261122-101500F".into(),
                    "20261122-101500F_20261122-111500I".into(),
                ],
                timestamp_start: 1_795_000_000,
                timestamp_copy_start: 1_795_000_001,
                timestamp_stop: Some(1_795_000_100),
                lsn_start: "0/2000028".into(),
                lsn_stop: Some("0/2000138".into()),
                archive_start: "000000010000000000000002".into(),
                archive_stop: Some("000000010000000000000002".into()),
            },
            db: DbEntry {
                id: 1,
                system_id: 7_300_000_000_000_000_001,
                version: "15".into(),
                catalog_version: Some(202209061),
                control_version: Some(1300),
            },
            options: BackupOptions {
                archive_check: true,
                archive_copy: false,
                backup_standby: false,
                buffer_size: None,
                checksum_page: Some(true),
                compress_type: "gz".into(),
                compress_level: 6,
                compress_level_network: None,
                delta: false,
                hardlink: false,
                online: true,
                process_max: 2,
            },
            targets: BTreeMap::new(),
            paths: BTreeMap::new(),
            files: BTreeMap::new(),
            links: BTreeMap::new(),
            databases: BTreeMap::from([
                (
                    "postgres".to_string(),
                    DbOid {
                        id: 5,
                        last_system_id: 4,
                    },
                ),
                (
                    "app".to_string(),
                    DbOid {
                        id: 16384,
                        last_system_id: 4,
                    },
                ),
            ]),
            annotation: None,
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
                checksum_repo: None,
                repo_size: 100,
                mode: "0600".into(),
                user: "postgres".into(),
                group: "postgres".into(),
                reference: Some("20261122-101500F".into()),
                checksum_page: Some(false),
                checksum_page_error: vec![3, 7, 8, 9],
                copied_at: Some(1_795_000_050),
                block_index: None,
            },
        );
        m
    }

    /// An info file's sections as text, the way the tests below write them (one
    /// `key=value` per line; keys here hold no `=`).
    fn doc_of(text: &str) -> Document {
        crate::codec::parse_unverified(text).unwrap().0
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
        // pgBackRest's forms: page errors as runs, owner and mode only where they differ
        // from the section default, our copy time under a key pgBackRest skips.
        assert!(
            text.contains(
                "[target:file]\npg_data/base/1/1259={\"checksum\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\
                 \"checksum-page\":false,\"checksum-page-error\":[3,[7,9]],\"copied-at\":1795000050,\
                 \"reference\":\"20261122-101500F\",\"repo-size\":100,\"size\":8192,\"timestamp\":1795000000}\n"
            ),
            "{text}"
        );
        assert!(!text.contains("backup-timeline"), "{text}");
        assert_eq!(Manifest::from_doc(&doc, "m").unwrap(), m);
        assert_eq!(m.references(), vec!["20261122-101500F".to_string()]);
        assert_eq!(m.backup.timeline(), 1);
        assert_eq!(
            m.stored_name("pg_data/base/1/1259"),
            "pg_data/base/1/1259.gz"
        );
    }

    /// Sections of a diff's manifest as pgBackRest 2.45 wrote them (files trimmed).
    const PGBACKREST_245: &str = r#"[backup]
backup-archive-start="000000010000000000000006"
backup-archive-stop="000000010000000000000006"
backup-label="20261202-141457F_20261202-141904D"
backup-lsn-start="0/6000028"
backup-lsn-stop="0/6000100"
backup-prior="20261202-141457F"
backup-reference="20261202-141457F,20261202-141457F_20261202-141904D"
backup-timestamp-copy-start=1796221145
backup-timestamp-start=1796221144
backup-timestamp-stop=1796221145
backup-type="diff"

[backup:db]
db-catalog-version=202209061
db-control-version=1300
db-id=1
db-system-id=7714709998510295060
db-version="15"

[backup:option]
option-archive-check=true
option-archive-copy=false
option-backup-standby=false
option-buffer-size=1048576
option-checksum-page=true
option-compress=true
option-compress-level=6
option-compress-level-network=3
option-compress-type="gz"
option-delta=false
option-hardlink=false
option-online=true
option-process-max=1

[backup:target]
pg_data={"path":"/tmp/hm/pg","type":"path"}
pg_tblspc/16385={"path":"/srv/ts","tablespace-id":"16385","tablespace-name":"ts1","type":"link"}

[db]
postgres={"db-id":5,"db-last-system-id":4}
template0={"db-id":4,"db-last-system-id":4}

[metadata]
annotation={"source":"cron"}

[target:file]
pg_data/PG_VERSION={"checksum":"587b596f04f7db9c2cad3d6b87dd2b3a05de4f35","rck":"b8b3ecfaf3ed3d6865df5807d66c5fd8cde3289e","reference":"20261202-141457F","repo-size":23,"size":3,"timestamp":1796220894}
pg_data/base/1/1259={"checksum":"2bfb17e8d66541a2a845e6c375d93d6ef1963206","checksum-page":false,"checksum-page-error":[0,[2,4]],"rck":"2ebdedcc779e8eec8231d8c8d32453527feda1a2","repo-size":13579,"size":114688,"timestamp":1796221144}
pg_data/global/1214={"checksum-page":true,"rck":"46c6643f07aa7f6bfe7118de926b86defc5087c4","repo-size":20,"size":0,"timestamp":1796220894}
pg_data/postgresql.conf={"checksum":"11bb1988026d116652c71bed9378182736276e6d","group":"adm","mode":"0644","size":29718,"timestamp":1796220895,"user":false}

[target:file:default]
group="postgres"
mode="0600"
user="postgres"

[target:link]
pg_data/pg_tblspc/16385={"destination":"/srv/ts"}

[target:link:default]
group="postgres"
user="postgres"

[target:path]
pg_data={}
pg_data/base={}
pg_data/pg_wal/archive_status={"mode":"0750"}
pg_tblspc={}
pg_tblspc/16385={}

[target:path:default]
group="postgres"
mode="0700"
user="postgres"
"#;

    #[test]
    fn reads_and_writes_pgbackrest_245_manifests_unchanged() {
        let doc = doc_of(PGBACKREST_245);
        let m = Manifest::from_doc(&doc, "m").unwrap();
        assert_eq!(m.backup.backup_type, BackupType::Diff);
        assert_eq!(m.backup.timestamp_copy_start, 1796221145);
        assert_eq!(m.backup.reference.len(), 2);
        let zero = &m.files["pg_data/global/1214"];
        assert_eq!((zero.checksum.as_str(), zero.repo_size), (SHA1_EMPTY, 20));
        assert_eq!(
            (zero.user.as_str(), zero.mode.as_str()),
            ("postgres", "0600")
        );
        let conf = &m.files["pg_data/postgresql.conf"];
        assert_eq!(
            (
                conf.user.as_str(),
                conf.group.as_str(),
                conf.mode.as_str(),
                conf.repo_size
            ),
            ("", "adm", "0644", 29718)
        );
        assert_eq!(
            m.files["pg_data/base/1/1259"].checksum_page_error,
            vec![0, 2, 3, 4]
        );
        assert_eq!(m.paths["pg_data/pg_wal/archive_status"].mode, "0750");
        assert_eq!(m.links["pg_data/pg_tblspc/16385"].user, "postgres");
        assert_eq!(m.databases["template0"].last_system_id, 4);
        assert_eq!(m.options.compress().unwrap(), Compress::Gz(6));
        assert_eq!(m.references(), vec!["20261202-141457F".to_string()]);
        // Written back, every section is what pgBackRest wrote, byte for byte.
        assert_eq!(m.to_doc().unwrap().render(), doc.render());
    }

    #[test]
    fn a_whole_pgbackrest_245_manifest_renders_back_byte_for_byte() {
        let bytes = include_bytes!("../test/data/pgbackrest-2.45/backup.manifest");
        let doc = crate::codec::parse(bytes).unwrap();
        let m = Manifest::from_doc(&doc, "fixture").unwrap();
        assert_eq!(m.backup.backup_type, BackupType::Full);
        assert!(m
            .files
            .values()
            .any(|f| f.size == 0 && f.checksum == SHA1_EMPTY));
        assert_eq!(
            String::from_utf8(m.to_doc().unwrap().render()).unwrap(),
            String::from_utf8(bytes.to_vec()).unwrap()
        );
    }

    /// The sample manifest with `index` on `pg_data/base/1/1259` (stored in 1500 bytes), and
    /// its rendered text.
    fn with_block_index(index: &BlockIndex) -> (Manifest, String) {
        let mut m = sample();
        let f = m.files.get_mut("pg_data/base/1/1259").unwrap();
        f.block_index = Some(index.clone());
        f.repo_size = 1500;
        let text = String::from_utf8(m.to_doc().unwrap().render()).unwrap();
        (m, text)
    }

    /// A file's block index is written under `block-index`, sorted before `checksum` (where
    /// pgBackRest's reader passes over it), read back whole, and refused when it cannot
    /// describe the file: wrong count, offsets out of order or past the stored file, bad hex.
    /// This index has SHA-1 block checksums and no `checksum-type`, as the first ones did.
    #[test]
    fn block_index_round_trips_and_malformed_ones_are_refused() {
        let index = BlockIndex {
            block_size: 4096,
            offsets: vec![10, 900],
            checksums: vec![BlockSum::Sha1([0xab; 20]), BlockSum::Sha1([0x01; 20])],
        };
        let (m, text) = with_block_index(&index);
        let hex = format!("{}{}", "ab".repeat(20), "01".repeat(20));
        let json = format!(
            "pg_data/base/1/1259={{\"block-index\":{{\"block-size\":4096,\"checksum\":\"{hex}\",\"offset\":[10,900]}},\"checksum\":"
        );
        assert!(text.contains(&json), "{text}");
        let back = Manifest::from_doc(&m.to_doc().unwrap(), "m").unwrap();
        assert_eq!(back, m);
        let blocks: Vec<Block> = index.blocks(8192, 1500).collect();
        assert_eq!(
            (
                blocks[1].start,
                blocks[1].len,
                blocks[1].stored_start,
                blocks[1].stored_end
            ),
            (4096, 4096, 900, 1500)
        );

        let broken = [
            ("\"offset\":[10,900]", "\"offset\":[10]", "2 blocks"),
            ("\"offset\":[10,900]", "\"offset\":[900,10]", "not in order"),
            (
                "\"offset\":[10,900]",
                "\"offset\":[10,1500]",
                "not in order",
            ),
            ("\"block-size\":4096", "\"block-size\":0", "block size of 0"),
            (hex.as_str(), "zz", "invalid block-index"),
            (
                "\"checksum\":\"",
                "\"checksum-type\":\"blake3\",\"checksum\":\"",
                "invalid block-index",
            ),
            (
                "\"offset\"",
                "\"checksum-type\":7,\"offset\"",
                "invalid block-index",
            ),
        ];
        for (from, to, why) in broken {
            let doc = doc_of(&text.replace(from, to));
            let err = Manifest::from_doc(&doc, "m").unwrap_err();
            assert!(
                err.message.contains("pg_data/base/1/1259") && err.message.contains(why),
                "{to}: {}",
                err.message
            );
        }
    }

    /// XXH3-128 block checksums (what backups record) and BLAKE3 ones (what they recorded
    /// before) are written with `checksum-type` and read back; an index of a checksum type
    /// this version does not know is passed over, so the file restores as one stream checked
    /// by its whole SHA-1.
    #[test]
    fn typed_block_indexes_round_trip_and_unknown_checksum_types_are_passed_over() {
        for (sums, hex, name) in [
            (
                [BlockSum::Xxh3([0xcd; 16]), BlockSum::Xxh3([0x02; 16])],
                format!("{}{}", "cd".repeat(16), "02".repeat(16)),
                "xxh3-128",
            ),
            (
                [BlockSum::Blake3([0xcd; 32]), BlockSum::Blake3([0x02; 32])],
                format!("{}{}", "cd".repeat(32), "02".repeat(32)),
                "blake3",
            ),
        ] {
            let index = BlockIndex {
                block_size: 4096,
                offsets: vec![10, 900],
                checksums: sums.to_vec(),
            };
            let (m, text) = with_block_index(&index);
            let json = format!(
                "{{\"block-index\":{{\"block-size\":4096,\"checksum\":\"{hex}\",\"checksum-type\":\"{name}\",\"offset\":[10,900]}},"
            );
            assert!(text.contains(&json), "{text}");
            assert_eq!(Manifest::from_doc(&m.to_doc().unwrap(), "m").unwrap(), m);

            let later = text.replace(&format!("\"{name}\""), "\"sha3-512\"");
            let back = Manifest::from_doc(&doc_of(&later), "m").unwrap();
            let f = &back.files["pg_data/base/1/1259"];
            assert_eq!(
                (f.block_index.as_ref(), f.repo_size),
                (None, 1500),
                "{name}"
            );
        }
    }

    /// The longest manifest line pgBackRest must read, a 1 GiB file of 128 blocks with
    /// offsets of ten digits under a key of PostgreSQL's longest path, stays under its
    /// smallest `buffer-size` (16 KiB), past which its line reader fails.
    #[test]
    fn the_line_of_the_largest_indexed_file_fits_pgbackrests_smallest_buffer() {
        use crate::pipeline::{INDEX_BLOCK, INDEX_BLOCKS_MAX};
        let mut m = sample();
        let size = INDEX_BLOCKS_MAX as u64 * INDEX_BLOCK as u64;
        let key = format!("pg_data/{}", "d".repeat(4096 - 9));
        let mut f = m.files["pg_data/base/1/1259"].clone();
        f.size = size;
        f.repo_size = 9_999_999_999;
        f.block_index = Some(BlockIndex {
            block_size: INDEX_BLOCK as u64,
            offsets: (0..INDEX_BLOCKS_MAX as u64)
                .map(|i| 1_000_000_000 + i)
                .collect(),
            // The longest digest any index may hold, BLAKE3's (what backups wrote before).
            checksums: vec![BlockSum::Blake3([0xff; 32]); INDEX_BLOCKS_MAX],
        });
        m.files.insert(key.clone(), f);
        let text = String::from_utf8(m.to_doc().unwrap().render()).unwrap();
        let line = text.lines().find(|l| l.starts_with(&key)).unwrap();
        assert!(line.len() < 16 * 1024, "{} bytes", line.len());
    }

    #[test]
    fn bundled_and_block_incremental_backups_are_refused_by_name() {
        for (edit, feature) in [
            (
                (
                    "backup-type=\"diff\"",
                    "backup-type=\"diff\"\nbackup-bundle=true",
                ),
                "file bundling (repo-bundle)",
            ),
            (
                ("{\"checksum\":\"587b", "{\"bni\":1,\"checksum\":\"587b"),
                "file bundling (repo-bundle)",
            ),
            (
                (
                    "backup-type=\"diff\"",
                    "backup-type=\"diff\"\nbackup-block-incr=true",
                ),
                "block incremental (repo-block)",
            ),
        ] {
            let text = PGBACKREST_245.replacen(edit.0, edit.1, 1);
            let e = Manifest::from_doc(&doc_of(&text), "m").unwrap_err();
            assert_eq!(e.kind, Kind::NotImplemented);
            assert!(e.message.contains(feature), "{e:?}");
            assert!(
                e.message
                    .contains("backup '20261202-141457F_20261202-141904D'"),
                "{e:?}"
            );
        }
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
            assert_eq!(e.kind, crate::error::Kind::Format);
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
