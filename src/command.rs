//! The dispatcher: takes the lock the command table names, runs the command's hooks around
//! it, runs the command, and reports. Each command is a function from the resolved
//! [`Config`] to a [`Result`] in its own file.
//!
//! Order: lock, stop file check, start hook, command (a backup then expires under the same lock), success or
//! failure hook, unlock. The start hook runs once the lock is held, so it is serialized like
//! the command and can still stop it before it changes anything; the failure hook runs for
//! every failure, a lock that could not be taken or a start hook that aborted included, so
//! that a scheduler hears about each one.

pub mod annotate;
pub mod archive_get;
pub mod archive_push;
pub mod backup;
pub mod check;
pub mod drill;
pub mod expire;
pub mod info;
pub mod remote;
pub mod repo_get;
pub mod repo_ls;
pub mod restore;
pub mod stanza_create;
pub mod stanza_delete;
pub mod stanza_upgrade;
pub mod start;
pub mod stop;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::config::{help, Cmd, Config, LockType, Role};
use crate::error::{Error, Kind, Result};
use crate::hook::{self, Point, RunFacts};
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
            Kind::FeatureNotSupported,
            format!(
                "command '{}' is not available in pg_backrest {} yet",
                def.name,
                crate::VERSION
            ),
        ));
    }
    let mut facts = RunFacts {
        // restore, drill and expire name their backup up front when --set picks one.
        backup_label: cfg.str("set").filter(|s| *s != "latest").map(String::from),
        backup_type: None,
    };
    // The owner check comes before the lock: a lock path created by the wrong user is
    // itself a takeover.
    let lock = if def.writes_repo {
        crate::repo::RepoLocation::resolve(cfg).and_then(|location| match location {
            crate::repo::RepoLocation::Posix { path } => {
                crate::storage::posix::check_owner(&path, "repository").and_then(|_| take_lock(cfg))
            }
            // On the repository host, its storage checks the owner of each directory it
            // writes in; a bucket has no owner to check.
            crate::repo::RepoLocation::Remote { .. } | crate::repo::RepoLocation::S3(_) => {
                take_lock(cfg)
            }
        })
    } else {
        take_lock(cfg)
    };
    // A background worker runs no hooks of its own (its command's ran in the foreground)
    // and leaves when another worker holds the stanza's lock: that one serves.
    if cfg.role == Role::Async {
        return match lock {
            Err(e) if e.kind == Kind::LockAcquire => {
                crate::info!(
                    "another worker serves stanza '{}': {}",
                    cfg.stanza().unwrap_or(""),
                    e.message
                );
                Ok(Outcome::Done)
            }
            Err(e) => Err(e),
            Ok(_held) => stop::check(cfg)
                .and_then(|_| dispatch(cfg, &mut facts))
                .map_err(after_signal),
        };
    }
    let result = match &lock {
        Ok(_) => stop::check(cfg)
            .and_then(|_| hook::run(cfg, Point::Start, &facts, None))
            .and_then(|_| dispatch(cfg, &mut facts)),
        Err(e) => Err(e.clone()),
    };
    let result = result.map_err(after_signal);
    let (point, failure) = match &result {
        Ok(_) => (Point::Success, None),
        Err(e) => (Point::Failure, Some(e)),
    };
    if let Err(w) = hook::run(cfg, point, &facts, failure) {
        crate::warn!("{}", w.message);
    }
    drop(lock);
    result
}

/// The per-stanza lock the command table names, if any.
fn take_lock(cfg: &Config) -> Result<Option<lock::Lock>> {
    let def = cfg.command.def();
    // Asynchronous archiving: the worker holds the archive lock (as pgBackRest's), the
    // command PostgreSQL runs none, so that it never waits behind its own worker.
    let lock_type = match (cfg.command, cfg.role) {
        (Cmd::ArchivePush | Cmd::ArchiveGet, Role::Async) => LockType::Archive,
        (Cmd::ArchivePush | Cmd::ArchiveGet, Role::Default) if cfg.bool("archive-async") => {
            LockType::None
        }
        _ => def.lock,
    };
    match (lock_type, cfg.stanza()) {
        (LockType::None, _) | (_, None) => Ok(None),
        (lock_type, Some(stanza)) => cfg.required_path("lock-path").and_then(|path| {
            lock::acquire(
                &path,
                stanza,
                lock_type,
                def.name,
                cfg.seconds("lock-timeout"),
            )
        }),
    }
}

/// A command that failed after a signal arrived failed because of it, whatever broke first
/// (a Ctrl-C also ends the ssh processes of the terminal's process group, so a remote
/// connection may fail before the command reaches a check): the signal is what the user and
/// the failure hook are told, the other error goes to the log.
fn after_signal(e: Error) -> Error {
    match crate::signal::caught() {
        Some(name) if e.kind != Kind::Term => {
            crate::info!("after {name}, the command also failed with: {}", e.message);
            crate::signal::terminated(name)
        }
        _ => e,
    }
}

fn dispatch(cfg: &Config, facts: &mut RunFacts) -> Result<Outcome> {
    match cfg.command {
        Cmd::StanzaCreate => stanza_create::run(cfg).map(|_| Outcome::Done),
        Cmd::Check => check::run(cfg).map(|_| Outcome::Done),
        Cmd::ArchivePush => archive_push::run(cfg).map(|_| Outcome::Done),
        Cmd::ArchiveGet => archive_get::run(cfg),
        Cmd::Remote => remote::run(cfg).map(|_| Outcome::Done),
        Cmd::Version => {
            println!("{}", cfg.identity.version_line(crate::VERSION));
            Ok(Outcome::Done)
        }
        Cmd::Help => {
            let text = match cfg.args.first() {
                None => help::general(crate::VERSION, cfg.identity),
                Some(name) => help::command(
                    cfg.identity,
                    Cmd::from_name(name)
                        .filter(|c| !c.def().hidden)
                        .ok_or_else(|| {
                            Error::new(Kind::CommandInvalid, format!("invalid command '{name}'"))
                                .with_hint("see 'pg_backrest help' for the list of commands")
                        })?,
                ),
            };
            print!("{text}");
            Ok(Outcome::Done)
        }
        // As in pgBackRest, a successful backup ends with an expire under the same lock.
        // expire-auto=n leaves retention to a separate expire, as in pgBackRest.
        Cmd::Backup => backup::run(cfg, facts)
            .and_then(|_| {
                if cfg.bool("expire-auto") {
                    expire::after_backup(cfg)
                } else {
                    Ok(())
                }
            })
            .map(|_| Outcome::Done),
        Cmd::Expire => expire::run(cfg).map(|_| Outcome::Done),
        Cmd::Restore => restore::run(cfg).map(|_| Outcome::Done),
        Cmd::Info => info::run(cfg).map(|_| Outcome::Done),
        Cmd::Verify => verify::run(cfg).map(|_| Outcome::Done),
        Cmd::Drill => drill::run(cfg).map(|_| Outcome::Done),
        Cmd::Stop => stop::run(cfg).map(|_| Outcome::Done),
        Cmd::Start => start::run(cfg).map(|_| Outcome::Done),
        Cmd::StanzaUpgrade => stanza_upgrade::run(cfg).map(|_| Outcome::Done),
        Cmd::StanzaDelete => stanza_delete::run(cfg).map(|_| Outcome::Done),
        Cmd::RepoLs => repo_ls::run(cfg).map(|_| Outcome::Done),
        Cmd::RepoGet => repo_get::run(cfg),
        Cmd::Annotate => annotate::run(cfg).map(|_| Outcome::Done),
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
