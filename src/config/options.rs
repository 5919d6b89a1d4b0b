//! The option table: every option pg_backrest accepts, declared once with its type,
//! default, where it may be set, the commands it applies to and its help text. Parsing,
//! validation, `help` and the sample-config test all read this table.
//!
//! Adding an option is one row here plus a test that uses it.

use super::commands::Cmd;

/// The value type of an option, which decides how a string from any source is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptKind {
    Str,
    /// A path; must be absolute.
    Path,
    Int {
        min: i64,
        max: i64,
    },
    /// `y`/`n` in config files and the environment, `--name`/`--no-name` on the command line.
    Bool,
    Enum(&'static [&'static str]),
    /// An enum whose allowed values depend on the command (pgBackRest's per-command
    /// allow-lists: `type` is full/diff/incr for backup, a recovery type for restore). A
    /// value is checked against the command's list as soon as the command is known, before
    /// anything is loaded.
    CmdEnum(&'static [(Cmd, &'static [&'static str])]),
    /// Seconds, as pgBackRest's `time` options: a decimal number (`0.5`, `1e2`) kept to the
    /// millisecond (truncated, as pgBackRest), within `min_ms..=max_ms`.
    Time {
        min_ms: i64,
        max_ms: i64,
    },
    /// A size in bytes as pgBackRest writes it: digits and an optional qualifier (`b`, `k`,
    /// `kb`, `kib`, `m`..., `p`, any case), powers of 1024 (pgBackRest's `128MiB`), within
    /// `min..=max` bytes.
    Size {
        min: u64,
        max: u64,
    },
    /// `KEY=/absolute/path`, repeatable: every occurrence adds one mapping.
    PathMap,
    /// A plain value, repeatable: every occurrence adds one item.
    List,
    /// `KEY=VALUE`, repeatable (pgBackRest's hash options); the value may be empty.
    KeyValue,
}

impl OptKind {
    /// Whether the option may be given more than once, each time adding an item.
    pub fn repeatable(self) -> bool {
        matches!(self, OptKind::PathMap | OptKind::List | OptKind::KeyValue)
    }
}

/// Where an option may be set. The command line and the environment can always carry an
/// option; the scope limits config-file sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Command line and environment only (per-invocation choices such as the stanza).
    CommandLine,
    /// Any config section.
    Global,
    /// Only stanza sections: it describes one cluster, so `[global]` cannot hold it.
    Stanza,
}

#[derive(Debug, Clone, Copy)]
pub struct OptDef {
    pub name: &'static str,
    pub kind: OptKind,
    pub default: Option<&'static str>,
    pub scope: Scope,
    /// `None`: every command except version/help.
    pub commands: Option<&'static [Cmd]>,
    /// Never written to logs or echoed back.
    pub secret: bool,
    /// pgBackRest's `secure`: a credential, refused on the command line, where `ps` would show
    /// it to every user of the host (config file and environment only). Implies `secret`.
    pub secure: bool,
    /// pgBackRest's `depend`: the option means something only when another one is set to one
    /// of these values. Otherwise it has no value (not even its default); set on the command
    /// line it is an error, set elsewhere a warning (the file may serve another setup).
    pub depend: Option<Depend>,
    /// Required whenever its `depend` holds (pgBackRest's `required` of an option without a
    /// default): pgBackRest's option-required naming the command.
    pub required: bool,
    pub help: &'static str,
}

/// See [`OptDef::depend`]. Options are checked in table order, so a `depend` names an option
/// earlier in the table (a unit test checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depend {
    pub option: &'static str,
    pub values: &'static [&'static str],
}

const LOG_LEVELS: &[&str] = &["off", "error", "warn", "info", "detail", "debug", "trace"];

const REPO_CMDS: &[Cmd] = &[
    Cmd::StanzaCreate,
    Cmd::Check,
    Cmd::ArchivePush,
    Cmd::ArchiveGet,
    Cmd::Backup,
    Cmd::Expire,
    Cmd::Restore,
    Cmd::Info,
    Cmd::Verify,
    Cmd::Drill,
    Cmd::Remote,
    Cmd::StanzaUpgrade,
    Cmd::StanzaDelete,
    Cmd::RepoLs,
    Cmd::RepoGet,
    Cmd::Annotate,
];
const PG_CMDS: &[Cmd] = &[
    Cmd::StanzaCreate,
    Cmd::Check,
    Cmd::ArchivePush,
    Cmd::ArchiveGet,
    Cmd::Backup,
    Cmd::Restore,
    Cmd::Remote,
    Cmd::StanzaUpgrade,
    Cmd::StanzaDelete,
];
const DB_CMDS: &[Cmd] = &[
    Cmd::StanzaCreate,
    Cmd::Check,
    Cmd::Backup,
    Cmd::Remote,
    Cmd::StanzaUpgrade,
];
const PUSH_BACKUP: &[Cmd] = &[Cmd::ArchivePush, Cmd::Backup];
const BACKUP: &[Cmd] = &[Cmd::Backup];
const PG_HOST_CMDS: &[Cmd] = &[
    Cmd::StanzaCreate,
    Cmd::Check,
    Cmd::Backup,
    Cmd::StanzaUpgrade,
];
const BACKUP_EXPIRE: &[Cmd] = &[Cmd::Backup, Cmd::Expire];
const RESTORE: &[Cmd] = &[Cmd::Restore];
const RECOVERY: &[Cmd] = &[Cmd::Restore, Cmd::Drill];
const DRILL: &[Cmd] = &[Cmd::Drill];
const TIMEOUT_ARCHIVE: &[Cmd] = &[Cmd::Check, Cmd::Backup, Cmd::ArchivePush, Cmd::ArchiveGet];
const PARALLEL: &[Cmd] = &[
    Cmd::Backup,
    Cmd::Restore,
    Cmd::Verify,
    Cmd::Drill,
    Cmd::ArchivePush,
    Cmd::ArchiveGet,
];
const PUSH_GET: &[Cmd] = &[Cmd::ArchivePush, Cmd::ArchiveGet];
const PUSH: &[Cmd] = &[Cmd::ArchivePush];
const GET: &[Cmd] = &[Cmd::ArchiveGet];
const SET_CMDS: &[Cmd] = &[
    Cmd::Restore,
    Cmd::Info,
    Cmd::Drill,
    Cmd::Expire,
    Cmd::Annotate,
];
const EXPIRE: &[Cmd] = &[Cmd::Expire];
const FORCE_CMDS: &[Cmd] = &[Cmd::Restore, Cmd::Expire, Cmd::StanzaDelete, Cmd::Stop];
/// Commands that run hooks. The generated hook rows below follow this order, which
/// [`hook_option`] relies on and a unit test checks.
pub const HOOK_CMDS: &[Cmd] = &[
    Cmd::Backup,
    Cmd::Expire,
    Cmd::Restore,
    Cmd::Verify,
    Cmd::Drill,
    Cmd::Check,
    Cmd::StanzaCreate,
    Cmd::ArchivePush,
    Cmd::ArchiveGet,
];
const OUTPUT_CMDS: &[Cmd] = &[Cmd::Info, Cmd::Verify, Cmd::RepoLs];
// The administration commands' own options (stop, repo-ls, repo-get, annotate).
const REPO_LS: &[Cmd] = &[Cmd::RepoLs];
const REPO_GET: &[Cmd] = &[Cmd::RepoGet];
const ANNOTATION_CMDS: &[Cmd] = &[Cmd::Backup, Cmd::Annotate];
const TYPE_CMDS: &[Cmd] = &[Cmd::Backup, Cmd::Restore, Cmd::Drill];
const DELTA_CMDS: &[Cmd] = &[Cmd::Backup, Cmd::Restore];

macro_rules! opt {
    ($name:expr, $kind:expr, $default:expr, $scope:expr, $cmds:expr, $help:expr) => {
        OptDef {
            name: $name,
            kind: $kind,
            default: $default,
            scope: $scope,
            commands: $cmds,
            secret: false,
            secure: false,
            depend: None,
            required: false,
            help: $help,
        }
    };
}

/// pgBackRest's ranges of its time options (config.yaml's allow-range, in seconds there).
const fn seconds(min_ms: i64, max_s: i64) -> OptKind {
    OptKind::Time {
        min_ms,
        max_ms: max_s * 1000,
    }
}
/// archive-timeout: 0.1 to 86400 seconds.
const ARCHIVE_TIMEOUT: OptKind = seconds(100, 86400);
/// io-timeout: 0.1 to 3600 seconds.
const IO_TIMEOUT: OptKind = seconds(100, 3600);
/// db-timeout, protocol-timeout, and pg_backrest's own hook-timeout and drill-timeout:
/// 0.1 seconds to a week.
const LONG_TIMEOUT: OptKind = seconds(100, 7 * 86400);

/// A size option without a range of its own.
const ANY_SIZE: OptKind = OptKind::Size {
    min: 0,
    max: u64::MAX,
};

/// The repository types pg_backrest stores to. pgBackRest's others (azure, cifs, gcs) pass
/// validation and are refused when the configuration is resolved, naming where they were set
/// ([`super::pgbackrest::REFUSED_VALUES`]).
const REPO_TYPES: &[&str] = &["posix", "s3"];
const ON_S3: Depend = Depend {
    option: "repo1-type",
    values: &["s3"],
};
/// The S3 rows' common part (pgBackRest's `command: repo-type`, `depend: repo-type = s3`).
const S3: OptDef = OptDef {
    name: "",
    kind: OptKind::Str,
    default: None,
    scope: Scope::Global,
    commands: Some(REPO_CMDS),
    secret: false,
    secure: false,
    depend: Some(ON_S3),
    required: false,
    help: "",
};
/// The credentials of `repo1-s3-key-type=shared`.
const SHARED_KEY: OptDef = OptDef {
    secret: true,
    secure: true,
    depend: Some(Depend {
        option: "repo1-s3-key-type",
        values: &["shared"],
    }),
    ..S3
};
const KIB: u64 = 1024;

/// pgBackRest 2.45's S3 options (config.yaml), in dependency order.
const S3_OPTIONS: &[OptDef] = &[
    OptDef {
        name: "repo1-s3-bucket",
        required: true,
        help: "S3 bucket holding the repository",
        ..S3
    },
    OptDef {
        name: "repo1-s3-endpoint",
        required: true,
        help: "S3 endpoint host, optionally with :port (e.g. s3.eu-west-1.amazonaws.com)",
        ..S3
    },
    OptDef {
        name: "repo1-s3-region",
        required: true,
        help: "S3 region (e.g. eu-west-1), part of every request's signature",
        ..S3
    },
    OptDef {
        name: "repo1-s3-key-type",
        kind: OptKind::Enum(&["shared", "auto", "web-id"]),
        default: Some("shared"),
        help: "S3 credentials: shared (repo1-s3-key and -key-secret), auto (the instance's \
               role, from instance metadata) or web-id (AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE)",
        ..S3
    },
    OptDef {
        name: "repo1-s3-key",
        required: true,
        help: "S3 access key ID (config file or environment only)",
        ..SHARED_KEY
    },
    OptDef {
        name: "repo1-s3-key-secret",
        required: true,
        help: "S3 secret access key (config file or environment only)",
        ..SHARED_KEY
    },
    OptDef {
        name: "repo1-s3-token",
        help: "S3 session token of temporary credentials (config file or environment only)",
        ..SHARED_KEY
    },
    OptDef {
        name: "repo1-s3-role",
        depend: Some(Depend {
            option: "repo1-s3-key-type",
            values: &["auto"],
        }),
        help: "with repo1-s3-key-type=auto: the instance role to use (default: the one found)",
        ..S3
    },
    OptDef {
        name: "repo1-s3-kms-key-id",
        secret: true,
        help: "S3 server-side encryption with this KMS key",
        ..S3
    },
    OptDef {
        name: "repo1-s3-uri-style",
        kind: OptKind::Enum(&["host", "path"]),
        default: Some("host"),
        help: "S3 URI style: host (BUCKET.ENDPOINT) or path (ENDPOINT/BUCKET)",
        ..S3
    },
    OptDef {
        name: "repo1-storage-verify-tls",
        kind: OptKind::Bool,
        default: Some("y"),
        help: "verify the S3 server's TLS certificate",
        ..S3
    },
    OptDef {
        name: "repo1-storage-ca-file",
        help: "CA certificate file to verify the S3 server with (default: the system's)",
        ..S3
    },
    OptDef {
        name: "repo1-storage-ca-path",
        kind: OptKind::Path,
        help: "directory of CA certificates to verify the S3 server with",
        ..S3
    },
    OptDef {
        name: "repo1-storage-host",
        help: "host to connect to instead of the endpoint (the endpoint still signs requests)",
        ..S3
    },
    OptDef {
        name: "repo1-storage-port",
        kind: OptKind::Int { min: 1, max: 65535 },
        default: Some("443"),
        help: "S3 server port",
        ..S3
    },
    OptDef {
        name: "repo1-storage-upload-chunk-size",
        kind: OptKind::Size {
            min: 64 * KIB,
            max: KIB * KIB * KIB * KIB,
        },
        default: Some("5MiB"),
        help: "part size of S3 multipart uploads; a smaller file is one PUT",
        ..S3
    },
];

/// The backup types and the recovery types (restore's and drill's `type`).
const BACKUP_TYPES: &[&str] = &["full", "diff", "incr"];
const RECOVERY_TYPES: &[&str] = &[
    "default",
    "immediate",
    "time",
    "xid",
    "lsn",
    "name",
    "standby",
    "none",
];
const TYPE_VALUES: &[(Cmd, &[&str])] = &[
    (Cmd::Backup, BACKUP_TYPES),
    (Cmd::Restore, RECOVERY_TYPES),
    (Cmd::Drill, RECOVERY_TYPES),
];

/// Every option: the hand-written rows followed by the generated hook rows.
pub const OPTIONS: &[OptDef] = &ALL_OPTIONS;

const ALL_OPTIONS: [OptDef; BASE_OPTIONS.len() + S3_OPTIONS.len() + HOOK_OPTIONS.len()] =
    concat_options(&[BASE_OPTIONS, S3_OPTIONS, HOOK_OPTIONS]);

/// Joins option lists at compile time, so the table stays one constant slice.
const fn concat_options<const N: usize>(parts: &[&[OptDef]]) -> [OptDef; N] {
    let mut out = [parts[0][0]; N];
    let mut n = 0;
    let mut p = 0;
    while p < parts.len() {
        let mut i = 0;
        while i < parts[p].len() {
            out[n] = parts[p][i];
            n += 1;
            i += 1;
        }
        p += 1;
    }
    out
}

/// The three hook points, in the order a command meets them.
pub const HOOK_POINTS: [&str; 3] = ["start", "success", "failure"];

/// One `hook-COMMAND-POINT` row. Hook commands are secret: a shell line may carry a
/// password, so it is never echoed in the log's command line.
macro_rules! hook_opt {
    ($cmd:expr, $name:literal, $point:literal, $help:expr) => {
        OptDef {
            name: concat!("hook-", $name, "-", $point),
            kind: OptKind::Str,
            default: None,
            scope: Scope::Global,
            commands: Some(&[$cmd]),
            secret: true,
            secure: false,
            depend: None,
            required: false,
            help: $help,
        }
    };
}

/// The start, success and failure rows of each hooked command.
macro_rules! hook_opts {
    ($(($cmd:expr, $name:literal)),* $(,)?) => {
        &[$(
            hook_opt!($cmd, $name, "start",
                concat!("shell command run before ", $name, "; if it fails, ", $name, " does not run")),
            hook_opt!($cmd, $name, "success",
                concat!("shell command run after ", $name, " succeeded")),
            hook_opt!($cmd, $name, "failure",
                concat!("shell command run after ", $name, " failed")),
        )*]
    };
}

const HOOK_OPTIONS: &[OptDef] = hook_opts![
    (Cmd::Backup, "backup"),
    (Cmd::Expire, "expire"),
    (Cmd::Restore, "restore"),
    (Cmd::Verify, "verify"),
    (Cmd::Drill, "drill"),
    (Cmd::Check, "check"),
    (Cmd::StanzaCreate, "stanza-create"),
    (Cmd::ArchivePush, "archive-push"),
    (Cmd::ArchiveGet, "archive-get"),
];

/// The option naming `cmd`'s hook at `point` (one of [`HOOK_POINTS`]); `None` for commands
/// without hooks. Static names, so the hot path of archive-push allocates nothing.
pub fn hook_option(cmd: Cmd, point: &str) -> Option<&'static str> {
    let i = HOOK_CMDS.iter().position(|c| *c == cmd)?;
    let j = HOOK_POINTS.iter().position(|p| *p == point)?;
    Some(HOOK_OPTIONS[i * HOOK_POINTS.len() + j].name)
}

const BASE_OPTIONS: &[OptDef] =
    &[
        opt!(
            "config",
            OptKind::Path,
            Some("/etc/pg_backrest/pg_backrest.conf"),
            Scope::CommandLine,
            None,
            "config file; a missing default file is fine, a missing --config is an error"
        ),
        // pgBackRest's config locations (docs/configuration.md, "Where options come from").
        opt!(
            "config-include-path",
            OptKind::Path,
            Some("/etc/pg_backrest/conf.d"),
            Scope::CommandLine,
            None,
            "directory whose *.conf files are read after the config file"
        ),
        opt!(
            "config-path",
            OptKind::Path,
            Some("/etc/pg_backrest"),
            Scope::CommandLine,
            None,
            "base directory of the default config file and conf.d"
        ),
        opt!(
            "stanza",
            OptKind::Str,
            None,
            Scope::CommandLine,
            None,
            "name of the cluster's configuration section"
        ),
        // The database.
        opt!(
            "pg1-path",
            OptKind::Path,
            None,
            Scope::Stanza,
            Some(PG_CMDS),
            "PostgreSQL data directory"
        ),
        opt!(
            "pg1-port",
            OptKind::Int { min: 1, max: 65535 },
            Some("5432"),
            Scope::Stanza,
            Some(DB_CMDS),
            "PostgreSQL port"
        ),
        opt!(
            "pg1-socket-path",
            OptKind::Path,
            Some("/var/run/postgresql"),
            Scope::Stanza,
            Some(DB_CMDS),
            "directory of PostgreSQL's unix socket"
        ),
        opt!(
            "pg1-user",
            OptKind::Str,
            None,
            Scope::Stanza,
            Some(DB_CMDS),
            "database user (default: the current OS user)"
        ),
        opt!(
            "pg1-database",
            OptKind::Str,
            Some("postgres"),
            Scope::Stanza,
            Some(DB_CMDS),
            "database to connect to"
        ),
        opt!(
            "pg1-host",
            OptKind::Str,
            None,
            Scope::Stanza,
            Some(PG_HOST_CMDS),
            "the database is on this host, reached over SSH"
        ),
        opt!(
            "pg1-host-user",
            OptKind::Str,
            Some("postgres"),
            Scope::Stanza,
            Some(PG_HOST_CMDS),
            "SSH user on pg1-host"
        ),
        opt!(
            "pg1-host-port",
            OptKind::Int { min: 1, max: 65535 },
            Some("22"),
            Scope::Stanza,
            Some(PG_HOST_CMDS),
            "SSH port of pg1-host"
        ),
        opt!(
            "pg1-host-config",
            OptKind::Path,
            Some("/etc/pg_backrest/pg_backrest.conf"),
            Scope::Stanza,
            Some(PG_HOST_CMDS),
            "config file pg_backrest reads on pg1-host"
        ),
        opt!(
            "pg1-host-cmd",
            OptKind::Str,
            Some("pg_backrest"),
            Scope::Stanza,
            Some(PG_HOST_CMDS),
            "pg_backrest binary on pg1-host"
        ),
        // The repository.
        opt!(
            "repo1-path",
            OptKind::Path,
            Some("/var/lib/pg_backrest"),
            Scope::Global,
            Some(REPO_CMDS),
            "repository root"
        ),
        opt!(
            "repo1-type",
            OptKind::Enum(REPO_TYPES),
            Some("posix"),
            Scope::Global,
            Some(REPO_CMDS),
            "repository type: posix (a file system, here or on repo1-host) or s3 (S3-compatible object storage, repo1-s3-*)"
        ),
        opt!(
            "repo1-host",
            OptKind::Str,
            None,
            Scope::Global,
            Some(REPO_CMDS),
            "the repository is on this host, reached over SSH"
        ),
        opt!(
            "repo1-host-user",
            OptKind::Str,
            Some("postgres"),
            Scope::Global,
            Some(REPO_CMDS),
            "SSH user on repo1-host"
        ),
        opt!(
            "repo1-host-port",
            OptKind::Int { min: 1, max: 65535 },
            Some("22"),
            Scope::Global,
            Some(REPO_CMDS),
            "SSH port of repo1-host"
        ),
        opt!(
            "repo1-host-config",
            OptKind::Path,
            Some("/etc/pg_backrest/pg_backrest.conf"),
            Scope::Global,
            Some(REPO_CMDS),
            "config file pg_backrest reads on repo1-host"
        ),
        opt!(
            "repo1-host-cmd",
            OptKind::Str,
            Some("pg_backrest"),
            Scope::Global,
            Some(REPO_CMDS),
            "pg_backrest binary on repo1-host"
        ),
        opt!(
            "ssh-config",
            OptKind::Path,
            None,
            Scope::Global,
            Some(REPO_CMDS),
            "ssh_config file for connections to other hosts (ssh -F; default: ssh's own)"
        ),
        opt!("ssh-persist", OptKind::Int { min: 0, max: 3600 }, Some("30"), Scope::Global,
        Some(REPO_CMDS),
        "seconds an idle SSH master connection stays open for the next command (0: close at exit)"),
        opt!(
            "repo1-retention-full",
            OptKind::Int {
                min: 1,
                max: 9_999_999
            },
            None,
            Scope::Global,
            Some(BACKUP_EXPIRE),
            "number of full backups to keep (or days, with repo1-retention-full-type=time)"
        ),
        opt!(
            "repo1-retention-full-type",
            OptKind::Enum(&["count", "time"]),
            Some("count"),
            Scope::Global,
            Some(BACKUP_EXPIRE),
            "whether repo1-retention-full counts full backups or days"
        ),
        opt!(
            "repo1-retention-diff",
            OptKind::Int {
                min: 1,
                max: 9_999_999
            },
            None,
            Scope::Global,
            Some(BACKUP_EXPIRE),
            "number of differential backups to keep"
        ),
        opt!(
            "repo1-retention-archive",
            OptKind::Int {
                min: 1,
                max: 9_999_999
            },
            None,
            Scope::Global,
            Some(BACKUP_EXPIRE),
            "number of backups whose WAL is kept"
        ),
        opt!(
            "repo1-retention-archive-type",
            OptKind::Enum(&["full", "diff", "incr"]),
            Some("full"),
            Scope::Global,
            Some(BACKUP_EXPIRE),
            "backup type that repo1-retention-archive counts"
        ),
        // Per-invocation choices.
        opt!(
            "type",
            OptKind::CmdEnum(TYPE_VALUES),
            None,
            Scope::CommandLine,
            Some(TYPE_CMDS),
            "backup: full, diff, incr; restore: recovery target type"
        ),
        opt!(
            "set",
            OptKind::Str,
            Some("latest"),
            Scope::CommandLine,
            Some(SET_CMDS),
            "backup label"
        ),
        opt!(
            "target",
            OptKind::Str,
            None,
            Scope::CommandLine,
            Some(RECOVERY),
            "recovery target"
        ),
        opt!(
            "target-action",
            OptKind::Enum(&["pause", "promote", "shutdown"]),
            Some("pause"),
            Scope::Global,
            Some(RECOVERY),
            "what recovery does at the target"
        ),
        opt!(
            "target-exclusive",
            OptKind::Bool,
            Some("n"),
            Scope::CommandLine,
            Some(RECOVERY),
            "stop just before the target"
        ),
        opt!(
            "target-timeline",
            OptKind::Str,
            None,
            Scope::CommandLine,
            Some(RECOVERY),
            "timeline to recover along (default latest)"
        ),
        opt!(
            "output",
            OptKind::Enum(&["text", "json"]),
            Some("text"),
            Scope::CommandLine,
            Some(OUTPUT_CMDS),
            "output format"
        ),
        // Copying.
        opt!(
            "process-max",
            OptKind::Int { min: 1, max: 999 },
            Some("1"),
            Scope::Global,
            Some(PARALLEL),
            "parallel copy and compress workers"
        ),
        opt!(
            "compress-type",
            OptKind::Enum(&["none", "bz2", "gz", "lz4", "zst"]),
            Some("gz"),
            Scope::Global,
            Some(PUSH_BACKUP),
            "compression of files in the repository"
        ),
        opt!(
            "compress-level",
            // The widest range of any type (zst); each type's own is checked where the
            // type is known (pipeline::codec). No default: it depends on the type.
            OptKind::Int { min: -7, max: 22 },
            None,
            Scope::Global,
            Some(PUSH_BACKUP),
            "compression level (default per type: gz 6, bz2 9, lz4 1, zst 3)"
        ),
        opt!(
            "start-fast",
            OptKind::Bool,
            Some("n"),
            Scope::Global,
            Some(BACKUP),
            "ask PostgreSQL for an immediate checkpoint at backup start"
        ),
        opt!(
            "archive-timeout",
            ARCHIVE_TIMEOUT,
            Some("60"),
            Scope::Global,
            Some(TIMEOUT_ARCHIVE),
            "seconds to wait for WAL to reach the repository"
        ),
        // Asynchronous archiving (src/spool.rs, docs/async-archiving.md).
        opt!(
            "archive-async",
            OptKind::Bool,
            Some("n"),
            Scope::Global,
            Some(PUSH_GET),
            "push and get WAL through a spool and a background worker"
        ),
        opt!(
            "spool-path",
            OptKind::Path,
            Some("/var/spool/pg_backrest"),
            Scope::Global,
            Some(PUSH_GET),
            "where asynchronous archiving keeps its acknowledgments and prefetched WAL"
        ),
        opt!(
            "archive-push-queue-max",
            ANY_SIZE,
            None,
            Scope::Global,
            Some(PUSH),
            "WAL waiting to be pushed beyond which it is dropped (recorded as a gap)"
        ),
        opt!(
            "archive-get-queue-max",
            ANY_SIZE,
            Some("128MiB"),
            Scope::Global,
            Some(GET),
            "how much WAL archive-get prefetches into the spool"
        ),
        opt!(
            "archive-missing-retry",
            OptKind::Bool,
            Some("y"),
            Scope::Global,
            Some(GET),
            "look again for a segment the prefetch found missing"
        ),
        opt!(
            "expire-auto",
            OptKind::Bool,
            Some("y"),
            Scope::Global,
            Some(BACKUP),
            "expire by the retention settings after a successful backup"
        ),
        opt!(
            "archive-check",
            OptKind::Bool,
            Some("y"),
            Scope::Global,
            Some(BACKUP),
            "backup waits for and checks the WAL it needs"
        ),
        opt!(
            "resume",
            OptKind::Bool,
            Some("y"),
            Scope::Global,
            Some(BACKUP),
            "resume an interrupted backup"
        ),
        opt!(
            "delta",
            OptKind::Bool,
            Some("n"),
            Scope::Global,
            Some(DELTA_CMDS),
            "compare files by checksum instead of copying everything"
        ),
        opt!(
            "force",
            OptKind::Bool,
            Some("n"),
            Scope::CommandLine,
            Some(FORCE_CMDS),
            "restore: delta restore over another cluster; expire: allow --set on the newest full; \
             stop: terminate running commands; stanza-delete: even while PostgreSQL runs"
        ),
        // The administration commands' options.
        opt!(
            "annotation",
            OptKind::KeyValue,
            None,
            Scope::Global,
            Some(ANNOTATION_CMDS),
            "KEY=VALUE annotation of the backup (repeatable); annotate: an empty VALUE removes KEY"
        ),
        opt!(
            "filter",
            OptKind::Str,
            None,
            Scope::CommandLine,
            Some(REPO_LS),
            "repo-ls: list only names matching this regular expression"
        ),
        opt!(
            "recurse",
            OptKind::Bool,
            Some("n"),
            Scope::CommandLine,
            Some(REPO_LS),
            "repo-ls: include subdirectories and their content"
        ),
        opt!(
            "sort",
            OptKind::Enum(&["asc", "desc", "none"]),
            Some("asc"),
            Scope::CommandLine,
            Some(REPO_LS),
            "repo-ls: order of names in each directory"
        ),
        opt!(
            "ignore-missing",
            OptKind::Bool,
            Some("n"),
            Scope::CommandLine,
            Some(REPO_GET),
            "repo-get: exit 1 without an error when the file is missing"
        ),
        opt!(
            "raw",
            OptKind::Bool,
            Some("n"),
            Scope::CommandLine,
            Some(REPO_GET),
            "repo-get: do not decrypt (accepted for pgBackRest's scripts; the repository is never encrypted)"
        ),
        opt!(
            "dry-run",
            OptKind::Bool,
            Some("n"),
            Scope::CommandLine,
            Some(EXPIRE),
            "show what expire would remove, and remove nothing"
        ),
        opt!(
            "hook-timeout",
            LONG_TIMEOUT,
            Some("300"),
            Scope::Global,
            Some(HOOK_CMDS),
            "seconds a hook may run before it is killed (a start hook then aborts the command)"
        ),
        opt!(
            "tablespace-map",
            OptKind::PathMap,
            None,
            Scope::Global,
            Some(RESTORE),
            "restore the tablespace with this name or OID at PATH instead of its recorded location"
        ),
        opt!(
            "tablespace-map-all",
            OptKind::Path,
            None,
            Scope::Global,
            Some(RESTORE),
            "restore every tablespace not mapped otherwise under this directory, one per name"
        ),
        opt!(
            "link-map",
            OptKind::PathMap,
            None,
            Scope::Global,
            Some(RESTORE),
            "restore the link at this path in the data directory (e.g. pg_wal) pointing to PATH"
        ),
        opt!(
            "link-all",
            OptKind::Bool,
            Some("n"),
            Scope::Global,
            Some(RESTORE),
            "recreate links other than tablespaces (e.g. pg_wal) instead of plain directories"
        ),
        opt!(
            "db-include",
            OptKind::List,
            None,
            Scope::CommandLine,
            Some(RESTORE),
            "restore only this database (repeatable); the others come back as sparse zeroed files to drop"
        ),
        opt!(
            "drill-path",
            OptKind::Path,
            Some("/tmp"),
            Scope::Global,
            Some(DRILL),
            "directory under which drill creates its throwaway copy"
        ),
        opt!(
            "drill-timeout",
            LONG_TIMEOUT,
            Some("1800"),
            Scope::Global,
            Some(DRILL),
            "seconds the drill copy may take to start and recover"
        ),
        // Locks, logs, timeouts.
        opt!(
            "lock-path",
            OptKind::Path,
            Some("/tmp/pg_backrest"),
            Scope::Global,
            None,
            "directory of lock files and SSH control sockets"
        ),
        opt!(
            "lock-timeout",
            seconds(0, 86400),
            Some("0"),
            Scope::Global,
            None,
            "seconds to wait for a held lock before failing"
        ),
        opt!(
            "log-path",
            OptKind::Path,
            Some("/var/log/pg_backrest"),
            Scope::Global,
            None,
            "directory of log files, one per stanza and command"
        ),
        opt!(
            "log-level-console",
            OptKind::Enum(LOG_LEVELS),
            Some("warn"),
            Scope::Global,
            None,
            "level of messages on stdout"
        ),
        opt!(
            "log-level-file",
            OptKind::Enum(LOG_LEVELS),
            Some("info"),
            Scope::Global,
            None,
            "level of messages in the log file"
        ),
        opt!(
            "log-level-stderr",
            OptKind::Enum(LOG_LEVELS),
            Some("warn"),
            Scope::Global,
            None,
            "level of messages on stderr instead of stdout (the final ERROR line is always there)"

        ),
        opt!(
            "io-timeout",
            IO_TIMEOUT,
            Some("60"),
            Scope::Global,
            None,
            "seconds a silent SSH peer may take before the command fails"
        ),
        opt!(
            "protocol-timeout",
            LONG_TIMEOUT,
            Some("1830"),
            Scope::Global,
            None,
            "seconds one remote operation (request to final reply, streams included) may take"
        ),
        opt!(
            "db-timeout",
            LONG_TIMEOUT,
            Some("1800"),
            Scope::Global,
            Some(DB_CMDS),
            "seconds a database query may take"
        ),
    ];

impl OptDef {
    pub fn find(name: &str) -> Option<&'static OptDef> {
        OPTIONS.iter().find(|o| o.name == name)
    }

    pub fn applies_to(&self, cmd: Cmd) -> bool {
        match self.commands {
            Some(cmds) => cmds.contains(&cmd),
            None => !matches!(cmd, Cmd::Version | Cmd::Help),
        }
    }

    /// The environment variable that can carry this option.
    pub fn env_name(&self) -> String {
        format!("PG_BACKREST_{}", self.name.to_uppercase().replace('-', "_"))
    }

    /// Checks `value` against the option's type and returns it normalized (booleans as y/n).
    pub fn validate(&self, value: &str) -> Result<String, String> {
        match self.kind {
            OptKind::Str => {
                if value.is_empty() {
                    Err("must not be empty".into())
                } else {
                    Ok(value.to_string())
                }
            }
            OptKind::Path => {
                if value.starts_with('/') {
                    Ok(value.trim_end_matches('/').to_string()).map(|v| {
                        if v.is_empty() {
                            "/".to_string()
                        } else {
                            v
                        }
                    })
                } else {
                    Err("must be an absolute path".into())
                }
            }
            OptKind::Int { min, max } => match value.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n.to_string()),
                Ok(_) => Err(format!("must be between {min} and {max}")),
                Err(_) => Err("must be an integer".into()),
            },
            OptKind::Bool => match value {
                "y" | "yes" | "true" | "on" | "1" => Ok("y".into()),
                "n" | "no" | "false" | "off" | "0" => Ok("n".into()),
                _ => Err("must be y or n".into()),
            },
            OptKind::List if value.is_empty() || value.contains(',') => {
                Err("must be a non-empty name without commas".into())
            }
            OptKind::List => Ok(value.to_string()),
            OptKind::KeyValue => match value.split_once('=') {
                Some((k, v)) if !k.is_empty() && !v.contains('\n') => Ok(value.to_string()),
                _ => Err("must be KEY=VALUE".into()),
            },
            OptKind::PathMap => match value.split_once('=') {
                Some((k, p)) if !k.is_empty() && p.starts_with('/') => {
                    Ok(format!("{k}={}", p.trim_end_matches('/')))
                }
                _ => Err("must be KEY=/absolute/path".into()),
            },
            OptKind::Enum(values) => {
                if values.contains(&value)
                    || super::pgbackrest::refused_value(self.name, value).is_some()
                {
                    Ok(value.to_string())
                } else {
                    Err(format!("must be one of: {}", values.join(", ")))
                }
            }
            // The command is not known yet: `validate_for` applies its list, so that the
            // message names the values of that command.
            OptKind::CmdEnum(_) => {
                if value.is_empty() {
                    Err("must not be empty".into())
                } else {
                    Ok(value.to_string())
                }
            }
            OptKind::Size { min, max } => match parse_size(value) {
                Some(n) if (min..=max).contains(&n) => Ok(value.to_string()),
                Some(_) => Err(format!(
                    "must be between {} and {}",
                    format_size(min),
                    format_size(max)
                )),
                None => Err(
                    "must be a size: digits and an optional unit (b, KiB, MiB, GiB, TiB, PiB)"
                        .into(),
                ),
            },
            OptKind::Time { min_ms, max_ms } => {
                let ms =
                    parse_millis(value).ok_or("must be a number of seconds, e.g. 30 or 0.5")?;
                if (min_ms..=max_ms).contains(&ms) {
                    Ok(format_millis(ms))
                } else {
                    Err(format!(
                        "must be between {} and {} seconds",
                        format_millis(min_ms),
                        format_millis(max_ms)
                    ))
                }
            }
        }
    }

    /// Checks a value already validated by [`validate`](Self::validate) against what
    /// `cmd` allows (a [`OptKind::CmdEnum`]'s list for that command).
    pub fn validate_for(&self, cmd: Cmd, value: &str) -> Result<(), String> {
        let OptKind::CmdEnum(lists) = self.kind else {
            return Ok(());
        };
        match lists.iter().find(|(c, _)| *c == cmd) {
            Some((_, values)) if !values.contains(&value) => Err(format!(
                "must be one of: {} for {}",
                values.join(", "),
                cmd.name()
            )),
            _ => Ok(()),
        }
    }
}

/// Bytes of a size option (`128MiB`, `1g`, `4096`), as pgBackRest reads them; `None` for
/// what is not a size.
pub fn parse_size(value: &str) -> Option<u64> {
    let lower = value.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let shift = match unit {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// Bytes in the largest unit that divides them: 65536 is "64KiB", 5242880 is "5MiB".
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [
        (50, "PiB"),
        (40, "TiB"),
        (30, "GiB"),
        (20, "MiB"),
        (10, "KiB"),
    ] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Seconds as pgBackRest reads a time option, in milliseconds: a decimal number, the
/// fraction beyond the millisecond dropped (pgBackRest truncates too). `None` for what is not
/// a finite number.
pub fn parse_millis(value: &str) -> Option<i64> {
    // Plain decimals are read digit by digit, so 4.35 is 4350 ms and not the 4349 that
    // 4.35 * 1000 gives in binary floating point.
    if let Some((int, frac)) = value.split_once('.').or(Some((value, ""))) {
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty()) {
            let whole: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
            let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
            return whole.checked_mul(1000)?.checked_add(ms);
        }
    }
    // Otherwise a signed number or an exponent (1e2), which pgBackRest's strtod also reads;
    // Rust's float syntax without its words ("inf", "nan"), which are no timeouts.
    if !value
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    let ms = value.parse::<f64>().ok()? * 1000.0;
    // Truncation toward zero, as pgBackRest's (int64_t) cast; out-of-range values saturate
    // and then fail the range check.
    ms.is_finite().then_some(ms as i64)
}

/// Milliseconds as the shortest decimal seconds: 60000 is "60", 500 is "0.5".
pub fn format_millis(ms: i64) -> String {
    let (s, frac) = (ms / 1000, (ms % 1000).abs());
    if frac == 0 {
        s.to_string()
    } else {
        let sign = if ms < 0 && s == 0 { "-" } else { "" };
        format!("{sign}{s}.{}", format!("{frac:03}").trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_defaults_valid() {
        for (i, o) in OPTIONS.iter().enumerate() {
            assert!(
                OPTIONS[i + 1..].iter().all(|p| p.name != o.name),
                "{} twice",
                o.name
            );
            if let Some(d) = o.default {
                assert!(o.validate(d).is_ok(), "default of {} is invalid", o.name);
            }
            assert!(!o.help.is_empty());
        }
    }

    #[test]
    fn depends_name_an_earlier_option_and_credentials_are_masked() {
        for (i, o) in OPTIONS.iter().enumerate() {
            if let Some(d) = o.depend {
                let j = OPTIONS.iter().position(|p| p.name == d.option);
                assert!(
                    j.is_some_and(|j| j < i),
                    "{} depends on {}",
                    o.name,
                    d.option
                );
                let dep = &OPTIONS[j.unwrap_or(0)];
                for v in d.values {
                    assert!(dep.validate(v).is_ok(), "{}: {v}", o.name);
                }
                assert_eq!(o.commands, dep.commands, "{}", o.name);
            }
            assert!(!o.required || o.depend.is_some(), "{}", o.name);
            assert!(!o.secure || o.secret, "{} is secure but echoed", o.name);
        }
        let secure: Vec<&str> = OPTIONS
            .iter()
            .filter(|o| o.secure)
            .map(|o| o.name)
            .collect();
        assert_eq!(
            secure,
            ["repo1-s3-key", "repo1-s3-key-secret", "repo1-s3-token"]
        );
        assert!(OptDef::find("repo1-s3-kms-key-id").unwrap().secret);
        let s3 = OptDef::find("repo1-s3-bucket").unwrap();
        assert_eq!((s3.scope, s3.commands), (Scope::Global, Some(REPO_CMDS)));
    }

    #[test]
    fn sizes_keep_their_range_and_print_in_their_largest_unit() {
        let chunk = OptDef::find("repo1-storage-upload-chunk-size").unwrap();
        assert_eq!(chunk.validate("64KiB").unwrap(), "64KiB");
        assert_eq!(chunk.validate("1t").unwrap(), "1t");
        assert_eq!(
            chunk.validate("65535").unwrap_err(),
            "must be between 64KiB and 1TiB"
        );
        assert!(chunk.validate("1025g").is_err());
        assert!(OptDef::find("archive-get-queue-max")
            .unwrap()
            .validate("0")
            .is_ok());
        assert_eq!(format_size(5 << 20), "5MiB");
        assert_eq!(format_size(1536), "1536");
        assert_eq!(format_size(3 << 10), "3KiB");
        // pgBackRest's other repository types pass validation, to be refused by name later.
        let t = OptDef::find("repo1-type").unwrap();
        assert_eq!(t.validate("azure").unwrap(), "azure");
        assert_eq!(t.validate("nfs").unwrap_err(), "must be one of: posix, s3");
    }

    #[test]
    fn hook_options_are_generated_for_every_hooked_command_and_no_other() {
        for cmd in HOOK_CMDS {
            for point in HOOK_POINTS {
                let name = hook_option(*cmd, point).unwrap();
                assert_eq!(name, format!("hook-{}-{point}", cmd.name()));
                let o = OptDef::find(name).unwrap();
                assert_eq!(o.commands, Some(&[*cmd][..]), "{name}");
                assert!(o.secret && o.scope == Scope::Global, "{name}");
            }
        }
        let hooks = OPTIONS
            .iter()
            .filter(|o| o.name.starts_with("hook-") && o.name != "hook-timeout")
            .count();
        assert_eq!(hooks, HOOK_CMDS.len() * HOOK_POINTS.len());
        assert_eq!(hook_option(Cmd::Info, "start"), None);
        assert_eq!(hook_option(Cmd::Backup, "later"), None);
        assert!(OptDef::find("hook-timeout")
            .unwrap()
            .commands
            .is_some_and(|c| c == HOOK_CMDS));
    }

    #[test]
    fn validation_by_kind() {
        let port = OptDef::find("pg1-port").unwrap();
        assert_eq!(port.validate("5433").unwrap(), "5433");
        assert_eq!(
            port.validate("0").unwrap_err(),
            "must be between 1 and 65535"
        );
        assert_eq!(port.validate("x").unwrap_err(), "must be an integer");
        let fast = OptDef::find("start-fast").unwrap();
        assert_eq!(fast.validate("yes").unwrap(), "y");
        assert!(fast.validate("maybe").is_err());
        let path = OptDef::find("repo1-path").unwrap();
        assert_eq!(path.validate("/var/lib/x/").unwrap(), "/var/lib/x");
        assert!(path.validate("relative").is_err());
        let ct = OptDef::find("compress-type").unwrap();
        assert_eq!(
            ct.validate("zstd").unwrap_err(),
            "must be one of: none, bz2, gz, lz4, zst"
        );
        for t in ["none", "bz2", "gz", "lz4", "zst"] {
            assert_eq!(ct.validate(t).unwrap(), t);
        }
    }

    #[test]
    fn time_options_take_seconds_to_the_millisecond_within_pgbackrests_ranges() {
        let io = OptDef::find("io-timeout").unwrap();
        for (given, kept) in [
            ("0.5", "0.5"),
            ("60", "60"),
            ("1.2345", "1.234"),
            ("1e2", "100"),
            (".25", "0.25"),
            ("3600", "3600"),
            ("0.1", "0.1"),
            ("2.000", "2"),
        ] {
            assert_eq!(io.validate(given).unwrap(), kept, "{given}");
        }
        for bad in ["0.05", "0", "-1", "3600.001", "3601"] {
            assert_eq!(
                io.validate(bad).unwrap_err(),
                "must be between 0.1 and 3600 seconds",
                "{bad}"
            );
        }
        for bad in ["abc", "", "inf", "nan", "5s", "1,5"] {
            assert!(
                io.validate(bad)
                    .unwrap_err()
                    .starts_with("must be a number"),
                "{bad}"
            );
        }
        let db = OptDef::find("db-timeout").unwrap();
        assert_eq!(db.validate("604800").unwrap(), "604800");
        assert!(db.validate("604800.5").is_err());
        let archive = OptDef::find("archive-timeout").unwrap();
        assert!(archive.validate("86400.001").is_err());
        let lock = OptDef::find("lock-timeout").unwrap();
        assert_eq!(lock.validate("0").unwrap(), "0");
        assert_eq!(lock.validate("0.25").unwrap(), "0.25");
        assert_eq!(format_millis(1500), "1.5");
        assert_eq!(format_millis(1050), "1.05");
        assert_eq!(parse_millis("0.0005"), Some(0));
        assert_eq!(parse_millis("4.35"), Some(4350));
        assert_eq!(parse_millis("5."), Some(5000));
        assert_eq!(parse_millis("."), None);
        assert_eq!(parse_millis("-0.5"), Some(-500));
    }

    #[test]
    fn type_is_checked_against_the_commands_own_list() {
        let t = OptDef::find("type").unwrap();
        assert_eq!(t.validate("full").unwrap(), "full");
        assert_eq!(t.validate("xid").unwrap(), "xid");
        assert!(t.validate("").is_err());
        assert!(t.validate_for(Cmd::Backup, "bogus").is_err());
        assert!(t.validate_for(Cmd::Backup, "incr").is_ok());
        assert_eq!(
            t.validate_for(Cmd::Backup, "xid").unwrap_err(),
            "must be one of: full, diff, incr for backup"
        );
        assert!(t.validate_for(Cmd::Restore, "full").is_err());
        assert!(t.validate_for(Cmd::Drill, "immediate").is_ok());
    }
}

#[cfg(test)]
mod docs_tests {
    use super::*;

    /// docs/configuration.md documents every option of the table, and nothing else.
    #[test]
    fn configuration_doc_lists_exactly_the_options_of_the_table() {
        let doc = include_str!("../../docs/configuration.md");
        let documented: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .filter(|name| !name.starts_with('['))
            .collect();
        for o in OPTIONS {
            assert!(
                documented.contains(&o.name),
                "docs/configuration.md lacks option '{}'",
                o.name
            );
        }
        for name in documented {
            assert!(
                OptDef::find(name).is_some(),
                "docs/configuration.md documents unknown option '{name}'"
            );
        }
    }
}
