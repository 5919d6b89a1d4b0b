//! Hooks: the shell commands `hook-COMMAND-start`, `-success` and `-failure` that the
//! dispatcher runs around a command, so a scheduler can prepare for a backup, stop it when the
//! preparation failed, and hear about every outcome.
//!
//! A hook runs as `/bin/sh -c HOOK` in its own process group with stdin closed, and with
//! `PG_BACKREST_STANZA`, `_COMMAND`, `_HOOK` and, where known, `_BACKUP_LABEL`,
//! `_BACKUP_TYPE`, `_EXIT_CODE` and `_ERROR` in its environment. Its output goes to the log
//! line by line. One that outlives `hook-timeout` is killed with its whole process group.
//! A failed start hook becomes the command's [`Kind::HookAborted`] error quoting the hook's
//! last stderr line; a failed success or failure hook is only a warning, so it never changes
//! the command's result. The hook's own command line is never logged: it may hold a password.
//!
//! An unset hook costs one lookup in the resolved options and spawns nothing, which keeps
//! archive-push's hot path as it was.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::options::hook_option;
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::manifest::BackupType;

/// Where in a command's life a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Start,
    Success,
    Failure,
}

impl Point {
    pub fn name(self) -> &'static str {
        match self {
            Point::Start => "start",
            Point::Success => "success",
            Point::Failure => "failure",
        }
    }
}

/// What the command has told the dispatcher about itself so far: the backup it works on,
/// once known. Backup fills it in as soon as it has chosen its label, so the failure hook of
/// a backup that failed halfway still learns which one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFacts {
    pub backup_label: Option<String>,
    pub backup_type: Option<BackupType>,
}

/// The environment variables pg_backrest sets for a hook; removed from the inherited
/// environment first so that stale values from a caller never reach it.
const HOOK_ENV: [&str; 7] = [
    "PG_BACKREST_STANZA",
    "PG_BACKREST_COMMAND",
    "PG_BACKREST_HOOK",
    "PG_BACKREST_BACKUP_LABEL",
    "PG_BACKREST_BACKUP_TYPE",
    "PG_BACKREST_EXIT_CODE",
    "PG_BACKREST_ERROR",
];

/// How long the output readers may go on after the hook exited (a background child of the
/// hook may hold its pipes open).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Runs the command's hook for `point`, if one is set. `Err` (kind [`Kind::HookAborted`])
/// when it could not run, exited non-zero or timed out; the caller decides whether that
/// aborts the command or is a warning.
pub fn run(cfg: &Config, point: Point, facts: &RunFacts, failure: Option<&Error>) -> Result<()> {
    let Some(option) = hook_option(cfg.command, point.name()) else {
        return Ok(());
    };
    let Some(shell) = cfg.str(option) else {
        return Ok(());
    };
    let timeout = cfg.seconds("hook-timeout");
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(shell)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for name in HOOK_ENV {
        command.env_remove(name);
    }
    command
        .env("PG_BACKREST_STANZA", cfg.stanza().unwrap_or(""))
        .env("PG_BACKREST_COMMAND", cfg.command.name())
        .env("PG_BACKREST_HOOK", point.name());
    if let Some(label) = &facts.backup_label {
        command.env("PG_BACKREST_BACKUP_LABEL", label);
    }
    if let Some(t) = facts.backup_type {
        command.env("PG_BACKREST_BACKUP_TYPE", t.name());
    }
    if let Some(e) = failure {
        command
            .env("PG_BACKREST_EXIT_CODE", e.exit_code().to_string())
            .env("PG_BACKREST_ERROR", &e.message);
    }

    crate::info!("{option}: running");
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| Error::new(Kind::HookAborted, format!("unable to run {option}: {e}")))?;
    let (tx, rx) = mpsc::channel::<(bool, String)>();
    if let Some(out) = child.stdout.take() {
        forward_lines(out, false, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        forward_lines(err, true, tx);
    }

    let mut last_stderr: Option<String> = None;
    let mut take = |(is_err, line): (bool, String)| {
        crate::info!("{option}: {}{line}", if is_err { "stderr: " } else { "" });
        if is_err && !line.trim().is_empty() {
            last_stderr = Some(line);
        }
    };
    let mut timed_out = false;
    let status = loop {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
            take(line);
        }
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= timeout => {
                timed_out = true;
                kill_group(child.id());
                break child.wait().ok();
            }
            Ok(None) => {}
            Err(_) => break None,
        }
    };
    let grace = Instant::now() + OUTPUT_GRACE;
    while let Some(left) = grace.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => take(line),
            Err(_) => break,
        }
    }

    let why = if timed_out {
        format!(
            "did not finish within hook-timeout ({}) and was killed",
            crate::config::fmt_seconds(timeout)
        )
    } else {
        match status {
            Some(s) if s.success() => {
                crate::info!(
                    "{option}: completed in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Some(s) => match (s.code(), s.signal()) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                (None, None) => "failed".to_string(),
            },
            None => "could not be waited for".to_string(),
        }
    };
    let quoted = match last_stderr {
        Some(line) => format!("'{}'", line.trim_end()),
        None => "(nothing on stderr)".to_string(),
    };
    Err(Error::new(
        Kind::HookAborted,
        format!("{option} {why}: {quoted}"),
    ))
}

/// Sends each line of `stream` to `tx` from a thread of its own.
fn forward_lines(
    stream: impl Read + Send + 'static,
    is_err: bool,
    tx: mpsc::Sender<(bool, String)>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send((is_err, line)).is_err() {
                break;
            }
        }
    });
}

/// Kills the hook and everything it started: it leads its own process group.
fn kill_group(pid: u32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}
