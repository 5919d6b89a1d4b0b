//! Where the repository is, resolved once from the options, and the one place a command
//! opens it. Local or remote is decided here and nowhere else; the storage drivers below
//! get a path or an SSH target and never see the [`Config`].

use std::path::PathBuf;

use crate::config::hosts::{self, Host};
use crate::config::Config;
use crate::error::Result;
use crate::parallel::Workers;
use crate::protocol::ssh::{RemoteCommand, SshTarget};
use crate::storage::posix::PosixStorage;
use crate::storage::remote::RemoteStorage;
use crate::storage::Storage;

/// The repository of this command.
#[derive(Debug, Clone)]
pub enum RepoLocation {
    /// repo1-path on this host.
    Posix { path: PathBuf },
    /// repo1-host: a `pg_backrest remote` there serves its own repo1-path.
    Remote {
        target: SshTarget,
        command: RemoteCommand,
    },
}

impl RepoLocation {
    pub fn resolve(cfg: &Config) -> Result<RepoLocation> {
        if cfg.str("repo1-host").is_some() {
            Ok(RepoLocation::Remote {
                target: hosts::ssh_target(cfg, Host::Repo)?,
                command: hosts::remote_command(cfg, Host::Repo),
            })
        } else {
            Ok(RepoLocation::Posix {
                path: cfg.required_path("repo1-path")?,
            })
        }
    }

    /// A connection to the repository (a new one each call for a remote repository).
    pub fn open(&self) -> Result<Box<dyn Storage>> {
        Ok(match self {
            RepoLocation::Posix { path } => Box::new(PosixStorage::new(path.clone())),
            RepoLocation::Remote { target, command } => {
                Box::new(RemoteStorage::connect(target, command)?)
            }
        })
    }

    /// process-max workers for this repository: a local one is shared by all of them; a
    /// remote one serves one stream per connection, so each worker gets its own.
    pub fn workers(&self, count: usize) -> Result<Workers> {
        let count = count.max(1);
        let own = match self {
            RepoLocation::Posix { .. } => Vec::new(),
            RepoLocation::Remote { .. } => {
                (0..count).map(|_| self.open()).collect::<Result<_>>()?
            }
        };
        Workers::new(count, own)
    }
}

/// The command's repository, opened.
pub fn open(cfg: &Config) -> Result<Box<dyn Storage>> {
    RepoLocation::resolve(cfg)?.open()
}

/// The command's process-max workers, with their repository connections.
pub fn workers(cfg: &Config) -> Result<Workers> {
    RepoLocation::resolve(cfg)?.workers(cfg.int("process-max").unwrap_or(1).max(1) as usize)
}
