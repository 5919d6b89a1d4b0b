//! The pipeline's SHA-1. A small stream is hashed on the pipeline's own thread; past
//! [`BESIDE_AFTER`] bytes the hash moves to a thread of its own, beside the decompression or
//! compression and the I/O, which then no longer wait for it.
//!
//! Why: a large relation file (1 GiB segments) is copied by one worker alone while the others
//! have finished, and SHA-1 is a third of that worker's CPU. Hashing beside it shortens the
//! longest file's copy, which is what bounds a restore's wall time. The extra thread is one
//! per worker at most, and only while it copies such a file.
//!
//! Chunks go to the hashing thread by value and come back to be refilled, through a pool of
//! [`POOL`] buffers, so memory stays flat however large the file.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

use sha1::{Digest as _, Sha1};

use crate::error::{Error, Result};

/// Streams longer than this are hashed beside the copy.
pub const BESIDE_AFTER: u64 = 64 << 20;
/// Buffers in flight between the copy and the hashing thread.
const POOL: usize = 4;

type Chunk = (Vec<u8>, usize);

pub struct Digester<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    mode: Mode<'scope>,
    seen: u64,
    chunk_len: usize,
}

enum Mode<'scope> {
    Inline(Sha1),
    Beside {
        to: SyncSender<Chunk>,
        back: Receiver<Vec<u8>>,
        allocated: usize,
        done: ScopedJoinHandle<'scope, Sha1>,
    },
}

impl<'scope, 'env> Digester<'scope, 'env> {
    pub fn new(scope: &'scope Scope<'scope, 'env>, chunk_len: usize) -> Self {
        Digester {
            scope,
            mode: Mode::Inline(Sha1::new()),
            seen: 0,
            chunk_len,
        }
    }

    /// Hashes `buf[..n]` and returns the buffer to fill next: `buf` itself, or one the
    /// hashing thread is done with.
    pub fn update(&mut self, buf: Vec<u8>, n: usize) -> Result<Vec<u8>> {
        self.seen += n as u64;
        if let Mode::Inline(sha) = &mut self.mode {
            sha.update(&buf[..n]);
            if self.seen > BESIDE_AFTER {
                self.move_beside();
            }
            return Ok(buf);
        }
        let Mode::Beside {
            to,
            back,
            allocated,
            ..
        } = &mut self.mode
        else {
            unreachable!("inline handled above");
        };
        to.send((buf, n)).map_err(|_| hasher_gone())?;
        if let Ok(free) = back.try_recv() {
            return Ok(free);
        }
        if *allocated < POOL {
            *allocated += 1;
            return Ok(vec![0u8; self.chunk_len]);
        }
        back.recv().map_err(|_| hasher_gone())
    }

    fn move_beside(&mut self) {
        let Mode::Inline(sha) = std::mem::replace(&mut self.mode, Mode::Inline(Sha1::new())) else {
            return;
        };
        let (to, chunks) = sync_channel::<Chunk>(POOL);
        let (give_back, back) = sync_channel::<Vec<u8>>(POOL + 1);
        let done = self.scope.spawn(move || {
            let mut sha = sha;
            for (buf, n) in chunks {
                sha.update(&buf[..n]);
                // The copy may have finished and stopped taking buffers back.
                let _ = give_back.try_send(buf);
            }
            sha
        });
        self.mode = Mode::Beside {
            to,
            back,
            allocated: 1,
            done,
        };
    }

    /// The SHA-1 of everything passed to [`Digester::update`], lowercase hex.
    pub fn finish(self) -> Result<String> {
        let sha = match self.mode {
            Mode::Inline(sha) => sha,
            Mode::Beside { to, done, .. } => {
                // Closing the channel ends the hashing thread's loop.
                drop(to);
                done.join().map_err(|_| hasher_gone())?
            }
        };
        Ok(hex::encode(sha.finalize()))
    }
}

fn hasher_gone() -> Error {
    Error::internal("the SHA-1 thread of the copy pipeline stopped")
}
