//! The database connection: tokio-postgres over the unix socket (so PostgreSQL needs no TCP
//! port), driven by a single-threaded runtime owned by the connection, with db-timeout on
//! every query. Commands see a small synchronous API of the facts they need.

use std::path::PathBuf;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

use crate::config::Config;
use crate::error::{Error, Kind, Result};

/// Identity of the running cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFacts {
    pub system_id: u64,
    /// Major version as PostgreSQL names it, e.g. "15".
    pub version: String,
    pub control_version: u32,
    pub catalog_version: u32,
    pub data_directory: PathBuf,
}

pub struct Db {
    rt: Runtime,
    client: Client,
    timeout: Duration,
    target: String,
}

fn db_error(what: &str, target: &str, e: impl std::fmt::Display) -> Error {
    Error::new(Kind::Database, format!("{what} {target}: {e}"))
}

/// tokio-postgres puts the useful part ("No such file or directory", the server's message)
/// in the error's source chain; show all of it.
fn pg_error(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

impl Db {
    pub fn connect(cfg: &Config) -> Result<Db> {
        let socket = cfg
            .path("pg1-socket-path")
            .unwrap_or_else(|| PathBuf::from("/var/run/postgresql"));
        let port = cfg.int("pg1-port").unwrap_or(5432) as u16;
        let user = match cfg.str("pg1-user") {
            Some(u) => u.to_string(),
            None => current_os_user()?,
        };
        let database = cfg.str("pg1-database").unwrap_or("postgres").to_string();
        let timeout = cfg.seconds("db-timeout");
        let target = format!(
            "database '{database}' at '{}' port {port} as user '{user}'",
            socket.display()
        );

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("unable to start runtime: {e}")))?;
        let mut pg = tokio_postgres::Config::new();
        pg.host_path(&socket)
            .port(port)
            .user(&user)
            .dbname(&database)
            .application_name("pg_backrest")
            .connect_timeout(timeout);
        let (client, connection) = rt
            .block_on(async { tokio::time::timeout(timeout, pg.connect(NoTls)).await })
            .map_err(|_| db_error("timed out connecting to", &target, "db-timeout reached"))?
            .map_err(|e| {
                db_error("unable to connect to", &target, pg_error(&e)).with_hint(
                    "check that PostgreSQL is running and pg1-socket-path, pg1-port and pg1-user are right",
                )
            })?;
        rt.spawn(connection);
        Ok(Db {
            rt,
            client,
            timeout,
            target,
        })
    }

    /// Runs a query returning one row of text columns.
    pub fn query_row(&self, sql: &str) -> Result<Vec<Option<String>>> {
        let rows = self
            .rt
            .block_on(async {
                tokio::time::timeout(self.timeout, self.client.simple_query(sql)).await
            })
            .map_err(|_| {
                db_error(
                    &format!("query '{sql}' timed out (db-timeout) on"),
                    &self.target,
                    "no answer",
                )
            })?
            .map_err(|e| {
                db_error(
                    &format!("query '{sql}' failed on"),
                    &self.target,
                    pg_error(&e),
                )
            })?;
        for msg in rows {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = msg {
                return Ok((0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect());
            }
        }
        Err(db_error(
            &format!("query '{sql}' returned no row on"),
            &self.target,
            "empty result",
        ))
    }

    fn query_value(&self, sql: &str) -> Result<String> {
        self.query_row(sql)?
            .into_iter()
            .next()
            .flatten()
            .ok_or_else(|| {
                db_error(
                    &format!("query '{sql}' returned NULL on"),
                    &self.target,
                    "null",
                )
            })
    }

    pub fn cluster_facts(&self) -> Result<ClusterFacts> {
        let row = self.query_row(
            "select system_identifier, pg_control_version, catalog_version_no, \
             current_setting('server_version_num'), current_setting('data_directory') \
             from pg_control_system()",
        )?;
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let bad = |what: &str| db_error(&format!("unexpected {what} from"), &self.target, field(0));
        let version_num: u32 = field(3).parse().map_err(|_| bad("server_version_num"))?;
        Ok(ClusterFacts {
            system_id: field(0).parse().map_err(|_| bad("system identifier"))?,
            version: (version_num / 10000).to_string(),
            control_version: field(1).parse().map_err(|_| bad("control version"))?,
            catalog_version: field(2).parse().map_err(|_| bad("catalog version"))?,
            data_directory: PathBuf::from(field(4)),
        })
    }

    pub fn setting(&self, name: &str) -> Result<String> {
        self.query_value(&format!(
            "select current_setting('{}')",
            name.replace('\'', "''")
        ))
    }

    pub fn in_recovery(&self) -> Result<bool> {
        Ok(self.query_value("select pg_is_in_recovery()")? == "t")
    }

    /// Writes a restore point (so there is WAL to switch away from) and switches WAL; returns
    /// the name of the segment that was just completed.
    pub fn switch_wal(&self) -> Result<String> {
        self.query_value("select pg_create_restore_point('pg_backrest archive check')")?;
        self.query_value("select pg_walfile_name(pg_switch_wal())")
    }
}

pub fn current_os_user() -> Result<String> {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .ok_or_else(|| {
            Error::config(format!(
                "unable to find the name of OS user {uid}; set pg1-user"
            ))
        })
}

/// Checks that `pg1-path` is the data directory of the cluster we are connected to.
pub fn check_data_directory(facts: &ClusterFacts, pg1_path: &std::path::Path) -> Result<()> {
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if canon(&facts.data_directory) != canon(pg1_path) {
        return Err(Error::config(format!(
            "pg1-path '{}' is not the data directory of the running cluster, which is '{}'",
            pg1_path.display(),
            facts.data_directory.display()
        ))
        .with_hint(
            "set pg1-path to the cluster's data_directory, or connect to the right cluster",
        ));
    }
    Ok(())
}
