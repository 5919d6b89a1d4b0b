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
use crate::command::remote::Request;
use crate::error::{Error, Result};
use crate::manifest::FileEntry;
use crate::pg::page::{page_is_bad, PageChecker, PAGE_SIZE};
use crate::pipeline::{self, Compress, Ends};
use crate::protocol::client::Client;
use crate::protocol::request::{EntryReply, Found};
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
        s.serialize_str(&c.to_wire())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Compress, D::Error> {
        let wire = String::deserialize(d)?;
        Compress::from_wire(&wire)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown compression '{wire}'")))
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
    let mut scan = ScanReader::new(file).map_err(|e| Error::io("read", &src.path, e))?;
    let (copied, bad_blocks) = match (p.verify_pages, src.first_block) {
        (true, Some(first)) => {
            let mut checker = PageChecker::new(scan, first, p.start_lsn);
            let copied =
                pipeline::store_indexed(&mut checker, dest, p.compress, p.threads(), &ends)?;
            let suspects = std::mem::take(&mut checker.bad_blocks);
            // The scan's reader gives the descriptor back to plain reads.
            drop(checker);
            (
                copied,
                confirm_bad_blocks(file, first, suspects, p.start_lsn),
            )
        }
        _ => (
            pipeline::store_indexed(&mut scan, dest, p.compress, p.threads(), &ends)?,
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
        checksum_repo: None,
        repo_size: copied.stored_size,
        mode: src.owner.mode.clone(),
        user: src.owner.user.clone(),
        group: src.owner.group.clone(),
        reference: None,
        checksum_page: (p.verify_pages && src.first_block.is_some())
            .then_some(bad_blocks.is_empty()),
        checksum_page_error: bad_blocks,
        copied_at: Some(copied_at),
        // A large file's blocks, for restore to spread it over several threads (issue 17).
        // On a database host's remote this entry goes back over the protocol whole.
        block_index: copied.block_index,
    })
}

/// Small files are handed to a worker in batches of up to this many files...
pub const BATCH_FILES: usize = 16;
/// ...and this many bytes. A file larger than this is a batch of its own.
///
/// Why: over SSH each file used to wait a round trip for its request before its data came,
/// about 1 ms per file and worker, a second for the thousand small files of any cluster. A
/// batch is asked for in one request ([`FileSource::announce`]) and the database host
/// streams its files back to back, while the repository host commits the one before.
pub const BATCH_BYTES: u64 = 1 << 20;

/// Cuts files sorted largest first into the batches described at [`BATCH_BYTES`], keeping
/// their order.
pub fn batches(sizes: impl IntoIterator<Item = u64>) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    let mut bytes = 0u64;
    for (i, size) in sizes.into_iter().enumerate() {
        match out.last_mut() {
            Some(last)
                if size <= BATCH_BYTES
                    && last.len() < BATCH_FILES
                    && bytes + size <= BATCH_BYTES =>
            {
                last.end = i + 1;
                bytes += size;
            }
            _ => {
                // A file larger than BATCH_BYTES leaves no room: nothing joins its batch.
                out.push(i..i + 1);
                bytes = size;
            }
        }
    }
    out
}

/// Where the data files are read: this host, or the database host over SSH.
pub trait FileSource: Sync {
    /// Says which files this worker's next calls to [`FileSource::copy`] will be for, in that
    /// order, so that a remote source asks for all of them at once. Each must then be copied,
    /// in that order, before anything else is asked of this worker's source.
    fn announce(&self, _srcs: &[&SourceFile], _p: &CopyParams) -> Result<()> {
        Ok(())
    }

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
    connections: Vec<std::sync::Mutex<Connection>>,
}

struct Connection {
    client: Client,
    /// Keys of the announced files whose replies have not been read yet, in order.
    announced: std::collections::VecDeque<String>,
    /// A file's reply was left half-read (its destination failed): the replies after it can
    /// no longer be told apart, so nothing more is read from this connection.
    out_of_step: bool,
}

impl RemoteFiles {
    pub fn new(clients: Vec<Client>) -> RemoteFiles {
        RemoteFiles {
            connections: clients
                .into_iter()
                .map(|client| {
                    std::sync::Mutex::new(Connection {
                        client,
                        announced: Default::default(),
                        out_of_step: false,
                    })
                })
                .collect(),
        }
    }

    /// This worker's connection.
    fn connection(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        let index = rayon::current_thread_index().unwrap_or(0) % self.connections.len().max(1);
        self.connections
            .get(index)
            .ok_or_else(|| Error::internal("no connection to pg1-host"))?
            .lock()
            .map_err(|_| Error::internal("pg1-host connection lock poisoned"))
    }
}

impl FileSource for RemoteFiles {
    fn announce(&self, srcs: &[&SourceFile], p: &CopyParams) -> Result<()> {
        // One file is asked for by `copy` itself.
        if srcs.len() < 2 {
            return Ok(());
        }
        let mut c = self.connection()?;
        if !c.announced.is_empty() {
            return Err(Error::internal(
                "files announced to pg1-host before the last ones were read",
            ));
        }
        let request = Request::BackupFiles {
            srcs: srcs.iter().map(|s| (*s).clone()).collect(),
            params: *p,
        };
        c.client.send_request(&request)?;
        c.client.flush()?;
        c.announced.extend(srcs.iter().map(|s| s.key.clone()));
        Ok(())
    }

    fn copy(
        &self,
        src: &SourceFile,
        dest: &mut dyn std::io::Write,
        dest_name: &str,
        p: &CopyParams,
    ) -> Result<Option<FileEntry>> {
        use crate::protocol::client::reply_value;
        use crate::protocol::frame::Frame;
        let mut c = self.connection()?;
        if c.out_of_step {
            return Err(Error::remote(
                "the connection to pg1-host is out of step after an earlier error",
            ));
        }
        let found = match c.announced.pop_front() {
            Some(key) if key == src.key => c.client.reply_as::<Found>("backup-files"),
            Some(key) => {
                c.out_of_step = true;
                return Err(Error::internal(format!(
                    "pg1-host is sending '{key}', not '{}': an earlier file was not read",
                    src.key
                )));
            }
            None => c.client.call(&Request::BackupFile {
                src: src.clone(),
                params: *p,
            }),
        }?;
        if !found.found {
            return Ok(None);
        }
        loop {
            // The pipeline's own checks run on pg1-host; this side checks per frame.
            if let Err(e) = crate::signal::check() {
                c.out_of_step = true;
                return Err(e);
            }
            match c.client.recv()? {
                Frame::Data(d) => {
                    if let Err(e) = dest.write_all(&d) {
                        c.out_of_step = true;
                        return Err(pipeline::io_error("write", dest_name, e));
                    }
                }
                Frame::Json(v) => {
                    let reply = reply_value(v)?;
                    return serde_json::from_value::<EntryReply<FileEntry>>(reply)
                        .map(|r| Some(r.entry))
                        .map_err(|e| {
                            Error::remote(format!("invalid file entry from pg1-host: {e}"))
                        });
                }
                other => {
                    c.out_of_step = true;
                    return Err(Error::remote(format!(
                        "unexpected frame {other} in a file stream from pg1-host"
                    )));
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
    let mut writer = repo.open_write_named(&repo_dir, name)?;
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
                // The backup syncs its directories once, before its manifest says it is
                // complete (sync_backup_paths).
                writer.commit_unsynced(name)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::remote::server::test_pair;
    use crate::manifest::Owner;
    use std::time::Duration;

    #[test]
    fn batches_group_only_small_files_and_keep_their_order() {
        let k = 1024;
        let sizes = [
            3 << 30,     // alone
            BATCH_BYTES, // alone: nothing fits beside it
            600 * k,
            500 * k, // would pass BATCH_BYTES with the 600 KiB one
            8 * k,
        ];
        let mut all = sizes.to_vec();
        // 20 more small files: the batch of 500 KiB + 8 KiB takes 14 of them (16 files).
        all.extend(std::iter::repeat_n(8 * k, 20));
        all.push(0);
        let got = batches(all.iter().copied());
        assert_eq!(got, vec![0..1, 1..2, 2..3, 3..19, 19..26]);
        // Every file in exactly one batch, in order.
        let flat: Vec<usize> = got.into_iter().flatten().collect();
        assert_eq!(flat, (0..all.len()).collect::<Vec<_>>());
        assert!(batches(std::iter::empty()).is_empty());
    }

    fn source(dir: &std::path::Path, name: &str) -> SourceFile {
        let path = dir.join(name);
        SourceFile {
            key: format!("pg_data/{name}"),
            size: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
            path,
            mtime: 0,
            owner: Owner {
                mode: "0600".into(),
                user: "postgres".into(),
                group: "postgres".into(),
            },
            first_block: None,
        }
    }

    const PLAIN: CopyParams = CopyParams {
        compress: Compress::None,
        verify_pages: false,
        start_lsn: 0,
        compress_threads: 1,
    };

    fn copied(files: &RemoteFiles, src: &SourceFile) -> Result<Option<(Vec<u8>, FileEntry)>> {
        let mut out = Vec::new();
        Ok(files
            .copy(src, &mut out, "memory", &PLAIN)?
            .map(|entry| (out, entry)))
    }

    /// A batch is asked for in one request and its replies, a vanished file's included,
    /// are read file by file; single requests work between and after batches. A file read
    /// out of the announced order cannot be matched to its reply: the connection refuses
    /// further use instead of handing one file's data out as another's.
    #[test]
    fn announced_files_stream_back_to_back_and_out_of_order_reads_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..(3 * pipeline::CHUNK + 7))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(tmp.path().join("big"), &big).unwrap();
        std::fs::write(tmp.path().join("small"), b"small file").unwrap();
        let (client, server) = test_pair::serve(tmp.path(), Duration::from_secs(10));
        let files = RemoteFiles::new(vec![client]);
        let (big_src, gone, small) = (
            source(tmp.path(), "big"),
            source(tmp.path(), "gone"),
            source(tmp.path(), "small"),
        );

        files.announce(&[&big_src, &gone, &small], &PLAIN).unwrap();
        let (data, entry) = copied(&files, &big_src).unwrap().unwrap();
        assert!(data == big, "{} of {} bytes", data.len(), big.len());
        assert_eq!(entry.size, big.len() as u64);
        assert_eq!(
            entry.checksum,
            pipeline::digest(&mut &big[..], "big").unwrap().sha1
        );
        assert!(copied(&files, &gone).unwrap().is_none(), "vanished");
        assert_eq!(copied(&files, &small).unwrap().unwrap().0, b"small file");
        // Not announced: asked for on its own.
        assert_eq!(copied(&files, &small).unwrap().unwrap().0, b"small file");

        files.announce(&[&big_src, &small], &PLAIN).unwrap();
        let e = files.announce(&[&big_src, &small], &PLAIN).unwrap_err();
        assert!(
            e.message.contains("before the last ones were read"),
            "{e:?}"
        );
        let e = copied(&files, &small).unwrap_err();
        assert!(e.message.contains("an earlier file was not read"), "{e:?}");
        let e = copied(&files, &small).unwrap_err();
        assert!(e.message.contains("out of step"), "{e:?}");

        // The server was still sending the second batch: it stops when the client goes.
        drop(files);
        let _ = server.join().unwrap();
    }

    /// A large file copied by the database host's remote comes back with the block index
    /// its pipeline recorded (over the protocol, in the file's entry), the same as a copy
    /// on this host records.
    #[test]
    fn the_block_index_of_a_large_file_comes_back_from_the_remote() {
        let tmp = tempfile::tempdir().unwrap();
        let data = crate::pipeline::test_data::pages(2 * pipeline::INDEX_BLOCK + 5, 8192);
        std::fs::write(tmp.path().join("big"), &data).unwrap();
        let (client, server) = test_pair::serve(tmp.path(), Duration::from_secs(10));
        let files = RemoteFiles::new(vec![client]);
        let big = source(tmp.path(), "big");
        let params = CopyParams {
            compress: Compress::Gz(1),
            compress_threads: 2,
            ..PLAIN
        };
        let mut remote_bytes = Vec::new();
        let remote = files
            .copy(&big, &mut remote_bytes, "memory", &params)
            .unwrap()
            .unwrap();
        let mut local_bytes = Vec::new();
        let local = LocalFiles
            .copy(&big, &mut local_bytes, "memory", &params)
            .unwrap()
            .unwrap();
        let index = remote.block_index.as_ref().expect("an index from pg1-host");
        assert_eq!(index.offsets.len(), 3);
        assert_eq!(remote.block_index, local.block_index);
        assert!(remote_bytes == local_bytes);
        drop(files);
        let _ = server.join().unwrap();
    }

    /// A destination that fails mid-file leaves that file's reply half read: the next file
    /// of the batch is refused rather than read from the middle of the previous one.
    #[test]
    fn a_destination_failing_mid_file_stops_the_connection() {
        struct Full;
        impl std::io::Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("no space left"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("big"), vec![7u8; 3 * pipeline::CHUNK]).unwrap();
        std::fs::write(tmp.path().join("small"), b"small file").unwrap();
        let (client, server) = test_pair::serve(tmp.path(), Duration::from_secs(10));
        let files = RemoteFiles::new(vec![client]);
        let (big, small) = (source(tmp.path(), "big"), source(tmp.path(), "small"));
        files.announce(&[&big, &small], &PLAIN).unwrap();
        let e = files
            .copy(&big, &mut Full, "full disk", &PLAIN)
            .unwrap_err();
        assert!(e.message.contains("no space left"), "{e:?}");
        let e = copied(&files, &small).unwrap_err();
        assert!(e.message.contains("out of step"), "{e:?}");
        drop(files);
        let _ = server.join().unwrap();
    }
}
