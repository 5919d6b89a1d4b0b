//! The database connection: tokio-postgres over the unix socket (so PostgreSQL needs no TCP
//! port), driven by a single-threaded runtime owned by the connection, with db-timeout on
//! every query. Commands see a small synchronous API of the facts they need.

use std::path::PathBuf;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

use crate::config::hosts::{self, Host};
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::protocol::request::{NoPayloads, Request, Rows};

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

#[derive(Debug, Clone)]
pub struct BackupStart {
    pub lsn: String,
    pub wal_file: String,
    pub timeline: u32,
}

#[derive(Debug, Clone)]
pub struct BackupStop {
    pub lsn: String,
    pub wal_file: String,
    pub label_file: String,
    pub tablespace_map: String,
}

/// Parses `0/2000028` into a 64-bit LSN.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub struct Db {
    conn: Conn,
    timeout: Duration,
    target: String,
}

/// The session itself: on this host, or in `pg_backrest remote` on pg1-host, which holds the
/// session for as long as our protocol connection lives.
enum Conn {
    Local {
        rt: Runtime,
        /// `None` only while [`Db`] is dropped.
        client: Option<Client>,
        connection: Option<tokio::task::JoinHandle<std::result::Result<(), tokio_postgres::Error>>>,
    },
    Remote(std::sync::Mutex<crate::protocol::client::Client>),
}

/// A failed or unanswered query (pgBackRest's db-query); connecting uses db-connect.
fn db_error(what: &str, target: &str, e: impl std::fmt::Display) -> Error {
    Error::new(Kind::DbQuery, format!("{what} {target}: {e}"))
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
    /// Connects to the cluster: through pg1-host over SSH when it is set, else locally.
    pub fn connect(cfg: &Config) -> Result<Db> {
        match cfg.str("pg1-host") {
            Some(host) if cfg.command != crate::config::Cmd::Remote => {
                let client = crate::protocol::ssh::spawn_remote(
                    &hosts::ssh_target(cfg, Host::Pg)?,
                    &hosts::remote_command(cfg, Host::Pg),
                )?;
                Ok(Db {
                    conn: Conn::Remote(std::sync::Mutex::new(client)),
                    timeout: cfg.seconds("db-timeout"),
                    target: format!("the database on pg1-host '{host}'"),
                })
            }
            _ => Db::connect_local(cfg),
        }
    }

    fn connect_local(cfg: &Config) -> Result<Db> {
        let socket = cfg
            .path("pg1-socket-path")
            .unwrap_or_else(|| PathBuf::from("/var/run/postgresql"));
        let port = cfg.int("pg1-port").unwrap_or(5432) as u16;
        let user = match cfg.str("pg1-user") {
            Some(u) => u.to_string(),
            None => current_os_user()?,
        };
        let database = cfg.str("pg1-database").unwrap_or("postgres");
        Db::connect_socket(&socket, port, &user, database, cfg.seconds("db-timeout"))
    }

    /// Connects through a unix socket directory (the drill's throwaway cluster, say).
    pub fn connect_socket(
        socket: &std::path::Path,
        port: u16,
        user: &str,
        database: &str,
        timeout: Duration,
    ) -> Result<Db> {
        let target = format!(
            "database '{database}' at '{}' port {port} as user '{user}'",
            socket.display()
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("unable to start runtime: {e}")))?;
        let mut pg = tokio_postgres::Config::new();
        pg.host_path(socket)
            .port(port)
            .user(user)
            .dbname(database)
            .application_name("pg_backrest")
            .connect_timeout(timeout);
        let (client, connection) = rt
            .block_on(async { tokio::time::timeout(timeout, pg.connect(NoTls)).await })
            .map_err(|_| {
                db_error("timed out connecting to", &target, "db-timeout reached")
                    .with_kind(Kind::DbConnect)
            })?
            .map_err(|e| {
                db_error("unable to connect to", &target, pg_error(&e))
                    .with_kind(Kind::DbConnect)
                    .with_hint(
                    "check that PostgreSQL is running and pg1-socket-path, pg1-port and pg1-user are right",
                )
            })?;
        let connection = rt.spawn(connection);
        Ok(Db {
            conn: Conn::Local {
                rt,
                client: Some(client),
                connection: Some(connection),
            },
            timeout,
            target,
        })
    }

    /// The protocol connection to pg1-host when the database is there: the backup asks the
    /// same remote process for its file list.
    pub fn remote(&self) -> Option<&std::sync::Mutex<crate::protocol::client::Client>> {
        match &self.conn {
            Conn::Remote(c) => Some(c),
            Conn::Local { .. } => None,
        }
    }

    /// Runs a query returning one row of text columns.
    pub fn query_row(&self, sql: &str) -> Result<Vec<Option<String>>> {
        self.query_rows(sql)?.into_iter().next().ok_or_else(|| {
            db_error(
                &format!("query '{sql}' returned no row on"),
                &self.target,
                "empty result",
            )
        })
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

    /// Runs a query returning any number of rows of text columns.
    pub fn query_rows(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let (rt, client) = match &self.conn {
            Conn::Local {
                rt,
                client: Some(client),
                ..
            } => (rt, client),
            Conn::Local { client: None, .. } => {
                return Err(Error::internal("query on a closed database session"))
            }
            Conn::Remote(c) => {
                let mut c = c
                    .lock()
                    .map_err(|_| Error::internal("database client lock poisoned"))?;
                let request = Request::<NoPayloads>::DbQuery {
                    sql: sql.to_string(),
                };
                let reply: serde_json::Value = c.call_waiting(&request, self.timeout)?;
                // Decoded here rather than by the client, so that bad rows stay a db-query
                // error naming the query.
                return serde_json::from_value::<Rows>(reply)
                    .map(|r| r.rows)
                    .map_err(|e| {
                        db_error(
                            &format!("query '{sql}' returned malformed rows from"),
                            &self.target,
                            e,
                        )
                    });
            }
        };
        let msgs = rt
            .block_on(async { tokio::time::timeout(self.timeout, client.simple_query(sql)).await })
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
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }

    /// Starts a non-exclusive backup on this connection, which must stay open until
    /// [`Db::backup_stop`]: PostgreSQL aborts the backup when its session ends.
    pub fn backup_start(&self, label: &str, fast: bool) -> Result<BackupStart> {
        let row = self.query_row(&format!(
            "select lsn::text, pg_walfile_name(lsn), (select timeline_id from pg_control_checkpoint()) \
             from pg_backup_start('{}', {fast}) as lsn",
            label.replace('\'', "")
        ))?;
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(BackupStart {
            lsn: field(0),
            wal_file: field(1),
            timeline: field(2).parse().unwrap_or(1),
        })
    }

    /// Ends the backup started on this connection; returns the stop LSN and segment and the
    /// backup_label / tablespace_map contents that belong in the backup.
    pub fn backup_stop(&self) -> Result<BackupStop> {
        let row = self.query_row("select lsn::text, labelfile, spcmapfile, pg_walfile_name(lsn) from pg_backup_stop(false)")
            .map_err(|e| e.context("unable to stop the backup (if the connection was lost, PostgreSQL aborted the backup)"))?;
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(BackupStop {
            lsn: field(0),
            label_file: field(1),
            tablespace_map: field(2),
            wal_file: field(3),
        })
    }

    /// Ends a backup that will not be finished (the backup failed, or a signal stopped it).
    /// PostgreSQL would also abort it when the session ends, but only once its backend
    /// notices, after we are gone; stopped here, it is over before the command exits. Best
    /// effort: when the session is already lost, PostgreSQL has aborted the backup itself.
    pub fn abort_backup(&self) {
        match self.query_rows("select pg_backup_stop(false)") {
            Ok(_) => crate::info!("backup stopped on {} (pg_backup_stop)", self.target),
            Err(e) => crate::info!(
                "unable to stop the backup on {}: {} (PostgreSQL aborts it when the session ends)",
                self.target,
                e.message
            ),
        }
    }

    /// User tablespaces: oid, name, location.
    pub fn tablespaces(&self) -> Result<Vec<(String, String, String)>> {
        Ok(self
            .query_rows("select oid::text, spcname, pg_tablespace_location(oid) from pg_tablespace where spcname not in ('pg_default', 'pg_global')")?
            .into_iter()
            .map(|r| {
                let f = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
                (f(0), f(1), f(2))
            })
            .collect())
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

impl Drop for Db {
    /// Ends the session in order: without the client the connection task sends PostgreSQL
    /// Terminate and closes the socket, and waiting for it (bounded by db-timeout) keeps the
    /// runtime's drop from cutting the socket first, so a command that exits, a signal's
    /// included, has told its backend to end. A remote session ends with its `remote` process.
    fn drop(&mut self) {
        if let Conn::Local {
            rt,
            client,
            connection,
        } = &mut self.conn
        {
            drop(client.take());
            if let Some(task) = connection.take() {
                let limit = self.timeout;
                let _ = rt.block_on(async { tokio::time::timeout(limit, task).await });
            }
        }
    }
}

pub fn current_os_user() -> Result<String> {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .ok_or_else(|| {
            Error::new(
                Kind::UserMissing,
                format!("unable to find the name of OS user {uid}; set pg1-user"),
            )
        })
}

/// Checks that `pg1-path` is the data directory of the cluster we are connected to.
pub fn check_data_directory(facts: &ClusterFacts, pg1_path: &std::path::Path) -> Result<()> {
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if canon(&facts.data_directory) != canon(pg1_path) {
        return Err(Error::new(
            Kind::DbMismatch,
            format!(
                "pg1-path '{}' is not the data directory of the running cluster, which is '{}'",
                pg1_path.display(),
                facts.data_directory.display()
            ),
        )
        .with_hint(
            "set pg1-path to the cluster's data_directory, or connect to the right cluster",
        ));
    }
    Ok(())
}
