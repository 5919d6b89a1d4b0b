//! The hidden `remote` command: the server another pg_backrest starts over SSH. On a
//! repository host it serves storage rooted at repo1-path from this host's own config; on a
//! database host it also serves the database (pg1-* options of this host's config) and the
//! backup's file reads. stdout carries only protocol frames (the dispatcher turns console
//! logging off for it).

use std::io::{BufWriter, Write};

use crate::config::Config;
use crate::error::Result;
use crate::protocol::server;
use crate::storage::posix::PosixStorage;

pub fn run(cfg: &Config) -> Result<()> {
    let storage = PosixStorage::new(cfg.required_path("repo1-path")?);
    let mut input = std::io::stdin().lock();
    let mut output = BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
    let connect_db = || crate::pg::db::Db::connect(cfg);
    let result = server::serve(&storage, &connect_db, &mut input, &mut output);
    let _ = output.flush();
    result
}
