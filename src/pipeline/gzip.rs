//! The gzip encoder of the copy pipeline: zlib-rs, tuned so that `compress-level` N means
//! what it means to zlib, gzip and pgBackRest.
//!
//! zlib-rs follows zlib-ng, whose levels 1 and 3–6 use other algorithms than zlib's
//! ("quick" and "medium"): faster, but at level 6 about 7 % larger on PostgreSQL data files
//! than `gzip -6`. A DBA who sets level 6 expects gzip's level 6, so each level is started on
//! the zlib-rs level that runs zlib's algorithm for it (deflate_fast for 1–3, deflate_slow for
//! 4–9) and then given zlib's own search parameters with `deflateTune`. The result is within
//! a fraction of a percent of `gzip -N` and, being zlib-rs, still about twice as fast.
//!
//! flate2 has no way to tune its stream, so this speaks to zlib-rs through libz-rs-sys, its
//! zlib-compatible interface, the one place in the crate with `unsafe`. Decompression needs
//! no tuning and stays with flate2.

use std::io::{self, Write};

use libz_rs_sys as z;

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

/// An initialised deflate stream and its output buffer.
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
    /// A stream ready for a new gzip member at `level`: this thread's spare, reset, or a new one.
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

    fn new(level: u32) -> io::Result<Stream> {
        let (start_level, _) = ZLIB_LEVELS[level.min(9) as usize];
        // SAFETY: an all-zero z_stream (null buffers and allocator callbacks) is the
        // documented initial state before deflateInit2_.
        let mut raw: Box<z::z_stream> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: the stream is initialised in place and not moved afterwards; window bits
        // 15 + 16 ask for a gzip wrapper; memLevel 8 and the default strategy are zlib's.
        let rc = unsafe {
            z::deflateInit2_(
                raw.as_mut(),
                start_level,
                z::Z_DEFLATED,
                15 + 16,
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
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: initialised in Stream::new; deflateEnd tolerates a stream in any state.
        unsafe {
            z::deflateEnd(self.raw.as_mut());
        }
    }
}

/// A streaming gzip encoder; [`GzipWriter::finish`] writes the trailer.
pub struct GzipWriter<W: Write> {
    /// Always present; taken only by Drop, to hand it back to [`SPARE`].
    stream: Option<Stream>,
    inner: W,
    finished: bool,
}

impl<W: Write> GzipWriter<W> {
    pub fn new(inner: W, level: u32) -> io::Result<GzipWriter<W>> {
        Ok(GzipWriter {
            stream: Some(Stream::take(level)?),
            inner,
            finished: false,
        })
    }

    /// Compresses `input` (all of it) with `flush`, passing output to the inner writer.
    /// Returns the last return code of deflate.
    fn deflate(&mut self, input: &[u8], flush: i32) -> io::Result<i32> {
        // Inputs are at most a pipeline chunk; a larger one is fed in u32-sized pieces.
        let Some(stream) = self.stream.as_mut() else {
            return Err(io::Error::other("gzip: stream already released"));
        };
        let mut rest = input;
        loop {
            let take = rest.len().min(u32::MAX as usize);
            stream.raw.next_in = rest.as_ptr();
            stream.raw.avail_in = take as u32;
            loop {
                stream.raw.next_out = stream.out.as_mut_ptr();
                stream.raw.avail_out = stream.out.len() as u32;
                // SAFETY: next_in/avail_in describe `rest`, next_out/avail_out describe
                // `stream.out`; both outlive the call and zlib-rs only reads/writes within them.
                let rc = unsafe { z::deflate(stream.raw.as_mut(), flush) };
                let produced = stream.out.len() - stream.raw.avail_out as usize;
                if produced > 0 {
                    self.inner.write_all(&stream.out[..produced])?;
                }
                match rc {
                    z::Z_STREAM_END => return Ok(rc),
                    z::Z_OK | z::Z_BUF_ERROR => {}
                    _ => return Err(io::Error::other(format!("gzip: deflate failed ({rc})"))),
                }
                // Done with this input once it is consumed and deflate had room to spare
                // (with room left, it has nothing more to say for this flush mode).
                if stream.raw.avail_in == 0 && stream.raw.avail_out != 0 {
                    break;
                }
            }
            rest = &rest[take..];
            if rest.is_empty() {
                // Don't keep pointers into the caller's buffer.
                stream.raw.next_in = std::ptr::null();
                return Ok(z::Z_OK);
            }
        }
    }

    /// Writes what is buffered and the gzip trailer. Errors are returned here, where a drop
    /// would have to swallow them; nothing may be written afterwards.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        if self.deflate(&[], z::Z_FINISH)? != z::Z_STREAM_END {
            return Err(io::Error::other("gzip: stream did not end"));
        }
        self.finished = true;
        self.inner.flush()
    }
}

impl<W: Write> Write for GzipWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.finished {
            return Err(io::Error::other("gzip: write after finish"));
        }
        self.deflate(buf, z::Z_NO_FLUSH)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for GzipWriter<W> {
    fn drop(&mut self) {
        // Back for this thread's next file; Stream::take resets it before use.
        let stream = self.stream.take();
        SPARE.with(|s| *s.borrow_mut() = stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Page-like data: runs, counters and some noise, compressible but not trivially.
    fn sample(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                match (i / 4096) % 4 {
                    0 => 0,
                    1 => (i % 251) as u8,
                    2 => (x % 16) as u8,
                    _ => (x >> 24) as u8,
                }
            })
            .collect()
    }

    fn gzip(data: &[u8], level: u32, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = GzipWriter::new(&mut out, level).unwrap();
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
        let mut w = GzipWriter::new(&mut abandoned, 6).unwrap();
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
}
