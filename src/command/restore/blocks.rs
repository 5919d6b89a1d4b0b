//! Restore and delta restore of one large file on several workers (issue 17). A file whose
//! manifest entry has a block index ([`crate::manifest::BlockIndex`]) is split into jobs of
//! [`RUN_BLOCKS`] consecutive blocks, and those jobs enter the restore's worker queue in the
//! file's place, so the process-max workers share a 1 GiB segment instead of one of them
//! inflating, hashing and writing it alone.
//!
//! The first job of a file to start opens its [`Target`]; every job writes its blocks at
//! their offsets (pwrite), and the last one to finish commits the file:
//!
//! - a new file: a temp file in the file's directory, given its full size with its space
//!   reserved first (PosixWriter::allocate says why), renamed to the file's name after an
//!   fsync and its mtime and owner, as a whole-file restore does.
//!   A failed block fails the restore; the temp file goes with the [`BlockFile`]s when the
//!   restore returns.
//! - delta over an existing regular file: each block's local bytes are hashed and compared
//!   with the block's checksum (XXH3-128, manifest::BlockHash says why); a block that matches
//!   is left alone, one that differs is restored in place. Then the file is cut to its size,
//!   fsynced, and given its attributes.
//!   A file whose blocks all match is kept without being read a second time (no whole-file
//!   SHA-1 after the block ones) and is not written at all. Writing in place is as safe as
//!   the remove-then-rewrite of other files: the data directory has no pg_control until the
//!   restore ends.
//!
//! Every block's bytes are checked against its checksum as they are restored
//! ([`pipeline::block`]); the whole-file SHA-1 is not computed again: the block checksums
//! were computed from the same bytes when the file was stored.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{commit_restored, correct_attributes, parse_mode, remove_outdated, split_path};
use crate::error::{Error, Result};
use crate::manifest::{Block, FileEntry};
use crate::pipeline::{self, CompressType, Ends};
use crate::storage::posix::{drop_cached, will_need, PosixWriter};
use crate::storage::Storage;

/// A file restored block by block: what its block jobs share.
pub(super) struct BlockFile<'a> {
    pub entry: &'a FileEntry,
    pub local: PathBuf,
    /// Its path in the repository, and its compression type.
    pub stored: String,
    pub compress: CompressType,
    /// Delta: an existing regular file may be kept or mended in place.
    pub delta: bool,
    /// Block jobs not yet finished; the one that brings it to 0 commits the file.
    remaining: AtomicUsize,
    target: Mutex<Option<Arc<Target>>>,
    /// Delta: blocks restored, and their bytes.
    rewritten: AtomicUsize,
    rewritten_bytes: AtomicU64,
    /// Delta: whether the last block compared differed, so that the next one likely does
    /// too (see [`BlockFile::prefix_matches`]).
    differing: AtomicBool,
    /// Blocks per job ([`RUN_BLOCKS`]).
    run_blocks: u32,
}

/// Where a file's blocks are written.
enum Target {
    /// A temp file of the file's size, renamed at the end.
    New(PosixWriter),
    /// Delta: the existing file, opened for reading and writing; what `stat` said of it.
    InPlace { file: File, found: fs::Metadata },
}

/// How a file restored block by block ended, for the restore's counts.
#[derive(Debug)]
pub(super) enum Finished {
    /// Not yet: other blocks of the file are still running.
    Pending,
    /// Written whole (a new file), or mended in place: this many bytes rewritten.
    Restored(u64),
    /// Delta: every block matched.
    Kept,
}

impl<'a> BlockFile<'a> {
    /// A file of `entry` to restore at `local` from `stored`, when its entry has an index
    /// and its type can be cut into blocks; `None` otherwise (it is restored whole).
    pub fn new(
        entry: &'a FileEntry,
        local: PathBuf,
        stored: String,
        compress: CompressType,
        delta: bool,
    ) -> Option<BlockFile<'a>> {
        let index = entry.block_index.as_ref()?;
        if compress == CompressType::Bz2 || index.offsets.is_empty() {
            return None;
        }
        Some(BlockFile {
            entry,
            local,
            stored,
            compress,
            delta,
            remaining: AtomicUsize::new(index.offsets.len()),
            target: Mutex::new(None),
            rewritten: AtomicUsize::new(0),
            rewritten_bytes: AtomicU64::new(0),
            differing: AtomicBool::new(true),
            run_blocks: RUN_BLOCKS,
        })
    }

    /// How many blocks the file has.
    pub fn block_count(&self) -> u32 {
        self.entry
            .block_index
            .as_ref()
            .map_or(0, |index| index.offsets.len() as u32)
    }

    /// How many jobs the file is split into: runs of consecutive blocks.
    pub fn run_count(&self) -> u32 {
        self.block_count().div_ceil(self.run_blocks)
    }

    /// The blocks of run `run` (the manifest entry's index was checked against the file's
    /// size when the manifest was loaded).
    fn blocks_of_run(&self, run: u32) -> Vec<Block> {
        let first = (run * self.run_blocks) as usize;
        match &self.entry.block_index {
            Some(index) => index
                .blocks(self.entry.size, self.entry.repo_size)
                .skip(first)
                .take(self.run_blocks as usize)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Runs job `run`: restores its blocks (delta: those whose local bytes differ), telling
    /// `done` the original bytes of each block as it is finished, and commits the file when
    /// it is the last of its jobs to finish.
    pub fn run(&self, repo: &dyn Storage, run: u32, done: &dyn Fn(u64)) -> Result<Finished> {
        let blocks = self.blocks_of_run(run);
        let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else {
            return Err(Error::internal(format!("no run {run} in the block index")));
        };
        let target = self.target()?;
        match target.as_ref() {
            Target::New(writer) => {
                // One read of the run's stored bytes, consumed block by block.
                let source = repo.describe(&self.stored);
                let mut reader = repo
                    .open_read_range(&self.stored, first.stored_start, last.stored_end)?
                    .ok_or_else(|| super::missing_stored(&source))?;
                // Messages name the file being restored, not its temp name.
                let (file, _) = writer.temp_file()?;
                for (i, block) in blocks.iter().enumerate() {
                    self.restore(&mut reader, &source, block, file)?;
                    drop_written(file, &blocks[..=i]);
                    done(block.len);
                }
            }
            Target::InPlace { file, .. } => {
                // A file descriptor of the run's own for reading: the kernel keeps the
                // readahead state per open file, and two workers reading different runs
                // through one would make each other's reads look random, so that readahead
                // stays small (docs/benchmarks.md, "restore by blocks").
                let local =
                    File::open(&self.local).map_err(|e| Error::io("open", &self.local, e))?;
                let mut prefetched = false;
                for (i, block) in blocks.iter().enumerate() {
                    let likely_differs = self.differing.load(Ordering::Relaxed);
                    // Not before a block was found to differ (and rewritten): in an
                    // unchanged file, the prefixes read ahead would be the only pages of the
                    // next blocks in cache, and reaching them does not start the kernel's
                    // readahead, so that every block of the run began with a wait on the disk.
                    let found_different = self.rewritten.load(Ordering::Relaxed) > 0;
                    if likely_differs && !prefetched && found_different {
                        prefetch_prefixes(&local, &blocks[i..]);
                        prefetched = true;
                    }
                    let matches = (!likely_differs || self.prefix_matches(repo, &local, block)?)
                        && self.local_matches(&local, block, keep_cached(run, i))?;
                    self.differing.store(!matches, Ordering::Relaxed);
                    if !matches {
                        let source = repo.describe(&self.stored);
                        let mut reader = repo
                            .open_read_range(&self.stored, block.stored_start, block.stored_end)?
                            .ok_or_else(|| super::missing_stored(&source))?;
                        self.restore(&mut reader, &source, block, file)?;
                        drop_written(file, &blocks[..=i]);
                        self.rewritten.fetch_add(1, Ordering::Relaxed);
                        self.rewritten_bytes.fetch_add(block.len, Ordering::Relaxed);
                    }
                    done(block.len);
                }
            }
        }
        // Released before counting down, so that the last job holds the only reference.
        drop(target);
        let count = blocks.len();
        if self.remaining.fetch_sub(count, Ordering::AcqRel) != count {
            return Ok(Finished::Pending);
        }
        self.commit()
    }

    /// The file's target, opened by the first block to ask.
    fn target(&self) -> Result<Arc<Target>> {
        let mut slot = self
            .target
            .lock()
            .map_err(|_| Error::internal("block restore lock poisoned"))?;
        if let Some(target) = slot.as_ref() {
            return Ok(Arc::clone(target));
        }
        let target = Arc::new(self.open()?);
        *slot = Some(Arc::clone(&target));
        Ok(target)
    }

    fn open(&self) -> Result<Target> {
        if self.delta {
            match fs::symlink_metadata(&self.local) {
                // A file with other hard links is not mended in place: that would change
                // the other names' content too.
                Ok(found) if found.is_file() && found.nlink() == 1 => {
                    match File::options().read(true).write(true).open(&self.local) {
                        Ok(file) => return Ok(Target::InPlace { file, found }),
                        // Not writable here (a read-only mode, not running as root): it is
                        // replaced instead, as a file without an index is.
                        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
                        Err(e) => return Err(Error::io("open", &self.local, e)),
                    }
                }
                _ => {}
            }
            remove_outdated(&self.local)?;
        }
        let (dir, _) = split_path(&self.local)?;
        let mode = parse_mode(&self.entry.mode).unwrap_or(0o600);
        let mut writer = PosixWriter::create_with_mode(dir.to_path_buf(), mode)?;
        writer.allocate(self.entry.size)?;
        Ok(Target::New(writer))
    }

    /// Restores `block` from `reader`, which is at the block's stored start, into `file`,
    /// taking exactly the block's stored bytes from it.
    fn restore(
        &self,
        reader: &mut dyn Read,
        source: &str,
        block: &Block,
        file: &File,
    ) -> Result<()> {
        let dest = self.local.display().to_string();
        let ends = Ends {
            source,
            dest: &dest,
        };
        let mut range = reader.take(block.stored_end - block.stored_start);
        pipeline::block::restore_block(
            &mut range,
            self.compress,
            block,
            self.entry.size,
            file,
            &ends,
        )?;
        Ok(())
    }

    /// Delta: whether the first [`PREFIX`] bytes of `block` in the local file equal those of
    /// its stored copy. Updates spread over a table change most of its pages, so a block
    /// that differs usually differs in its first pages already, and is then restored without
    /// being hashed first; a block that matches there is hashed whole
    /// ([`BlockFile::local_matches`]), so what is kept is exactly what the checksum says.
    ///
    /// Only asked for the first block of a file and after a block that differed: in a file
    /// that is unchanged, the blocks are hashed without it, so that it costs one more
    /// (ranged) read of the repository per file, not per block (which on S3 is a request).
    fn prefix_matches(&self, repo: &dyn Storage, file: &File, block: &Block) -> Result<bool> {
        // Enough stored bytes for the prefix in any format: a deflate or LZ4 block of
        // incompressible data, a zstd block of up to 128 KiB.
        let end = block.stored_end.min(block.stored_start + PREFIX_STORED);
        let Some(mut reader) = repo.open_read_range(&self.stored, block.stored_start, end)? else {
            return Ok(false);
        };
        let Some(theirs) = pipeline::block::block_prefix(
            &mut reader,
            self.compress,
            block,
            self.entry.size,
            PREFIX,
        ) else {
            return Ok(false);
        };
        let mut ours = vec![0u8; theirs.len()];
        match file.read_exact_at(&mut ours, block.start) {
            Ok(()) => Ok(ours == theirs),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(Error::io("read", &self.local, e)),
        }
    }

    /// Delta: whether the local bytes of `block` hash to its checksum. A file shorter than the
    /// block's end does not match. The pages read are let go behind the read, as for the
    /// whole files delta hashes (storage::posix::DropBehindReader says why), unless
    /// `keep_cached` ([`keep_cached`] says why).
    fn local_matches(&self, file: &File, block: &Block, keep_cached: bool) -> Result<bool> {
        let mut sum = pipeline::BlockHasher::new(block.checksum.hash());
        let mut buf = vec![0u8; pipeline::CHUNK.min(block.len as usize)];
        let mut done = 0u64;
        while done < block.len {
            crate::signal::check()?;
            let want = (block.len - done).min(buf.len() as u64) as usize;
            let n = match file.read_at(&mut buf[..want], block.start + done) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read", &self.local, e)),
            };
            sum.update(&buf[..n]);
            done += n as u64;
        }
        if !keep_cached {
            drop_cached(file, block.start, done);
        }
        Ok(done == block.len && sum.finalize_reset() == block.checksum)
    }

    /// After the last block: the file's size, durability, attributes and name.
    fn commit(&self) -> Result<Finished> {
        let target = self
            .target
            .lock()
            .map_err(|_| Error::internal("block restore lock poisoned"))?
            .take()
            .ok_or_else(|| Error::internal("block restore committed twice"))?;
        let target = Arc::try_unwrap(target)
            .map_err(|_| Error::internal("a block of the file is still being restored"))?;
        match target {
            Target::New(writer) => {
                let (_, name) = split_path(&self.local)?;
                commit_restored(writer, name, self.entry)?;
                crate::detail!(
                    "restored '{}' in {} blocks",
                    self.local.display(),
                    self.block_count()
                );
                Ok(Finished::Restored(self.entry.size))
            }
            Target::InPlace { file, found } => {
                // The first blocks of runs that hashing kept cached.
                drop_cached(&file, 0, 0);
                let rewritten = self.rewritten.load(Ordering::Relaxed);
                let blocks = self.block_count();
                if rewritten == 0 && found.len() == self.entry.size {
                    drop(file);
                    correct_attributes(&self.local, self.entry, &found)?;
                    return Ok(Finished::Kept);
                }
                if found.len() != self.entry.size {
                    file.set_len(self.entry.size)
                        .map_err(|e| Error::io("truncate", &self.local, e))?;
                }
                file.sync_all()
                    .map_err(|e| Error::io("sync", &self.local, e))?;
                drop(file);
                let bytes = self.rewritten_bytes.load(Ordering::Relaxed);
                crate::detail!(
                    "delta restore rewrote {rewritten} of {blocks} blocks ({bytes} bytes) of '{}'",
                    self.local.display()
                );
                // Writing changed the mtime: put back the recorded one (and mode, owner).
                let now = fs::symlink_metadata(&self.local)
                    .map_err(|e| Error::io("stat", &self.local, e))?;
                correct_attributes(&self.local, self.entry, &now)?;
                Ok(Finished::Restored(bytes))
            }
        }
    }
}

/// Blocks per job: a worker restores (or compares) this many consecutive blocks of a file
/// with one read of their stored bytes (one request on S3 or through repo1-host) and reads
/// the local file sequentially, while the workers still share a 1 GiB segment in 16 jobs.
/// Jobs of single blocks kept the workers' reads short: each began a new readahead.
pub const RUN_BLOCKS: u32 = 8;

/// Delta: whether hashing block `index` of run `run` leaves its pages cached (until the file is
/// committed) rather than dropping them. The first block of every run but the first: the
/// worker on the run before reaches it last, and the kernel's readahead past the end of that
/// run reads it again from disk if the pages are gone by then, which they were, since both
/// runs start together: ~90 MiB read twice in a delta of the scale-100 benchmark cluster's
/// unchanged copy (1.5 GB).
fn keep_cached(run: u32, index: usize) -> bool {
    run > 0 && index == 0
}

/// Original bytes of a block compared with the stored copy before it is hashed (delta).
const PREFIX: usize = 64 * 1024;
/// Stored bytes read for them at most.
const PREFIX_STORED: u64 = 256 * 1024;

/// Delta: asks the kernel to read the first [`PREFIX`] bytes of each of `blocks` now, when
/// they are likely to differ (see [`BlockFile::prefix_matches`]). Read one at a time as the
/// worker reaches them, each is a disk round trip queued behind the writes of the blocks
/// restored meanwhile, which doubled the time of a delta restore that rewrites a whole
/// 1 GiB segment. Not for blocks likely to match, which are read whole anyway: the reads
/// the hint starts (page by page, and out of order) slow their readahead
/// (docs/benchmarks.md, "restore by blocks").
fn prefetch_prefixes(file: &File, blocks: &[Block]) {
    for b in blocks {
        will_need(file, b.start, (PREFIX as u64).min(b.len));
    }
}

/// Starts writing the last of `written` (the blocks of a job written so far) out to disk
/// (`POSIX_FADV_DONTNEED` on its dirty pages), as the writers of whole files do every 8 MiB
/// (storage::posix::PosixWriter), so that the disk works while the next blocks are decoded
/// rather than all at the file's fsync; and drops the pages of the block written two before
/// it, clean by then, so that the restore recycles page cache
/// ([`crate::storage::posix::RECYCLE_BEHIND`] says why and what it was worth).
///
/// No hint at all was slower and less steady on the scale-100 benchmark cluster
/// (docs/benchmarks.md, "restore by blocks"): the fsync at the end then writes a whole 1 GiB
/// segment at once.
fn drop_written(file: &File, written: &[Block]) {
    if let Some(block) = written.last() {
        drop_cached(file, block.start, block.len);
    }
    if let Some(clean) = written.len().checked_sub(3).map(|i| &written[i]) {
        drop_cached(file, clean.start, clean.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::BlockIndex;
    use crate::parallel::Workers;
    use crate::pipeline::block::tests::stored_with_index;
    use crate::pipeline::test_data::pages;
    use crate::storage::posix::PosixStorage;
    use sha1::{Digest as _, Sha1};
    use std::os::unix::fs::PermissionsExt;

    /// Two prefixes ([`PREFIX`]) long, so that a change past the prefix is found by the
    /// block's checksum only.
    const BLOCK: usize = 2 * PREFIX;

    fn entry(data: &[u8], stored: &[u8], index: BlockIndex) -> FileEntry {
        FileEntry {
            size: data.len() as u64,
            timestamp: 1_700_000_000,
            checksum: hex::encode(Sha1::digest(data)),
            checksum_repo: None,
            repo_size: stored.len() as u64,
            mode: "0600".into(),
            user: "postgres".into(),
            group: "postgres".into(),
            reference: None,
            checksum_page: None,
            checksum_page_error: Vec::new(),
            copied_at: None,
            block_index: Some(index),
        }
    }

    /// A repository holding `stored` as `f.<ext>`, and a data directory.
    struct Setup {
        tmp: tempfile::TempDir,
        repo: PosixStorage,
    }

    impl Setup {
        fn new(stored: &[u8], kind: CompressType) -> Setup {
            let tmp = tempfile::tempdir().unwrap();
            fs::create_dir(tmp.path().join("repo")).unwrap();
            fs::create_dir(tmp.path().join("pg")).unwrap();
            fs::write(
                tmp.path().join(format!("repo/f{}", kind.extension())),
                stored,
            )
            .unwrap();
            let repo = PosixStorage::new(tmp.path().join("repo"));
            Setup { tmp, repo }
        }

        fn local(&self) -> PathBuf {
            self.tmp.path().join("pg/f")
        }

        /// Runs every block of the file on two workers, as restore does; the outcome of the
        /// last block, and what was left in the data directory.
        fn run(&self, entry: &FileEntry, kind: CompressType, delta: bool) -> Result<Finished> {
            let file = BlockFile::new(
                entry,
                self.local(),
                format!("f{}", kind.extension()),
                kind,
                delta,
            )
            .unwrap();
            // Runs of two blocks, so that the few blocks of a test file make several jobs.
            let file = BlockFile {
                run_blocks: 2,
                ..file
            };
            let runs: Vec<u32> = (0..file.run_count()).collect();
            let outcome = Mutex::new(None);
            let done = AtomicU64::new(0);
            let workers = Workers::new(2, Vec::new()).unwrap();
            let result = workers.try_each_in_order(&runs, |&run| {
                let finished = file.run(&self.repo, run, &|n| {
                    done.fetch_add(n, Ordering::Relaxed);
                })?;
                if !matches!(finished, Finished::Pending) {
                    *outcome.lock().unwrap() = Some(finished);
                }
                Ok(())
            });
            drop(file);
            result.map(|()| {
                assert_eq!(done.into_inner(), entry.size, "progress of every block");
                outcome.into_inner().unwrap().expect("a last block")
            })
        }

        fn entries(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.tmp.path().join("pg"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }

    const KINDS: [CompressType; 4] = [
        CompressType::Gz,
        CompressType::Zst,
        CompressType::Lz4,
        CompressType::None,
    ];

    #[test]
    fn a_file_restored_block_by_block_on_two_workers_is_whole_with_its_attributes() {
        let data = pages(7 * BLOCK + 4321, 8192);
        for kind in KINDS {
            let (stored, index) = stored_with_index(&data, kind, BLOCK);
            let setup = Setup::new(&stored, kind);
            let e = entry(&data, &stored, index);
            let finished = setup.run(&e, kind, false).unwrap();
            assert!(matches!(finished, Finished::Restored(n) if n == data.len() as u64));
            assert!(fs::read(setup.local()).unwrap() == data, "{kind:?}");
            let m = fs::metadata(setup.local()).unwrap();
            assert_eq!((m.mtime(), m.mode() & 0o777), (1_700_000_000, 0o600));
            assert_eq!(setup.entries(), vec!["f"], "{kind:?}: no temp file left");
        }
    }

    /// A tampered index or stored file fails the restore with the integrity error of the
    /// block, and leaves nothing: no file under the real name, no temp file.
    #[test]
    fn a_bad_block_fails_the_file_and_leaves_nothing_behind() {
        let data = pages(5 * BLOCK + 10, 8192);
        let other = pages(5 * BLOCK + 10, 2048);
        for kind in KINDS {
            let (stored, index) = stored_with_index(&data, kind, BLOCK);
            let (swapped, _) = stored_with_index(&other, kind, BLOCK);
            let mut moved = index.clone();
            moved.offsets[3] += 1;
            let mut wrong_sum = index.clone();
            wrong_sum.checksums[2] = wrong_sum.checksums[2].flipped();
            let cases: [(&str, &[u8], BlockIndex); 4] = [
                ("offset moved", &stored, moved),
                ("checksum changed", &stored, wrong_sum),
                (
                    "stored file truncated",
                    &stored[..stored.len() * 2 / 3],
                    index.clone(),
                ),
                ("stored file swapped", &swapped, index.clone()),
            ];
            for (what, bytes, index) in cases {
                let setup = Setup::new(bytes, kind);
                let e = entry(&data, &stored, index);
                let err = setup.run(&e, kind, false).unwrap_err();
                assert_eq!(
                    err.kind,
                    crate::error::Kind::Format,
                    "{kind:?} {what}: {err:?}"
                );
                assert!(
                    err.message.contains(&format!(
                        "of stored file '{}",
                        setup.tmp.path().join("repo/f").display()
                    )),
                    "{kind:?} {what}: {}",
                    err.message
                );
                assert!(
                    setup.entries().is_empty(),
                    "{kind:?} {what}: {:?}",
                    setup.entries()
                );
            }
        }
    }

    #[test]
    fn a_missing_stored_file_is_named() {
        let data = pages(3 * BLOCK, 8192);
        let (stored, index) = stored_with_index(&data, CompressType::Gz, BLOCK);
        let setup = Setup::new(&stored, CompressType::Gz);
        fs::remove_file(setup.tmp.path().join("repo/f.gz")).unwrap();
        let err = setup
            .run(&entry(&data, &stored, index), CompressType::Gz, false)
            .unwrap_err();
        assert_eq!(err.kind, crate::error::Kind::FileMissing, "{err:?}");
        assert!(setup.entries().is_empty());
    }

    /// Delta: blocks that differ are rewritten in place (the count of bytes says only
    /// those), the length, mode and mtime put right; a file whose blocks all match is kept
    /// untouched (its ctime stays); a short file gets its missing blocks.
    #[test]
    fn delta_rewrites_only_the_blocks_that_differ_and_keeps_a_matching_file_untouched() {
        let data = pages(6 * BLOCK + 99, 8192);
        for kind in KINDS {
            let (stored, index) = stored_with_index(&data, kind, BLOCK);
            let setup = Setup::new(&stored, kind);
            let e = entry(&data, &stored, index);
            let local = setup.local();

            // Two blocks changed (one in its prefix, one past it), and the file longer than
            // the backup's.
            let mut changed = data.clone();
            changed[BLOCK + 5] ^= 1;
            changed[5 * BLOCK - 7] ^= 1;
            changed.extend_from_slice(b"tail");
            fs::write(&local, &changed).unwrap();
            fs::set_permissions(&local, fs::Permissions::from_mode(0o640)).unwrap();
            let inode = fs::metadata(&local).unwrap().ino();
            let finished = setup.run(&e, kind, true).unwrap();
            assert!(
                matches!(finished, Finished::Restored(n) if n == 2 * BLOCK as u64),
                "{kind:?}"
            );
            assert!(fs::read(&local).unwrap() == data, "{kind:?}");
            let m = fs::metadata(&local).unwrap();
            assert_eq!(m.ino(), inode, "{kind:?}: mended in place");
            assert_eq!((m.mtime(), m.mode() & 0o777), (1_700_000_000, 0o600));

            // All blocks match: kept, not even its inode written.
            let ctime = (m.ctime(), m.ctime_nsec());
            let finished = setup.run(&e, kind, true).unwrap();
            assert!(matches!(finished, Finished::Kept), "{kind:?}");
            let m = fs::metadata(&local).unwrap();
            assert_eq!(
                (m.ctime(), m.ctime_nsec()),
                ctime,
                "{kind:?}: kept file written"
            );

            // Shorter than the backup's: the missing blocks are written.
            fs::write(&local, &data[..2 * BLOCK + 3]).unwrap();
            let finished = setup.run(&e, kind, true).unwrap();
            assert!(matches!(finished, Finished::Restored(n) if n == 4 * BLOCK as u64 + 99));
            assert!(fs::read(&local).unwrap() == data, "{kind:?}");
            assert_eq!(setup.entries(), vec!["f"]);
        }
    }

    /// Delta over a file with another hard link, or no file: a new file, the link's other
    /// name untouched.
    #[test]
    fn delta_replaces_a_hard_linked_file_instead_of_writing_through_the_link() {
        let data = pages(3 * BLOCK + 1, 8192);
        let (stored, index) = stored_with_index(&data, CompressType::Zst, BLOCK);
        let setup = Setup::new(&stored, CompressType::Zst);
        let e = entry(&data, &stored, index);
        let other = setup.tmp.path().join("other-name");
        let old = vec![7u8; data.len()];
        fs::write(setup.local(), &old).unwrap();
        fs::hard_link(setup.local(), &other).unwrap();
        setup.run(&e, CompressType::Zst, true).unwrap();
        assert!(fs::read(setup.local()).unwrap() == data);
        assert!(fs::read(&other).unwrap() == old, "written through the link");
        fs::remove_file(setup.local()).unwrap();
        setup.run(&e, CompressType::Zst, true).unwrap();
        assert!(fs::read(setup.local()).unwrap() == data);
    }
}
