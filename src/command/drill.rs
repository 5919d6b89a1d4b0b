//! drill: the restore rehearsal in one command. It restores a backup (with any recovery
//! target) into a throwaway directory, starts PostgreSQL there on a free port with settings
//! that cannot touch production (no TCP listener, archiving off, no replication), waits for
//! recovery to reach its target, runs pg_amcheck when installed and a sanity query in every
//! database, reports what was recovered and how long each step took, then stops the copy and
//! removes it, whatever happened, also when SIGINT, SIGTERM or SIGHUP stops it (exit 63).
//! Any failure is the command's failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::restore::{self, target::RecoveryTarget};
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::pg::db::{current_os_user, Db};

/// The throwaway copy: stopped and removed when dropped.
struct Copy {
    dir: PathBuf,
    data: PathBuf,
    pg_ctl: PathBuf,
    started: bool,
}

impl Drop for Copy {
    fn drop(&mut self) {
        if self.started {
            let _ = Command::new(&self.pg_ctl)
                .args(["-D"])
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn run(cfg: &Config) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        return Err(
            Error::config("drill runs PostgreSQL, which refuses root").with_hint(
                "run drill as the cluster's owner, e.g. 'sudo -u postgres pg_backrest ... drill'",
            ),
        );
    }
    let stanza = cfg.stanza_required()?;
    let target = RecoveryTarget::from_config(cfg)?;
    let timeout = cfg.seconds("drill-timeout");
    let base = cfg
        .required_path("drill-path")?
        .join(format!("pg_backrest-drill-{stanza}-{}", std::process::id()));
    std::fs::create_dir_all(&base).map_err(|e| Error::io("create drill directory", &base, e))?;
    let mut copy = Copy {
        dir: base.clone(),
        data: base.join("pgdata"),
        pg_ctl: PathBuf::from("pg_ctl"),
        started: false,
    };

    let t_restore = Instant::now();
    // Tablespaces and a linked pg_wal go inside the drill directory too: the copy must never
    // write where production lives.
    let restored = restore::restore(cfg, &copy.data, &target, false, Some(&base.join("links")))?;
    crate::signal::check()?;
    write_missing_configs(&copy.data)?;
    let restore_secs = t_restore.elapsed();
    let bin = pg_bin(&restored.version);
    copy.pg_ctl = bin.join("pg_ctl");

    // Settings that keep the copy away from production: no TCP listener (so no replication
    // either), no archiving into the repository, no upstream. max_wal_senders and friends
    // stay as they were: recovery refuses values below the primary's.
    let port = free_port()?;
    let auto = copy.data.join("postgresql.auto.conf");
    let mut conf = std::fs::read_to_string(&auto).map_err(|e| Error::io("read", &auto, e))?;
    conf.push_str(&format!(
        "# pg_backrest drill\nport = {port}\nlisten_addresses = ''\nunix_socket_directories = '{}'\n\
         archive_mode = off\narchive_command = ''\nprimary_conninfo = ''\nhot_standby = on\n",
        base.display()
    ));
    std::fs::write(&auto, conf).map_err(|e| Error::io("write", &auto, e))?;

    let t_start = Instant::now();
    let log = base.join("postgresql.log");
    let started = Command::new(&copy.pg_ctl)
        .arg("-D")
        .arg(&copy.data)
        .arg("-l")
        .arg(&log)
        // pg_ctl takes whole seconds: round a fractional drill-timeout up, never to 0.
        .args([
            "-w",
            "-t",
            &timeout.as_secs_f64().ceil().max(1.0).to_string(),
            "start",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::io("run", &copy.pg_ctl, e))?;
    copy.started = true;
    crate::signal::check()?;
    if !started.status.success() {
        return Err(Error::new(
            Kind::DrillFailed,
            format!(
                "PostgreSQL did not start on the restored copy: {}",
                log_tail(&log)
            ),
        )
        .with_hint("the backup or its WAL may be damaged; run verify"));
    }
    let user = current_os_user()?;
    let db = wait_recovered(&base, port, &user, timeout, &log)?;
    let recovery_secs = t_start.elapsed();
    let promoted = db
        .query_row("select pg_is_in_recovery()")?
        .first()
        .cloned()
        .flatten()
        .as_deref()
        == Some("f");
    let position_sql = if promoted {
        "select pg_current_wal_lsn()::text, coalesce(pg_last_xact_replay_timestamp()::text, '-')"
    } else {
        "select pg_last_wal_replay_lsn()::text, coalesce(pg_last_xact_replay_timestamp()::text, '-')"
    };
    let position = db.query_row(position_sql)?;
    let lsn = position.first().cloned().flatten().unwrap_or_default();
    let time = position.get(1).cloned().flatten().unwrap_or_default();

    let t_checks = Instant::now();
    crate::signal::check()?;
    let amcheck = run_amcheck(&bin, &base, port, promoted)?;
    let databases: Vec<String> = db
        .query_rows("select datname from pg_database where datallowconn order by datname")?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
    drop(db);
    for name in &databases {
        crate::signal::check()?;
        let d = Db::connect_socket(&base, port, &user, name, timeout)?;
        d.query_row("select count(*) from pg_class").map_err(|e| {
            e.context(format!(
                "sanity query in database '{name}' of the drill copy"
            ))
        })?;
    }
    let checks_secs = t_checks.elapsed();

    let t_stop = Instant::now();
    let stopped = Command::new(&copy.pg_ctl)
        .arg("-D")
        .arg(&copy.data)
        .args(["-m", "fast", "-w", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| Error::io("run", &copy.pg_ctl, e))?;
    if stopped.success() {
        copy.started = false;
    }
    let stop_secs = t_stop.elapsed();
    drop(copy);

    let report = format!(
        "drill of backup {label}: ok\n\
         \x20   restore: {files} files in {restore:.1}s\n\
         \x20   recovery: {state} at LSN {lsn}, last replayed transaction {time}, in {recovery:.1}s (includes start)\n\
         \x20   pg_amcheck: {amcheck}\n\
         \x20   databases checked: {dbs}\n\
         \x20   drill overhead (checks {checks:.1}s, stop {stop:.1}s)\n",
        label = restored.label,
        files = restored.files,
        restore = restore_secs.as_secs_f64(),
        state = if promoted { "promoted" } else { "paused at the target" },
        recovery = recovery_secs.as_secs_f64(),
        dbs = databases.join(", "),
        checks = checks_secs.as_secs_f64(),
        stop = stop_secs.as_secs_f64(),
    );
    print!("{report}");
    crate::info!("{}", report.lines().collect::<Vec<_>>().join("; "));
    Ok(())
}

/// PostgreSQL's binaries for the backup's major version (Debian's layout), else the
/// directory on PATH that has pg_ctl.
fn pg_bin(version: &str) -> PathBuf {
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
    if debian.join("pg_ctl").exists() {
        return debian;
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.join("pg_ctl").exists())
        .unwrap_or_default()
}

/// Packaged clusters keep postgresql.conf and pg_hba.conf outside the data directory, so the
/// backup has none: give the copy minimal ones. Its settings are in postgresql.auto.conf, and
/// only its owner can reach its private socket directory.
fn write_missing_configs(data: &Path) -> Result<()> {
    for (name, text) in [
        (
            "postgresql.conf",
            "# written by pg_backrest drill: the backup had no postgresql.conf\n",
        ),
        (
            "pg_hba.conf",
            "# written by pg_backrest drill: the backup had no pg_hba.conf\nlocal all all trust\n",
        ),
    ] {
        let path = data.join(name);
        if !path.exists() {
            std::fs::write(&path, text).map_err(|e| Error::io("write", &path, e))?;
        }
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("find a free port", Path::new("127.0.0.1"), e))
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("FATAL") || l.contains("PANIC") || l.contains("ERROR"))
        .collect();
    lines
        .last()
        .map_or_else(|| "see the server log".to_string(), |l| l.to_string())
}

/// Waits until recovery promoted or paused at its target.
fn wait_recovered(
    socket: &Path,
    port: u16,
    user: &str,
    timeout: Duration,
    log: &Path,
) -> Result<Db> {
    let deadline = Instant::now() + timeout;
    loop {
        crate::signal::check()?;
        if let Ok(db) = Db::connect_socket(socket, port, user, "postgres", Duration::from_secs(10))
        {
            if let Ok(row) = db.query_row(
                // The pause state can only be asked during recovery.
                "select pg_is_in_recovery()::text, \
                 case when pg_is_in_recovery() then pg_get_wal_replay_pause_state() end",
            ) {
                let state = (
                    row.first().cloned().flatten(),
                    row.get(1).cloned().flatten(),
                );
                if state.0.as_deref() == Some("false") || state.1.as_deref() == Some("paused") {
                    return Ok(db);
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::new(
                Kind::DrillTimeout,
                format!("recovery of the drill copy did not reach its target within drill-timeout ({}): {}", crate::config::fmt_seconds(timeout), log_tail(log)),
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// pg_amcheck over every database, when installed and the copy is writable (it installs
/// the amcheck extension in the throwaway copy).
fn run_amcheck(bin: &Path, socket: &Path, port: u16, promoted: bool) -> Result<String> {
    let amcheck = bin.join("pg_amcheck");
    if !promoted {
        return Ok("skipped: the copy is paused in recovery (read-only)".into());
    }
    if !amcheck.exists() {
        return Ok("not installed".into());
    }
    let t = Instant::now();
    let out = Command::new(&amcheck)
        .arg("-h")
        .arg(socket)
        .args([
            "-p",
            &port.to_string(),
            "--all",
            "--install-missing",
            "--heapallindexed",
        ])
        .output()
        .map_err(|e| Error::io("run", &amcheck, e))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        return Err(Error::new(
            Kind::DrillDamaged,
            format!("pg_amcheck found problems in the restored copy: {first}"),
        )
        .with_hint(
            "the backup restores to a damaged cluster; take a new full backup and investigate",
        ));
    }
    Ok(format!("ok in {:.1}s", t.elapsed().as_secs_f64()))
}
