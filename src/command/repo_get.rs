//! repo-get: writes one repository file to stdout as stored, through the Storage interface
//! (so from repo1-host too). As in pgBackRest nothing is decompressed (pipe through
//! `gzip -d`); a missing file is an error, or exit 1 with --ignore-missing.

use std::io::Read;

use super::repo_ls::{repo_path, write_stdout};
use super::Outcome;
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::pipeline::CHUNK;

pub fn run(cfg: &Config) -> Result<Outcome> {
    let arg = cfg.args.first().map(String::as_str).unwrap_or("");
    let path = repo_path(cfg, arg)?;
    let repo = crate::repo::open(cfg)?;
    let Some(mut reader) = repo.open_read(&path)? else {
        if cfg.bool("ignore-missing") {
            return Ok(Outcome::NotFound);
        }
        return Err(Error::new(
            Kind::RepoMissing,
            format!(
                "unable to open missing file '{}' for read",
                repo.describe(&path)
            ),
        )
        .with_hint("'pg_backrest repo-ls' lists what the repository holds"));
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        crate::signal::check()?;
        let n = reader
            .read(&mut buf)
            .map_err(|e| crate::pipeline::io_error("read", &repo.describe(&path), e))?;
        if n == 0 {
            return Ok(Outcome::Done);
        }
        write_stdout(&buf[..n])?;
    }
}
