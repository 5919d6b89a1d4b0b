//! `PgCluster`: owns a throwaway PostgreSQL 15 cluster (initdb, start/stop, psql, pgbench)
//! that runs as `postgres`, reachable only through its own unix-socket directory.

use super::{chmod, chown_postgres, free_port, mkdir_postgres, postgres_command, run, tail, Out};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Directory holding initdb, pg_ctl, psql, pgbench.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A cluster under `dir`: `dir/pgdata` (data), `dir/socket` (unix socket), `dir/pg.log`.
pub struct PgCluster {
    dir: PathBuf,
    port: u16,
}

/// A single-quoted postgresql.conf / SQL literal.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

impl PgCluster {
    /// Runs initdb (checksums on, trust auth) in `dir/pgdata` and appends to postgresql.conf the
    /// harness settings followed by `settings`. Values are raw: the harness quotes them, so
    /// pass `("archive_command", "pg_backrest ... %p")`, not `"'...'"`. Does not start it.
    pub fn init(dir: &Path, settings: &[(&str, &str)]) -> PgCluster {
        mkdir_postgres(dir);
        let cluster = PgCluster {
            dir: dir.to_path_buf(),
            port: free_port(),
        };
        mkdir_postgres(&cluster.socket_dir());
        let out = run(postgres_command(
            format!("{PG_BIN}/initdb"),
            &[
                "--data-checksums",
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
                path_str(&cluster.data_dir()),
            ],
        ));
        if !out.success() {
            panic!("initdb of {} failed:\n{out}", cluster.data_dir().display());
        }
        let port = cluster.port.to_string();
        let socket_dir = cluster.socket_dir();
        let mut conf = String::from("\n# --- added by the pg_backrest test harness ---\n");
        let harness: [(&str, &str); 5] = [
            ("port", &port),
            ("unix_socket_directories", path_str(&socket_dir)),
            ("listen_addresses", ""),
            ("wal_level", "replica"),
            ("max_wal_size", "1GB"),
        ];
        for (k, v) in harness.iter().chain(settings) {
            conf.push_str(&format!("{k} = {}\n", quote(v)));
        }
        let conf_path = cluster.data_dir().join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", conf_path.display()));
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)
            .unwrap_or_else(|e| panic!("writing {}: {e}", conf_path.display()));
        chown_postgres(&conf_path);
        chmod(&conf_path, 0o600);
        cluster
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("socket")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("pg.log")
    }

    /// Contents of the server log (empty if none yet).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether a postmaster.pid exists (the server is running or crashed without cleanup).
    pub fn is_running(&self) -> bool {
        self.data_dir().join("postmaster.pid").exists()
    }

    fn pg_ctl(&self, args: &[&str]) -> Out {
        let mut cmd = postgres_command(format!("{PG_BIN}/pg_ctl"), &["-D"]);
        cmd.arg(self.data_dir()).args(args);
        run(cmd)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) {
        let log = self.log_path();
        let out = self.pg_ctl(&["-w", "-t", "120", "-l", path_str(&log), "start"]);
        if !out.success() {
            panic!(
                "pg_ctl start failed:\n{out}\n--- pg.log (tail) ---\n{}",
                tail(&self.log(), 50)
            );
        }
    }

    /// Stops the server with a fast shutdown (clean, with a shutdown checkpoint).
    pub fn stop(&self) {
        let out = self.pg_ctl(&["-w", "-t", "120", "-m", "fast", "stop"]);
        if !out.success() {
            panic!(
                "pg_ctl stop (fast) failed:\n{out}\n--- pg.log (tail) ---\n{}",
                tail(&self.log(), 50)
            );
        }
    }

    /// Stops the server with an immediate shutdown (like a crash: recovery runs on next start).
    pub fn stop_immediate(&self) {
        let out = self.pg_ctl(&["-w", "-t", "120", "-m", "immediate", "stop"]);
        if !out.success() {
            panic!(
                "pg_ctl stop (immediate) failed:\n{out}\n--- pg.log (tail) ---\n{}",
                tail(&self.log(), 50)
            );
        }
    }

    /// Asks the running server to re-read its configuration.
    pub fn reload(&self) {
        let out = self.pg_ctl(&["reload"]);
        if !out.success() {
            panic!(
                "pg_ctl reload failed:\n{out}\n--- pg.log (tail) ---\n{}",
                tail(&self.log(), 50)
            );
        }
    }

    /// `ALTER SYSTEM SET k = 'v'` for each setting (server must be running); call `reload()`
    /// afterwards for reloadable settings such as archive_command.
    pub fn set_settings(&self, settings: &[(&str, &str)]) {
        for (k, v) in settings {
            self.psql(&format!("ALTER SYSTEM SET {k} = {}", quote(v)));
        }
    }

    /// A client command (psql, pgbench, ...) as postgres, aimed at this cluster via PGHOST etc.
    pub fn client_command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = postgres_command(format!("{PG_BIN}/{program}"), args);
        cmd.env("PGHOST", self.socket_dir())
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "postgres");
        cmd
    }

    /// Runs `sql` with psql (-X -A -t -q, ON_ERROR_STOP); Ok(trimmed stdout) or Err(stderr).
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let port = self.port.to_string();
        let socket = self.socket_dir();
        let out = run(self.client_command(
            "psql",
            &[
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                path_str(&socket),
                "-p",
                &port,
                "-d",
                "postgres",
                "-c",
                sql,
            ],
        ));
        if out.success() {
            Ok(out.stdout.trim().to_string())
        } else {
            Err(format!("exit status {}: {}", out.status, out.stderr.trim()))
        }
    }

    /// Fails the test, quoting the server log, if archive_command has failed even once.
    pub fn assert_archiving_never_failed(&self) {
        let failed = self.psql("select failed_count from pg_stat_archiver");
        assert_eq!(
            failed,
            "0",
            "archive_command failed:\n{}",
            tail(&self.log(), 30)
        );
    }

    /// Like `try_psql`, but panics (with psql's stderr and the server log) on failure.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql).unwrap_or_else(|err| {
            panic!(
                "psql failed running {sql:?}: {err}\n--- pg.log (tail) ---\n{}",
                tail(&self.log(), 50)
            )
        })
    }

    /// Runs pgbench with `args` against this cluster (database `postgres`); panics on failure.
    pub fn pgbench(&self, args: &[&str]) -> Out {
        let out = run(self.client_command("pgbench", args));
        if !out.success() {
            panic!(
                "pgbench {args:?} failed:\n{out}\n--- pg.log (tail) ---\n{}",
                tail(&self.log(), 50)
            );
        }
        out
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.is_running() {
            let out = self.pg_ctl(&["-w", "-t", "60", "-m", "immediate", "stop"]);
            if !out.success() {
                eprintln!(
                    "warning: stopping cluster {} on drop failed:\n{out}",
                    self.dir.display()
                );
            }
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}
