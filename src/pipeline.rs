//! The one copy pipeline. Storing runs read → size → SHA-1 → compress → write; restoring runs
//! read → decompress → SHA-1 → write and checks the digest (compression types: pipeline::codec). Both stream in fixed chunks, so
//! memory stays flat whatever the file size, and both return the figures (size, SHA-1,
//! stored size) that callers record instead of reading the file again.
//!
//! archive-push, archive-get, and later backup and restore all copy through here, local or
//! remote: a bug in copying is fixed here and nowhere else.
//!
//! A backup stores through [`store_indexed`], which also records a large file's block index
//! (where each [`INDEX_BLOCK`] of it starts in the stored file, and its checksum): restore can
//! then decode the blocks of one file on several threads (issue 17).
//!
//! Errors keep their origin: a failure of the source or destination stream is reported as
//! such (with the [`Error`] a remote stream carried, if any), while bytes that do not
//! decompress are an integrity error about the stored file.

use std::io::{self, Read, Write};

use sha1::{Digest as _, Sha1};

use crate::error::{Error, Kind, Result};
use crate::manifest::{BlockHash, BlockIndex, BlockSum};

pub mod block;
mod codec;
mod digest;
mod frames;
#[allow(unsafe_code)]
mod gzip;
pub use codec::{configured as configured_compress, decoder, Compress, CompressType};
use digest::Digester;
pub use gzip::{BLOCK as PARALLEL_BLOCK, PARALLEL_AFTER};

/// Chunk size of the pipeline: large enough to amortize system calls, protocol frames and
/// hand-offs to the hashing thread, small enough to keep memory flat. 512 KiB restored the
/// scale-100 benchmark cluster ~5 % faster than 128 KiB (1.08 s against 1.16 s).
pub const CHUNK: usize = 512 * 1024;

/// Original bytes per block of a stored file's block index (issue 17): where the gzip
/// stream restarts without history, where an LZ4 or zstd frame starts, that restore may
/// inflate on a thread of its own and delta restore may compare on its own. 8 MiB: a 1 GiB
/// segment is 128 blocks, plenty for a few threads, while the 32 KiB of history each restart
/// forgets costs gz about 0.1 % of a block's compressed size.
pub const INDEX_BLOCK: usize = 8 << 20;
/// The most blocks an index lists: a file of more than this many [`INDEX_BLOCK`]s (1 GiB,
/// PostgreSQL's segment size, so never a relation file) is stored without an index and
/// restored as one stream. pgBackRest reads a manifest line by line in a buffer of its
/// `buffer-size`, at least 16 KiB, and fails on a longer line; 128 blocks of 64 hex digits
/// and an offset each are 9.6 KB, which leaves room for the longest path.
pub const INDEX_BLOCKS_MAX: usize = 128;
// Frames and parallel gzip blocks are cut every PARALLEL_BLOCK bytes of input from the file's
// start: every index block must begin on one of those cuts.
const _: () = assert!(INDEX_BLOCK.is_multiple_of(PARALLEL_BLOCK) && CHUNK <= INDEX_BLOCK);

/// What a copy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyResult {
    /// Bytes of original content.
    pub size: u64,
    /// SHA-1 of the original content, lowercase hex.
    pub sha1: String,
    /// Bytes as stored in the repository (compressed size when compressed).
    pub stored_size: u64,
    /// Where the stored file's independently decodable blocks start, with each block's
    /// checksum: from [`store_indexed`], for a file of more than one [`INDEX_BLOCK`] stored as
    /// gz, lz4, zst or none.
    pub block_index: Option<BlockIndex>,
}

/// Labels for messages: what the source and destination are.
pub struct Ends<'a> {
    pub source: &'a str,
    pub dest: &'a str,
}

/// Copies original content from `src` into storage format on `dst`. Past
/// [`PARALLEL_AFTER`] bytes, compression (gz, lz4, zst) may spread over `threads` threads,
/// still writing a stream every decoder of the type reads; 1 keeps it on the calling thread.
pub fn store(
    src: &mut dyn Read,
    dst: &mut dyn Write,
    compress: Compress,
    threads: usize,
    ends: &Ends,
) -> Result<CopyResult> {
    store_with(src, dst, compress, threads, false, ends)
}

/// [`store`], recording the block index of a file of more than one [`INDEX_BLOCK`] (compress
/// types gz, lz4, zst, none; bz2 has none): what a backup stores, for restore to spread one
/// large file over several threads. The stored stream is still one ordinary gzip member (or
/// run of frames) that every decoder reads whole; only gz changes, restarting without
/// history at each block (see pipeline::gzip), for about 0.1 % of its size.
pub fn store_indexed(
    src: &mut dyn Read,
    dst: &mut dyn Write,
    compress: Compress,
    threads: usize,
    ends: &Ends,
) -> Result<CopyResult> {
    store_with(src, dst, compress, threads, true, ends)
}

fn store_with(
    src: &mut dyn Read,
    dst: &mut dyn Write,
    compress: Compress,
    threads: usize,
    index: bool,
    ends: &Ends,
) -> Result<CopyResult> {
    let mut counted = CountingWriter {
        inner: dst,
        count: 0,
    };
    let mut size = 0u64;
    // The block checksums are taken on this thread, the whole file's SHA-1 beside it
    // (digest.rs) once the file is large: the two then run side by side instead of adding up
    // on one thread, and this thread, which only reads and hands chunks on, has the time.
    let mut blocks = (index && compress.kind() != CompressType::Bz2).then(BlockSums::new);
    let (sha1, starts) = std::thread::scope(|scope| -> Result<(String, Option<Vec<u64>>)> {
        let mut sha = Digester::new(scope, CHUNK);
        let mut buf = vec![0u8; CHUNK];
        let mut sink = codec::encoder(&mut counted, compress, threads, blocks.is_some())
            .map_err(|e| io_error("compress for", ends.dest, e))?;
        loop {
            // Per chunk, so a signal stops even the largest file within one chunk.
            crate::signal::check()?;
            let n = read_some(src, &mut buf).map_err(|e| io_error("read", ends.source, e))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            sink.write_all(&buf[..n])
                .map_err(|e| io_error("write", ends.dest, e))?;
            if let Some(blocks) = &mut blocks {
                blocks.update(&buf[..n]);
            }
            buf = sha.update(buf, n)?;
        }
        // The stream's end is written here; dropping the encoder would hide its errors.
        sink.finish().map_err(|e| io_error("write", ends.dest, e))?;
        let starts = sink.block_starts();
        drop(sink);
        Ok((sha.finish()?, starts))
    })?;
    let block_index = match (blocks, starts) {
        (Some(blocks), Some(offsets))
            if size > INDEX_BLOCK as u64 && offsets.len() <= INDEX_BLOCKS_MAX =>
        {
            let index = BlockIndex {
                block_size: INDEX_BLOCK as u64,
                offsets,
                checksums: blocks.finish(),
            };
            // A bug here would send restore to the wrong bytes: refuse to record it.
            index.check(size, counted.count).map_err(|why| {
                Error::internal(format!(
                    "the block index of '{}' does not match what was stored: {why}",
                    ends.dest
                ))
            })?;
            Some(index)
        }
        _ => None,
    };
    Ok(CopyResult {
        size,
        sha1,
        stored_size: counted.count,
        block_index,
    })
}

/// Hashes one block of a [`BlockIndex`] with the index's [`BlockHash`].
pub enum BlockHasher {
    Sha1(Sha1),
    Blake3(Box<blake3::Hasher>),
    Xxh3(Box<twox_hash::XxHash3_128>),
}

impl BlockHasher {
    pub fn new(hash: BlockHash) -> BlockHasher {
        match hash {
            BlockHash::Sha1 => BlockHasher::Sha1(Sha1::new()),
            BlockHash::Blake3 => BlockHasher::Blake3(Box::new(blake3::Hasher::new())),
            BlockHash::Xxh3 => BlockHasher::Xxh3(Box::new(twox_hash::XxHash3_128::new())),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            BlockHasher::Sha1(h) => h.update(data),
            BlockHasher::Blake3(h) => {
                h.update(data);
            }
            BlockHasher::Xxh3(h) => h.write(data),
        }
    }

    /// The checksum of what was hashed; the hasher starts again empty.
    pub fn finalize_reset(&mut self) -> BlockSum {
        match self {
            BlockHasher::Sha1(h) => BlockSum::Sha1(h.finalize_reset().into()),
            BlockHasher::Blake3(h) => {
                let sum = BlockSum::Blake3(*h.finalize().as_bytes());
                h.reset();
                sum
            }
            BlockHasher::Xxh3(h) => {
                let sum = BlockSum::Xxh3(h.finish_128().to_be_bytes());
                **h = twox_hash::XxHash3_128::new();
                sum
            }
        }
    }
}

/// The checksum of each [`INDEX_BLOCK`] of a stream, the last block holding what remains:
/// XXH3-128, what backups record (manifest::BlockHash says why).
pub struct BlockSums {
    current: BlockHasher,
    in_current: usize,
    done: Vec<BlockSum>,
}

impl BlockSums {
    pub fn new() -> BlockSums {
        BlockSums {
            current: BlockHasher::new(BlockHash::Xxh3),
            in_current: 0,
            done: Vec::new(),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (INDEX_BLOCK - self.in_current).min(data.len());
            self.current.update(&data[..take]);
            self.in_current += take;
            data = &data[take..];
            if self.in_current == INDEX_BLOCK {
                self.done.push(self.current.finalize_reset());
                self.in_current = 0;
            }
        }
    }

    /// One checksum per block begun: none for an empty stream.
    pub fn finish(mut self) -> Vec<BlockSum> {
        if self.in_current > 0 {
            self.done.push(self.current.finalize_reset());
        }
        self.done
    }
}

impl Default for BlockSums {
    fn default() -> Self {
        Self::new()
    }
}

/// Copies stored content of type `compress` from `src` back to original content on `dst`,
/// checking that it hashes to `expect_sha1` when given. A mismatch or undecodable data is an
/// integrity error.
pub fn restore(
    src: &mut dyn Read,
    dst: &mut dyn Write,
    compress: CompressType,
    expect_sha1: Option<&str>,
    ends: &Ends,
) -> Result<CopyResult> {
    let mut counted = CountingReader {
        inner: src,
        count: 0,
        failed: None,
    };
    let mut size = 0u64;
    let sha1 = std::thread::scope(|scope| -> Result<String> {
        let mut sha = Digester::new(scope, CHUNK);
        let mut buf = vec![0u8; CHUNK];
        let mut source = match decoder(&mut counted, compress) {
            Ok(source) => source,
            Err(e) => return Err(damaged(ends.source, &e)),
        };
        loop {
            crate::signal::check()?;
            let n = match read_some(&mut source, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    drop(source);
                    return Err(match counted.failed.take() {
                        // The stream itself failed (I/O, remote): report that.
                        Some(inner) => io_error("read", ends.source, inner),
                        // The bytes arrived but do not decode: the stored file is damaged.
                        None => damaged(ends.source, &e),
                    });
                }
            };
            if n == 0 {
                break;
            }
            size += n as u64;
            dst.write_all(&buf[..n])
                .map_err(|e| io_error("write", ends.dest, e))?;
            buf = sha.update(buf, n)?;
        }
        drop(source);
        sha.finish()
    })?;
    if let Some(expected) = expect_sha1 {
        if sha1 != expected {
            return Err(Error::checksum(format!(
                "checksum mismatch for '{}': expected {expected}, got {sha1}",
                ends.source
            ))
            .with_hint("the repository copy is corrupt; do not use it"));
        }
    }
    Ok(CopyResult {
        size,
        sha1,
        stored_size: counted.count,
        block_index: None,
    })
}

/// SHA-1 and size of a stream, without storing it.
pub fn digest(src: &mut dyn Read, source: &str) -> Result<CopyResult> {
    store(
        src,
        &mut io::sink(),
        Compress::None,
        1,
        &Ends {
            source,
            dest: "checksum",
        },
    )
}

fn damaged(source: &str, e: &io::Error) -> Error {
    Error::integrity(format!("stored file '{source}' is damaged: {e}"))
        .with_hint("the repository copy is corrupt; run verify and take a new backup")
}

/// Turns an I/O error from a pipeline end into an [`Error`]. A remote stream smuggles its
/// typed [`Error`] through `io::Error`; that one comes back unchanged.
pub fn io_error(action: &str, what: &str, e: io::Error) -> Error {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
        return inner.clone();
    }
    Error::new(
        Kind::of_io(action, &e),
        format!("unable to {action} '{what}': {e}"),
    )
}

/// Reads until the buffer is full or the stream ends, so chunks are full-sized even when the
/// source delivers small pieces (protocol frames, pipes).
fn read_some(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

struct CountingWriter<'a> {
    inner: &'a mut dyn Write,
    count: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct CountingReader<'a> {
    inner: &'a mut dyn Read,
    count: u64,
    /// The source's own error, kept apart from decoder errors.
    failed: Option<io::Error>,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count += n as u64;
                Ok(n)
            }
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.failed = Some(e);
                Err(copy)
            }
        }
    }
}

/// Data for the compression tests of every codec.
#[cfg(test)]
pub(crate) mod test_data {
    use std::io::Read;

    use super::CompressType;
    use crate::manifest::Block;

    /// One block of a block index decoded alone from its stored bytes, as restore will:
    /// raw inflate from its offset for gz (a fresh inflater, so a reference to anything
    /// before the block fails), the frames in its range for lz4 and zst.
    pub fn decode_block(kind: CompressType, stored: &[u8], block: &Block) -> Vec<u8> {
        let bytes = &stored[block.stored_start as usize..block.stored_end as usize];
        let mut out = Vec::with_capacity(block.len as usize + 1);
        if kind == CompressType::Gz {
            // The whole range with a sync flush: a block before the last ends on one and
            // never says it ended, which a reader would call a truncated stream.
            let mut inflate = flate2::Decompress::new(false);
            loop {
                let before = (inflate.total_in(), inflate.total_out());
                let status = inflate
                    .decompress_vec(
                        &bytes[inflate.total_in() as usize..],
                        &mut out,
                        flate2::FlushDecompress::Sync,
                    )
                    .unwrap_or_else(|e| panic!("gz block {}: {e}", block.number));
                let stalled = (inflate.total_in(), inflate.total_out()) == before;
                if status == flate2::Status::StreamEnd || out.len() == out.capacity() || stalled {
                    return out;
                }
            }
        }
        let mut reader = super::decoder(bytes, kind).unwrap();
        // One byte past the block's length: a block that decodes to more shows.
        (&mut reader)
            .take(block.len + 1)
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("{kind:?} block {}: {e}", block.number));
        out
    }

    /// Page-like data: zeros, counters and noise in runs of `run` bytes, compressible but not
    /// trivially, the same on every call.
    pub fn pages(len: usize, run: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                match (i / run) % 4 {
                    0 => 0,
                    1 => (i % 251) as u8,
                    2 => (x % 16) as u8,
                    _ => (x >> 24) as u8,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDS: Ends = Ends {
        source: "src",
        dest: "dst",
    };

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 7919) % 251) as u8).collect()
    }

    #[test]
    fn store_then_restore_round_trips_with_figures() {
        for compress in [Compress::None, Compress::Gz(6)] {
            let data = sample(3 * CHUNK + 17);
            let mut stored = Vec::new();
            let r = store(&mut &data[..], &mut stored, compress, 1, &ENDS).unwrap();
            assert_eq!(r.size, data.len() as u64);
            assert_eq!(r.stored_size, stored.len() as u64);
            assert_eq!(r.sha1, hex::encode(Sha1::digest(&data)));
            let mut back = Vec::new();
            let kind = compress.kind();
            let r2 = restore(&mut &stored[..], &mut back, kind, Some(&r.sha1), &ENDS).unwrap();
            assert_eq!(back, data);
            assert_eq!(r2.sha1, r.sha1);
        }
    }

    /// Past digest::BESIDE_AFTER the SHA-1 runs on its own thread: the figures must not change,
    /// whether the stream ends on a chunk boundary or not.
    #[test]
    fn large_streams_hashed_beside_the_copy_give_the_same_figures() {
        for len in [
            (digest::BESIDE_AFTER as usize) + 5 * CHUNK + 3,
            (digest::BESIDE_AFTER as usize / CHUNK + 8) * CHUNK,
        ] {
            let data = sample(len);
            let expected = hex::encode(Sha1::digest(&data));
            let mut stored = Vec::new();
            let r = store(&mut &data[..], &mut stored, Compress::Gz(1), 2, &ENDS).unwrap();
            assert_eq!((r.size, r.sha1.as_str()), (len as u64, expected.as_str()));
            let mut back = Vec::new();
            let r2 = restore(
                &mut &stored[..],
                &mut back,
                CompressType::Gz,
                Some(&expected),
                &ENDS,
            )
            .unwrap();
            assert_eq!(r2.sha1, expected);
            assert!(back == data, "restored bytes differ");
            assert_eq!(digest(&mut &data[..], "d").unwrap().sha1, expected);
        }
    }

    /// A file of more than INDEX_BLOCKS_MAX blocks is stored without an index (its manifest
    /// line would outgrow pgBackRest's line buffer), and still stored whole and right.
    #[test]
    fn a_file_past_the_largest_index_is_stored_without_one() {
        let size = (INDEX_BLOCKS_MAX * INDEX_BLOCK + 1) as u64;
        let mut src = io::repeat(7).take(size);
        let r = store_indexed(&mut src, &mut io::sink(), Compress::None, 1, &ENDS).unwrap();
        assert_eq!((r.size, r.stored_size), (size, size));
        assert!(r.block_index.is_none());
    }

    /// Block checksums (XXH3-128) do not depend on how the stream is cut into pieces: one per
    /// INDEX_BLOCK, the last for what remains, none for an empty stream.
    #[test]
    fn block_sums_are_per_index_block_whatever_the_pieces() {
        let data = sample(2 * INDEX_BLOCK + 5);
        let expected: Vec<BlockSum> = data
            .chunks(INDEX_BLOCK)
            .map(|b| BlockSum::Xxh3(twox_hash::XxHash3_128::oneshot(b).to_be_bytes()))
            .collect();
        for piece in [1000, CHUNK, 3 * INDEX_BLOCK] {
            let mut sums = BlockSums::new();
            data.chunks(piece).for_each(|p| sums.update(p));
            assert_eq!(sums.finish(), expected, "pieces of {piece}");
        }
        assert!(BlockSums::new().finish().is_empty());
    }

    #[test]
    fn corrupt_or_truncated_gzip_and_wrong_checksum_are_integrity_errors() {
        let data = sample(200_000);
        let mut stored = Vec::new();
        let r = store(&mut &data[..], &mut stored, Compress::Gz(6), 1, &ENDS).unwrap();
        let truncated = &stored[..stored.len() / 2];
        let e = restore(
            &mut &truncated[..],
            &mut Vec::new(),
            CompressType::Gz,
            Some(&r.sha1),
            &ENDS,
        )
        .unwrap_err();
        assert_eq!(e.kind, Kind::Format, "{e:?}");
        let mut flipped = stored.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        let e = restore(
            &mut &flipped[..],
            &mut Vec::new(),
            CompressType::Gz,
            Some(&r.sha1),
            &ENDS,
        )
        .unwrap_err();
        assert_eq!(e.kind, Kind::Format, "{e:?}");
        let e = restore(
            &mut &stored[..],
            &mut Vec::new(),
            CompressType::Gz,
            Some("00"),
            &ENDS,
        )
        .unwrap_err();
        assert!(e.message.starts_with("checksum mismatch for 'src'"));
        assert_eq!(e.kind, Kind::Checksum);
    }

    #[test]
    fn a_failing_source_keeps_its_own_error() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other(Error::remote("peer went away")))
            }
        }
        let e = restore(&mut Broken, &mut Vec::new(), CompressType::Gz, None, &ENDS).unwrap_err();
        assert_eq!(e.kind, Kind::Protocol);
        let e = store(&mut Broken, &mut Vec::new(), Compress::Gz(1), 2, &ENDS).unwrap_err();
        assert_eq!(e.kind, Kind::Protocol);
    }
}
