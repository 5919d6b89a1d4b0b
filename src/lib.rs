//! pg_backrest: PostgreSQL WAL archiving and base backups, in the style of pgBackRest.
//!
//! Layout (each module's own docs say what it owns):
//! - [`config`]: the option and command tables and their resolution from CLI, env and INI
//! - [`command`]: the dispatcher and one file per command
//! - [`storage`]: one interface, posix and remote drivers
//! - [`protocol`]: the framed protocol over SSH that the remote driver speaks
//! - [`pipeline`]: the one copy pipeline (read, SHA-1, gzip, write)
//! - [`codec`]: pgBackRest's metadata file format (bytes, checksum), storage-free
//! - [`metafile`]: metadata files loaded and saved through storage, with their `.copy`
//! - [`info`], [`manifest`], [`repo`], [`label`]: the info files, the backup manifest, the
//!   repository's path layout, backup labels
//! - [`pg`]: WAL names and headers, the database connection
//! - [`lock`], [`hook`], [`log`], [`error`]: locks, hooks, logging, the error type and exit codes
//! - [`signal`]: SIGINT, SIGTERM and SIGHUP, caught so that every command ends cleaned up
// unsafe is denied everywhere but in the module that speaks zlib's interface
// (pipeline/gzip.rs) and the one that maps files to ask what the page cache holds
// (storage/scan.rs), each saying why; a new exception needs the same justification.
#![deny(unsafe_code)]

pub mod codec;
pub mod command;
pub mod config;
pub mod error;
pub mod hook;
pub mod info;
pub mod label;
pub mod lock;
pub mod log;
pub mod manifest;
pub mod metafile;
pub mod parallel;
pub mod pg;
pub mod pipeline;
pub mod progress;
pub mod protocol;
pub mod repo;
pub mod signal;
pub mod spool;
pub mod storage;

use command::Outcome;
use config::{Cmd, Config};

/// The version, from the VERSION file.
pub const VERSION: &str = env!("PGBR_BUILD_VERSION");

/// Runs one invocation and returns the process exit status.
pub fn main_exit_code() -> i32 {
    let cfg = match Config::from_process() {
        Ok(c) => c,
        Err(e) => {
            log::final_error(&e.render());
            return e.exit_code();
        }
    };
    init_logging(&cfg);
    for w in &cfg.warnings {
        warn!("{w}");
    }
    // Before the begin line, so that a command whose begin is logged already catches them.
    if let Err(e) = signal::catch() {
        log::final_error(&e.render());
        return e.exit_code();
    }
    let name = cfg.command.name();
    if log::enabled(log::Level::Info) {
        let opts: Vec<String> = cfg
            .non_default_options()
            .iter()
            .map(|(k, v)| format!("--{k}={v}"))
            .collect();
        let words: Vec<&str> = cfg
            .args
            .iter()
            .map(String::as_str)
            .chain(opts.iter().map(String::as_str))
            .collect();
        info!("{name} command begin {VERSION}: {}", words.join(" "));
    }
    match command::run(&cfg) {
        Ok(Outcome::Done) => {
            info!("{name} command end: completed successfully");
            0
        }
        Ok(Outcome::NotFound) => {
            info!("{name} command end: not found (exit 1)");
            1
        }
        Err(e) => {
            log::final_error(&e.render());
            e.exit_status(cfg.command, signal::caught_number())
        }
    }
}

fn init_logging(cfg: &Config) {
    let level = |name: &str| log::Level::parse(cfg.str(name).unwrap_or("off"));
    let quiet = matches!(
        cfg.command,
        Cmd::Version | Cmd::Help | Cmd::RepoLs | Cmd::RepoGet
    );
    // The background worker logs beside its command, as pgBackRest's
    // (`main-archive-push-async.log`).
    let suffix = match cfg.role {
        config::Role::Default => "",
        config::Role::Async => "-async",
    };
    let stem = match cfg.stanza() {
        Some(s) => format!("{s}-{}{suffix}", cfg.command.name()),
        None => format!("all-{}{suffix}", cfg.command.name()),
    };
    let log_path = cfg.path("log-path").unwrap_or_default();
    // repo-ls and repo-get print data on stdout (repo-get a file's bytes): like a JSON
    // document, nothing else may go there.
    let json_output =
        cfg.str("output") == Some("json") || matches!(cfg.command, Cmd::RepoLs | Cmd::RepoGet);
    log::init(&log::Settings {
        // stdout of the remote command is the protocol channel: nothing else may go there.
        // The same for info --output=json, a document for scripts: its warnings go to stderr.
        console: if cfg.command == Cmd::Remote || json_output {
            log::Level::Off
        } else {
            level("log-level-console")
        },
        // The remote's stderr is read only for its final error (pgBackRest runs its remotes
        // with log-level-stderr=error too).
        stderr: if cfg.command == Cmd::Remote {
            level("log-level-stderr").min(log::Level::Error)
        } else if json_output {
            level("log-level-stderr").max(log::Level::Warn)
        } else {
            level("log-level-stderr")
        },

        file: if quiet {
            log::Level::Off
        } else {
            level("log-level-file")
        },
        log_path: &log_path,
        file_stem: stem,
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn cargo_version_matches_the_version_file() {
        let file = include_str!("../VERSION").trim();
        assert_eq!(super::VERSION, file);
        assert_eq!(
            env!("CARGO_PKG_VERSION"),
            file,
            "update Cargo.toml's version to VERSION"
        );
    }
}
