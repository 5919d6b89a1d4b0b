//! Where the repository is, resolved once from the options, and the one place a command
//! opens it. Local, remote or S3 is decided here and nowhere else; the storage drivers below
//! get a path, an SSH target or resolved S3 options, and never see the [`Config`].

use std::path::PathBuf;

use crate::config::hosts::{self, Host};
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::parallel::Workers;
use crate::protocol::ssh::{RemoteCommand, SshTarget};
use crate::storage::posix::PosixStorage;
use crate::storage::remote::RemoteStorage;
use crate::storage::s3::{S3Credentials, S3Options, S3Storage, Secret, UriStyle};
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
    /// repo1-type=s3: a bucket, with repo1-path as the key prefix.
    S3(Box<S3Options>),
}

impl RepoLocation {
    pub fn resolve(cfg: &Config) -> Result<RepoLocation> {
        if cfg.str("repo1-type") == Some("s3") {
            Ok(RepoLocation::S3(Box::new(s3_options(cfg)?)))
        } else if cfg.str("repo1-host").is_some() {
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
            RepoLocation::S3(opts) => Box::new(S3Storage::new(opts)?),
        })
    }

    /// process-max workers for this repository: a local one is shared by all of them; a
    /// remote one serves one stream per connection, so each worker gets its own.
    pub fn workers(&self, count: usize) -> Result<Workers> {
        let count = count.max(1);
        let own = match self {
            // One S3 client pools its connections for every worker.
            RepoLocation::Posix { .. } | RepoLocation::S3(_) => Vec::new(),
            RepoLocation::Remote { .. } => {
                (0..count).map(|_| self.open()).collect::<Result<_>>()?
            }
        };
        Workers::new(count, own)
    }
}

/// The driver's options from repo1-s3-*, repo1-storage-* and repo1-path. Which options are
/// required with which key type is checked when the configuration is resolved; what is
/// checked here is only what that check cannot see (the web identity's environment).
fn s3_options(cfg: &Config) -> Result<S3Options> {
    let get = |name: &str| cfg.str(name).map(String::from);
    let need = |name: &str| {
        get(name).ok_or_else(|| {
            Error::required(format!("option '{name}' is required when repo1-type is s3"))
        })
    };
    let credentials = match cfg.str("repo1-s3-key-type").unwrap_or("shared") {
        "auto" => S3Credentials::Auto {
            role: get("repo1-s3-role"),
        },
        "web-id" => {
            let (role, file) = match (
                std::env::var("AWS_ROLE_ARN"),
                std::env::var("AWS_WEB_IDENTITY_TOKEN_FILE"),
            ) {
                (Ok(r), Ok(f)) => (r, f),
                _ => {
                    return Err(Error::new(
                        Kind::OptionInvalid,
                        "option 'repo1-s3-key-type' is 'web-id' but 'AWS_ROLE_ARN' and \
                         'AWS_WEB_IDENTITY_TOKEN_FILE' are not set",
                    ))
                }
            };
            let token = std::fs::read_to_string(&file).map_err(|e| {
                Error::new(
                    Kind::FileRead,
                    format!("unable to read web identity token file '{file}': {e}"),
                )
            })?;
            S3Credentials::WebId {
                role,
                token: Secret::new(token.trim()),
                region: need("repo1-s3-region")?,
            }
        }
        _ => S3Credentials::Shared {
            key: need("repo1-s3-key")?,
            secret: Secret::new(need("repo1-s3-key-secret")?),
            token: get("repo1-s3-token").map(Secret::new),
        },
    };
    Ok(S3Options {
        bucket: need("repo1-s3-bucket")?,
        endpoint: need("repo1-s3-endpoint")?,
        storage_host: get("repo1-storage-host"),
        port: cfg
            .is_set("repo1-storage-port")
            .then(|| cfg.int("repo1-storage-port"))
            .flatten()
            .map(|p| p as u16),
        region: need("repo1-s3-region")?,
        uri_style: match cfg.str("repo1-s3-uri-style") {
            Some("path") => UriStyle::Path,
            _ => UriStyle::Host,
        },
        credentials,
        kms_key_id: get("repo1-s3-kms-key-id"),
        // Verification is on unless turned off in so many words.
        verify_tls: cfg.str("repo1-storage-verify-tls") != Some("n"),
        ca_file: cfg.path("repo1-storage-ca-file"),
        ca_path: cfg.path("repo1-storage-ca-path"),
        chunk_size: cfg
            .bytes("repo1-storage-upload-chunk-size")
            .unwrap_or(S3_DEFAULT_CHUNK) as usize,
        prefix: cfg.str("repo1-path").unwrap_or("/").to_string(),
        io_timeout: match cfg.seconds("io-timeout") {
            d if d.is_zero() => std::time::Duration::from_secs(60),
            d => d,
        },
    })
}

/// pgBackRest's part size for S3 (load.c: 5 MiB for s3, 4 MiB for the other object stores).
const S3_DEFAULT_CHUNK: u64 = 5 << 20;

/// The command's repository, opened.
pub fn open(cfg: &Config) -> Result<Box<dyn Storage>> {
    RepoLocation::resolve(cfg)?.open()
}

/// The command's process-max workers, with their repository connections.
pub fn workers(cfg: &Config) -> Result<Workers> {
    RepoLocation::resolve(cfg)?.workers(cfg.int("process-max").unwrap_or(1).max(1) as usize)
}
