//! Compression of a stream as a run of independent frames, compressed side by side on
//! several threads once a file is large enough, and written in order.
//!
//! Formats whose frames can simply be concatenated (the LZ4 frame format) are read back as one
//! stream by every decoder, pgBackRest's included: it keeps calling `LZ4F_decompress` on
//! what follows the end of a frame, which starts the next. Each frame covers [`BLOCK`] bytes
//! of input; LZ4 looks back only 64 KiB, so cutting the stream there costs a few bytes of
//! frame header per MiB and nothing measurable in ratio, and it lets a large file
//! (a 1 GiB relation segment) spread over `threads` threads instead of ending a backup on
//! one busy core (see pipeline::gzip for the same reasoning about gzip).
//!
//! Frames are cut every [`BLOCK`] bytes of input counted from the file's start, whatever the
//! threads, so every [`INDEX_BLOCK`] of a file starts a frame: the writer records where, the
//! offsets of a backup's block index (issue 17), at no cost in size.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::gzip::{BLOCK, PARALLEL_AFTER};
use super::INDEX_BLOCK;

/// Compresses one block of input into one complete, independent frame.
pub type FrameFn = fn(&[u8], i32) -> io::Result<Vec<u8>>;

/// Frames per block of the block index: frames are cut every [`BLOCK`] bytes of input from the
/// file's start, whatever the threads, so every [`INDEX_BLOCK`] starts with a frame.
const FRAMES_PER_INDEX_BLOCK: u64 = (INDEX_BLOCK / BLOCK) as u64;

/// Where frames go, in order: counts them and their bytes, and notes where each index block's
/// first frame starts.
struct Out<W> {
    inner: W,
    written: u64,
    frames: u64,
    starts: Vec<u64>,
}

impl<W: Write> Out<W> {
    fn frame(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.frames.is_multiple_of(FRAMES_PER_INDEX_BLOCK) {
            self.starts.push(self.written);
        }
        self.inner.write_all(frame)?;
        self.written += frame.len() as u64;
        self.frames += 1;
        Ok(())
    }
}

/// A writer cutting its input into frames of [`BLOCK`] bytes.
pub struct FrameWriter<W: Write> {
    out: Out<W>,
    compress: FrameFn,
    level: i32,
    threads: usize,
    block: Vec<u8>,
    /// Input taken so far.
    size: u64,
    frames: u64,
    pool: Option<Pool>,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W, compress: FrameFn, level: i32, threads: usize) -> FrameWriter<W> {
        FrameWriter {
            out: Out {
                inner,
                written: 0,
                frames: 0,
                starts: Vec::new(),
            },
            compress,
            level,
            threads,
            block: Vec::new(),
            size: 0,
            frames: 0,
            pool: None,
        }
    }

    /// Writes the last frame and waits for every frame in flight. An empty input still gets
    /// one (empty) frame: a stored file of zero bytes would not decode.
    pub fn finish(&mut self) -> io::Result<()> {
        if !self.block.is_empty() || self.frames == 0 {
            self.emit()?;
        }
        if let Some(pool) = &mut self.pool {
            pool.drain(&mut self.out)?;
        }
        self.out.inner.flush()
    }

    /// After [`FrameWriter::finish`]: where the frame starting each [`INDEX_BLOCK`] of input
    /// begun starts in the output (the first at 0).
    pub fn block_starts(&self) -> &[u64] {
        // An empty input's one empty frame starts no block.
        let blocks = self.size.div_ceil(INDEX_BLOCK as u64) as usize;
        &self.out.starts[..blocks.min(self.out.starts.len())]
    }

    fn emit(&mut self) -> io::Result<()> {
        let input = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        self.frames += 1;
        if self.pool.is_none() && self.threads > 1 && self.size > PARALLEL_AFTER {
            self.pool = Some(Pool::start(self.compress, self.level, self.threads)?);
        }
        match &mut self.pool {
            Some(pool) => pool.send(input, &mut self.out),
            None => {
                let frame = (self.compress)(&input, self.level)?;
                self.out.frame(&frame)
            }
        }
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let taken = buf.len();
        while !buf.is_empty() {
            if self.block.capacity() == 0 {
                self.block.reserve(BLOCK.min(buf.len().max(64 * 1024)));
            }
            let n = (BLOCK - self.block.len()).min(buf.len());
            self.block.extend_from_slice(&buf[..n]);
            self.size += n as u64;
            buf = &buf[n..];
            if self.block.len() == BLOCK {
                self.emit()?;
            }
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.inner.flush()
    }
}

type Job = (u64, Vec<u8>);
type Done = (u64, io::Result<Vec<u8>>);

/// The compressing threads of one file. At most `threads + 1` frames are in flight, so
/// memory stays at a few MiB whatever the file's size.
struct Pool {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_to_write: u64,
    waiting: BTreeMap<u64, Vec<u8>>,
    max_in_flight: u64,
}

impl Pool {
    fn start(compress: FrameFn, level: i32, threads: usize) -> io::Result<Pool> {
        let max_in_flight = threads as u64 + 1;
        let (jobs, queue) = sync_channel::<Job>(threads + 1);
        let queue = Arc::new(Mutex::new(queue));
        let (report, done) = channel::<Done>();
        let threads = (0..threads)
            .map(|_| {
                let queue = Arc::clone(&queue);
                let report = report.clone();
                std::thread::Builder::new()
                    .name("pgbr-frames".into())
                    .spawn(move || compress_frames(compress, level, &queue, &report))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Pool {
            jobs: Some(jobs),
            done,
            threads,
            next_seq: 0,
            next_to_write: 0,
            waiting: BTreeMap::new(),
            max_in_flight,
        })
    }

    fn send<W: Write>(&mut self, input: Vec<u8>, out: &mut Out<W>) -> io::Result<()> {
        while self.next_seq - self.next_to_write >= self.max_in_flight {
            self.receive(out)?;
        }
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send((self.next_seq, input)).ok())
            .ok_or_else(threads_gone)?;
        self.next_seq += 1;
        while let Ok(done) = self.done.try_recv() {
            self.accept(done, out)?;
        }
        Ok(())
    }

    fn receive<W: Write>(&mut self, out: &mut Out<W>) -> io::Result<()> {
        let done = self.done.recv().map_err(|_| threads_gone())?;
        self.accept(done, out)
    }

    fn accept<W: Write>(&mut self, (seq, frame): Done, out: &mut Out<W>) -> io::Result<()> {
        self.waiting.insert(seq, frame?);
        while let Some(frame) = self.waiting.remove(&self.next_to_write) {
            out.frame(&frame)?;
            self.next_to_write += 1;
        }
        Ok(())
    }

    fn drain<W: Write>(&mut self, out: &mut Out<W>) -> io::Result<()> {
        while self.next_to_write < self.next_seq {
            self.receive(out)?;
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue ends the threads once they finish the frame at hand.
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn threads_gone() -> io::Error {
    io::Error::other("the compressing threads stopped")
}

fn compress_frames(
    compress: FrameFn,
    level: i32,
    queue: &Mutex<Receiver<Job>>,
    report: &Sender<Done>,
) {
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok((seq, input)) = job else { return };
        // A panic must come back as an error: the writer waits for every frame's report.
        let frame = std::panic::catch_unwind(|| compress(&input, level))
            .unwrap_or_else(|_| Err(io::Error::other("a compressing thread panicked")));
        if report.send((seq, frame)).is_err() {
            return;
        }
    }
}
