//! The hidden `remote` command: the storage server another pg_backrest starts over SSH. Its
//! storage root is repo1-path from this host's own config; stdout carries only protocol
//! frames (the dispatcher turns console logging off for it).

use std::io::{BufWriter, Write};

use crate::config::Config;
use crate::error::Result;
use crate::protocol::server;
use crate::storage::posix::PosixStorage;

pub fn run(cfg: &Config) -> Result<()> {
    let storage = PosixStorage::new(cfg.required_path("repo1-path")?);
    let mut input = std::io::stdin().lock();
    let mut output = BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
    let result = server::serve(&storage, &mut input, &mut output);
    let _ = output.flush();
    result
}
