//! The compression types of stored files, as pgBackRest names, stores and levels them
//! (`compress-type` none, gz, bz2, lz4, zst; extensions .gz .bz2 .lz4 .zst; each type's
//! default level and range from pgBackRest's compress/*/compress.h), and their encoders and
//! decoders. The stored bytes are each format's standard stream, so either tool, and the
//! format's own command-line tool, reads what the other wrote:
//!
//! - gz: one gzip member (pipeline::gzip, parallel for large files);
//! - bz2: one bzip2 stream, as pgBackRest's decoder stops at the end of the first one;
//! - lz4: LZ4 frames (liblz4, the library pgBackRest uses, so a level means the same), one
//!   per MiB of input, compressed side by side for large files (pipeline::frames);
//! - zst: zstd frames (libzstd), one per MiB of input, compressed side by side for large
//!   files (pipeline::frames), as lz4.
//!
//! Crates: zstd and lz4 bind the reference C libraries pgBackRest links (same levels, same
//! output); lz4_flex decodes LZ4 because it reads concatenated frames, which the lz4 crate's
//! reader stops after the first of; bzip2 runs on libbz2-rs-sys, a Rust port of libbzip2 by
//! the makers of zlib-rs, which the gzip side already uses.

use std::io::{self, Read, Write};

use super::frames::{FrameFn, FrameWriter};
use super::gzip::GzipWriter;
use crate::error::{Error, Kind, Result};

/// A compression type, without its level: what a stored file's extension tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressType {
    None,
    Gz,
    Bz2,
    Lz4,
    Zst,
}

/// Every type, in the order pgBackRest lists them.
pub const TYPES: [CompressType; 5] = [
    CompressType::None,
    CompressType::Bz2,
    CompressType::Gz,
    CompressType::Lz4,
    CompressType::Zst,
];

impl CompressType {
    /// The `compress-type` value.
    pub fn name(self) -> &'static str {
        match self {
            CompressType::None => "none",
            CompressType::Gz => "gz",
            CompressType::Bz2 => "bz2",
            CompressType::Lz4 => "lz4",
            CompressType::Zst => "zst",
        }
    }

    pub fn parse(name: &str) -> Option<CompressType> {
        TYPES.into_iter().find(|t| t.name() == name)
    }

    /// File-name extension of stored files: `.` and the type's name, none for `none`.
    pub fn extension(self) -> &'static str {
        match self {
            CompressType::None => "",
            CompressType::Gz => ".gz",
            CompressType::Bz2 => ".bz2",
            CompressType::Lz4 => ".lz4",
            CompressType::Zst => ".zst",
        }
    }

    /// The type a stored file's extension (`""`, `".zst"`) names; `None` for one no type
    /// has (pgBackRest's `.xz`, anything else): such a file cannot be read.
    pub fn from_extension(extension: &str) -> Option<CompressType> {
        TYPES.into_iter().find(|t| t.extension() == extension)
    }

    /// pgBackRest's default `compress-level` for the type.
    pub fn default_level(self) -> i32 {
        match self {
            CompressType::None => 0,
            CompressType::Gz => 6,
            CompressType::Bz2 => 9,
            CompressType::Lz4 => 1,
            CompressType::Zst => 3,
        }
    }

    /// The levels pgBackRest accepts for the type (gz's -1 is zlib's default, 6).
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            CompressType::None => 0..=0,
            CompressType::Gz => -1..=9,
            CompressType::Bz2 => 1..=9,
            CompressType::Lz4 => -5..=12,
            CompressType::Zst => -7..=22,
        }
    }

    /// The type at `level` (the default level when `None`), checked against the type's
    /// range as pgBackRest checks it; `none` ignores the level.
    pub fn with_level(self, level: Option<i64>) -> Result<Compress> {
        let level = match level {
            None => self.default_level(),
            Some(_) if self == CompressType::None => 0,
            Some(n) => match i32::try_from(n).ok().filter(|n| self.levels().contains(n)) {
                Some(n) => n,
                None => {
                    return Err(Error::new(
                        Kind::OptionInvalidValue,
                        format!(
                            "'{n}' is out of range for 'compress-level' option when 'compress-type' option = '{}'",
                            self.name()
                        ),
                    )
                    .with_hint(format!(
                        "set compress-level between {} and {} for {}, or leave it out for the default {}",
                        self.levels().start(),
                        self.levels().end(),
                        self.name(),
                        self.default_level()
                    )))
                }
            },
        };
        Ok(match self {
            CompressType::None => Compress::None,
            CompressType::Gz => Compress::Gz(if level < 0 { 6 } else { level as u32 }),
            CompressType::Bz2 => Compress::Bz2(level as u32),
            CompressType::Lz4 => Compress::Lz4(level),
            CompressType::Zst => Compress::Zst(level),
        })
    }
}

/// What `compress-type` and `compress-level` ask for (`gz` when the type is not set, the
/// type's default level when the level is not), the level checked against the type's range.
pub fn configured(type_name: Option<&str>, level: Option<i64>) -> Result<Compress> {
    let name = type_name.unwrap_or("gz");
    let kind = CompressType::parse(name).ok_or_else(|| {
        Error::config(format!("invalid value '{name}' for option 'compress-type'"))
            .with_hint("use one of: none, bz2, gz, lz4, zst")
    })?;
    kind.with_level(level)
}

/// A compression type with its level: how files are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    None,
    Gz(u32),
    Bz2(u32),
    Lz4(i32),
    Zst(i32),
}

impl Compress {
    pub fn kind(self) -> CompressType {
        match self {
            Compress::None => CompressType::None,
            Compress::Gz(_) => CompressType::Gz,
            Compress::Bz2(_) => CompressType::Bz2,
            Compress::Lz4(_) => CompressType::Lz4,
            Compress::Zst(_) => CompressType::Zst,
        }
    }

    pub fn level(self) -> i32 {
        match self {
            Compress::None => 0,
            Compress::Gz(n) | Compress::Bz2(n) => n as i32,
            Compress::Lz4(n) | Compress::Zst(n) => n,
        }
    }

    /// File-name extension of stored files.
    pub fn extension(self) -> &'static str {
        self.kind().extension()
    }

    /// How the protocol carries it to a remote worker: `none` or `<type>:<level>`.
    pub fn to_wire(self) -> String {
        match self {
            Compress::None => "none".into(),
            c => format!("{}:{}", c.kind().name(), c.level()),
        }
    }

    pub fn from_wire(s: &str) -> Option<Compress> {
        let (name, level) = match s.split_once(':') {
            Some((name, level)) => (name, Some(level.parse().ok()?)),
            None => (s, None),
        };
        CompressType::parse(name)?.with_level(level).ok()
    }
}

/// An encoder of the pipeline: bytes in, the stored stream out to the inner writer.
pub trait Encoder: Write {
    /// Writes what is still held back and the stream's end; dropping an encoder instead
    /// would hide the errors of that last write.
    fn finish(&mut self) -> io::Result<()>;

    /// After [`Encoder::finish`]: where each [`super::INDEX_BLOCK`] of input begun starts in
    /// the stored stream, a block decoding alone from there; `None` for a type that has no
    /// such places (bz2) or an encoder not asked to make them (gz without an index).
    fn block_starts(&self) -> Option<Vec<u64>> {
        None
    }
}

impl<W: Write> Encoder for GzipWriter<W> {
    fn finish(&mut self) -> io::Result<()> {
        GzipWriter::finish(self)
    }

    fn block_starts(&self) -> Option<Vec<u64>> {
        GzipWriter::block_starts(self).map(<[u64]>::to_vec)
    }
}

impl<W: Write> Encoder for bzip2::write::BzEncoder<W> {
    fn finish(&mut self) -> io::Result<()> {
        self.try_finish()
    }
}

impl<W: Write> Encoder for FrameWriter<W> {
    fn finish(&mut self) -> io::Result<()> {
        FrameWriter::finish(self)
    }

    fn block_starts(&self) -> Option<Vec<u64>> {
        Some(FrameWriter::block_starts(self).to_vec())
    }
}

/// Stores as is.
struct Plain<W> {
    inner: W,
    size: u64,
}

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Encoder for Plain<W> {
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn block_starts(&self) -> Option<Vec<u64>> {
        let block = super::INDEX_BLOCK as u64;
        Some((0..self.size.div_ceil(block)).map(|i| i * block).collect())
    }
}

/// The encoder for `compress` writing into `inner`, with up to `threads` threads for a large
/// file (gz, lz4, zst). With `index`, gz restarts without history at each
/// [`super::INDEX_BLOCK`] of input, so that [`Encoder::block_starts`] has places to give.
pub fn encoder<'a, W: Write + 'a>(
    inner: W,
    compress: Compress,
    threads: usize,
    index: bool,
) -> io::Result<Box<dyn Encoder + 'a>> {
    Ok(match compress {
        Compress::None => Box::new(Plain { inner, size: 0 }),
        Compress::Gz(level) => Box::new(GzipWriter::new(inner, level, threads, index)?),
        Compress::Bz2(level) => Box::new(bzip2::write::BzEncoder::new(
            inner,
            bzip2::Compression::new(level.clamp(1, 9)),
        )),
        Compress::Lz4(level) => Box::new(FrameWriter::new(
            inner,
            lz4_frame as FrameFn,
            level,
            threads,
        )),
        Compress::Zst(level) => Box::new(FrameWriter::new(
            inner,
            zst_frame as FrameFn,
            level,
            threads,
        )),
    })
}

/// A reader giving back the original content of a stored stream of type `kind`.
pub fn decoder<'a, R: Read + 'a>(inner: R, kind: CompressType) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match kind {
        CompressType::None => Box::new(inner),
        CompressType::Gz => Box::new(flate2::read::GzDecoder::new(inner)),
        // One stream, as written by both tools; Multi so that a concatenation (bzip2 -c a b)
        // is read whole rather than cut short without a word.
        CompressType::Bz2 => Box::new(bzip2::read::MultiBzDecoder::new(inner)),
        CompressType::Lz4 => Box::new(Lz4Frames(lz4_flex::frame::FrameDecoder::new(Watched {
            inner,
            ended: false,
        }))),
        CompressType::Zst => Box::new(zstd::stream::read::Decoder::new(inner)?),
    })
}

/// Reads LZ4 frames one after the other until the input ends. lz4_flex's decoder returns 0
/// at the end of each frame and only starts the next when called again, so a reader that
/// took that 0 for the end (read_to_end, the pipeline) would stop after the first MiB.
struct Lz4Frames<R: Read>(lz4_flex::frame::FrameDecoder<Watched<R>>);

impl<R: Read> Read for Lz4Frames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.0.read(buf)?;
            if n > 0 || buf.is_empty() || self.0.get_ref().ended {
                return Ok(n);
            }
        }
    }
}

/// A reader that remembers whether its input has ended.
struct Watched<R> {
    inner: R,
    ended: bool,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.ended = true;
        }
        Ok(n)
    }
}

/// One LZ4 frame holding `input`, with the preferences pgBackRest uses (only the level set:
/// 64 KiB linked blocks, no checksums, since the SHA-1 of the content is checked anyway).
fn lz4_frame(input: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut encoder = lz4::EncoderBuilder::new()
        // The crate takes the level unsigned but hands it to liblz4 as the int it is, where
        // a negative level means "faster" (acceleration), as in pgBackRest.
        .level(level as u32)
        .checksum(lz4::ContentChecksum::NoChecksum)
        .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
        .build(Vec::with_capacity(input.len() / 2 + 64))?;
    encoder.write_all(input)?;
    let (frame, result) = encoder.finish();
    result.map(|()| frame)
}

/// One zstd frame holding `input`, at `level`, with libzstd's defaults otherwise (as
/// pgBackRest: no checksum, the content size in the header). A large file becomes a run of
/// such frames, each of [`super::PARALLEL_BLOCK`] bytes, compressed side by side like lz4's
/// (pipeline::frames). On the 1 GiB segment of a scale-100 cluster, 1 MiB frames came out 8 %
/// smaller than one stream (27.0 MB against 29.5 MB at level 3: each frame's parameters fit
/// its size), and unlike libzstd's own workers, which buffer whole jobs (106 MiB peak RSS of a
/// backup), memory stays at a few frames per file.
fn zst_frame(input: &[u8], level: i32) -> io::Result<Vec<u8>> {
    thread_local! {
        // A compression context per thread and level: making one per frame would allocate
        // and clear its tables a thousand times per GiB.
        static CONTEXT: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
            const { std::cell::RefCell::new(None) };
    }
    CONTEXT.with(|context| {
        let mut context = context.borrow_mut();
        if context.as_ref().is_none_or(|(l, _)| *l != level) {
            *context = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        let (_, compressor) = context.as_mut().expect("set above");
        compressor.compress(input)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{restore, store, Ends, CHUNK};
    use std::process::{Command, Stdio};

    const ENDS: Ends = Ends {
        source: "src",
        dest: "dst",
    };

    fn sample(len: usize) -> Vec<u8> {
        crate::pipeline::test_data::pages(len, 8192)
    }

    fn stored(data: &[u8], compress: Compress, threads: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let r = store(&mut &data[..], &mut out, compress, threads, &ENDS).unwrap();
        assert_eq!(r.stored_size, out.len() as u64);
        out
    }

    /// The format's own command-line tool (Debian's zstd, lz4, bzip2, gzip packages)
    /// decoding `bytes`: what it reads, pgBackRest's decoder (the same libraries) reads.
    fn cli_decode(kind: CompressType, bytes: &[u8]) -> Vec<u8> {
        let tool = match kind {
            CompressType::Gz => "gzip",
            CompressType::Bz2 => "bzip2",
            CompressType::Lz4 => "lz4",
            CompressType::Zst => "zstd",
            CompressType::None => return bytes.to_vec(),
        };
        let mut child = Command::new(tool)
            .args(["-d", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool} is installed (test/setup.sh): {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let input = bytes.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success(), "{tool} -d: {out:?}");
        out.stdout
    }

    const ALL: [Compress; 5] = [
        Compress::None,
        Compress::Gz(6),
        Compress::Bz2(9),
        Compress::Lz4(1),
        Compress::Zst(3),
    ];

    /// Every type, small and empty files included, round-trips through the pipeline and is
    /// read by the format's reference tool.
    #[test]
    fn every_type_round_trips_and_its_reference_tool_reads_it() {
        for compress in ALL {
            for len in [0, 1, 8192, 3 * CHUNK + 17] {
                let data = sample(len);
                let bytes = stored(&data, compress, 1);
                let mut back = Vec::new();
                let r = restore(&mut &bytes[..], &mut back, compress.kind(), None, &ENDS).unwrap();
                assert!(back == data, "{compress:?}, {len} bytes");
                assert_eq!(r.size, len as u64);
                assert!(
                    cli_decode(compress.kind(), &bytes) == data,
                    "{compress:?}, {len} bytes, reference tool"
                );
                if len > 8192 && compress != Compress::None {
                    assert!(bytes.len() < data.len() * 3 / 4, "{compress:?} compressed");
                }
            }
        }
    }

    /// lz4 and zst store a file as frames of one block each, past PARALLEL_AFTER compressed
    /// on several threads: the plain single-stream decoders (ours and the reference tools)
    /// read them as one stream, whether the input ends on a block boundary or not, and the
    /// bytes are the same whichever threads compressed them.
    #[test]
    fn parallel_lz4_and_zst_are_several_frames_read_as_one_stream() {
        use super::super::gzip::PARALLEL_AFTER;
        let block = super::super::gzip::BLOCK;
        for compress in [
            Compress::Lz4(1),
            Compress::Zst(3),
            Compress::Lz4(9),
            Compress::Zst(-3),
        ] {
            for len in [
                PARALLEL_AFTER as usize + 4 * block,
                PARALLEL_AFTER as usize + 5 * block + 12_345,
            ] {
                let data = sample(len);
                let one = stored(&data, compress, 1);
                let par = stored(&data, compress, 3);
                // The same frames whichever thread compressed them.
                assert!(par == one, "{compress:?}: output depends on the threads");
                for bytes in [&one, &par] {
                    let mut back = Vec::new();
                    restore(&mut &bytes[..], &mut back, compress.kind(), None, &ENDS).unwrap();
                    assert!(back == data, "{compress:?}, {len} bytes");
                    assert!(
                        cli_decode(compress.kind(), bytes) == data,
                        "{compress:?} CLI"
                    );
                }
            }
        }
        // One frame per block; each format's frame magic number starts each.
        let data = sample(PARALLEL_AFTER as usize + 3 * block);
        for (compress, magic) in [
            (Compress::Lz4(1), [0x04, 0x22, 0x4d, 0x18]),
            (Compress::Zst(3), [0x28, 0xb5, 0x2f, 0xfd]),
        ] {
            let par = stored(&data, compress, 2);
            let frames = par.windows(4).filter(|w| *w == magic).count();
            assert!(
                frames >= PARALLEL_AFTER as usize / block + 3,
                "{compress:?}: {frames} frames"
            );
        }
    }

    /// A backup's copy of a large file (store_indexed) records one block per INDEX_BLOCK,
    /// for gz, lz4, zst and none, with one thread or several: each block decodes alone from
    /// its offset to exactly its bytes, which hash to its SHA-1, while the whole file is
    /// still one stream that our restore and the format's own tool read. Files of one
    /// block or less, bz2 files and plain `store` get none.
    #[test]
    fn indexed_files_have_blocks_that_decode_alone_and_a_whole_that_decodes_as_before() {
        use crate::pipeline::test_data::decode_block;
        use crate::pipeline::{store_indexed, INDEX_BLOCK};
        let data = sample(3 * INDEX_BLOCK + 12_345);
        for compress in [
            Compress::Gz(6),
            Compress::Lz4(1),
            Compress::Zst(3),
            Compress::None,
        ] {
            for threads in [1, 3] {
                let what = format!("{compress:?}, {threads} threads");
                let mut bytes = Vec::new();
                let r =
                    store_indexed(&mut &data[..], &mut bytes, compress, threads, &ENDS).unwrap();
                assert_eq!(r.stored_size, bytes.len() as u64, "{what}");
                let index = r.block_index.as_ref().expect(&what);
                assert_eq!(index.block_size, INDEX_BLOCK as u64);
                index.check(r.size, r.stored_size).expect(&what);
                let first = match compress {
                    Compress::Gz(_) => 10,
                    _ => 0,
                };
                assert_eq!(index.offsets[0], first, "{what}");
                if compress == Compress::None {
                    assert_eq!(index.offsets, [0, 1, 2, 3].map(|i| i * INDEX_BLOCK as u64));
                }
                let blocks: Vec<_> = index.blocks(r.size, r.stored_size).collect();
                assert_eq!(blocks.len(), 4, "{what}");
                for block in &blocks {
                    let range = block.start as usize..(block.start + block.len) as usize;
                    let alone = decode_block(compress.kind(), &bytes, block);
                    assert!(
                        alone == data[range.clone()],
                        "{what}: block {}",
                        block.number
                    );
                    let sum = crate::manifest::BlockSum::Xxh3(
                        twox_hash::XxHash3_128::oneshot(&alone).to_be_bytes(),
                    );
                    assert_eq!(sum, block.checksum, "{what}: block {}", block.number);
                }
                let mut back = Vec::new();
                let kind = compress.kind();
                restore(&mut &bytes[..], &mut back, kind, Some(&r.sha1), &ENDS).unwrap();
                assert!(back == data, "{what}: whole");
                assert!(cli_decode(kind, &bytes) == data, "{what}: reference tool");
            }
        }
        for (len, compress) in [
            (INDEX_BLOCK, Compress::Gz(6)),
            (INDEX_BLOCK, Compress::None),
            (2 * INDEX_BLOCK, Compress::Bz2(1)),
        ] {
            let mut bytes = Vec::new();
            let r = store_indexed(&mut &sample(len)[..], &mut bytes, compress, 2, &ENDS).unwrap();
            assert_eq!(r.block_index, None, "{len} bytes of {compress:?}");
        }
        let mut bytes = Vec::new();
        let r = store(&mut &data[..], &mut bytes, Compress::Gz(6), 1, &ENDS).unwrap();
        assert_eq!(r.block_index, None, "store records no index");
    }

    /// Measurement, not a test (ignored): what the block index costs on a real file, e.g. the
    /// first segment of a pgbench scale-20+ pgbench_accounts. Prints, per type and threads,
    /// the stored size and time without and with the index, and the SHA-1 throughput that
    /// the block checksums cost. Run with
    /// `PGBR_MEASURE_FILE=<file> cargo test --release --lib measure_block_index -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_block_index_cost_on_a_real_file() {
        use crate::pipeline::{store_indexed, BlockSums};
        use std::time::Instant;
        let path = std::env::var("PGBR_MEASURE_FILE").expect("PGBR_MEASURE_FILE");
        let data = std::fs::read(&path).unwrap();
        println!("{path}: {} bytes", data.len());
        for (compress, threads) in [
            (Compress::Gz(6), 1),
            (Compress::Gz(6), 2),
            (Compress::Lz4(1), 2),
            (Compress::Zst(3), 2),
        ] {
            let mut sizes = [0u64; 2];
            let mut times = [f64::MAX; 2];
            // Interleaved, best of three: the machine is shared.
            for round in 0..3 {
                let order = if round % 2 == 0 {
                    [false, true]
                } else {
                    [true, false]
                };
                for indexed in order {
                    let mut out = std::io::sink();
                    let t = Instant::now();
                    let r = match indexed {
                        true => store_indexed(&mut &data[..], &mut out, compress, threads, &ENDS),
                        false => store(&mut &data[..], &mut out, compress, threads, &ENDS),
                    }
                    .unwrap();
                    let i = usize::from(indexed);
                    times[i] = times[i].min(t.elapsed().as_secs_f64());
                    sizes[i] = r.stored_size;
                    assert_eq!(r.block_index.is_some(), indexed);
                }
            }
            println!(
                "{compress:?}, {threads} threads: {} -> {} bytes with the index ({:.5}x), {:.3} -> {:.3} s",
                sizes[0],
                sizes[1],
                sizes[1] as f64 / sizes[0] as f64,
                times[0],
                times[1]
            );
        }
        let t = Instant::now();
        let mut sums = BlockSums::new();
        for chunk in data.chunks(crate::pipeline::CHUNK) {
            sums.update(chunk);
        }
        let blocks = sums.finish().len();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "block checksums: {blocks} blocks in {secs:.3} s ({:.0} MB/s)",
            data.len() as f64 / secs / 1e6
        );
    }

    /// Cutting a file into independent zst frames costs little in size: 2.4 % on this
    /// synthetic data, where real relation data came out smaller than in one stream (see
    /// zst_frame).
    #[test]
    fn zst_frames_cost_little_in_size() {
        use super::super::gzip::BLOCK;
        let data = sample(16 * BLOCK);
        let framed = stored(&data, Compress::Zst(3), 2);
        let whole = zstd::bulk::compress(&data, 3).unwrap();
        assert!(
            framed.len() as f64 <= whole.len() as f64 * 1.04,
            "{} framed against {} whole",
            framed.len(),
            whole.len()
        );
    }

    /// Damaged or cut-short stored files of each type are integrity errors, never a short
    /// file restored without a word.
    #[test]
    fn truncated_or_corrupt_streams_of_each_type_are_integrity_errors() {
        let data = sample(300_000);
        for compress in &ALL[1..] {
            let bytes = stored(&data, *compress, 1);
            let kind = compress.kind();
            // Cut inside the data: lz4_flex, unlike liblz4, takes a frame whose 4-byte end
            // mark is cut short as complete; no content is lost then, and the SHA-1 of every
            // stored file with content is checked anyway.
            for cut in [bytes.len() / 2, bytes.len() - 6] {
                let e = restore(&mut &bytes[..cut], &mut Vec::new(), kind, None, &ENDS)
                    .expect_err(&format!("{compress:?} cut at {cut}"));
                assert_eq!(e.kind, Kind::Format, "{compress:?}: {e:?}");
            }
            let mut flipped = bytes.clone();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 0x5a;
            let sha1 = crate::pipeline::digest(&mut &data[..], "d").unwrap().sha1;
            let e = restore(&mut &flipped[..], &mut Vec::new(), kind, Some(&sha1), &ENDS)
                .expect_err(&format!("{compress:?} flipped"));
            // A damaged stream (format) or, where the format has no checksum of its own
            // (lz4 as pgBackRest writes it), a content that fails its SHA-1 (checksum).
            assert!(
                matches!(e.kind, Kind::Format | Kind::Checksum),
                "{compress:?}: {e:?}"
            );
        }
    }

    #[test]
    fn names_extensions_default_levels_and_ranges_are_pgbackrests() {
        let expect = [
            ("none", "", 0),
            ("bz2", ".bz2", 9),
            ("gz", ".gz", 6),
            ("lz4", ".lz4", 1),
            ("zst", ".zst", 3),
        ];
        for (kind, (name, ext, level)) in TYPES.into_iter().zip(expect) {
            assert_eq!((kind.name(), kind.extension()), (name, ext));
            assert_eq!(CompressType::parse(name), Some(kind));
            assert_eq!(CompressType::from_extension(ext), Some(kind));
            let c = configured(Some(name), None).unwrap();
            assert_eq!((c.kind(), c.level()), (kind, level));
            assert_eq!(Compress::from_wire(&c.to_wire()), Some(c));
        }
        assert_eq!(configured(None, None).unwrap(), Compress::Gz(6));
        assert_eq!(
            configured(Some("zst"), Some(-7)).unwrap(),
            Compress::Zst(-7)
        );
        assert_eq!(
            configured(Some("lz4"), Some(12)).unwrap(),
            Compress::Lz4(12)
        );
        assert_eq!(configured(Some("none"), Some(22)).unwrap(), Compress::None);
        let e = configured(Some("gz"), Some(12)).unwrap_err();
        assert_eq!(e.kind, Kind::OptionInvalidValue);
        assert_eq!(
            e.message,
            "'12' is out of range for 'compress-level' option when 'compress-type' option = 'gz'"
        );
        assert!(configured(Some("bz2"), Some(0)).is_err());
        assert!(configured(Some("lz4"), Some(-6)).is_err());
        assert_eq!(CompressType::from_extension(".xz"), None);
        // The old wire form (a bare gzip level) is not taken for another type.
        assert_eq!(Compress::from_wire("6"), None);
    }
}
