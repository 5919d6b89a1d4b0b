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

/// A streaming gzip encoder; [`GzipWriter::finish`] writes the trailer.
pub struct GzipWriter<W: Write> {
    // Boxed: zlib-rs keeps a pointer to the stream inside its state, so it must not move.
    stream: Box<z::z_stream>,
    out: Vec<u8>,
    inner: W,
    finished: bool,
}

impl<W: Write> GzipWriter<W> {
    pub fn new(inner: W, level: u32) -> io::Result<GzipWriter<W>> {
        let (start_level, tune) = ZLIB_LEVELS[level.min(9) as usize];
        // SAFETY: an all-zero z_stream (null buffers and allocator callbacks) is the
        // documented initial state before deflateInit2_.
        let mut stream: Box<z::z_stream> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: the stream is initialised in place and not moved afterwards; window bits
        // 15 + 16 ask for a gzip wrapper; memLevel 8 and the default strategy are zlib's.
        let rc = unsafe {
            z::deflateInit2_(
                stream.as_mut(),
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
        let mut writer = GzipWriter {
            stream,
            out: vec![0; OUT_CHUNK],
            inner,
            finished: false,
        };
        if let Some([good, lazy, nice, chain]) = tune {
            // SAFETY: the stream was initialised above.
            let rc = unsafe { z::deflateTune(writer.stream.as_mut(), good, lazy, nice, chain) };
            if rc != z::Z_OK {
                return Err(io::Error::other(format!("gzip: deflateTune failed ({rc})")));
            }
        }
        Ok(writer)
    }

    /// Compresses `input` (all of it) with `flush`, passing output to the inner writer.
    /// Returns the last return code of deflate.
    fn deflate(&mut self, input: &[u8], flush: i32) -> io::Result<i32> {
        // Inputs are at most a pipeline chunk; a larger one is fed in u32-sized pieces.
        let mut rest = input;
        loop {
            let take = rest.len().min(u32::MAX as usize);
            self.stream.next_in = rest.as_ptr();
            self.stream.avail_in = take as u32;
            loop {
                self.stream.next_out = self.out.as_mut_ptr();
                self.stream.avail_out = self.out.len() as u32;
                // SAFETY: next_in/avail_in describe `rest`, next_out/avail_out describe
                // `self.out`; both outlive the call and zlib-rs only reads/writes within them.
                let rc = unsafe { z::deflate(self.stream.as_mut(), flush) };
                let produced = self.out.len() - self.stream.avail_out as usize;
                if produced > 0 {
                    self.inner.write_all(&self.out[..produced])?;
                }
                match rc {
                    z::Z_STREAM_END => return Ok(rc),
                    z::Z_OK | z::Z_BUF_ERROR => {}
                    _ => return Err(io::Error::other(format!("gzip: deflate failed ({rc})"))),
                }
                // Done with this input once it is consumed and deflate had room to spare
                // (with room left, it has nothing more to say for this flush mode).
                if self.stream.avail_in == 0 && self.stream.avail_out != 0 {
                    break;
                }
            }
            rest = &rest[take..];
            if rest.is_empty() {
                // Don't keep pointers into the caller's buffer.
                self.stream.next_in = std::ptr::null();
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
        // SAFETY: initialised in new(); deflateEnd tolerates a stream in any state.
        unsafe {
            z::deflateEnd(self.stream.as_mut());
        }
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
}
