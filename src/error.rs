//! The one error type of pg_backrest and the only place error kinds become exit codes.
//!
//! Policy: every failure a user can meet is an [`Error`] with a [`Kind`] (which decides the
//! process exit status), a lowercase message without a final period that names the path,
//! option or host concerned, and optionally a `HINT` telling the user what to do. The
//! dispatcher prints it as one line, `ERROR: [CODE]: message HINT: ...`, on stderr and in
//! the log. Exit status 1 is reserved for archive-get's "segment not in the archive", which
//! is not an error at all and never travels as an [`Error`].
//!
//! Kinds survive the remote protocol: a remote failure is re-raised locally with the same
//! kind, so a checksum mismatch on the repository host exits with the integrity code on the
//! database host too.

use std::fmt;
use std::path::Path;

/// What went wrong, coarse enough to be a stable exit code that scripts can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad command line, environment or config file: fix the configuration.
    Config,
    /// A lock is held by another process.
    LockHeld,
    /// A hook aborted the command.
    HookAborted,
    /// SSH or the remote pg_backrest failed or stopped answering.
    Remote,
    /// The database could not be reached or refused a query.
    Database,
    /// The repository disagrees with itself or with the cluster: checksum mismatch,
    /// system-id or version mismatch, different WAL already archived, damaged info file.
    Integrity,
    /// The stanza has no archive.info/backup.info in the repository: run stanza-create.
    RepoMissing,
    /// A file could not be read or written.
    FileIo,
    /// A WAL file is malformed (bad name, bad page header, wrong size).
    WalFormat,
    /// A wait ran out (archive-timeout, io-timeout on a local operation).
    Timeout,
    /// A command exists in the contract but this build does not have it yet.
    NotImplemented,
    /// SIGINT, SIGTERM or SIGHUP stopped the command (which cleaned up after itself).
    Terminated,
    /// A bug in pg_backrest.
    Internal,
    /// A stop file (`pg_backrest stop` or `pgbackrest stop`) forbids the command: run `start`.
    Stop,
    /// PostgreSQL runs where the command needs it shut down (stanza-delete without --force).
    PgRunning,
    /// The backup set named does not exist or cannot be used (annotate --set).
    BackupSetInvalid,
    /// A positional argument is invalid (a repository path of repo-ls or repo-get).
    ParamInvalid,
}

impl Kind {
    pub const ALL: [Kind; 17] = [
        Kind::Config,
        Kind::LockHeld,
        Kind::HookAborted,
        Kind::Remote,
        Kind::Database,
        Kind::Integrity,
        Kind::RepoMissing,
        Kind::FileIo,
        Kind::WalFormat,
        Kind::Timeout,
        Kind::NotImplemented,
        Kind::Terminated,
        Kind::Internal,
        Kind::Stop,
        Kind::PgRunning,
        Kind::BackupSetInvalid,
        Kind::ParamInvalid,
    ];

    /// The process exit status. Documented in docs/exit-codes.md; never reuse a number.
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Config => 31,
            Kind::LockHeld => 50,
            Kind::HookAborted => 61,
            Kind::Remote => 57,
            Kind::Database => 56,
            Kind::Integrity => 44,
            Kind::RepoMissing => 55,
            Kind::FileIo => 39,
            Kind::WalFormat => 40,
            Kind::Timeout => 82,
            Kind::NotImplemented => 32,
            Kind::Terminated => 63,
            Kind::Internal => 25,
            // pgBackRest's StopError, PgRunningError, BackupSetInvalidError and
            // ParamInvalidError: scripts written for pgBackRest test these numbers.
            Kind::Stop => 62,
            Kind::PgRunning => 38,
            Kind::BackupSetInvalid => 75,
            Kind::ParamInvalid => 96,
        }
    }

    /// Stable name used on the wire of the remote protocol.
    pub fn wire_name(self) -> &'static str {
        match self {
            Kind::Config => "config",
            Kind::LockHeld => "lock-held",
            Kind::HookAborted => "hook-aborted",
            Kind::Remote => "remote",
            Kind::Database => "database",
            Kind::Integrity => "integrity",
            Kind::RepoMissing => "repo-missing",
            Kind::FileIo => "file-io",
            Kind::WalFormat => "wal-format",
            Kind::Timeout => "timeout",
            Kind::NotImplemented => "not-implemented",
            Kind::Terminated => "terminated",
            Kind::Internal => "internal",
            Kind::Stop => "stop",
            Kind::PgRunning => "pg-running",
            Kind::BackupSetInvalid => "backup-set-invalid",
            Kind::ParamInvalid => "param-invalid",
        }
    }

    pub fn from_wire_name(name: &str) -> Kind {
        Kind::ALL
            .into_iter()
            .find(|k| k.wire_name() == name)
            .unwrap_or(Kind::Remote)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    pub hint: Option<String>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    pub fn config(message: impl Into<String>) -> Error {
        Error::new(Kind::Config, message)
    }

    pub fn integrity(message: impl Into<String>) -> Error {
        Error::new(Kind::Integrity, message)
    }

    pub fn remote(message: impl Into<String>) -> Error {
        Error::new(Kind::Remote, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(Kind::Internal, message)
    }

    /// A file-system failure on `path`, phrased as "unable to <action> '<path>': <os error>".
    pub fn io(action: &str, path: &Path, err: std::io::Error) -> Error {
        Error::new(
            Kind::FileIo,
            format!("unable to {action} '{}': {err}", path.display()),
        )
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// Prefix the message with what the caller was doing, keeping kind and hint.
    pub fn context(mut self, what: impl fmt::Display) -> Error {
        self.message = format!("{what}: {}", self.message);
        self
    }

    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }

    /// The process exit status when this error ends `command` after signal number `signal`
    /// was caught. One exception to [`Error::exit_code`]: archive-get runs as PostgreSQL's
    /// restore_command, which takes any plain failure for "not in the archive" (and may end
    /// recovery there) but shuts down on a command ended by a signal. A signal that stops
    /// archive-get therefore exits with 128 + its number, as a shell reports a killed command;
    /// the ERROR line still carries the code of [`Kind::Terminated`].
    pub fn exit_status(&self, command: crate::config::Cmd, signal: Option<i32>) -> i32 {
        match (self.kind, command, signal) {
            (Kind::Terminated, crate::config::Cmd::ArchiveGet, Some(n)) => 128 + n,
            _ => self.exit_code(),
        }
    }

    /// The single line printed on stderr and in the log.
    pub fn render(&self) -> String {
        let mut line = format!("ERROR: [{:03}]: {}", self.exit_code(), self.message);
        if let Some(hint) = &self.hint {
            line.push_str(" HINT: ");
            line.push_str(hint);
        }
        line
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_never_one() {
        let kinds = Kind::ALL;
        let mut codes: Vec<i32> = kinds.iter().map(|k| k.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains(&0) && !codes.contains(&1));
        for k in kinds {
            assert_eq!(Kind::from_wire_name(k.wire_name()), k);
        }
    }

    #[test]
    fn a_signal_ends_archive_get_as_a_killed_restore_command() {
        use crate::config::Cmd;
        let term = Error::new(Kind::Terminated, "terminated by signal SIGTERM");
        assert_eq!(term.exit_status(Cmd::ArchiveGet, Some(15)), 143);
        assert_eq!(term.exit_status(Cmd::ArchiveGet, Some(2)), 130);
        assert_eq!(term.exit_status(Cmd::Backup, Some(15)), 63);
        assert_eq!(term.exit_status(Cmd::ArchivePush, Some(15)), 63);
        let other = Error::integrity("checksum mismatch");
        assert_eq!(other.exit_status(Cmd::ArchiveGet, Some(15)), 44);
        assert_eq!(other.exit_status(Cmd::ArchiveGet, None), 44);
    }

    #[test]
    fn render_is_one_error_line_with_optional_hint() {
        let e = Error::config("option 'x' is bad").with_hint("fix it");
        assert_eq!(e.render(), "ERROR: [031]: option 'x' is bad HINT: fix it");
    }
}
