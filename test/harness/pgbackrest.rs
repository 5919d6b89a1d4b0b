//! The real pgBackRest (2.45, Debian's `pgbackrest`, installed by test/setup.sh) for the
//! compatibility tests: a config file of the test's own (its cluster, repository, lock and
//! log paths, never the machine's /etc/pgbackrest.conf or /var/lib/pgbackrest), and the
//! command run as `postgres` with `--config=` that file.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{postgres_command, run, write_postgres, Out, PgCluster};

/// The installed pgBackRest.
pub const PGBACKREST: &str = "/usr/bin/pgbackrest";

/// pgBackRest configured for one stanza of a test: `conf` is its config file.
pub struct PgBackrest {
    pub conf: PathBuf,
    pub stanza: String,
    /// Its log directory (`<stanza>-<command>.log` files).
    pub log_path: PathBuf,
}

/// Where pgBackRest keeps its state: `lock` and `log` directories under `dir`.
pub struct Paths<'a> {
    /// The directory for the config file and pgBackRest's own lock and log directories.
    pub dir: &'a Path,
    pub repo: &'a Path,
    pub stanza: &'a str,
    /// Extra `key=value` lines for `[global]`.
    pub global: &'a str,
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

impl PgBackrest {
    /// Writes `dir/pgbackrest.conf` for `cluster` (pg1-path, socket and port) and `repo`,
    /// with lock and log paths `dir/pgbackrest-lock` and `dir/pgbackrest-log`.
    pub fn new(paths: Paths<'_>, cluster: &PgCluster) -> PgBackrest {
        let conf = paths.dir.join("pgbackrest.conf");
        let log_path = paths.dir.join("pgbackrest-log");
        let text = format!(
            "[global]\nrepo1-path={}\nlock-path={}\nlog-path={}\nlog-level-console=warn\n\
             log-level-file=detail\nstart-fast=y\n{}\n\n[{}]\npg1-path={}\npg1-socket-path={}\n\
             pg1-port={}\n",
            p(paths.repo),
            p(&paths.dir.join("pgbackrest-lock")),
            p(&log_path),
            paths.global,
            paths.stanza,
            p(&cluster.data_dir()),
            p(&cluster.socket_dir()),
            cluster.port()
        );
        write_postgres(&conf, &text, 0o640);
        PgBackrest {
            conf,
            stanza: paths.stanza.to_string(),
            log_path,
        }
    }

    /// `pgbackrest --config=CONF --stanza=STANZA args...` as `postgres`, with every
    /// `PGBACKREST_*` variable of the test environment removed; not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let config = format!("--config={}", p(&self.conf));
        let stanza = format!("--stanza={}", self.stanza);
        let mut all = vec![config.as_str(), stanza.as_str()];
        all.extend_from_slice(args);
        let mut cmd = postgres_command(PGBACKREST, &all);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PGBACKREST_") {
                cmd.env_remove(&key);
            }
        }
        cmd
    }

    /// Runs `pgbackrest args...` (see [`PgBackrest::command`]).
    pub fn run(&self, args: &[&str]) -> Out {
        run(self.command(args))
    }

    /// An archive_command that pushes with pgBackRest.
    pub fn archive_command(&self) -> String {
        format!(
            "{PGBACKREST} --config={} --stanza={} archive-push %p",
            p(&self.conf),
            self.stanza
        )
    }

    /// A restore_command that fetches with pgBackRest.
    pub fn restore_command(&self) -> String {
        format!(
            "{PGBACKREST} --config={} --stanza={} archive-get %f \"%p\"",
            p(&self.conf),
            self.stanza
        )
    }

    /// The log file of `command` (empty when none).
    pub fn log(&self, command: &str) -> String {
        std::fs::read_to_string(self.log_path.join(format!("{}-{command}.log", self.stanza)))
            .unwrap_or_default()
    }
}
