//! The hidden `remote` command: the server another pg_backrest starts over SSH. On a
//! repository host it serves storage rooted at repo1-path from this host's own config; on a
//! database host it also serves the database (pg1-* options of this host's config) and the
//! backup's file reads. stdout carries only protocol frames (the dispatcher turns console
//! logging off for it).
//!
//! The server itself ([`server`]) lives here, beside the command it serves, and not in
//! `crate::protocol`, which only carries frames and messages: it is the one place that calls
//! storage, the database and the backup's per-file worker for a peer. [`Backup`] names the
//! payload types of the database-host requests, so that [`Request`] here is the fully typed
//! request both the server and the backup's clients use.

pub mod server;

use std::io::{BufWriter, Write};

use crate::command::backup::file::CopyParams;
use crate::command::backup::walk::{SourceFile, Tablespace};
use crate::config::Config;
use crate::error::Result;
use crate::storage::posix::PosixStorage;

/// The backup command's types in the database-host requests.
#[derive(Debug)]
pub struct Backup;

impl crate::protocol::request::Payloads for Backup {
    type Source = SourceFile;
    type Params = CopyParams;
    type Tablespace = Tablespace;
}

/// Every request, with the backup's payload types.
pub type Request = crate::protocol::request::Request<Backup>;

pub fn run(cfg: &Config) -> Result<()> {
    // The repository this host's own config names: a directory, or a bucket. A database
    // host's config may name the repository host in repo1-host; what is served from here is
    // still this host's repo1-path, as before, never a connection back.
    let storage: Box<dyn crate::storage::Storage> = match crate::repo::RepoLocation::resolve(cfg)? {
        location @ crate::repo::RepoLocation::S3(_) => location.open()?,
        _ => Box::new(PosixStorage::new(cfg.required_path("repo1-path")?)),
    };
    let mut input = std::io::stdin().lock();
    let mut output = BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
    let connect_db = || crate::pg::db::Db::connect(cfg);
    let result = server::serve(storage.as_ref(), &connect_db, &mut input, &mut output);
    let _ = output.flush();
    result
}
