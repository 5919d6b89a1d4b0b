//! Restore of one block of a large stored file ([`crate::manifest::BlockIndex`]): its stored
//! bytes decoded on their own, exactly the block's length of original bytes, checked against
//! the block's checksum and written at the block's place in the destination file. Restore
//! runs the blocks of one file on several workers at once (issue 17); this is the only code that
//! trusts an index, so every way an index and the stored file can disagree ends here, as an
//! integrity error naming the stored file and the block, never as a wrong restore:
//!
//! - fewer original bytes than the block holds (a truncated stored file, an offset moved
//!   back), more than it holds (an offset moved on), bytes that do not decode (an offset
//!   that is not a block start, damaged data);
//! - a checksum other than the block's (a stored file swapped for another, a changed one);
//! - for gz, the last block must end the deflate stream and leave exactly the gzip trailer,
//!   whose length field must be the file's size.
//!
//! The stored bytes of a block, by type (docs in the manifest's `BlockIndex`): gz, raw
//! deflate blocks that refer to nothing before the block's start and end byte-aligned
//! (a full flush), the last one closing the stream before the 8-byte gzip trailer; lz4 and
//! zst, whole frames; none, the bytes themselves.
//!
//! Bytes are written as they are decoded, so a block that turns out wrong has been written:
//! callers write into a temp file that goes on error, or (delta) into a file of a data
//! directory that cannot start until the restore ends (pg_control comes last).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use flate2::{Decompress, FlushDecompress, Status};

use super::codec::{decoder, CompressType};
use super::{read_some, BlockHasher, CountingReader, Ends, CHUNK};
use crate::error::{Error, Result};
use crate::manifest::Block;

/// Restores `block` of a file of `size` original bytes: decodes `src` (the block's stored
/// bytes, `block.stored_start..block.stored_end` of the stored file) as `kind`, checks the
/// count and the checksum and writes the bytes at `block.start` in `dst`. Returns the bytes
/// written (the block's length). `ends.source` names the stored file, `ends.dest` the file
/// written.
pub fn restore_block(
    src: &mut dyn Read,
    kind: CompressType,
    block: &Block,
    size: u64,
    dst: &File,
    ends: &Ends,
) -> Result<u64> {
    let mut written = 0u64;
    decode_block(src, kind, block, size, ends, &mut |bytes| {
        dst.write_all_at(bytes, block.start + written)
            .map_err(|e| super::io_error("write", ends.dest, e))?;
        written += bytes.len() as u64;
        Ok(())
    })
}

/// Decodes `block` from its stored bytes `src` (exactly those: callers bound a reader of the
/// stored file to the block's range; every decoder reads it to the end, and bytes after the
/// block's stream do not decode) as [`restore_block`] does, with every check,
/// handing the original bytes in order to `out` (verify hashes them into the whole file's
/// SHA-1). Bytes are handed on before the block's checksum is known: an error afterwards
/// means they were wrong.
pub fn decode_block(
    src: &mut dyn Read,
    kind: CompressType,
    block: &Block,
    size: u64,
    ends: &Ends,
    out: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let last = block.start + block.len == size;
    let damaged = |why: String| block_error(block, ends, &why);
    let mut counted = CountingReader {
        inner: src,
        count: 0,
        failed: None,
    };
    let mut source: Box<dyn Read + '_> = match kind {
        CompressType::Gz => Box::new(BlockInflate::new(&mut counted, last.then_some(size))),
        CompressType::Lz4 | CompressType::Zst | CompressType::None => {
            decoder(&mut counted, kind).map_err(|e| damaged(format!("does not decode: {e}")))?
        }
        CompressType::Bz2 => {
            return Err(damaged(
                "is bz2, whose stream cannot be cut into blocks".into(),
            ))
        }
    };
    let mut sum = BlockHasher::new(block.checksum.hash());
    let mut buf = vec![0u8; CHUNK.min(block.len as usize + 1)];
    let mut done = 0u64;
    loop {
        crate::signal::check()?;
        let n = match read_some(&mut source, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                drop(source);
                return Err(match counted.failed.take() {
                    // The source's own failure (I/O, remote) keeps its error.
                    Some(inner) => super::io_error("read", ends.source, inner),
                    None => damaged(format!("does not decode: {e}")),
                });
            }
        };
        if n == 0 {
            break;
        }
        if done + n as u64 > block.len {
            return Err(damaged(format!(
                "decodes to more than the block's {} bytes",
                block.len
            )));
        }
        out(&buf[..n])?;
        sum.update(&buf[..n]);
        done += n as u64;
    }
    if done < block.len {
        return Err(damaged(format!(
            "decodes to {done} of the block's {} bytes (the stored file is cut short, or \
             the block-index is wrong)",
            block.len
        )));
    }
    let got = sum.finalize_reset();
    if got != block.checksum {
        return Err(damaged(format!(
            "does not match the block's checksum: expected {}, got {got}",
            block.checksum
        )));
    }
    Ok(done)
}

/// The first `n` original bytes of `block` (fewer when the block is shorter), decoded from
/// the start of its stored bytes `src`; `None` when they do not decode. Delta restore
/// compares them with the local file before hashing a block that likely differs whole;
/// nothing is checked here, so a stored block that does not decode only means "restore it",
/// which then reports what is wrong.
pub fn block_prefix(
    src: &mut dyn Read,
    kind: CompressType,
    block: &Block,
    size: u64,
    n: usize,
) -> Option<Vec<u8>> {
    let last = block.start + block.len == size;
    let mut source: Box<dyn Read + '_> = match kind {
        CompressType::Gz => Box::new(BlockInflate::new(src, last.then_some(size))),
        CompressType::Lz4 | CompressType::Zst | CompressType::None => decoder(src, kind).ok()?,
        CompressType::Bz2 => return None,
    };
    let mut out = vec![0u8; n.min(block.len as usize)];
    source.read_exact(&mut out).ok()?;
    Some(out)
}

/// The integrity error of a block: which stored file, which block, what is wrong, and what
/// to do.
pub fn block_error(block: &Block, ends: &Ends, why: &str) -> Error {
    Error::integrity(format!(
        "block {} of stored file '{}' (bytes {}..{} of '{}', stored at {}..{}) {why}",
        block.number,
        ends.source,
        block.start,
        block.start + block.len,
        ends.dest,
        block.stored_start,
        block.stored_end
    ))
    .with_hint(
        "the stored file or the block-index of its manifest entry is damaged or was altered; \
         run verify, and restore from another backup",
    )
}

/// Raw inflate of one gz block. A block before the last ends on a flush without ending the
/// deflate stream; the last one ends it (`last_of` is then the file's size), followed by
/// exactly the 8-byte gzip trailer whose length field is that size modulo 2^32. (Its CRC-32
/// covers the whole file and cannot be checked from one block: the block's checksum is.)
struct BlockInflate<'a> {
    inner: &'a mut dyn Read,
    z: Decompress,
    input: Vec<u8>,
    pos: usize,
    filled: usize,
    input_ended: bool,
    stream_ended: bool,
    last_of: Option<u64>,
    /// The last input bytes read, to see that a block before the last ends on its flush.
    tail: [u8; 4],
}

/// How every full (or sync) flush ends: an empty stored block, whose length and its
/// complement are these bytes.
const FLUSH_MARKER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

impl<'a> BlockInflate<'a> {
    fn new(inner: &'a mut dyn Read, last_of: Option<u64>) -> BlockInflate<'a> {
        BlockInflate {
            inner,
            z: Decompress::new(false),
            input: vec![0u8; 128 * 1024],
            pos: 0,
            filled: 0,
            input_ended: false,
            stream_ended: false,
            last_of,
            tail: [0x01; 4],
        }
    }

    /// After the deflate stream's end: what is left must be the gzip trailer.
    fn check_trailer(&mut self, size: u64) -> io::Result<()> {
        let mut trailer = self.input[self.pos..self.filled].to_vec();
        self.pos = self.filled;
        // One byte more than a trailer, to see whether anything follows it.
        let mut more = [0u8; 9];
        while trailer.len() < 9 {
            let n = self.inner.read(&mut more[..9 - trailer.len()])?;
            if n == 0 {
                break;
            }
            trailer.extend_from_slice(&more[..n]);
        }
        if trailer.len() != 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the deflate stream is followed by {} bytes, not the 8 of the gzip trailer",
                    trailer.len()
                ),
            ));
        }
        let isize = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        if isize != size as u32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the gzip trailer gives a length of {isize}, not {} (the file's size modulo 2^32)",
                    size as u32
                ),
            ));
        }
        Ok(())
    }
}

impl Read for BlockInflate<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.stream_ended {
                return Ok(0);
            }
            if self.pos == self.filled && !self.input_ended {
                self.pos = 0;
                self.filled = match self.inner.read(&mut self.input) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                self.input_ended = self.filled == 0;
                let read = &self.input[..self.filled];
                if read.len() >= 4 {
                    self.tail.copy_from_slice(&read[read.len() - 4..]);
                } else {
                    for &b in read {
                        self.tail = [self.tail[1], self.tail[2], self.tail[3], b];
                    }
                }
            }
            let (before_in, before_out) = (self.z.total_in(), self.z.total_out());
            let status = self
                .z
                .decompress(
                    &self.input[self.pos..self.filled],
                    out,
                    FlushDecompress::None,
                )
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.pos += (self.z.total_in() - before_in) as usize;
            let produced = (self.z.total_out() - before_out) as usize;
            if status == Status::StreamEnd {
                self.stream_ended = true;
                match self.last_of {
                    Some(size) => self.check_trailer(size)?,
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the deflate stream ends inside the file, before its last block",
                        ))
                    }
                }
                return Ok(produced);
            }
            if produced > 0 {
                return Ok(produced);
            }
            if self.input_ended {
                // All input taken and nothing more comes out: a block before the last ends
                // here, on the flush that made it independent of the next; the last one must
                // have ended the stream.
                return match self.last_of {
                    None if self.tail == FLUSH_MARKER => Ok(0),
                    None => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "its stored bytes do not end on a full flush of the deflate stream",
                    )),
                    Some(_) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the stored file ends before its deflate stream does",
                    )),
                };
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::{BlockHash, BlockIndex, BlockSum};
    use crate::pipeline::test_data::pages;
    use flate2::{Compress, Compression, FlushCompress};
    use std::io::Write;

    /// A stored file of `data` as the write side stores a large file with an index, built
    /// here independently of it: gz, a 10-byte header, then raw deflate with a full flush at
    /// each block's start (the last block finishing the stream) and the gzip trailer; lz4,
    /// zst, frames compressed one block (or part of one) at a time and concatenated; none,
    /// the bytes. Returns the stored bytes and the index, whose block checksums are XXH3-128
    /// as a backup records them.
    pub fn stored_with_index(
        data: &[u8],
        kind: CompressType,
        block_size: usize,
    ) -> (Vec<u8>, BlockIndex) {
        stored_with_index_hashed(data, kind, block_size, BlockHash::Xxh3)
    }

    /// [`stored_with_index`] with block checksums of `hash`.
    pub fn stored_with_index_hashed(
        data: &[u8],
        kind: CompressType,
        block_size: usize,
        hash: BlockHash,
    ) -> (Vec<u8>, BlockIndex) {
        let mut stored = Vec::new();
        let mut offsets = Vec::new();
        let mut checksums = Vec::new();
        let blocks: Vec<&[u8]> = data.chunks(block_size).collect();
        let mut z = Compress::new(Compression::new(6), false);
        if kind == CompressType::Gz {
            stored.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
        }
        for (i, block) in blocks.iter().enumerate() {
            offsets.push(stored.len() as u64);
            let mut sum = BlockHasher::new(hash);
            sum.update(block);
            checksums.push(sum.finalize_reset());
            match kind {
                CompressType::Gz => {
                    let flush = if i + 1 == blocks.len() {
                        FlushCompress::Finish
                    } else {
                        FlushCompress::Full
                    };
                    let mut input = *block;
                    let mut out = vec![0u8; 64 * 1024];
                    loop {
                        let before = (z.total_in(), z.total_out());
                        let status = z.compress(input, &mut out, flush).unwrap();
                        input = &input[(z.total_in() - before.0) as usize..];
                        let produced = (z.total_out() - before.1) as usize;
                        stored.extend_from_slice(&out[..produced]);
                        let done = match flush {
                            FlushCompress::Finish => status == flate2::Status::StreamEnd,
                            _ => input.is_empty() && produced < out.len(),
                        };
                        if done {
                            break;
                        }
                    }
                }
                CompressType::Zst => {
                    // Two frames per block, as the write side makes one per MiB.
                    for part in block.chunks(block.len().div_ceil(2).max(1)) {
                        stored.extend(zstd::bulk::compress(part, 3).unwrap());
                    }
                }
                CompressType::Lz4 => {
                    for part in block.chunks(block.len().div_ceil(2).max(1)) {
                        let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
                        e.write_all(part).unwrap();
                        let (frame, r) = e.finish();
                        r.unwrap();
                        stored.extend(frame);
                    }
                }
                CompressType::None => stored.extend_from_slice(block),
                CompressType::Bz2 => unreachable!(),
            }
        }
        if kind == CompressType::Gz {
            let mut crc = flate2::Crc::new();
            crc.update(data);
            stored.extend_from_slice(&crc.sum().to_le_bytes());
            stored.extend_from_slice(&(data.len() as u32).to_le_bytes());
        }
        let index = BlockIndex {
            block_size: block_size as u64,
            offsets,
            checksums,
        };
        index.check(data.len() as u64, stored.len() as u64).unwrap();
        (stored, index)
    }

    const KINDS: [CompressType; 4] = [
        CompressType::Gz,
        CompressType::Zst,
        CompressType::Lz4,
        CompressType::None,
    ];

    const ENDS: Ends = Ends {
        source: "repo/f.gz",
        dest: "pg/f",
    };

    /// Restores every block of `stored` (recorded as `repo_size` bytes) into `dst` in the
    /// order given.
    fn restore_all(
        stored: &[u8],
        repo_size: u64,
        index: &BlockIndex,
        kind: CompressType,
        size: u64,
        order: &[usize],
        dst: &File,
    ) -> Result<()> {
        let blocks: Vec<Block> = index.blocks(size, repo_size).collect();
        for &i in order {
            let b = &blocks[i];
            let end = (b.stored_end as usize).min(stored.len());
            let start = (b.stored_start as usize).min(end);
            let mut range = &stored[start..end];
            restore_block(&mut range, kind, b, size, dst, &ENDS)?;
        }
        Ok(())
    }

    #[test]
    fn every_type_restores_block_by_block_in_any_order_and_whole_stream_readers_agree() {
        let block = 64 * 1024;
        let data = pages(5 * block + 777, 8192);
        for kind in KINDS {
            let (stored, index) = stored_with_index(&data, kind, block);
            // The stored file is still one stream of its type.
            let mut whole = Vec::new();
            decoder(&stored[..], kind)
                .unwrap()
                .read_to_end(&mut whole)
                .unwrap();
            assert!(whole == data, "{kind:?}: whole-stream decode differs");
            let tmp = tempfile::tempfile().unwrap();
            let order = [3, 0, 5, 1, 4, 2];
            let repo_size = stored.len() as u64;
            restore_all(
                &stored,
                repo_size,
                &index,
                kind,
                data.len() as u64,
                &order,
                &tmp,
            )
            .unwrap();
            let mut back = Vec::new();
            (&tmp).read_to_end(&mut back).unwrap();
            assert!(
                back == data,
                "{kind:?}: blocks restored out of order differ"
            );
        }
    }

    /// Indexes with SHA-1 or BLAKE3 block checksums (what backups recorded before XXH3-128)
    /// restore block by block as before, and a changed checksum is still caught.
    #[test]
    fn indexes_with_earlier_block_checksums_still_restore_and_are_still_checked() {
        let block = 64 * 1024;
        let data = pages(3 * block + 5, 8192);
        let size = data.len() as u64;
        for (kind, hash) in KINDS
            .into_iter()
            .flat_map(|k| [(k, BlockHash::Sha1), (k, BlockHash::Blake3)])
        {
            let (stored, index) = stored_with_index_hashed(&data, kind, block, hash);
            assert!(index.checksums.iter().all(|c| c.hash() == hash));
            let repo_size = stored.len() as u64;
            let tmp = tempfile::tempfile().unwrap();
            restore_all(&stored, repo_size, &index, kind, size, &[2, 0, 3, 1], &tmp).unwrap();
            let mut back = Vec::new();
            (&tmp).read_to_end(&mut back).unwrap();
            assert!(
                back == data,
                "{kind:?} {hash:?}: indexed blocks restored wrong"
            );
            let mut wrong = index.clone();
            wrong.checksums[1] = wrong.checksums[1].flipped();
            let e = restore_all(&stored, repo_size, &wrong, kind, size, &[0, 1], &tmp)
                .expect_err("a changed checksum restored");
            assert!(
                e.message.contains("block 1 of") && e.message.contains("checksum"),
                "{kind:?} {hash:?}: {}",
                e.message
            );
        }
    }

    /// Every way an index and a stored file can disagree is an integrity error naming the
    /// stored file and the block; none restores wrong bytes silently.
    #[test]
    fn tampered_offsets_checksums_truncated_or_swapped_stored_files_are_integrity_errors() {
        let block = 64 * 1024;
        let data = pages(4 * block + 100, 8192);
        let other = pages(4 * block + 100, 4096);
        let size = data.len() as u64;
        for kind in KINDS {
            let (stored, index) = stored_with_index(&data, kind, block);
            let (swapped, _) = stored_with_index(&other, kind, block);
            let repo_size = stored.len() as u64;
            let fails = |stored: &[u8], index: &BlockIndex, what: &str, block_no: usize| {
                let tmp = tempfile::tempfile().unwrap();
                let order = [0, 1, 2, 3, 4];
                let e = restore_all(stored, repo_size, index, kind, size, &order, &tmp)
                    .expect_err(&format!("{kind:?} {what}: restored"));
                assert_eq!(e.kind, crate::error::Kind::Format, "{kind:?} {what}: {e:?}");
                let named = format!("block {block_no} of stored file 'repo/f.gz'");
                assert!(e.message.contains(&named), "{kind:?} {what}: {}", e.message);
                assert!(
                    e.hint.as_deref().unwrap_or("").contains("run verify"),
                    "{e:?}"
                );
            };
            // An offset moved on by one byte: block 1 ends early, block 2 starts inside.
            let mut moved = index.clone();
            moved.offsets[2] += 1;
            fails(&stored, &moved, "offset moved on", 1);
            // An offset moved back: block 1 is cut short.
            let mut moved = index.clone();
            moved.offsets[2] -= 1;
            fails(&stored, &moved, "offset moved back", 1);
            // Two offsets swapped in meaning: block 2 given block 3's start.
            let mut shifted = index.clone();
            shifted.offsets[2] = index.offsets[3];
            shifted.offsets[3] = index.offsets[4];
            shifted.offsets[4] = index.offsets[4] + (stored.len() as u64 - index.offsets[4]) / 2;
            fails(&stored, &shifted, "offsets shifted", 1);
            let mut wrong = index.clone();
            wrong.checksums[3] = wrong.checksums[3].flipped();
            fails(&stored, &wrong, "checksum changed", 3);
            let cut = &stored[..(index.offsets[4] as usize + stored.len()) / 2];
            fails(cut, &index, "stored file truncated", 4);
            let cut = &stored[..index.offsets[3] as usize + 10];
            fails(cut, &index, "stored file truncated in the middle", 3);
            fails(&swapped, &index, "stored file swapped", 0);
        }
    }

    /// A block's stored range that runs into the next block (its end offset wrong) is an
    /// integrity error naming the block, whatever the type: no decoder stops at the end of
    /// its stream and leaves the rest unread, so callers need no check of their own.
    #[test]
    fn bytes_after_a_blocks_stream_are_an_integrity_error_in_every_type() {
        let data = pages(3 * 65536 + 5, 700);
        for kind in [
            CompressType::Gz,
            CompressType::Lz4,
            CompressType::Zst,
            CompressType::None,
        ] {
            let (stored, index) = stored_with_index(&data, kind, 65536);
            let b = index
                .blocks(data.len() as u64, stored.len() as u64)
                .next()
                .unwrap();
            let tmp = tempfile::tempfile().unwrap();
            let mut range = &stored[b.stored_start as usize..b.stored_end as usize + 1];
            let e = restore_block(&mut range, kind, &b, data.len() as u64, &tmp, &ENDS)
                .expect_err(&format!("{kind:?}: one byte of the next block accepted"));
            assert_eq!(e.kind, crate::error::Kind::Format, "{kind:?}: {e:?}");
            assert!(
                e.message.starts_with("block 0 of stored file"),
                "{kind:?}: {e:?}"
            );
        }
    }

    #[test]
    fn gz_trailer_must_end_the_last_block_with_the_files_length() {
        let block = 64 * 1024;
        let data = pages(2 * block + 5, 8192);
        let (stored, index) = stored_with_index(&data, CompressType::Gz, block);
        let blocks: Vec<Block> = index
            .blocks(data.len() as u64, stored.len() as u64)
            .collect();
        let tmp = tempfile::tempfile().unwrap();
        let last = &blocks[2];
        let run = |bytes: &[u8], size: u64| {
            let mut r = bytes;
            restore_block(&mut r, CompressType::Gz, last, size, &tmp, &ENDS)
        };
        let range = &stored[last.stored_start as usize..];
        run(range, data.len() as u64).unwrap();
        let mut longer = range.to_vec();
        longer.push(0);
        assert!(run(&longer, data.len() as u64)
            .unwrap_err()
            .message
            .contains("followed by 9 bytes"));
        let mut lying = range.to_vec();
        let n = lying.len();
        lying[n - 4] ^= 1;
        assert!(run(&lying, data.len() as u64)
            .unwrap_err()
            .message
            .contains("gzip trailer gives a length"));
        // The stream ending in a block before the last: a block of a shorter file.
        let first = &blocks[0];
        let (short, short_index) = stored_with_index(&data[..block], CompressType::Gz, block);
        let b = short_index
            .blocks(block as u64, short.len() as u64)
            .next()
            .unwrap();
        let mut r = &short[b.stored_start as usize..];
        let e = restore_block(
            &mut r,
            CompressType::Gz,
            first,
            data.len() as u64,
            &tmp,
            &ENDS,
        )
        .unwrap_err();
        assert!(e.message.contains("ends inside the file"), "{e:?}");
    }

    #[test]
    fn a_failing_source_keeps_its_own_error() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other(Error::remote("peer went away")))
            }
        }
        let block = Block {
            number: 0,
            start: 0,
            len: 10,
            stored_start: 0,
            stored_end: 10,
            checksum: BlockSum::Xxh3([0; 16]),
        };
        let tmp = tempfile::tempfile().unwrap();
        for kind in KINDS {
            let e = restore_block(&mut Broken, kind, &block, 20, &tmp, &ENDS).unwrap_err();
            assert_eq!(e.kind, crate::error::Kind::Protocol, "{kind:?}: {e:?}");
        }
    }
}

/// What the write side stores ([`super::store_indexed`]) restores block by block here, for
/// every type, with one compression thread and with several (gz cuts its blocks differently).
#[cfg(test)]
mod with_the_write_side {
    use super::*;
    use crate::pipeline::test_data::pages;
    use crate::pipeline::{store_indexed, Compress, INDEX_BLOCK};

    #[test]
    fn every_type_stored_with_an_index_restores_block_by_block() {
        let data = pages(2 * INDEX_BLOCK + 123_457, 8192);
        let ends = Ends {
            source: "s",
            dest: "d",
        };
        for compress in [
            Compress::Gz(6),
            Compress::Zst(3),
            Compress::Lz4(1),
            Compress::None,
        ] {
            for threads in [1, 2] {
                let mut stored = Vec::new();
                let r =
                    store_indexed(&mut &data[..], &mut stored, compress, threads, &ends).unwrap();
                let index = r.block_index.expect("an index");
                let tmp = tempfile::tempfile().unwrap();
                let blocks: Vec<Block> = index
                    .blocks(data.len() as u64, stored.len() as u64)
                    .collect();
                assert_eq!(blocks.len(), 3);
                for b in blocks.iter().rev() {
                    let mut range = &stored[b.stored_start as usize..b.stored_end as usize];
                    restore_block(
                        &mut range,
                        compress.kind(),
                        b,
                        data.len() as u64,
                        &tmp,
                        &ends,
                    )
                    .unwrap_or_else(|e| panic!("{compress:?} {threads}: {e:?}"));
                    let mut range = &stored[b.stored_start as usize..b.stored_end as usize];
                    let prefix =
                        block_prefix(&mut range, compress.kind(), b, data.len() as u64, 1000)
                            .unwrap();
                    assert!(prefix[..] == data[b.start as usize..b.start as usize + 1000]);
                }
                let mut back = Vec::new();
                (&tmp).read_to_end(&mut back).unwrap();
                assert!(back == data, "{compress:?} {threads}");
            }
        }
    }
}
