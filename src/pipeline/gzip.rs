//! The gzip encoder of the copy pipeline: zlib-rs, tuned so that `compress-level` N means
//! what it means to zlib, gzip and pgBackRest, and able to spread one large file over several
//! threads while still writing one ordinary gzip member.
//!
//! zlib-rs follows zlib-ng, whose levels 1 and 3–6 use other algorithms than zlib's
//! ("quick" and "medium"): faster, but at level 6 about 7 % larger on PostgreSQL data files
//! than `gzip -6`. A DBA who sets level 6 expects gzip's level 6, so each level is started on
//! the zlib-rs level that runs zlib's algorithm for it (deflate_fast for 1–3, deflate_slow for
//! 4–9) and then given zlib's own search parameters with `deflateTune`. The result is within
//! a fraction of a percent of `gzip -N` and, being zlib-rs, still about twice as fast.
//!
//! Why parallel: a backup's wall time ends with one worker compressing the largest relation
//! segment (1 GiB) alone while the other cores idle. Past [`PARALLEL_AFTER`] bytes a writer
//! given more than one thread cuts the rest of its input into [`BLOCK`]-sized blocks that
//! deflate threads compress side by side, the way pigz does: each block is primed with the 32 KiB
//! of input before it (the whole deflate window, so matches reach back as far as in one
//! stream) and ends on a byte boundary (`Z_SYNC_FLUSH`), so the blocks' output, written in
//! order, is one continuous deflate stream. The gzip header and trailer are written here, with
//! the CRC-32 combined from the blocks' own, so the file is one gzip member that any gunzip,
//! and this crate's restore, reads as before: the storage format does not change.
//!
//! A backup's copy of a large file also carries a block index (issue 17; pipeline::store_indexed):
//! at every [`INDEX_BLOCK`] of input the stream restarts without history, on a byte boundary
//! (`Z_FULL_FLUSH` on the calling thread; on the parallel path the block starting there is
//! not primed), and the output offset of each restart is recorded, so restore can inflate the
//! blocks of one file on several threads. Block 0 starts right after the 10-byte header. The
//! file is still one gzip member; forgetting 32 KiB of history every 8 MiB costs about
//! 0.14 % of the stored size of a pgbench relation. Without an index (WAL) nothing changes.
//!
//! flate2 has no way to tune a stream or prime it with a dictionary, so this speaks to
//! zlib-rs through libz-rs-sys, its zlib-compatible interface, with `unsafe` (as only
//! storage/scan.rs does besides). Decompression needs neither and stays with flate2.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use libz_rs_sys as z;

use super::INDEX_BLOCK;

/// zlib's parameters per level (deflate.c, `configuration_table`): the zlib-rs level whose
/// algorithm zlib uses at that level, then good_length, max_lazy, nice_length, max_chain.
/// Levels 0 and 7–9 are the same in both libraries.
const ZLIB_LEVELS: [(i32, Option<[i32; 4]>); 10] = [
    (0, None),
    (2, Some([4, 4, 8, 4])),
    (2, Some([4, 5, 16, 8])),
    (2, Some([4, 6, 32, 32])),
    (7, Some([4, 4, 16, 16])),
    (7, Some([8, 16, 32, 32])),
    (7, Some([8, 16, 128, 128])),
    (7, None),
    (8, None),
    (9, None),
];

/// Output is handed to the inner writer in pieces of this size.
const OUT_CHUNK: usize = 128 * 1024;
/// The deflate window: what a block is primed with.
const WINDOW: usize = 32 * 1024;
/// A writer with threads to spare goes parallel once it has taken this much input, all of
/// it compressed on the calling thread: smaller files (most of a cluster) are not worth
/// starting threads for.
pub const PARALLEL_AFTER: u64 = 8 << 20;
/// Input per parallel block. Each block costs a flush (a few bytes and a fresh Huffman
/// table, under 0.5 % of its compressed size on PostgreSQL data at level 6) and keeps the
/// threads busy for ~15 ms, short enough that the last block does not leave them idle long.
pub const BLOCK: usize = 1 << 20;
/// The empty final block (fixed Huffman, BFINAL set) that closes a stream of flushed blocks.
const FINAL_EMPTY_BLOCK: [u8; 2] = [0x03, 0x00];

/// An initialised raw deflate stream and its output buffer.
///
/// One is kept per thread between files (see [`SPARE`]) and reset instead of being built
/// anew: zlib-rs allocates ~370 KiB of state per stream, and a backup copying thousands of
/// files per worker thread that way left glibc's per-thread arenas fragmented, at 55-60 MiB
/// of resident memory per worker though less than 2 MiB was ever in use at once.
struct Stream {
    // Boxed: zlib-rs keeps a pointer to the stream inside its state, so it must not move.
    raw: Box<z::z_stream>,
    level: u32,
    out: Vec<u8>,
}

thread_local! {
    /// The stream the last finished writer of this thread left for the next one.
    static SPARE: std::cell::RefCell<Option<Stream>> = const { std::cell::RefCell::new(None) };
}

impl Stream {
    /// A stream ready for new input at `level`: this thread's spare, reset, or a new one.
    fn take(level: u32) -> io::Result<Stream> {
        let spare = SPARE.with(|s| s.borrow_mut().take());
        let mut stream = match spare {
            Some(mut s) if s.level == level => {
                // SAFETY: `s.raw` was initialised by deflateInit2_ in Stream::new.
                let rc = unsafe { z::deflateReset(s.raw.as_mut()) };
                if rc != z::Z_OK {
                    return Err(io::Error::other(format!(
                        "gzip: deflateReset failed ({rc})"
                    )));
                }
                s
            }
            _ => Stream::new(level)?,
        };
        // Also after a reset, which puts the level's own search parameters back.
        stream.tune()?;
        Ok(stream)
    }

    /// Hands the stream back for this thread's next use.
    fn release(self) {
        SPARE.with(|s| *s.borrow_mut() = Some(self));
    }

    fn new(level: u32) -> io::Result<Stream> {
        let (start_level, _) = ZLIB_LEVELS[level.min(9) as usize];
        // SAFETY: an all-zero z_stream (null buffers and allocator callbacks) is the
        // documented initial state before deflateInit2_.
        let mut raw: Box<z::z_stream> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: the stream is initialised in place and not moved afterwards; window bits
        // -15 ask for raw deflate (the gzip wrapper is written by GzipWriter, which must
        // be able to combine the CRC-32 of blocks deflated apart); memLevel 8 and the
        // default strategy are zlib's.
        let rc = unsafe {
            z::deflateInit2_(
                raw.as_mut(),
                start_level,
                z::Z_DEFLATED,
                -15,
                8,
                z::Z_DEFAULT_STRATEGY,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as i32,
            )
        };
        if rc != z::Z_OK {
            return Err(io::Error::other(format!(
                "gzip: deflateInit2 failed ({rc})"
            )));
        }
        Ok(Stream {
            raw,
            level,
            out: vec![0; OUT_CHUNK],
        })
    }

    fn tune(&mut self) -> io::Result<()> {
        if let (_, Some([good, lazy, nice, chain])) = ZLIB_LEVELS[self.level.min(9) as usize] {
            // SAFETY: the stream was initialised in Stream::new.
            let rc = unsafe { z::deflateTune(self.raw.as_mut(), good, lazy, nice, chain) };
            if rc != z::Z_OK {
                return Err(io::Error::other(format!("gzip: deflateTune failed ({rc})")));
            }
        }
        Ok(())
    }

    /// Primes a stream that has not been given input yet with the input that precedes it.
    fn set_dictionary(&mut self, dict: &[u8]) -> io::Result<()> {
        // SAFETY: the stream was initialised in Stream::new; zlib-rs copies the dictionary
        // into its window during the call and keeps no pointer to it.
        let rc =
            unsafe { z::deflateSetDictionary(self.raw.as_mut(), dict.as_ptr(), dict.len() as u32) };
        if rc != z::Z_OK {
            return Err(io::Error::other(format!(
                "gzip: deflateSetDictionary failed ({rc})"
            )));
        }
        Ok(())
    }

    /// Compresses `input` (all of it) with `flush`, passing output to `sink`. Returns the
    /// last return code of deflate.
    fn deflate(&mut self, input: &[u8], flush: i32, sink: &mut dyn Write) -> io::Result<i32> {
        let mut rest = input;
        loop {
            let take = rest.len().min(u32::MAX as usize);
            self.raw.next_in = rest.as_ptr();
            self.raw.avail_in = take as u32;
            loop {
                self.raw.next_out = self.out.as_mut_ptr();
                self.raw.avail_out = self.out.len() as u32;
                // SAFETY: next_in/avail_in describe `rest`, next_out/avail_out describe
                // `self.out`; both outlive the call and zlib-rs only reads/writes within them.
                let rc = unsafe { z::deflate(self.raw.as_mut(), flush) };
                let produced = self.out.len() - self.raw.avail_out as usize;
                if produced > 0 {
                    sink.write_all(&self.out[..produced])?;
                }
                match rc {
                    z::Z_STREAM_END => {
                        self.raw.next_in = std::ptr::null();
                        return Ok(rc);
                    }
                    z::Z_OK | z::Z_BUF_ERROR => {}
                    _ => return Err(io::Error::other(format!("gzip: deflate failed ({rc})"))),
                }
                // Done with this input once it is consumed and deflate had room to spare
                // (with room left, it has nothing more to say for this flush mode).
                if self.raw.avail_in == 0 && self.raw.avail_out != 0 {
                    break;
                }
            }
            rest = &rest[take..];
            if rest.is_empty() {
                // Don't keep pointers into the caller's buffer.
                self.raw.next_in = std::ptr::null();
                return Ok(z::Z_OK);
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: initialised in Stream::new; deflateEnd tolerates a stream in any state.
        unsafe {
            z::deflateEnd(self.raw.as_mut());
        }
    }
}

fn crc32(crc: u32, data: &[u8]) -> u32 {
    // Fed in u32-sized pieces, the width of zlib's length argument.
    data.chunks(u32::MAX as usize).fold(crc, |crc, piece| {
        // SAFETY: the pointer and length describe `piece`, which outlives the call.
        unsafe { z::crc32(z::uLong::from(crc), piece.as_ptr(), piece.len() as u32) as u32 }
    })
}

/// The CRC-32 of two pieces of input one after the other, from the CRC-32 of each.
fn crc32_combine(first: u32, second: u32, second_len: usize) -> u32 {
    z::crc32_combine(
        z::uLong::from(first),
        z::uLong::from(second),
        second_len as z::z_off_t,
    ) as u32
}

/// A writer that counts the bytes it passed on: the offsets of the block index.
struct Counted<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A streaming gzip encoder; [`GzipWriter::finish`] writes the trailer.
pub struct GzipWriter<W: Write> {
    /// The stream of the input before any parallel blocks. Taken only by Drop, to hand it
    /// back to [`SPARE`].
    stream: Option<Stream>,
    inner: Counted<W>,
    level: u32,
    threads: usize,
    /// Restart without history at each [`INDEX_BLOCK`] of input, recording where (the block
    /// index of issue 17).
    index: bool,
    /// With `index`: where each index block begun starts in the output (its raw deflate data).
    starts: Vec<u64>,
    /// Input taken so far, on this thread or handed to the parallel part.
    taken: u64,
    /// CRC-32 and length of the input taken so far (blocks handed to the threads count
    /// once written).
    crc: u32,
    size: u64,
    parallel: Option<Parallel>,
    finished: bool,
}

impl<W: Write> GzipWriter<W> {
    /// A writer that may spread input past [`PARALLEL_AFTER`] over `threads` threads; with
    /// one, all of it is compressed on the calling thread. With `index`, at every multiple of
    /// [`INDEX_BLOCK`] of input the deflate stream restarts without history, on a byte
    /// boundary, whatever the threads: a block of the output then inflates alone from the
    /// place [`GzipWriter::block_starts`] gives for it, while the whole is still one gzip
    /// member.
    pub fn new(inner: W, level: u32, threads: usize, index: bool) -> io::Result<GzipWriter<W>> {
        let stream = Stream::take(level)?;
        let mut inner = Counted { inner, count: 0 };
        inner.write_all(&gzip_header(level))?;
        Ok(GzipWriter {
            stream: Some(stream),
            inner,
            level,
            threads,
            index,
            starts: Vec::new(),
            taken: 0,
            crc: 0,
            size: 0,
            parallel: None,
            finished: false,
        })
    }

    /// After [`GzipWriter::finish`], with `index`: where each [`INDEX_BLOCK`] of input begun
    /// starts in the output, the first right after the 10-byte header. Each ends where the
    /// next starts, on a byte boundary, and refers to nothing before its start.
    pub fn block_starts(&self) -> Option<&[u64]> {
        (self.index && self.finished).then_some(&self.starts[..])
    }

    /// Writes what is buffered and the gzip trailer. Errors are returned here, where a drop
    /// would have to swallow them; nothing may be written afterwards.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        if let Some(parallel) = self.parallel.as_mut() {
            let (crc, size) = parallel.finish(&mut self.inner)?;
            self.crc = crc32_combine(self.crc, crc, size as usize);
            self.size += size;
            self.starts.append(&mut parallel.starts);
            self.inner.write_all(&FINAL_EMPTY_BLOCK)?;
        } else {
            let Self { stream, inner, .. } = self;
            let stream = stream.as_mut().ok_or_else(released)?;
            if stream.deflate(&[], z::Z_FINISH, inner)? != z::Z_STREAM_END {
                return Err(io::Error::other("gzip: stream did not end"));
            }
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.to_le_bytes());
        // ISIZE is the length modulo 2^32, as RFC 1952 has it.
        trailer[4..].copy_from_slice(&(self.size as u32).to_le_bytes());
        self.inner.write_all(&trailer)?;
        self.finished = true;
        self.inner.flush()
    }
}

/// The member header: no name, no time (a backup's file times are in its manifest), XFL and
/// OS as zlib writes them.
fn gzip_header(level: u32) -> [u8; 10] {
    let xfl = match level {
        9 => 2,
        0 | 1 => 4,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3]
}

impl<W: Write> Write for GzipWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.finished {
            return Err(io::Error::other("gzip: write after finish"));
        }
        let index_block = INDEX_BLOCK as u64;
        let mut rest = buf;
        while !rest.is_empty() {
            if let Some(parallel) = self.parallel.as_mut() {
                parallel.write(rest, &mut self.inner)?;
                self.taken += rest.len() as u64;
                break;
            }
            let stream = self.stream.as_mut().ok_or_else(released)?;
            // An index block begins: the stream restarts here, lazily, so that a file ending
            // on a block boundary gets no flush it does not need.
            if self.index && self.taken.is_multiple_of(index_block) {
                if self.taken > 0 {
                    // zlib's "restart from this point": the output ends on a byte boundary
                    // and what follows refers to nothing before it.
                    stream.deflate(&[], z::Z_FULL_FLUSH, &mut self.inner)?;
                }
                self.starts.push(self.inner.count);
            }
            let take = match self.index {
                true => rest
                    .len()
                    .min((index_block - self.taken % index_block) as usize),
                false => rest.len(),
            };
            let piece = &rest[..take];
            rest = &rest[take..];
            self.crc = crc32(self.crc, piece);
            self.size += take as u64;
            self.taken += take as u64;
            stream.deflate(piece, z::Z_NO_FLUSH, &mut self.inner)?;
            if self.threads == 1 || self.taken < PARALLEL_AFTER {
                continue;
            }
            // Going parallel. With an index, at a block boundary, the first parallel block
            // unprimed as every block that starts an index block; without, anywhere the
            // input just taken holds a whole window to prime the first block with (the
            // pipeline writes whole chunks, far larger).
            let window = match self.index {
                true => self.taken.is_multiple_of(index_block).then_some(&[][..]),
                false => (piece.len() >= WINDOW).then(|| &piece[piece.len() - WINDOW..]),
            };
            if let Some(window) = window {
                // Ends what this stream has on a byte boundary, where the first block's
                // output can follow.
                stream.deflate(&[], z::Z_SYNC_FLUSH, &mut self.inner)?;
                self.parallel = Some(Parallel::start(
                    self.level,
                    self.threads,
                    window,
                    self.taken,
                    self.index,
                )?);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for GzipWriter<W> {
    fn drop(&mut self) {
        // Back for this thread's next file; Stream::take resets it before use.
        if let Some(stream) = self.stream.take() {
            stream.release();
        }
    }
}

/// A block for a deflate thread: its place in the file, the window before it, its input.
struct Job {
    seq: u64,
    dict: Vec<u8>,
    input: Vec<u8>,
}

/// A deflated block, with the input buffer coming back for reuse.
struct Deflated {
    seq: u64,
    output: Vec<u8>,
    crc: u32,
    input: Vec<u8>,
}

/// The parallel part of a file: blocks out to the deflate threads, their output back in
/// order. At most `threads + 1` blocks are in flight (one queued for whichever thread is
/// done first), so memory stays flat: a few MiB per file, whatever its size.
struct Parallel {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<io::Result<Deflated>>,
    threads: Vec<JoinHandle<()>>,
    /// The block being filled, and the window that precedes it.
    block: Vec<u8>,
    dict: Vec<u8>,
    next_seq: u64,
    /// Deflated blocks that came back ahead of their turn, by sequence.
    waiting: BTreeMap<u64, Deflated>,
    next_to_write: u64,
    spare_inputs: Vec<Vec<u8>>,
    max_in_flight: u64,
    /// CRC-32 and length of the input written out so far.
    crc: u32,
    size: u64,
    /// Input offset of the first block in the file: a multiple of [`INDEX_BLOCK`] with
    /// `index`, so that blocks are cut on every index block's start.
    start: u64,
    /// Start the blocks that begin an index block unprimed, and record where they went.
    index: bool,
    /// With `index`: where each index block begun in the parallel part starts in the output.
    starts: Vec<u64>,
}

impl Parallel {
    fn start(
        level: u32,
        threads: usize,
        window: &[u8],
        start: u64,
        index: bool,
    ) -> io::Result<Parallel> {
        let max_in_flight = threads + 1;
        let (jobs, job_queue) = sync_channel::<Job>(max_in_flight);
        let job_queue = Arc::new(Mutex::new(job_queue));
        // Unbounded, so a thread never waits to report: the writer bounds what is in flight.
        let (report, done) = channel();
        let threads = (0..threads)
            .map(|_| {
                let job_queue = Arc::clone(&job_queue);
                let report = report.clone();
                std::thread::Builder::new()
                    .name("pgbr-deflate".into())
                    .spawn(move || deflate_blocks(level, &job_queue, &report))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Parallel {
            jobs: Some(jobs),
            done,
            threads,
            block: Vec::with_capacity(BLOCK),
            dict: window.to_vec(),
            next_seq: 0,
            waiting: BTreeMap::new(),
            next_to_write: 0,
            spare_inputs: Vec::new(),
            max_in_flight: max_in_flight as u64,
            crc: 0,
            size: 0,
            start,
            index,
            starts: Vec::new(),
        })
    }

    /// Whether block `seq` is the first of an index block: one that refers to nothing
    /// before it. Every block but the last is [`BLOCK`] long.
    fn starts_index_block(&self, seq: u64) -> bool {
        self.index && (self.start + seq * BLOCK as u64).is_multiple_of(INDEX_BLOCK as u64)
    }

    fn write<W: Write>(&mut self, mut buf: &[u8], out: &mut Counted<W>) -> io::Result<()> {
        while !buf.is_empty() {
            let take = (BLOCK - self.block.len()).min(buf.len());
            self.block.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.block.len() == BLOCK {
                self.send_block(out)?;
            }
        }
        Ok(())
    }

    /// Hands the filled block to the threads, first waiting for (and writing) finished
    /// blocks while too many are in flight.
    fn send_block<W: Write>(&mut self, out: &mut Counted<W>) -> io::Result<()> {
        while self.next_seq - self.next_to_write >= self.max_in_flight {
            self.receive(out)?;
        }
        let next_block = self
            .spare_inputs
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BLOCK));
        let input = std::mem::replace(&mut self.block, next_block);
        let mut dict = std::mem::replace(
            &mut self.dict,
            input[input.len() - WINDOW.min(input.len())..].to_vec(),
        );
        if self.starts_index_block(self.next_seq) {
            dict.clear();
        }
        let job = Job {
            seq: self.next_seq,
            dict,
            input,
        };
        self.next_seq += 1;
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(threads_gone)?;
        // Write whatever is already done, without waiting.
        while let Ok(result) = self.done.try_recv() {
            self.accept(result?, out)?;
        }
        Ok(())
    }

    /// Waits for one deflated block and writes every block whose turn has come.
    fn receive<W: Write>(&mut self, out: &mut Counted<W>) -> io::Result<()> {
        let result = self.done.recv().map_err(|_| threads_gone())?;
        self.accept(result?, out)
    }

    fn accept<W: Write>(&mut self, block: Deflated, out: &mut Counted<W>) -> io::Result<()> {
        self.waiting.insert(block.seq, block);
        while let Some(mut block) = self.waiting.remove(&self.next_to_write) {
            if self.starts_index_block(block.seq) {
                self.starts.push(out.count);
            }
            out.write_all(&block.output)?;
            self.crc = crc32_combine(self.crc, block.crc, block.input.len());
            self.size += block.input.len() as u64;
            self.next_to_write += 1;
            block.input.clear();
            self.spare_inputs.push(block.input);
        }
        Ok(())
    }

    /// Sends the last, partial block, writes every block, and returns the CRC-32 and length
    /// of the input they held.
    fn finish<W: Write>(&mut self, out: &mut Counted<W>) -> io::Result<(u32, u64)> {
        if !self.block.is_empty() {
            self.send_block(out)?;
        }
        while self.next_to_write < self.next_seq {
            self.receive(out)?;
        }
        Ok((self.crc, self.size))
    }
}

impl Drop for Parallel {
    fn drop(&mut self) {
        // Closing the queue ends the threads once they finish the block at hand.
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn released() -> io::Error {
    io::Error::other("gzip: stream already released")
}

fn threads_gone() -> io::Error {
    io::Error::other("gzip: the deflate threads stopped")
}

/// A deflate thread: takes blocks until the queue closes. Each block is deflated on its own,
/// primed with the window before it and ended on a byte boundary, so outputs join up.
fn deflate_blocks(
    level: u32,
    jobs: &Mutex<Receiver<Job>>,
    report: &std::sync::mpsc::Sender<io::Result<Deflated>>,
) {
    loop {
        let job = match jobs.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A panic must come back as an error: the writer waits for every block's report,
        // and would wait forever for the one a dead thread never sent.
        let deflated =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| deflate_block(level, &job)))
                .unwrap_or_else(|_| Err(io::Error::other("gzip: a deflate thread panicked")));
        let result = deflated.map(|(output, crc)| Deflated {
            seq: job.seq,
            output,
            crc,
            input: job.input,
        });
        if report.send(result).is_err() {
            return;
        }
    }
}

fn deflate_block(level: u32, job: &Job) -> io::Result<(Vec<u8>, u32)> {
    let mut stream = Stream::take(level)?;
    // An unprimed block (the start of an index block) refers to nothing before it.
    if !job.dict.is_empty() {
        stream.set_dictionary(&job.dict)?;
    }
    // Compressed PostgreSQL data is a small fraction of its size; the Vec grows if not.
    let mut output = Vec::with_capacity(job.input.len() / 4);
    stream.deflate(&job.input, z::Z_SYNC_FLUSH, &mut output)?;
    stream.release();
    Ok((output, crc32(0, &job.input)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        crate::pipeline::test_data::pages(len, 4096)
    }

    fn gzip(data: &[u8], level: u32, piece: usize) -> Vec<u8> {
        gzip_threads(data, level, piece, 1)
    }

    fn gzip_threads(data: &[u8], level: u32, piece: usize, threads: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = GzipWriter::new(&mut out, level, threads, false).unwrap();
        for part in data.chunks(piece) {
            w.write_all(part).unwrap();
        }
        w.finish().unwrap();
        drop(w);
        out
    }

    #[test]
    fn every_level_round_trips_through_a_standard_gzip_decoder() {
        let data = sample(700_000);
        for level in 0..=9 {
            for piece in [1000, 128 * 1024, data.len()] {
                let gz = gzip(&data, level, piece);
                let mut back = Vec::new();
                flate2::read::GzDecoder::new(&gz[..])
                    .read_to_end(&mut back)
                    .unwrap();
                assert_eq!(back, data, "level {level}, pieces of {piece}");
            }
        }
        assert_eq!(
            gzip(&[], 6, 1).len(),
            20,
            "an empty gzip: header and trailer only"
        );
    }

    /// A thread's next file reuses the last stream: its output must be what a new stream
    /// gives, after a finished member, an abandoned one, or a change of level.
    #[test]
    fn a_reused_stream_compresses_exactly_like_a_new_one() {
        let data = sample(300_000);
        let fresh_6 = std::thread::scope(|s| s.spawn(|| gzip(&data, 6, 4096)).join().unwrap());
        let fresh_1 = std::thread::scope(|s| s.spawn(|| gzip(&data, 1, 4096)).join().unwrap());
        assert_eq!(gzip(&data, 6, 4096), fresh_6);
        assert_eq!(
            gzip(&data, 6, 50_000),
            fresh_6,
            "second use of the same stream"
        );
        let mut abandoned = Vec::new();
        let mut w = GzipWriter::new(&mut abandoned, 6, 1, false).unwrap();
        w.write_all(&data[..100_000]).unwrap();
        drop(w);
        assert_eq!(
            gzip(&data, 6, 4096),
            fresh_6,
            "after a member left unfinished"
        );
        assert_eq!(gzip(&data, 1, 4096), fresh_1, "after a change of level");
        assert_eq!(gzip(&data, 6, 4096), fresh_6, "and back");
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    /// Past PARALLEL_AFTER, blocks deflated on other threads must join into one gzip member
    /// that decodes to the input exactly (CRC-32 and length included), whether the input
    /// ends right at the switch, on a block boundary or inside a block, and must cost next
    /// to nothing in size against one stream.
    #[test]
    fn blocks_deflated_in_parallel_make_one_member_of_nearly_the_same_size() {
        let switch = PARALLEL_AFTER as usize;
        let piece = 512 * 1024;
        for (len, level) in [
            (switch, 6),
            (switch + 3 * BLOCK, 6),
            (switch + 5 * BLOCK + 12_345, 6),
            (switch + 2 * BLOCK + 1, 1),
            (switch + 2 * BLOCK + 7, 9),
        ] {
            let data = sample(len);
            let one = gzip(&data, level, piece);
            for threads in [2, 3] {
                let gz = gzip_threads(&data, level, piece, threads);
                assert!(gunzip(&gz) == data, "{len} bytes at level {level}");
                // One member: the decoder above stops after the first, so a second one
                // would have shown as missing bytes; and nothing follows the trailer.
                let ratio = gz.len() as f64 / one.len() as f64;
                assert!(
                    (0.99..1.005).contains(&ratio),
                    "{len} bytes at level {level}: {} in parallel, {} in one stream",
                    gz.len(),
                    one.len()
                );
                if len > switch {
                    assert_ne!(gz, one, "the parallel path was not taken");
                }
            }
        }
    }

    fn gzip_indexed(data: &[u8], level: u32, piece: usize, threads: usize) -> (Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        let mut w = GzipWriter::new(&mut out, level, threads, true).unwrap();
        for part in data.chunks(piece) {
            w.write_all(part).unwrap();
        }
        assert_eq!(w.block_starts(), None, "no block starts before finish");
        w.finish().unwrap();
        let starts = w.block_starts().unwrap().to_vec();
        drop(w);
        (out, starts)
    }

    /// With an index, the stream restarts at every INDEX_BLOCK of input, whatever the threads
    /// and however the input is cut into writes (pieces that straddle a block boundary, end
    /// right on one, or are smaller than a window): each block inflates alone, from its
    /// start, with a fresh inflater, to exactly its bytes; the whole is still one member.
    /// A file ending right on a boundary gets no block (and no flush) after it. (With a
    /// sync flush instead of the full flush, block 1 fails here: the data has matches that
    /// reach back across the boundary.)
    #[test]
    fn indexed_blocks_inflate_alone_whatever_the_threads_and_the_writes() {
        use crate::manifest::BlockIndex;
        use crate::pipeline::test_data::decode_block;
        use crate::pipeline::CompressType;
        let ib = INDEX_BLOCK;
        for (len, piece, threads) in [
            (2 * ib + 3 * BLOCK + 5, 512 * 1024, 1),
            (2 * ib + 3 * BLOCK + 5, 3 * BLOCK + 7, 1),
            (2 * ib + 3 * BLOCK + 5, 3 * BLOCK + 7, 2),
            (2 * ib, 512 * 1024, 3),
            (ib + 1, 1000, 2),
            (ib + WINDOW / 2, 10_000, 1),
        ] {
            let what = format!("{len} bytes in pieces of {piece}, {threads} threads");
            let data = sample(len);
            let (gz, starts) = gzip_indexed(&data, 6, piece, threads);
            assert!(gunzip(&gz) == data, "{what}: whole");
            assert_eq!(starts.len(), len.div_ceil(ib), "{what}: {starts:?}");
            assert_eq!(starts[0], 10, "{what}: after the header");
            let index = BlockIndex {
                block_size: ib as u64,
                offsets: starts,
                checksums: vec![crate::manifest::BlockSum::Xxh3([0; 16]); len.div_ceil(ib)],
            };
            for block in index.blocks(len as u64, gz.len() as u64) {
                let range = block.start as usize..(block.start + block.len) as usize;
                let alone = decode_block(CompressType::Gz, &gz, &block);
                assert!(alone == data[range], "{what}: block {}", block.number);
            }
        }
        // Up to the first boundary the output is what it is without an index.
        let data = sample(ib + 5);
        assert_eq!(
            gzip_indexed(&data[..ib], 6, 4096, 1).0,
            gzip(&data[..ib], 6, 4096)
        );
        assert_ne!(gzip_indexed(&data, 6, 4096, 1).0, gzip(&data, 6, 4096));
    }

    /// A destination that fails (disk full) while blocks are in flight: the error comes back
    /// from write or finish, and dropping the writer stops and joins its threads.
    #[test]
    fn a_failing_destination_in_the_parallel_part_is_an_error_not_a_hang() {
        struct FullAfter(usize);
        impl Write for FullAfter {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if buf.len() > self.0 {
                    return Err(io::Error::other("no space left on device"));
                }
                self.0 -= buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = sample(PARALLEL_AFTER as usize + 6 * BLOCK);
        // Room for the one-stream part but not for all the blocks.
        let room = gzip(&data[..PARALLEL_AFTER as usize], 6, 512 * 1024).len() + 1000;
        let mut w = GzipWriter::new(FullAfter(room), 6, 2, false).unwrap();
        let result = data
            .chunks(512 * 1024)
            .try_for_each(|part| w.write_all(part))
            .and_then(|()| w.finish());
        let e = result.expect_err("the full destination must fail the copy");
        assert!(e.to_string().contains("no space left"), "{e}");
        assert!(
            w.parallel.is_some(),
            "the failure came from the parallel part"
        );
        drop(w);
    }

    /// Not only our decoder: gzip itself reads it, and tests it (CRC-32, length, one member).
    #[test]
    fn gzip_reads_what_the_threads_wrote() {
        use std::process::{Command, Stdio};
        let data = sample(PARALLEL_AFTER as usize + 3 * BLOCK + 999);
        let gz = gzip_threads(&data, 6, 512 * 1024, 2);
        let mut child = Command::new("gzip")
            .args(["-d", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("gzip is installed");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&gz));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success(), "gzip -d: {out:?}");
        assert!(out.stdout == data, "gzip -d gave other bytes");
    }
}
