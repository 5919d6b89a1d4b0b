//! The one error type of pg_backrest and the only place error kinds become exit codes.
//!
//! Policy: every failure a user can meet is an [`Error`] with a [`Kind`] (which decides the
//! process exit status), a lowercase message without a final period that names the path,
//! option or host concerned, and optionally a `HINT` telling the user what to do. The
//! dispatcher prints it as one line, `ERROR: [CODE]: message HINT: ...`, on stderr and in
//! the log. Exit status 1 is reserved for archive-get's "segment not in the archive", which
//! is not an error at all and never travels as an [`Error`].
//!
//! The kinds are pgBackRest's error types with pgBackRest's codes: a condition pgBackRest
//! also detects exits with the code pgBackRest gives it, so monitoring and scripts written
//! for pgBackRest keep working. The few conditions pgBackRest has no type for (hooks, drill,
//! verify's verdict) use codes pgBackRest leaves unused.
//!
//! Kinds survive the remote protocol: a remote failure is re-raised locally with the same
//! kind, so a checksum mismatch on the repository host exits with the same code on the
//! database host too.

use std::fmt;
use std::path::Path;

/// What went wrong: pgBackRest's error types (its `build/error.yaml`, with the same codes), so
/// a script written for pgBackRest's exit codes reads ours the same way, plus a few conditions
/// pgBackRest has no type for, on codes it does not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A bug in pg_backrest: a state the code should never reach.
    Assert,
    Checksum,
    Config,
    FileInvalid,
    Format,
    CommandRequired,
    OptionInvalid,
    OptionInvalidValue,
    OptionRequired,
    PgRunning,
    /// SSH or the remote pg_backrest failed, stopped answering or broke the protocol.
    Protocol,
    PathNotEmpty,
    FileOpen,
    FileRead,
    ParamRequired,
    ArchiveMismatch,
    ArchiveDuplicate,
    VersionNotSupported,
    PathCreate,
    CommandInvalid,
    HostConnect,
    LockAcquire,
    BackupMismatch,
    FileSync,
    PathOpen,
    PathSync,
    FileMissing,
    DbConnect,
    DbQuery,
    DbMismatch,
    FileRemove,
    PathRemove,
    Stop,
    /// SIGINT, SIGTERM or SIGHUP stopped the command (which cleaned up after itself).
    Term,
    FileWrite,
    FeatureNotSupported,
    ArchiveCommandInvalid,
    LinkExpected,
    LinkDestination,
    HostInvalid,
    PathMissing,
    FileMove,
    BackupSetInvalid,
    TablespaceMap,
    LinkMap,
    FileClose,
    DbMissing,
    DbInvalid,
    ArchiveTimeout,
    FileMode,
    ArchiveDisabled,
    FileOwner,
    UserMissing,
    FileExists,
    Crypto,
    ParamInvalid,
    PathClose,
    FileInfo,
    JsonFormat,
    Kernel,
    Service,
    Execute,
    RepoInvalid,
    Command,
    Access,
    Clock,
    Runtime,
    Unknown,
    /// Ours: a start hook failed or timed out, so the command did not run.
    HookAborted,
    /// Ours: verify found problems (pgBackRest's verify exits 0 and only reports them).
    VerifyFailed,
    /// Ours: the drill copy did not start, failed a query or did not recover.
    DrillFailed,
    /// Ours: pg_amcheck found damage in the drill copy.
    DrillDamaged,
    /// Ours: the drill copy did not reach its target within drill-timeout.
    DrillTimeout,
}

/// Every kind with its exit code and its name: pgBackRest's name for its own types (also the
/// name that travels over our remote protocol). The one place kinds become numbers.
const TABLE: &[(Kind, i32, &str)] = &[
    (Kind::Assert, 25, "assert"),
    (Kind::Checksum, 26, "checksum"),
    (Kind::Config, 27, "config"),
    (Kind::FileInvalid, 28, "file-invalid"),
    (Kind::Format, 29, "format"),
    (Kind::CommandRequired, 30, "command-required"),
    (Kind::OptionInvalid, 31, "option-invalid"),
    (Kind::OptionInvalidValue, 32, "option-invalid-value"),
    (Kind::OptionRequired, 37, "option-required"),
    (Kind::PgRunning, 38, "pg-running"),
    (Kind::Protocol, 39, "protocol"),
    (Kind::PathNotEmpty, 40, "path-not-empty"),
    (Kind::FileOpen, 41, "file-open"),
    (Kind::FileRead, 42, "file-read"),
    (Kind::ParamRequired, 43, "param-required"),
    (Kind::ArchiveMismatch, 44, "archive-mismatch"),
    (Kind::ArchiveDuplicate, 45, "archive-duplicate"),
    (Kind::VersionNotSupported, 46, "version-not-supported"),
    (Kind::PathCreate, 47, "path-create"),
    (Kind::CommandInvalid, 48, "command-invalid"),
    (Kind::HostConnect, 49, "host-connect"),
    (Kind::LockAcquire, 50, "lock-acquire"),
    (Kind::BackupMismatch, 51, "backup-mismatch"),
    (Kind::FileSync, 52, "file-sync"),
    (Kind::PathOpen, 53, "path-open"),
    (Kind::PathSync, 54, "path-sync"),
    (Kind::FileMissing, 55, "file-missing"),
    (Kind::DbConnect, 56, "db-connect"),
    (Kind::DbQuery, 57, "db-query"),
    (Kind::DbMismatch, 58, "db-mismatch"),
    (Kind::FileRemove, 60, "file-remove"),
    (Kind::PathRemove, 61, "path-remove"),
    (Kind::Stop, 62, "stop"),
    (Kind::Term, 63, "term"),
    (Kind::FileWrite, 64, "file-write"),
    (Kind::FeatureNotSupported, 67, "feature-not-supported"),
    (Kind::ArchiveCommandInvalid, 68, "archive-command-invalid"),
    (Kind::LinkExpected, 69, "link-expected"),
    (Kind::LinkDestination, 70, "link-destination"),
    (Kind::HostInvalid, 72, "host-invalid"),
    (Kind::PathMissing, 73, "path-missing"),
    (Kind::FileMove, 74, "file-move"),
    (Kind::BackupSetInvalid, 75, "backup-set-invalid"),
    (Kind::TablespaceMap, 76, "tablespace-map"),
    (Kind::LinkMap, 78, "link-map"),
    (Kind::FileClose, 79, "file-close"),
    (Kind::DbMissing, 80, "db-missing"),
    (Kind::DbInvalid, 81, "db-invalid"),
    (Kind::ArchiveTimeout, 82, "archive-timeout"),
    (Kind::FileMode, 83, "file-mode"),
    (Kind::ArchiveDisabled, 87, "archive-disabled"),
    (Kind::FileOwner, 88, "file-owner"),
    (Kind::UserMissing, 89, "user-missing"),
    (Kind::FileExists, 93, "file-exists"),
    (Kind::Crypto, 95, "crypto"),
    (Kind::ParamInvalid, 96, "param-invalid"),
    (Kind::PathClose, 97, "path-close"),
    (Kind::FileInfo, 98, "file-info"),
    (Kind::JsonFormat, 99, "json-format"),
    (Kind::Kernel, 100, "kernel"),
    (Kind::Service, 101, "service"),
    (Kind::Execute, 102, "execute"),
    (Kind::RepoInvalid, 103, "repo-invalid"),
    (Kind::Command, 104, "command"),
    (Kind::Access, 105, "access"),
    (Kind::Clock, 106, "clock"),
    (Kind::Runtime, 122, "runtime"),
    (Kind::Unknown, 125, "unknown"),
    // Ours, on codes pgBackRest (2.45 to 2.59) leaves unused.
    (Kind::HookAborted, 90, "hook-aborted"),
    (Kind::VerifyFailed, 91, "verify-failed"),
    (Kind::DrillFailed, 92, "drill-failed"),
    (Kind::DrillDamaged, 86, "drill-damaged"),
    (Kind::DrillTimeout, 85, "drill-timeout"),
];

/// The former coarse kinds, kept as names so code written against them still compiles; each
/// stands for the pgBackRest type closest to what it covered. New code names the precise kind.
#[allow(non_upper_case_globals)]
impl Kind {
    pub const LockHeld: Kind = Kind::LockAcquire;
    pub const Remote: Kind = Kind::Protocol;
    pub const Database: Kind = Kind::DbConnect;
    pub const Integrity: Kind = Kind::Format;
    pub const RepoMissing: Kind = Kind::FileMissing;
    pub const FileIo: Kind = Kind::FileRead;
    pub const WalFormat: Kind = Kind::Format;
    pub const Timeout: Kind = Kind::ArchiveTimeout;
    pub const NotImplemented: Kind = Kind::FeatureNotSupported;
    pub const Terminated: Kind = Kind::Term;
    pub const Internal: Kind = Kind::Assert;
}

impl Kind {
    /// Every kind, in table order.
    pub fn all() -> impl Iterator<Item = Kind> {
        TABLE.iter().map(|(k, _, _)| *k)
    }

    fn entry(self) -> &'static (Kind, i32, &'static str) {
        TABLE
            .iter()
            .find(|(k, _, _)| *k == self)
            .expect("every kind is in TABLE")
    }

    /// The process exit status. Documented in docs/exit-codes.md; never reuse a number.
    pub fn exit_code(self) -> i32 {
        self.entry().1
    }

    /// Stable name used on the wire of the remote protocol: pgBackRest's name of the type.
    pub fn wire_name(self) -> &'static str {
        self.entry().2
    }

    /// The kind a remote peer named. Names of the former coarse kinds (a peer of an older
    /// pg_backrest) map to their closest type; an unknown name is a protocol failure.
    pub fn from_wire_name(name: &str) -> Kind {
        if let Some((k, _, _)) = TABLE.iter().find(|(_, _, n)| *n == name) {
            return *k;
        }
        match name {
            "lock-held" => Kind::LockAcquire,
            "database" => Kind::DbConnect,
            "integrity" | "wal-format" => Kind::Format,
            "repo-missing" => Kind::FileMissing,
            "file-io" => Kind::FileRead,
            "timeout" => Kind::ArchiveTimeout,
            "not-implemented" => Kind::FeatureNotSupported,
            "terminated" => Kind::Term,
            "internal" => Kind::Assert,
            _ => Kind::Protocol,
        }
    }

    /// The kind of a failed file-system call, from what it was doing (the `action` of
    /// [`Error::io`]) and the system error, as pgBackRest's storage layer types them: a
    /// missing file is FileMissing whatever was tried, a missing directory being listed is
    /// PathMissing, and otherwise the operation decides.
    pub fn of_io(action: &str, err: &std::io::Error) -> Kind {
        use std::io::ErrorKind as E;
        let dir = action.contains("directory") || action.contains("path") || action == "list";
        if err.kind() == E::NotFound {
            return if dir {
                Kind::PathMissing
            } else {
                Kind::FileMissing
            };
        }
        let verb = action.split(' ').next().unwrap_or("");
        match verb {
            "create" if dir => Kind::PathCreate,
            "list" => Kind::PathOpen,
            "remove" if dir => Kind::PathRemove,
            "remove" => Kind::FileRemove,
            "sync" if dir => Kind::PathSync,
            "sync" => Kind::FileSync,
            "rename" | "move" => Kind::FileMove,
            "set" if action.starts_with("set mode") => Kind::FileMode,
            "change" if action.starts_with("change owner") => Kind::FileOwner,
            "read" | "seek" => Kind::FileRead,
            "write" | "extend" | "set" => Kind::FileWrite,
            "stat" | "inspect" => Kind::FileOpen,
            "run" | "find" => Kind::Execute,
            "lock" => Kind::LockAcquire,
            "close" => Kind::FileClose,
            // open, create (a file), create link and the like
            _ => Kind::FileOpen,
        }
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

    /// A bad option, command line, environment variable or config file entry (pgBackRest's
    /// option-invalid); see also [`Error::invalid_value`] and [`Error::required`].
    pub fn config(message: impl Into<String>) -> Error {
        Error::new(Kind::OptionInvalid, message)
    }

    /// An option whose value is not one it can take (pgBackRest's option-invalid-value).
    pub fn invalid_value(message: impl Into<String>) -> Error {
        Error::new(Kind::OptionInvalidValue, message)
    }

    /// A required option that is not set (pgBackRest's option-required).
    pub fn required(message: impl Into<String>) -> Error {
        Error::new(Kind::OptionRequired, message)
    }

    /// Repository content that is not what it must be: a damaged or tampered info file,
    /// manifest or stored file (pgBackRest's format error).
    pub fn integrity(message: impl Into<String>) -> Error {
        Error::new(Kind::Format, message)
    }

    /// Content whose checksum is not the recorded one.
    pub fn checksum(message: impl Into<String>) -> Error {
        Error::new(Kind::Checksum, message)
    }

    /// SSH or the remote pg_backrest failed (pgBackRest's protocol error).
    pub fn remote(message: impl Into<String>) -> Error {
        Error::new(Kind::Protocol, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(Kind::Assert, message)
    }

    /// A file-system failure on `path`, phrased as "unable to <action> '<path>': <os error>",
    /// of the kind [`Kind::of_io`] gives the action and the system error.
    pub fn io(action: &str, path: &Path, err: std::io::Error) -> Error {
        Error::new(
            Kind::of_io(action, &err),
            format!("unable to {action} '{}': {err}", path.display()),
        )
    }

    /// The same error as another kind: for a shared check whose caller knows which of
    /// pgBackRest's types the failure is in its context.
    pub fn with_kind(mut self, kind: Kind) -> Error {
        self.kind = kind;
        self
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
    /// the ERROR line still carries the code of [`Kind::Term`].
    pub fn exit_status(&self, command: crate::config::Cmd, signal: Option<i32>) -> i32 {
        match (self.kind, command, signal) {
            (Kind::Term, crate::config::Cmd::ArchiveGet, Some(n)) => 128 + n,
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
        let kinds: Vec<Kind> = Kind::all().collect();
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
    fn codes_are_pgbackrests() {
        for (kind, code, name) in [
            (Kind::Assert, 25, "assert"),
            (Kind::Checksum, 26, "checksum"),
            (Kind::OptionInvalid, 31, "option-invalid"),
            (Kind::OptionInvalidValue, 32, "option-invalid-value"),
            (Kind::OptionRequired, 37, "option-required"),
            (Kind::Protocol, 39, "protocol"),
            (Kind::ArchiveMismatch, 44, "archive-mismatch"),
            (Kind::ArchiveDuplicate, 45, "archive-duplicate"),
            (Kind::LockAcquire, 50, "lock-acquire"),
            (Kind::FileMissing, 55, "file-missing"),
            (Kind::DbConnect, 56, "db-connect"),
            (Kind::DbQuery, 57, "db-query"),
            (Kind::Term, 63, "term"),
            (Kind::ArchiveTimeout, 82, "archive-timeout"),
            (Kind::RepoInvalid, 103, "repo-invalid"),
        ] {
            assert_eq!((kind.exit_code(), kind.wire_name()), (code, name));
        }
        // Peers of the former coarse kinds still map to a kind.
        assert_eq!(Kind::from_wire_name("lock-held"), Kind::LockAcquire);
        assert_eq!(Kind::from_wire_name("no-such-kind"), Kind::Protocol);
    }

    #[test]
    fn io_errors_are_typed_by_action_and_cause() {
        use std::io::{Error as IoError, ErrorKind as E};
        let k = |action: &str, e: E| Kind::of_io(action, &IoError::from(e));
        assert_eq!(k("open", E::NotFound), Kind::FileMissing);
        assert_eq!(k("open", E::PermissionDenied), Kind::FileOpen);
        assert_eq!(k("read", E::Other), Kind::FileRead);
        assert_eq!(k("write", E::Other), Kind::FileWrite);
        assert_eq!(k("list", E::NotFound), Kind::PathMissing);
        assert_eq!(k("list", E::PermissionDenied), Kind::PathOpen);
        assert_eq!(k("create directory", E::PermissionDenied), Kind::PathCreate);
        assert_eq!(k("create", E::PermissionDenied), Kind::FileOpen);
        assert_eq!(k("remove directory", E::Other), Kind::PathRemove);
        assert_eq!(k("rename temp file to", E::Other), Kind::FileMove);
        assert_eq!(k("set mode of", E::Other), Kind::FileMode);
    }

    #[test]
    fn a_signal_ends_archive_get_as_a_killed_restore_command() {
        use crate::config::Cmd;
        let term = Error::new(Kind::Term, "terminated by signal SIGTERM");
        assert_eq!(term.exit_status(Cmd::ArchiveGet, Some(15)), 143);
        assert_eq!(term.exit_status(Cmd::ArchiveGet, Some(2)), 130);
        assert_eq!(term.exit_status(Cmd::Backup, Some(15)), 63);
        assert_eq!(term.exit_status(Cmd::ArchivePush, Some(15)), 63);
        let other = Error::checksum("checksum mismatch");
        assert_eq!(other.exit_status(Cmd::ArchiveGet, Some(15)), 26);
        assert_eq!(other.exit_status(Cmd::ArchiveGet, None), 26);
    }

    #[test]
    fn render_is_one_error_line_with_optional_hint() {
        let e = Error::config("option 'x' is bad").with_hint("fix it");
        assert_eq!(e.render(), "ERROR: [031]: option 'x' is bad HINT: fix it");
    }
}
