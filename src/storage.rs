//! Storage: one interface over "a tree of files somewhere", with a posix driver for local
//! directories, a remote driver that forwards every call over the SSH protocol, and an S3
//! driver for object storage. Commands get the repository from [`crate::repo::open`] and
//! never know which it is.
//!
//! Paths are relative to the storage's root, `/`-separated, and may not contain `..`: the
//! remote driver receives them from another host, so the posix driver refuses any path that
//! could leave its root.
//!
//! Every write is atomic and durable: data goes to a temp file in the target directory, and
//! only [`AtomicWrite::commit`] fsyncs it, renames it to its final name and fsyncs the
//! directory. A writer dropped without commit (an error, a panic) removes its temp file; a
//! process killed mid-write leaves only a temp name ([`TEMP_PREFIX`]), never a final name.

pub mod posix;
pub mod remote;
pub mod s3;
#[allow(unsafe_code)]
pub mod scan;

use std::io::{self, Read, Write};

use crate::error::Result;

/// Temp files start with this, so no listing ever mistakes one for a finished file.
pub const TEMP_PREFIX: &str = ".pgbr-tmp.";

pub trait Storage: Send + Sync {
    /// Entry names in `dir` (files and directories, temp files excluded), sorted; empty when
    /// `dir` does not exist.
    fn list(&self, dir: &str) -> Result<Vec<String>>;

    /// Temp files ([`TEMP_PREFIX`]) at any depth below `dir`, as paths relative to it, sorted;
    /// empty when `dir` does not exist. Only a writer that never got to drop its file (a
    /// process killed outright) leaves one: resume removes them, verify reports them.
    fn temp_files(&self, dir: &str) -> Result<Vec<String>>;

    /// Opens `path` for streaming; `None` when it does not exist.
    fn open_read(&self, path: &str) -> Result<Option<Box<dyn Read + Send + '_>>>;

    /// Opens bytes `start..end` of `path` for streaming; `None` when the file does not exist.
    /// A file that ends before `end` gives fewer bytes (reading past its end gives none), so
    /// a caller that needs exactly `end - start` bytes checks the count. Restore reads the
    /// blocks of one large stored file this way on several workers at once. This default
    /// reads and discards the bytes before `start`: only for drivers that cannot seek.
    fn open_read_range(
        &self,
        path: &str,
        start: u64,
        end: u64,
    ) -> Result<Option<Box<dyn Read + Send + '_>>> {
        read_range_by_skipping(self.open_read(path)?, start, end, &self.describe(path))
    }

    /// Starts an atomic write of a new file in `dir` (created, with parents, when missing).
    fn open_write(&self, dir: &str) -> Result<Box<dyn AtomicWrite + '_>>;

    /// As [`Storage::open_write`], for a file whose name is known now and given again at
    /// commit. Object storage has no rename, so it must know the name before the first part
    /// goes up; a writer that only learns its name from the content (a WAL segment's
    /// checksum) uses open_write, which object storage allows for one part at most.
    fn open_write_named(&self, dir: &str, _name: &str) -> Result<Box<dyn AtomicWrite + '_>> {
        self.open_write(dir)
    }

    /// Whether the name of a file must be known when it is opened for writing (object
    /// storage) rather than at commit ([`Storage::open_write_named`]).
    fn needs_name_at_open(&self) -> bool {
        false
    }

    /// Creates the directory `path` and any missing parents (mode 0750), and fsyncs its
    /// parent, also when `path` already existed: a run killed between the mkdir and that
    /// fsync leaves a directory that only this call makes durable. Backup creates every path
    /// of a full backup with it, so that empty directories exist in the repository.
    fn create_path(&self, path: &str) -> Result<()>;

    /// Makes `link` a symlink to `target` (creating the link's directory when missing) and
    /// fsyncs the directory. `target` is relative to the link's directory and may not lead
    /// outside the storage. A symlink already at `link` is replaced, so a resumed backup
    /// ends with the link it wants whatever the interrupted one left; anything else there is
    /// an error.
    fn create_link(&self, target: &str, link: &str) -> Result<()>;

    /// Whether [`Storage::create_link`] can work: object storage has no links, and a backup
    /// there makes none (as pgBackRest's does not).
    fn supports_links(&self) -> bool {
        true
    }

    /// Removes a file; a missing file is not an error.
    fn remove(&self, path: &str) -> Result<()>;

    /// Removes these files, in this order; missing ones are not an error.
    fn remove_many(&self, paths: &[String]) -> Result<()> {
        paths.iter().try_for_each(|p| self.remove(p))
    }

    /// Whether [`Storage::remove_many`] removes many files in one request (object storage's
    /// batch delete), so that a caller removing many files should hand them over together.
    fn removes_in_batches(&self) -> bool {
        false
    }

    /// Removes a directory and everything in it; a missing directory is not an error.
    fn remove_tree(&self, path: &str) -> Result<()>;

    /// Human-readable location for messages: a local path or `host:path`.
    fn describe(&self, path: &str) -> String;

    /// What `path` is (not following a final symlink); `None` when it does not exist. The
    /// name is the last component of `path`.
    fn info(&self, path: &str) -> Result<Option<EntryInfo>>;

    /// Every entry of `dir` (temp files included: this is the raw view repo-ls shows), in
    /// name order; empty when `dir` does not exist.
    fn list_info(&self, dir: &str) -> Result<Vec<EntryInfo>>;

    /// Makes the entries of directory `dir` durable: what [`AtomicWrite::commit_unsynced`]
    /// left to the caller. Storage whose commits are always durable has nothing to do.
    fn sync_path(&self, _dir: &str) -> Result<()> {
        Ok(())
    }
}

/// One directory entry as repo-ls reports it (pgBackRest's storage info).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryInfo {
    pub name: String,
    pub kind: EntryKind,
    /// Bytes, for files.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Where a symlink points.
    pub link_destination: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Path,
    Link,
    Special,
}

impl EntryKind {
    /// pgBackRest's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Path => "path",
            EntryKind::Link => "link",
            EntryKind::Special => "special",
        }
    }
}

/// A file being written; invisible until committed.
pub trait AtomicWrite: Write + Send {
    /// Makes the data durable and visible as `name` in the writer's directory, replacing any
    /// file of that name.
    fn commit(self: Box<Self>, name: &str) -> Result<()>;

    /// As [`AtomicWrite::commit`], except that the new name may not survive a crash until
    /// the caller syncs the directory ([`Storage::sync_path`]): a caller writing many files
    /// into few directories (a backup: a thousand small files into a few dozen directories)
    /// syncs each directory once instead of once per file, as pgBackRest does.
    fn commit_unsynced(self: Box<Self>, name: &str) -> Result<()> {
        self.commit(name)
    }
}

/// Bytes `start..end` of the stream `reader` of `what`: those before `start` read and
/// discarded. [`Storage::open_read_range`] for a driver (or a peer) that cannot seek.
pub fn read_range_by_skipping<'a>(
    reader: Option<Box<dyn Read + Send + 'a>>,
    start: u64,
    end: u64,
    what: &str,
) -> Result<Option<Box<dyn Read + Send + 'a>>> {
    let Some(mut reader) = reader else {
        return Ok(None);
    };
    let skipped = io::copy(&mut (&mut reader).take(start), &mut io::sink())
        .map_err(|e| crate::pipeline::io_error("read", what, e))?;
    let len = if skipped < start {
        0
    } else {
        end.saturating_sub(start)
    };
    Ok(Some(Box::new(reader.take(len))))
}

/// Reads a whole small file (info files); `None` when missing.
pub fn read_small(storage: &dyn Storage, path: &str) -> Result<Option<Vec<u8>>> {
    let Some(mut r) = storage.open_read(path)? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    r.read_to_end(&mut buf)
        .map_err(|e| crate::pipeline::io_error("read", &storage.describe(path), e))?;
    Ok(Some(buf))
}

/// Writes a whole small file atomically.
pub fn write_small(storage: &dyn Storage, path: &str, data: &[u8]) -> Result<()> {
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", path),
    };
    let mut w = storage.open_write_named(dir, name)?;
    w.write_all(data)
        .map_err(|e| crate::pipeline::io_error("write", &storage.describe(path), e))?;
    w.commit(name)
}
