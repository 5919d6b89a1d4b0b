//! Logging to three places at independent levels: the console (stdout), stderr, and one file
//! per stanza and command in log-path (`STANZA-COMMAND.log`, `all-COMMAND.log` without a
//! stanza). File lines carry time, pid and level.
//!
//! Console and stderr combine as in pgBackRest (its common/log.c): a message at or above
//! log-level-stderr goes to stderr only, else to stdout if at or above log-level-console.
//! With pgBackRest's defaults (both warn) warnings and errors are on stderr and nothing is on
//! stdout, so a cron job that sends stdout to /dev/null still mails its warnings.
//!
//! Logging must never cost a WAL segment: a log file that cannot be opened or written is a
//! warning on the console and the command goes on without it.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Off,
    Error,
    Warn,
    Info,
    Detail,
    Debug,
    Trace,
}

impl Level {
    pub fn parse(s: &str) -> Level {
        match s {
            "error" => Level::Error,
            "warn" => Level::Warn,
            "info" => Level::Info,
            "detail" => Level::Detail,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => Level::Off,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Level::Off => "OFF",
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Detail => "DETAIL",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }
}

struct Logger {
    console: Level,
    stderr: Level,
    file_level: Level,
    file: Option<File>,
}

static LOGGER: Mutex<Logger> = Mutex::new(Logger {
    console: Level::Warn,
    stderr: Level::Warn,
    file_level: Level::Off,
    file: None,
});

/// Where and how much to log, from the resolved options.
pub struct Settings<'a> {
    pub console: Level,
    pub stderr: Level,
    pub file: Level,
    pub log_path: &'a Path,
    /// File name without `.log`, e.g. `main-archive-push`.
    pub file_stem: String,
}

/// Sets the levels and opens the log file. A log file that cannot be opened is reported as a
/// warning and file logging is turned off.
pub fn init(settings: &Settings<'_>) {
    let mut warning = None;
    let file = if settings.file > Level::Off {
        match open_log_file(settings.log_path, &settings.file_stem) {
            Ok(f) => Some(f),
            Err(e) => {
                warning = Some(format!("{e}; file logging is off for this command"));
                None
            }
        }
    } else {
        None
    };
    if let Ok(mut l) = LOGGER.lock() {
        l.console = settings.console;
        l.stderr = settings.stderr;
        l.file_level = if file.is_some() {
            settings.file
        } else {
            Level::Off
        };
        l.file = file;
    }
    if let Some(w) = warning {
        log(Level::Warn, format_args!("{w}"));
    }
}

fn open_log_file(dir: &Path, stem: &str) -> Result<File, String> {
    let path = dir.join(format!("{stem}.log"));
    for (place, what) in [(dir, "log path"), (path.as_path(), "log file")] {
        crate::storage::posix::check_owner(place, what).map_err(|e| e.message)?;
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|e| format!("unable to create log path '{}': {e}", dir.display()))?;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(&path)
        .map_err(|e| format!("unable to open log file '{}': {e}", path.display()))
}

pub fn log(level: Level, args: fmt::Arguments<'_>) {
    let Ok(mut l) = LOGGER.lock() else { return };
    if level <= l.stderr {
        let _ = writeln!(std::io::stderr(), "{}: {args}", level.label());
    } else if level <= l.console {
        let _ = writeln!(std::io::stdout(), "{}: {args}", level.label());
    }

    if level <= l.file_level {
        write_file_line(&mut l, level, args);
    }
}

fn write_file_line(l: &mut Logger, level: Level, args: fmt::Arguments<'_>) {
    let Some(f) = l.file.as_mut() else { return };
    let line = format!(
        "{} P{} {:>6}: {args}\n",
        chrono::Local::now().format("%Y-%m-%d %H:%M:%S%.3f"),
        std::process::id(),
        level.label()
    );
    if f.write_all(line.as_bytes()).is_err() {
        // A full or vanished log disk must not fail the command; stop trying.
        l.file = None;
        l.file_level = Level::Off;
    }
}

/// The command's final error: always on stderr (whatever log-level-stderr says, so
/// PostgreSQL and cron see it), and in the log file.
pub fn final_error(rendered: &str) {
    let _ = writeln!(std::io::stderr(), "{rendered}");
    if let Ok(mut l) = LOGGER.lock() {
        if l.file_level >= Level::Error {
            write_file_line(
                &mut l,
                Level::Error,
                format_args!("{}", rendered.trim_start_matches("ERROR: ")),
            );
        }
    }
}

/// Whether a message at `level` would go anywhere; lets hot paths skip formatting.
pub fn enabled(level: Level) -> bool {
    LOGGER
        .lock()
        .map(|l| level <= l.console || level <= l.stderr || level <= l.file_level)
        .unwrap_or(false)
}

#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Error, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Warn, format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Info, format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! detail {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Detail, format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Debug, format_args!($($arg)*)) };
}
