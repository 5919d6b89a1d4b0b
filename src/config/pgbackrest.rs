//! pgBackRest compatibility of the configuration: the options pgBackRest 2.45 knows and
//! pg_backrest does not implement (each with what pg_backrest does when one is set: ignore it
//! with a warning, because its absence changes neither what is stored nor where, or refuse the
//! command, because ignoring it would), pgBackRest's deprecated names, how any option name of
//! either tool resolves, the defaults that follow the name the binary is called by, and the
//! nearest known name for a typo.
//!
//! Every option is declared once: pg_backrest's own in [`super::options`], the others here. A
//! unit test checks that no name is in both tables and that docs/compatibility.md lists all.

use super::commands::Cmd;
use super::options::{OptDef, Scope, OPTIONS};

/// The pgBackRest release whose configuration and repository format pg_backrest speaks.
pub const PGBACKREST_VERSION: &str = "2.45";

/// Which program the binary answers as, from the name it was called by (`argv[0]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// `pg_backrest`: its own default paths and version line.
    Own,
    /// Called as `pgbackrest` (a symlink): pgBackRest's default paths, config locations and
    /// version line, so that archive_command lines, cron jobs and scripts need no edit.
    PgBackRest,
}

impl Identity {
    pub fn from_program(argv0: &str) -> Identity {
        match std::path::Path::new(argv0).file_name() {
            Some(n) if n == "pgbackrest" => Identity::PgBackRest,
            _ => Identity::Own,
        }
    }

    /// The program name used in usage lines.
    pub fn program(self) -> &'static str {
        match self {
            Identity::Own => "pg_backrest",
            Identity::PgBackRest => "pgbackrest",
        }
    }

    /// The `version` line. Under pgBackRest's name it is pgBackRest's line for the release whose
    /// formats this build speaks, and nothing more: monitoring reads the whole line as a version
    /// number (check_pgbackrest strips `pgBackRest ` and compares the rest as a number, and
    /// Perl warns on stderr, which Icinga shows as the check's output, about any text after
    /// it). `help` names the real program ([`Identity::banner`]).
    pub fn version_line(self, own_version: &str) -> String {
        match self {
            Identity::Own => format!("pg_backrest {own_version}"),
            Identity::PgBackRest => format!("pgBackRest {PGBACKREST_VERSION}"),
        }
    }

    /// The first line of `help`: the version line, and under pgBackRest's name the real
    /// program and its version after it, so `pgbackrest help` tells which program answers.
    pub fn banner(self, own_version: &str) -> String {
        match self {
            Identity::Own => self.version_line(own_version),
            Identity::PgBackRest => format!(
                "{} (pg_backrest {own_version})",
                self.version_line(own_version)
            ),
        }
    }

    /// The option's default under this identity: pgBackRest's paths, file names, binary name
    /// and repository host user when called as `pgbackrest`, the table's otherwise.
    pub fn default_of(self, opt: &OptDef) -> Option<&'static str> {
        if self == Identity::PgBackRest {
            if let Some((_, d)) = PGBACKREST_DEFAULTS.iter().find(|(n, _)| *n == opt.name) {
                return Some(d);
            }
        }
        opt.default
    }
}

/// pgBackRest's defaults where they differ from pg_backrest's own.
const PGBACKREST_DEFAULTS: &[(&str, &str)] = &[
    ("config", "/etc/pgbackrest/pgbackrest.conf"),
    ("config-include-path", "/etc/pgbackrest/conf.d"),
    ("config-path", "/etc/pgbackrest"),
    ("repo1-path", "/var/lib/pgbackrest"),
    ("log-path", "/var/log/pgbackrest"),
    ("lock-path", "/tmp/pgbackrest"),
    ("spool-path", "/var/spool/pgbackrest"),
    ("pg1-host-config", "/etc/pgbackrest/pgbackrest.conf"),
    ("repo1-host-config", "/etc/pgbackrest/pgbackrest.conf"),
    ("pg1-host-cmd", "pgbackrest"),
    ("repo1-host-cmd", "pgbackrest"),
    ("repo1-host-user", "pgbackrest"),
];

/// What pg_backrest does with a pgBackRest option it does not implement when the option is
/// set to something other than pgBackRest's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Its absence changes neither what is stored nor where: one warning, then go on.
    Ignored(&'static str),
    /// Ignoring it would store something else, or elsewhere: the command is refused.
    Refused(&'static str),
    /// Read by the resolver, which gives it its pgBackRest meaning through another option
    /// (the deprecated `compress`, through compress-type).
    Translated(&'static str),
}

/// A pgBackRest option pg_backrest has no row for in its own table.
#[derive(Debug, Clone, Copy)]
pub struct ForeignOpt {
    /// The name pgBackRest documents (index 1 for the pg and repo groups).
    pub name: &'static str,
    pub bool: bool,
    /// pgBackRest's default, normalized (booleans `y`/`n`): that value needs no warning.
    pub default: Option<&'static str>,
    pub scope: Scope,
    /// pgBackRest's commands that read it, by name; `None`: all.
    pub commands: Option<&'static [&'static str]>,
    /// Its value is never echoed.
    pub secret: bool,
    pub disposition: Disposition,
}

impl ForeignOpt {
    pub fn applies_to(&self, cmd: Cmd) -> bool {
        // A refused option must stop the remote side too: a repository host's config may
        // hold the cipher or the repository type that the database host's config lacks.
        if cmd == Cmd::Remote {
            return matches!(self.disposition, Disposition::Refused(_));
        }
        match self.commands {
            Some(cmds) => cmds.contains(&cmd.name()),
            None => !matches!(cmd, Cmd::Version | Cmd::Help),
        }
    }

    /// Whether `value` (normalized) is pgBackRest's default, which changes nothing.
    pub fn is_default(&self, value: &str) -> bool {
        self.default == Some(value)
    }
}

/// Normalizes a boolean as pgBackRest writes it; other values are kept as given.
pub fn normalize(is_bool: bool, value: &str) -> String {
    if is_bool {
        match value {
            "y" | "yes" | "true" | "on" | "1" => return "y".into(),
            "n" | "no" | "false" | "off" | "0" => return "n".into(),
            _ => {}
        }
    }
    value.to_string()
}

// pgBackRest's command lists, by name (commands pg_backrest lacks included, so that the rows
// read as pgBackRest's config.yaml does).
const REPO: &[&str] = &[
    "annotate",
    "archive-get",
    "archive-push",
    "backup",
    "check",
    "expire",
    "info",
    "manifest",
    "repo-create",
    "repo-get",
    "repo-ls",
    "repo-put",
    "repo-rm",
    "restore",
    "stanza-create",
    "stanza-delete",
    "stanza-upgrade",
    "start",
    "stop",
    "verify",
];
const REPO_HOST: &[&str] = &[
    "annotate",
    "archive-get",
    "archive-push",
    "backup",
    "check",
    "expire",
    "info",
    "manifest",
    "repo-create",
    "repo-get",
    "repo-ls",
    "repo-put",
    "repo-rm",
    "restore",
    "stanza-create",
    "stanza-delete",
    "stanza-upgrade",
    "verify",
];
const REPO_HOST_CMD: &[&str] = &[
    "annotate",
    "archive-get",
    "archive-push",
    "check",
    "info",
    "manifest",
    "repo-create",
    "repo-get",
    "repo-ls",
    "repo-put",
    "repo-rm",
    "restore",
    "stanza-create",
    "stanza-delete",
    "stanza-upgrade",
    "verify",
];
const NET: &[&str] = &[
    "annotate",
    "archive-get",
    "archive-push",
    "backup",
    "check",
    "expire",
    "info",
    "manifest",
    "repo-create",
    "repo-get",
    "repo-ls",
    "repo-put",
    "repo-rm",
    "restore",
    "server",
    "server-ping",
    "stanza-create",
    "stanza-delete",
    "stanza-upgrade",
    "verify",
];
const SUBPROCESS: &[&str] = &[
    "annotate",
    "archive-get",
    "archive-push",
    "backup",
    "check",
    "info",
    "manifest",
    "repo-create",
    "repo-get",
    "repo-ls",
    "repo-put",
    "repo-rm",
    "restore",
    "stanza-create",
    "stanza-delete",
    "stanza-upgrade",
    "verify",
];
const PG_LOCAL: &[&str] = &[
    "archive-get",
    "archive-push",
    "backup",
    "check",
    "manifest",
    "restore",
    "stanza-create",
    "stanza-delete",
    "stanza-upgrade",
];
const PG_HOST: &[&str] = &[
    "backup",
    "check",
    "manifest",
    "stanza-create",
    "stanza-delete",
    "stanza-upgrade",
];
const JOBS: &[&str] = &["archive-get", "archive-push", "backup", "restore", "verify"];
const UMASK: &[&str] = &[
    "annotate",
    "archive-get",
    "archive-push",
    "backup",
    "check",
    "expire",
    "repo-create",
    "repo-get",
    "repo-ls",
    "repo-put",
    "repo-rm",
    "restore",
    "stanza-create",
    "stanza-delete",
    "stanza-upgrade",
    "start",
    "stop",
    "verify",
];
const SERVER: &[&str] = &["server"];
const SERVER_PING: &[&str] = &["server", "server-ping"];
const BACKUP: &[&str] = &["backup"];
const BACKUP_CHECK: &[&str] = &["backup", "check"];
const BACKUP_EXPIRE: &[&str] = &["backup", "expire"];
const RESTORE: &[&str] = &["restore"];
const PUSH: &[&str] = &["archive-push"];
const PUSH_BACKUP: &[&str] = &["archive-push", "backup"];
const PUSH_BACKUP_CHECK: &[&str] = &["archive-push", "backup", "check"];
const ONLINE: &[&str] = &["backup", "stanza-create", "stanza-upgrade"];
const VERIFY: &[&str] = &["verify"];
const REPO_GET_PUT: &[&str] = &["repo-get", "repo-put"];
const BACKUP_MANIFEST: &[&str] = &["backup", "manifest"];
const PG_VERSION_FORCE: &[&str] = &[
    "archive-get",
    "archive-push",
    "backup",
    "check",
    "manifest",
    "restore",
    "stanza-create",
    "stanza-delete",
    "stanza-upgrade",
    "verify",
];

// Reasons, shared by the rows they explain.
const WHY_TUNING: &str = "a tuning setting of pgBackRest's; pg_backrest chooses its own";
const WHY_LOG: &str = "a logging setting pg_backrest does not have";
const WHY_TLS: &str = "applies to pgBackRest's TLS transport, which pg_backrest does not have \
                       (it connects over SSH)";
const WHY_INTERNAL: &str = "internal to pgBackRest's own processes";
const WHY_OBJECT: &str =
    "applies only to an azure or gcs repository (repo1-type), which pg_backrest refuses";
const WHY_CIPHER_PASS: &str =
    "used only with repo1-cipher-type=aes-256-cbc, which pg_backrest refuses";
const WHY_BUNDLE: &str = "used only with repo1-bundle=y, which pg_backrest refuses";
const WHY_BLOCK: &str = "used only with repo1-block=y, which pg_backrest refuses";
const WHY_REMOTE_CONFIG: &str =
    "the remote pg_backrest reads the file named by the host-config option and its own conf.d";
const WHY_TYPE: &str = "pg_backrest stores the repository on a file system (posix), locally or \
                        on repo1-host over SSH, or in S3-compatible object storage (s3); with \
                        another type it would write to the wrong place";
const WHY_CIPHER: &str =
    "pg_backrest does not encrypt: it would write the repository unencrypted, and cannot read an encrypted one";
const WHY_HOST_TYPE: &str =
    "pg_backrest reaches other hosts over SSH only; it would not connect the way this config says";

macro_rules! foreign {
    ($name:expr, $bool:expr, $default:expr, $scope:expr, $cmds:expr, $disp:expr) => {
        ForeignOpt {
            name: $name,
            bool: $bool,
            default: $default,
            scope: $scope,
            commands: $cmds,
            secret: false,
            disposition: $disp,
        }
    };
}

macro_rules! secret {
    ($name:expr, $scope:expr, $cmds:expr, $disp:expr) => {
        ForeignOpt {
            name: $name,
            bool: false,
            default: None,
            scope: $scope,
            commands: $cmds,
            secret: true,
            disposition: $disp,
        }
    };
}

use Disposition::{Ignored, Refused, Translated};
use Scope::{CommandLine as CL, Global as G, Stanza as S};

/// pgBackRest 2.45's options that pg_backrest does not implement, from its
/// src/build/config/config.yaml. repo-ls, repo-get and annotate's own options are left to
/// the rows of those commands.
pub const FOREIGN: &[ForeignOpt] = &[
    // Refused: ignoring them would store something else, or elsewhere.
    foreign!("repo1-cipher-type", false, Some("none"), G, Some(REPO), Refused(WHY_CIPHER)),
    foreign!("repo1-bundle", true, Some("n"), G, Some(BACKUP),
        Refused("bundling stores small files together in bundles; pg_backrest writes one file per data file")),
    foreign!("repo1-block", true, Some("n"), G, Some(BACKUP),
        Refused("block incremental stores changed blocks only; pg_backrest writes whole files")),
    foreign!("repo1-hardlink", true, Some("n"), G, Some(BACKUP),
        Refused("pg_backrest does not hardlink unchanged files between backups; it records a reference to the prior backup")),
    foreign!("archive-copy", true, Some("n"), G, Some(BACKUP),
        Refused("pg_backrest does not copy the backup's WAL into the backup itself; it stays in the archive")),
    foreign!("backup-standby", true, Some("n"), G, Some(BACKUP_CHECK),
        Refused("pg_backrest backs up from pg1 only, not from a standby")),
    foreign!("online", true, Some("y"), CL, Some(ONLINE),
        Refused("pg_backrest takes online backups only, from a running cluster")),
    foreign!("exclude", false, None, G, Some(BACKUP),
        Refused("pg_backrest backs up every file PostgreSQL's base-backup rules include; excluding more would store less")),
    foreign!("archive-mode", false, Some("preserve"), G, Some(RESTORE),
        Refused("pg_backrest's restore keeps archive_mode as it was (archive-mode=preserve)")),
    foreign!("recovery-option", false, None, G, Some(RESTORE),
        Refused("pg_backrest writes only restore_command and the recovery target settings")),
    foreign!("db-exclude", false, None, G, Some(RESTORE),
        Refused("pg_backrest restores only the databases named by db-include; it has no db-exclude")),
    foreign!("repo", false, Some("1"), CL, Some(REPO),
        Refused("pg_backrest has one repository, repo1")),
    foreign!("pg1-host-type", false, Some("ssh"), G, Some(PG_LOCAL), Refused(WHY_HOST_TYPE)),
    foreign!("repo1-host-type", false, Some("ssh"), G, Some(REPO_HOST), Refused(WHY_HOST_TYPE)),
    // Translated: given their pgBackRest meaning through another option.
    foreign!("compress", true, Some("y"), G, Some(PUSH_BACKUP),
        Translated("deprecated: compress=n sets compress-type=none")),
    // Ignored: their absence changes neither what is stored nor where.
    foreign!("archive-header-check", true, Some("y"), G, Some(PUSH),
        Ignored("pg_backrest always checks the WAL header against archive.info")),
    foreign!("archive-mode-check", true, Some("y"), G, Some(PUSH_BACKUP_CHECK),
        Ignored("pg_backrest's checks of archive_mode stay on")),
    foreign!("checksum-page", true, None, G, Some(BACKUP),
        Ignored("pg_backrest does not validate page checksums during backup; the files stored are the same")),
    foreign!("manifest-save-threshold", false, Some("1GiB"), G, Some(BACKUP), Ignored(WHY_TUNING)),
    foreign!("stop-auto", true, Some("n"), G, Some(BACKUP),
        Ignored("applies to PostgreSQL before 9.6 only, which pg_backrest does not support")),
    foreign!("buffer-size", false, Some("1MiB"), G, Some(NET), Ignored(WHY_TUNING)),
    foreign!("compress-level-network", false, Some("3"), G, Some(SUBPROCESS), Ignored(WHY_TUNING)),
    foreign!("cmd", false, None, G, Some(SUBPROCESS),
        Ignored("pg_backrest starts its local workers as threads; remote hosts run pg1-host-cmd or repo1-host-cmd")),
    foreign!("cmd-ssh", false, Some("ssh"), G, Some(SUBPROCESS),
        Ignored("pg_backrest runs the ssh found in PATH; use ssh-config for its settings")),
    foreign!("neutral-umask", true, Some("y"), G, Some(UMASK),
        Ignored("pg_backrest sets the modes of the files it writes itself")),
    foreign!("sck-keep-alive", true, Some("y"), G, Some(NET), Ignored(WHY_TUNING)),
    foreign!("tcp-keep-alive-count", false, None, G, Some(NET), Ignored(WHY_TUNING)),
    foreign!("tcp-keep-alive-idle", false, None, G, Some(NET), Ignored(WHY_TUNING)),
    foreign!("tcp-keep-alive-interval", false, None, G, Some(NET), Ignored(WHY_TUNING)),
    foreign!("log-subprocess", true, Some("n"), G, Some(SUBPROCESS), Ignored(WHY_LOG)),
    foreign!("log-timestamp", true, Some("y"), G, None, Ignored(WHY_LOG)),
    foreign!("repo1-retention-history", false, None, G, Some(BACKUP_EXPIRE),
        Ignored("pg_backrest keeps backup.history/ whole; keeping more history changes no backup")),
    foreign!("verbose", true, Some("n"), CL, Some(VERIFY), Ignored(WHY_LOG)),
    foreign!("tls-server-ca-file", false, None, G, Some(SERVER), Ignored(WHY_TLS)),
    foreign!("tls-server-cert-file", false, None, G, Some(SERVER), Ignored(WHY_TLS)),
    foreign!("tls-server-key-file", false, None, G, Some(SERVER), Ignored(WHY_TLS)),
    foreign!("tls-server-auth", false, None, G, Some(SERVER), Ignored(WHY_TLS)),
    foreign!("tls-server-address", false, Some("localhost"), G, Some(SERVER_PING), Ignored(WHY_TLS)),
    foreign!("tls-server-port", false, Some("8432"), G, Some(SERVER_PING), Ignored(WHY_TLS)),
    foreign!("pg1-host-cert-file", false, None, G, Some(PG_LOCAL), Ignored(WHY_TLS)),
    foreign!("pg1-host-key-file", false, None, G, Some(PG_LOCAL), Ignored(WHY_TLS)),
    foreign!("pg1-host-ca-file", false, None, G, Some(PG_LOCAL), Ignored(WHY_TLS)),
    foreign!("pg1-host-ca-path", false, None, G, Some(PG_LOCAL), Ignored(WHY_TLS)),
    foreign!("repo1-host-cert-file", false, None, G, Some(REPO_HOST), Ignored(WHY_TLS)),
    foreign!("repo1-host-key-file", false, None, G, Some(REPO_HOST), Ignored(WHY_TLS)),
    foreign!("repo1-host-ca-file", false, None, G, Some(REPO_HOST), Ignored(WHY_TLS)),
    foreign!("repo1-host-ca-path", false, None, G, Some(REPO_HOST), Ignored(WHY_TLS)),
    foreign!("pg1-host-config-include-path", false, None, S, Some(PG_HOST), Ignored(WHY_REMOTE_CONFIG)),
    foreign!("pg1-host-config-path", false, None, S, Some(PG_HOST), Ignored(WHY_REMOTE_CONFIG)),
    foreign!("repo1-host-config-include-path", false, None, G, Some(REPO_HOST_CMD), Ignored(WHY_REMOTE_CONFIG)),
    foreign!("repo1-host-config-path", false, None, G, Some(REPO_HOST_CMD), Ignored(WHY_REMOTE_CONFIG)),
    secret!("repo1-cipher-pass", G, Some(REPO), Ignored(WHY_CIPHER_PASS)),
    foreign!("repo1-bundle-size", false, Some("20MiB"), G, Some(BACKUP), Ignored(WHY_BUNDLE)),
    foreign!("repo1-bundle-limit", false, Some("2MiB"), G, Some(BACKUP), Ignored(WHY_BUNDLE)),
    foreign!("repo1-block-size-map", false, None, G, Some(BACKUP), Ignored(WHY_BLOCK)),
    foreign!("repo1-block-age-map", false, None, G, Some(BACKUP), Ignored(WHY_BLOCK)),
    foreign!("repo1-block-checksum-size-map", false, None, G, Some(BACKUP), Ignored(WHY_BLOCK)),
    foreign!("repo1-block-size-super", false, Some("256KiB"), G, Some(BACKUP), Ignored(WHY_BLOCK)),
    foreign!("repo1-block-size-super-full", false, Some("1MiB"), G, Some(BACKUP), Ignored(WHY_BLOCK)),
    foreign!("repo1-azure-account", false, None, G, Some(REPO), Ignored(WHY_OBJECT)),
    foreign!("repo1-azure-container", false, None, G, Some(REPO), Ignored(WHY_OBJECT)),
    foreign!("repo1-azure-endpoint", false, Some("blob.core.windows.net"), G, Some(REPO), Ignored(WHY_OBJECT)),
    secret!("repo1-azure-key", G, Some(REPO), Ignored(WHY_OBJECT)),
    foreign!("repo1-azure-key-type", false, Some("shared"), G, Some(REPO), Ignored(WHY_OBJECT)),
    foreign!("repo1-azure-uri-style", false, Some("host"), G, Some(REPO), Ignored(WHY_OBJECT)),
    foreign!("repo1-gcs-bucket", false, None, G, Some(REPO), Ignored(WHY_OBJECT)),
    foreign!("repo1-gcs-endpoint", false, Some("storage.googleapis.com"), G, Some(REPO), Ignored(WHY_OBJECT)),
    secret!("repo1-gcs-key", G, Some(REPO), Ignored(WHY_OBJECT)),
    foreign!("repo1-gcs-key-type", false, Some("service"), G, Some(REPO), Ignored(WHY_OBJECT)),
    // Internal options pgBackRest passes between its own processes.
    foreign!("exec-id", false, None, CL, None, Ignored(WHY_INTERNAL)),
    foreign!("process", false, None, CL, Some(SUBPROCESS), Ignored(WHY_INTERNAL)),
    foreign!("remote-type", false, None, CL, Some(SUBPROCESS), Ignored(WHY_INTERNAL)),
    secret!("cipher-pass", CL, Some(REPO_GET_PUT), Ignored(WHY_INTERNAL)),
    foreign!("beta", true, Some("n"), G, None, Ignored(WHY_INTERNAL)),
    foreign!("job-retry", false, Some("2"), G, Some(JOBS), Ignored(WHY_INTERNAL)),
    foreign!("job-retry-interval", false, Some("15"), G, Some(JOBS), Ignored(WHY_INTERNAL)),
    foreign!("sck-block", true, Some("n"), G, Some(NET), Ignored(WHY_INTERNAL)),
    foreign!("pg", false, None, CL, Some(BACKUP_MANIFEST), Ignored(WHY_INTERNAL)),
    foreign!("pg1-local", true, Some("n"), S, Some(PG_LOCAL), Ignored(WHY_INTERNAL)),
    foreign!("repo1-local", true, Some("n"), G, Some(REPO_HOST), Ignored(WHY_INTERNAL)),
    foreign!("pg-version-force", false, None, S, Some(PG_VERSION_FORCE), Ignored(WHY_INTERNAL)),
];

/// A value pgBackRest accepts for one of pg_backrest's own options that pg_backrest does not
/// implement. Validation lets it pass, and the resolved configuration refuses it, naming
/// where it was set, like a [`Disposition::Refused`] option: a value set for another stanza
/// concerns no one.
#[derive(Debug, Clone, Copy)]
pub struct RefusedValue {
    pub option: &'static str,
    pub values: &'static [&'static str],
    pub why: &'static str,
}

pub const REFUSED_VALUES: &[RefusedValue] = &[RefusedValue {
    option: "repo1-type",
    values: &["azure", "cifs", "gcs"],
    why: WHY_TYPE,
}];

/// The refusal of `value` for pg_backrest's own option `option`, if pgBackRest accepts it and
/// pg_backrest does not.
pub fn refused_value(option: &str, value: &str) -> Option<&'static RefusedValue> {
    REFUSED_VALUES
        .iter()
        .find(|r| r.option == option && r.values.contains(&value))
}

/// pgBackRest's deprecated names it still reads, and what they stand for. `?` stands for an
/// index (`db2-path` is `pg2-path`); a name without it is index 1.
pub const DEPRECATED: &[(&str, &str)] = &[
    ("db-host", "pg1-host"),
    ("db?-host", "pg?-host"),
    ("db-cmd", "pg1-host-cmd"),
    ("db?-cmd", "pg?-host-cmd"),
    ("db-config", "pg1-host-config"),
    ("db?-config", "pg?-host-config"),
    ("db-ssh-port", "pg1-host-port"),
    ("db?-ssh-port", "pg?-host-port"),
    ("db-user", "pg1-host-user"),
    ("db?-user", "pg?-host-user"),
    ("db-path", "pg1-path"),
    ("db?-path", "pg?-path"),
    ("db-port", "pg1-port"),
    ("db?-port", "pg?-port"),
    ("db-socket-path", "pg1-socket-path"),
    ("db?-socket-path", "pg?-socket-path"),
    ("backup-host", "repo1-host"),
    ("backup-cmd", "repo1-host-cmd"),
    ("backup-config", "repo1-host-config"),
    ("backup-ssh-port", "repo1-host-port"),
    ("backup-user", "repo1-host-user"),
    ("repo-path", "repo1-path"),
    ("repo-type", "repo1-type"),
    ("repo-cipher-type", "repo1-cipher-type"),
    ("repo-cipher-pass", "repo1-cipher-pass"),
    ("hardlink", "repo1-hardlink"),
    ("retention-full", "repo1-retention-full"),
    ("retention-diff", "repo1-retention-diff"),
    ("retention-archive", "repo1-retention-archive"),
    ("retention-archive-type", "repo1-retention-archive-type"),
    ("archive-queue-max", "archive-push-queue-max"),
    ("repo-s3-bucket", "repo1-s3-bucket"),
    ("repo-s3-endpoint", "repo1-s3-endpoint"),
    ("repo-s3-key", "repo1-s3-key"),
    ("repo-s3-key-secret", "repo1-s3-key-secret"),
    ("repo-s3-region", "repo1-s3-region"),
    ("repo-s3-verify-ssl", "repo1-storage-verify-tls"),
    ("repo?-s3-verify-ssl", "repo?-storage-verify-tls"),
    ("repo?-s3-verify-tls", "repo?-storage-verify-tls"),
    ("repo?-azure-verify-tls", "repo?-storage-verify-tls"),
    ("repo-s3-ca-file", "repo1-storage-ca-file"),
    ("repo?-s3-ca-file", "repo?-storage-ca-file"),
    ("repo?-azure-ca-file", "repo?-storage-ca-file"),
    ("repo-s3-ca-path", "repo1-storage-ca-path"),
    ("repo?-s3-ca-path", "repo?-storage-ca-path"),
    ("repo?-azure-ca-path", "repo?-storage-ca-path"),
    ("repo-s3-host", "repo1-storage-host"),
    ("repo?-s3-host", "repo?-storage-host"),
    ("repo?-azure-host", "repo?-storage-host"),
    ("repo?-s3-port", "repo?-storage-port"),
    ("repo?-azure-port", "repo?-storage-port"),
];

/// pgBackRest 2.45's commands. A config section of one pg_backrest lacks is never read, as
/// pgBackRest never reads a section of a command other than the one running; it is not a typo.
pub const PGBACKREST_COMMANDS: &[&str] = &[
    "annotate",
    "archive-get",
    "archive-push",
    "backup",
    "check",
    "expire",
    "help",
    "info",
    "manifest",
    "repo-create",
    "repo-get",
    "repo-ls",
    "repo-put",
    "repo-rm",
    "restore",
    "server",
    "server-ping",
    "stanza-create",
    "stanza-delete",
    "stanza-upgrade",
    "start",
    "stop",
    "verify",
    "version",
];

/// pgBackRest numbers the pg and repo groups from 1 to 256.
const INDEX_MAX: u32 = 256;

/// What an option name given anywhere (command line, environment, config file) stands for.
#[derive(Debug, Clone, Copy)]
pub enum Known {
    Ours(&'static OptDef),
    Foreign(&'static ForeignOpt),
    /// `pgN-*` or `repoN-*` with N ≥ 2 of an option known at index 1 (`base`).
    OtherIndex {
        repo: bool,
        index: u32,
        base: Base,
    },
}

/// The index-1 option an [`Known::OtherIndex`] stands beside.
#[derive(Debug, Clone, Copy)]
pub enum Base {
    Ours(&'static OptDef),
    Foreign(&'static ForeignOpt),
}

impl Known {
    pub fn scope(&self) -> Scope {
        match self {
            Known::Ours(o)
            | Known::OtherIndex {
                base: Base::Ours(o),
                ..
            } => o.scope,
            Known::Foreign(f)
            | Known::OtherIndex {
                base: Base::Foreign(f),
                ..
            } => f.scope,
        }
    }

    pub fn is_bool(&self) -> bool {
        match self {
            Known::Ours(o)
            | Known::OtherIndex {
                base: Base::Ours(o),
                ..
            } => o.kind == super::options::OptKind::Bool,
            Known::Foreign(f)
            | Known::OtherIndex {
                base: Base::Foreign(f),
                ..
            } => f.bool,
        }
    }

    pub fn secret(&self) -> bool {
        match self {
            Known::Ours(o)
            | Known::OtherIndex {
                base: Base::Ours(o),
                ..
            } => o.secret,
            Known::Foreign(f)
            | Known::OtherIndex {
                base: Base::Foreign(f),
                ..
            } => f.secret,
        }
    }

    /// Whether the option means something to `cmd` (pgBackRest's command list for its rows).
    pub fn applies_to(&self, cmd: Cmd) -> bool {
        match self {
            Known::Ours(o) => o.applies_to(cmd),
            Known::Foreign(f) => f.applies_to(cmd),
            Known::OtherIndex { repo: true, .. } => cmd != Cmd::Version && cmd != Cmd::Help,
            Known::OtherIndex { base, .. } => match base {
                Base::Ours(o) => o.applies_to(cmd) && cmd != Cmd::Remote,
                Base::Foreign(f) => f.applies_to(cmd) && cmd != Cmd::Remote,
            },
        }
    }
}

fn find_known(name: &str) -> Option<Known> {
    if let Some(o) = OptDef::find(name) {
        return Some(Known::Ours(o));
    }
    if let Some(f) = FOREIGN.iter().find(|f| f.name == name) {
        return Some(Known::Foreign(f));
    }
    let (repo, rest) = if let Some(r) = name.strip_prefix("repo") {
        (true, r)
    } else {
        (false, name.strip_prefix("pg")?)
    };
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (num, tail) = rest.split_at(digits);
    let index: u32 = num.parse().ok()?;
    if !(2..=INDEX_MAX).contains(&index) || num.starts_with('0') || !tail.starts_with('-') {
        return None;
    }
    let base_name = format!("{}1{tail}", if repo { "repo" } else { "pg" });
    let base = match find_known(&base_name)? {
        Known::Ours(o) => Base::Ours(o),
        Known::Foreign(f) => Base::Foreign(f),
        Known::OtherIndex { .. } => return None,
    };
    Some(Known::OtherIndex { repo, index, base })
}

/// The current name of a deprecated one (`db-path` → `pg1-path`, `db2-path` → `pg2-path`).
fn undeprecate(name: &str) -> Option<String> {
    DEPRECATED
        .iter()
        .find_map(|(old, new)| match old.split_once('?') {
            None => (*old == name).then(|| new.to_string()),
            Some((prefix, suffix)) => {
                let num = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
                let ok = !num.is_empty()
                    && !num.starts_with('0')
                    && num.bytes().all(|b| b.is_ascii_digit())
                    && num.parse::<u32>().is_ok_and(|n| n <= INDEX_MAX);
                ok.then(|| new.replace('?', num))
            }
        })
}

/// Resolves an option name of either tool to its current name and what it is. `None`: a name
/// neither tool knows.
pub fn resolve_name(name: &str) -> Option<(String, Known)> {
    if let Some(k) = find_known(name) {
        return Some((name.to_string(), k));
    }
    let current = undeprecate(name)?;
    let k = find_known(&current)?;
    Some((current, k))
}

/// Every name a user may write, for suggestions.
fn all_names() -> impl Iterator<Item = &'static str> {
    OPTIONS
        .iter()
        .map(|o| o.name)
        .chain(FOREIGN.iter().map(|f| f.name))
        .chain(
            DEPRECATED
                .iter()
                .map(|(d, _)| *d)
                .filter(|d| !d.contains('?')),
        )
}

/// The known option name closest to `name` (edit distance), to suggest for a typo.
pub fn nearest(name: &str) -> &'static str {
    all_names()
        .min_by_key(|candidate| edit_distance(name, candidate))
        .unwrap_or("config")
}

/// The known command name closest to `name`.
pub fn nearest_command(name: &str) -> &'static str {
    super::commands::COMMANDS
        .iter()
        .filter(|d| !d.hidden)
        .map(|d| d.name)
        .min_by_key(|candidate| edit_distance(name, candidate))
        .unwrap_or("help")
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_option_is_in_both_tables_or_twice() {
        for (i, f) in FOREIGN.iter().enumerate() {
            assert!(
                OptDef::find(f.name).is_none(),
                "{} is in both tables",
                f.name
            );
            assert!(
                FOREIGN[i + 1..].iter().all(|g| g.name != f.name),
                "{} twice",
                f.name
            );
        }
        for (old, new) in DEPRECATED {
            assert!(
                find_known(old).is_none(),
                "deprecated {old} is also a current name"
            );
            let probe = new.replace('?', "1");
            assert!(
                find_known(&probe).is_some(),
                "{old} stands for unknown {probe}"
            );
        }
    }

    #[test]
    fn names_resolve_through_deprecation_and_index() {
        let (n, k) = resolve_name("db-path").unwrap();
        assert_eq!(n, "pg1-path");
        assert!(matches!(k, Known::Ours(o) if o.name == "pg1-path"));
        assert_eq!(resolve_name("db-user").unwrap().0, "pg1-host-user");
        assert_eq!(resolve_name("backup-user").unwrap().0, "repo1-host-user");
        assert_eq!(
            resolve_name("retention-full").unwrap().0,
            "repo1-retention-full"
        );
        assert_eq!(resolve_name("db2-path").unwrap().0, "pg2-path");
        assert_eq!(
            resolve_name("repo3-s3-verify-ssl").unwrap().0,
            "repo3-storage-verify-tls"
        );
        assert!(matches!(
            resolve_name("repo2-path").unwrap().1,
            Known::OtherIndex {
                repo: true,
                index: 2,
                ..
            }
        ));
        assert!(matches!(
            resolve_name("repo2-cipher-type").unwrap().1,
            Known::OtherIndex {
                repo: true,
                index: 2,
                base: Base::Foreign(_)
            }
        ));
        assert!(matches!(
            resolve_name("archive-async").unwrap().1,
            Known::Ours(_)
        ));
        for unknown in [
            "repo1-paht",
            "repo0-path",
            "repo257-path",
            "repo02-path",
            "pg2-bogus",
            "db0-path",
        ] {
            assert!(resolve_name(unknown).is_none(), "{unknown}");
        }
    }

    #[test]
    fn nearest_names_a_typo() {
        assert_eq!(nearest("repo1-paht"), "repo1-path");
        assert_eq!(nearest("archive-asyn"), "archive-async");
        assert_eq!(nearest("log-level-consol"), "log-level-console");
        assert_eq!(nearest_command("archive-pusj"), "archive-push");
    }

    /// docs/compatibility.md lists every option of both tables, each foreign one in the
    /// section of its disposition, and every deprecated name.
    #[test]
    fn docs_list_every_option_of_both_tables() {
        let doc = include_str!("../../docs/compatibility.md");
        let mut section = "";
        let mut rows: Vec<(&str, String)> = Vec::new();
        for line in doc.lines() {
            if let Some(h) = line.strip_prefix("## ") {
                section = h;
            } else if let Some(cell) = line.strip_prefix("| ") {
                let first = cell.split(" | ").next().unwrap_or("");
                for name in first.split('`').skip(1).step_by(2) {
                    rows.push((section, name.to_string()));
                }
            }
        }
        let in_section =
            |want: &str, name: &str| rows.iter().any(|(s, n)| s.starts_with(want) && n == name);
        for o in OPTIONS {
            assert!(
                rows.iter().any(|(_, n)| n == o.name),
                "docs/compatibility.md lacks option '{}'",
                o.name
            );
        }
        for f in FOREIGN {
            let want = match f.disposition {
                Disposition::Ignored(_) => "Ignored",
                Disposition::Refused(_) => "Refused",
                Disposition::Translated(_) => "Translated",
            };
            assert!(
                in_section(want, f.name),
                "docs/compatibility.md lacks '{}' under '## {want}'",
                f.name
            );
        }
        for (old, new) in DEPRECATED {
            let row = format!(
                "| `{}` | `{}` |",
                old.replace('?', "N"),
                new.replace('?', "N")
            );
            assert!(
                in_section("Deprecated", &old.replace('?', "N")) && doc.contains(&row),
                "docs/compatibility.md lacks the row {row}"
            );
        }
    }

    #[test]
    fn identity_follows_the_program_name() {
        assert_eq!(
            Identity::from_program("/usr/bin/pgbackrest"),
            Identity::PgBackRest
        );
        assert_eq!(Identity::from_program("pgbackrest"), Identity::PgBackRest);
        assert_eq!(
            Identity::from_program("/usr/bin/pg_backrest"),
            Identity::Own
        );
        assert_eq!(Identity::from_program("pgbackrest2"), Identity::Own);
        assert_eq!(
            Identity::PgBackRest.version_line("0.1.0"),
            "pgBackRest 2.45"
        );
        assert_eq!(
            Identity::PgBackRest.banner("0.1.0"),
            "pgBackRest 2.45 (pg_backrest 0.1.0)"
        );
        assert_eq!(Identity::Own.banner("0.1.0"), "pg_backrest 0.1.0");
        let repo = OptDef::find("repo1-path").unwrap();
        assert_eq!(
            Identity::PgBackRest.default_of(repo),
            Some("/var/lib/pgbackrest")
        );
        assert_eq!(Identity::Own.default_of(repo), repo.default);
        for (name, _) in PGBACKREST_DEFAULTS {
            assert!(OptDef::find(name).is_some(), "{name}");
        }
    }
}
