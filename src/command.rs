//! The dispatcher: takes the lock the command table names, runs the command, and reports.
//! Each command is a function from the resolved [`Config`] to a [`Result`] in its own file.

pub mod archive_get;
pub mod archive_push;
pub mod backup;
pub mod check;
pub mod drill;
pub mod info;
pub mod remote;
pub mod restore;
pub mod stanza_create;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::config::{help, Cmd, Config, LockType};
use crate::error::{Error, Kind, Result};
use crate::lock;

/// How a successful command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// archive-get: the segment is not in the archive (exit 1, not an error).
    NotFound,
}

pub fn run(cfg: &Config) -> Result<Outcome> {
    let def = cfg.command.def();
    if !def.implemented {
        return Err(Error::new(
            Kind::NotImplemented,
            format!(
                "command '{}' is not available in pg_backrest {} yet",
                def.name,
                crate::VERSION
            ),
        ));
    }
    let _lock = match (def.lock, cfg.stanza()) {
        (LockType::None, _) | (_, None) => None,
        (lock_type, Some(stanza)) => lock::acquire(
            &cfg.required_path("lock-path")?,
            stanza,
            lock_type,
            def.name,
            cfg.seconds("lock-timeout"),
        )?,
    };
    match cfg.command {
        Cmd::StanzaCreate => stanza_create::run(cfg).map(|_| Outcome::Done),
        Cmd::Check => check::run(cfg).map(|_| Outcome::Done),
        Cmd::ArchivePush => archive_push::run(cfg).map(|_| Outcome::Done),
        Cmd::ArchiveGet => archive_get::run(cfg),
        Cmd::Remote => remote::run(cfg).map(|_| Outcome::Done),
        Cmd::Version => {
            println!("pg_backrest {}", crate::VERSION);
            Ok(Outcome::Done)
        }
        Cmd::Help => {
            let text = match cfg.args.first() {
                None => help::general(crate::VERSION),
                Some(name) => help::command(
                    Cmd::from_name(name)
                        .filter(|c| !c.def().hidden)
                        .ok_or_else(|| {
                            Error::config(format!("invalid command '{name}'"))
                                .with_hint("see 'pg_backrest help' for the list of commands")
                        })?,
                ),
            };
            print!("{text}");
            Ok(Outcome::Done)
        }
        Cmd::Backup => backup::run(cfg).map(|_| Outcome::Done),
        Cmd::Restore => restore::run(cfg).map(|_| Outcome::Done),
        Cmd::Info => info::run(cfg).map(|_| Outcome::Done),
        Cmd::Verify => verify::run(cfg).map(|_| Outcome::Done),
        Cmd::Drill => drill::run(cfg).map(|_| Outcome::Done),
        Cmd::Expire => Err(Error::internal(
            "unimplemented command passed the table check",
        )),
    }
}

/// A path argument from PostgreSQL (%p). Relative paths are relative to the working
/// directory, which PostgreSQL sets to the data directory of the cluster running the command.
/// That is not pg1-path when a restored copy recovers through a config written for the
/// original cluster, so pg1-path must never be used here.
pub fn pg_relative_path(arg: &str) -> PathBuf {
    let p = Path::new(arg);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(p),
        Err(_) => p.to_path_buf(),
    }
}
