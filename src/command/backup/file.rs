//! The per-file worker of a backup: explicit parameters, no config. It runs wherever a
//! worker thread runs and only needs a source file and a repository.
//!
//! A file is read once, without filling the page cache ([`ScanReader`]), through the page
//! checker (relation files of a cluster with data checksums) and the copy pipeline, into a
//! temp file of the repository that is committed under the file's stored name. A failed page
//! is read again before it is reported, because PostgreSQL may have been writing it while we
//! read (a torn read, not corruption).

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::walk::SourceFile;
use crate::error::{Error, Result};
use crate::manifest::FileEntry;
use crate::pg::page::{page_is_bad, PageChecker, PAGE_SIZE};
use crate::pipeline::{self, Compress, Ends};
use crate::repo::RepoLayout;
use crate::storage::scan::ScanReader;
use crate::storage::Storage;

/// What the per-file worker needs to know; nothing else of the configuration.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct CopyParams {
    #[serde(with = "compress_serde")]
    pub compress: Compress,
    /// Verify page checksums of relation files.
    pub verify_pages: bool,
    pub start_lsn: u64,
    /// Threads that may compress one large file: process-max, so that the backup's last
    /// large file is not compressed on one core while the others idle (see pipeline::gzip).
    #[serde(default = "one_thread")]
    pub compress_threads: u32,
}

/// More threads per file than this would only multiply threads and buffers at a large
/// process-max, where the workers keep the cores busy anyway.
pub const MAX_COMPRESS_THREADS: u32 = 4;

fn one_thread() -> u32 {
    1
}

impl CopyParams {
    pub fn threads(&self) -> usize {
        self.compress_threads.clamp(1, MAX_COMPRESS_THREADS) as usize
    }
}

mod compress_serde {
    use crate::pipeline::Compress;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &Compress, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(match c {
            Compress::None => -1,
            Compress::Gz(level) => i64::from(*level),
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Compress, D::Error> {
        let n = i64::deserialize(d)?;
        Ok(if n < 0 {
            Compress::None
        } else {
            Compress::Gz(n.min(9) as u32)
        })
    }
}

/// Opens a source file; `None` when it was deleted before we got to it (DROP TABLE, VACUUM
/// FULL): such a file is simply not part of the backup.
pub fn open_source(src: &SourceFile) -> Result<Option<File>> {
    match File::open(&src.path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("open", &src.path, e)),
    }
}

/// Streams one opened source file in storage format into `dest` and describes what was
/// stored. Runs on whichever host has the file: in-process, or in `pg_backrest remote` on
/// the database host with `dest` being the protocol stream.
pub fn copy_source(
    file: &File,
    src: &SourceFile,
    dest: &mut dyn std::io::Write,
    dest_name: &str,
    p: &CopyParams,
) -> Result<FileEntry> {
    let copied_at = chrono::Utc::now().timestamp();
    let source = src.path.display().to_string();
    let ends = Ends {
        source: &source,
        dest: dest_name,
    };
    let (copied, bad_blocks) = match (p.verify_pages, src.first_block) {
        (true, Some(first)) => {
            let mut checker = PageChecker::new(ScanReader::new(file), first, p.start_lsn);
            let copied = pipeline::store(&mut checker, dest, p.compress, p.threads(), &ends)?;
            let suspects = std::mem::take(&mut checker.bad_blocks);
            // The scan's reader gives the descriptor back to plain reads.
            drop(checker);
            (
                copied,
                confirm_bad_blocks(file, first, suspects, p.start_lsn),
            )
        }
        _ => (
            pipeline::store(
                &mut ScanReader::new(file),
                dest,
                p.compress,
                p.threads(),
                &ends,
            )?,
            Vec::new(),
        ),
    };
    if !bad_blocks.is_empty() {
        crate::warn!(
            "invalid page checksums found in file '{}' at blocks {}",
            src.path.display(),
            bad_blocks
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(FileEntry {
        size: copied.size,
        timestamp: src.mtime,
        checksum: copied.sha1,
        repo_size: copied.stored_size,
        mode: src.owner.mode.clone(),
        user: src.owner.user.clone(),
        group: src.owner.group.clone(),
        reference: None,
        checksum_page: (p.verify_pages && src.first_block.is_some())
            .then_some(bad_blocks.is_empty()),
        checksum_page_error: bad_blocks,
        copied_at: Some(copied_at),
    })
}

/// Where the data files are read: this host, or the database host over SSH.
pub trait FileSource: Sync {
    /// Copies `src` into `dest` in storage format; `None` when the file vanished.
    fn copy(
        &self,
        src: &SourceFile,
        dest: &mut dyn std::io::Write,
        dest_name: &str,
        p: &CopyParams,
    ) -> Result<Option<FileEntry>>;
}

pub struct LocalFiles;

impl FileSource for LocalFiles {
    fn copy(
        &self,
        src: &SourceFile,
        dest: &mut dyn std::io::Write,
        dest_name: &str,
        p: &CopyParams,
    ) -> Result<Option<FileEntry>> {
        match open_source(src)? {
            None => Ok(None),
            Some(file) => copy_source(&file, src, dest, dest_name, p).map(Some),
        }
    }
}

/// The database host's files, read by `pg_backrest remote` there: one protocol connection
/// per worker, so files stream in parallel over the one SSH master connection.
pub struct RemoteFiles {
    pub clients: Vec<std::sync::Mutex<crate::protocol::client::Client>>,
}

impl FileSource for RemoteFiles {
    fn copy(
        &self,
        src: &SourceFile,
        dest: &mut dyn std::io::Write,
        dest_name: &str,
        p: &CopyParams,
    ) -> Result<Option<FileEntry>> {
        use crate::protocol::client::reply_value;
        use crate::protocol::frame::Frame;
        let index = rayon::current_thread_index().unwrap_or(0) % self.clients.len().max(1);
        let client = self
            .clients
            .get(index)
            .ok_or_else(|| Error::internal("no connection to pg1-host"))?;
        let mut c = client
            .lock()
            .map_err(|_| Error::internal("pg1-host client lock poisoned"))?;
        let request = serde_json::json!({"op": "backup-file", "src": src, "params": p});
        let found = c.call(&request)?;
        if found.get("found").and_then(serde_json::Value::as_bool) != Some(true) {
            return Ok(None);
        }
        loop {
            match c.recv()? {
                Frame::Data(d) => dest
                    .write_all(&d)
                    .map_err(|e| pipeline::io_error("write", dest_name, e))?,
                Frame::Json(v) => {
                    let reply = reply_value(v)?;
                    return serde_json::from_value(reply.get("entry").cloned().unwrap_or_default())
                        .map(Some)
                        .map_err(|e| {
                            Error::remote(format!("invalid file entry from pg1-host: {e}"))
                        });
                }
                other => {
                    return Err(Error::remote(format!(
                        "unexpected frame {other:?} in a file stream from pg1-host"
                    )))
                }
            }
        }
    }
}

pub enum FileOutcome {
    Copied(FileEntry),
    /// Same content as the prior backup's copy (delta): the prior's entry, referenced.
    Unchanged(FileEntry),
    Vanished,
}

/// Copies one file of the cluster into the backup: into a temp file of the repository
/// that is committed under the file's stored name only when complete. With `prior` (delta),
/// a file whose content turns out to be the prior backup's is not kept: the prior's entry
/// is returned to be referenced instead.
pub fn backup_file(
    source: &dyn FileSource,
    repo: &dyn Storage,
    layout: &RepoLayout,
    label: &str,
    src: &SourceFile,
    prior: Option<&FileEntry>,
    p: &CopyParams,
) -> Result<FileOutcome> {
    let stored = format!("{}{}", src.key, p.compress.extension());
    let (dir, name) = stored.rsplit_once('/').unwrap_or(("", stored.as_str()));
    let repo_dir = layout.backup_file(label, dir);
    let mut writer = repo.open_write(&repo_dir)?;
    let dest = repo.describe(&repo_dir);
    match source.copy(src, &mut writer, &dest, p)? {
        // The writer is dropped uncommitted: its temp file goes with it.
        None => Ok(FileOutcome::Vanished),
        Some(entry) => match prior {
            Some(prior) if prior.checksum == entry.checksum && prior.size == entry.size => {
                Ok(FileOutcome::Unchanged(FileEntry {
                    timestamp: entry.timestamp,
                    ..prior.clone()
                }))
            }
            _ => {
                writer.commit(name)?;
                Ok(FileOutcome::Copied(entry))
            }
        },
    }
}

/// Re-reads each suspect page: one that now verifies, or was rewritten since the backup
/// started, was a torn read.
fn confirm_bad_blocks(file: &File, first: u32, suspects: Vec<u32>, start_lsn: u64) -> Vec<u32> {
    let mut page = vec![0u8; PAGE_SIZE];
    suspects
        .into_iter()
        .filter(|&blk| {
            let offset = u64::from(blk - first) * PAGE_SIZE as u64;
            match file.read_exact_at(&mut page, offset) {
                Ok(()) => page_is_bad(&page, blk, start_lsn),
                // Truncated meanwhile: the page is gone, WAL replay settles it.
                Err(_) => false,
            }
        })
        .collect()
}
