//! Integration-test harness: owns the fixtures the integration tests run against (a scratch
//! directory, a PostgreSQL cluster, an OpenSSH server, an S3 server over HTTPS with a fault
//! injector) and the helpers that run our binary and other programs as the `postgres` OS user.
//!
//! Tests must run as root (PostgreSQL refuses root, so everything runs via `runuser -u postgres`,
//! and sshd must start as root). Declare a `TestDir` before the fixtures placed in it so that
//! the fixtures are dropped (servers stopped) before the directory is removed.

#![allow(dead_code, unused_imports)]

mod pg;
mod pgbackrest;
mod proc;
pub mod s3;
pub mod s3_fault;
mod sshd;
mod testdir;

pub use pg::{PgCluster, PG_BIN};
pub use pgbackrest::{Paths as PgBackrestPaths, PgBackrest, PGBACKREST};
pub use proc::{children, descendants, holds_open, is_dead, kill_tree, signal};
pub use s3::{curl_status, S3Server, S3_REGION};
pub use s3_fault::{Fault, FaultKind, FaultProxy};
pub use sshd::Sshd;
pub use testdir::TestDir;

use std::borrow::BorrowMut;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Our binary, as built by cargo for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pg_backrest"))
}

/// Panics unless the test process runs as root.
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid != "0" {
        panic!(
            "integration tests must run as root (effective uid is {uid:?}): they use runuser to \
             run PostgreSQL and pg_backrest as `postgres`, and start sshd; run `bash test/run.sh` \
             as root"
        );
    }
}

/// Uid and gid of the `postgres` OS user, from /etc/passwd.
pub fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("reading /etc/passwd");
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == "postgres" {
            let uid = f[2].parse().expect("postgres uid in /etc/passwd");
            let gid = f[3].parse().expect("postgres gid in /etc/passwd");
            return (uid, gid);
        }
    }
    panic!("no `postgres` user in /etc/passwd; run test/setup.sh");
}

/// Makes `path` (not recursively) owned by `postgres`.
pub fn chown_postgres(path: &Path) {
    let (uid, gid) = postgres_ids();
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown postgres {}: {e}", path.display()));
}

/// Sets the permission bits of `path`.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Creates directory `path` (and missing parents) and makes `path` itself owned by `postgres`
/// with mode 0755.
pub fn mkdir_postgres(path: &Path) {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    chown_postgres(path);
    chmod(path, 0o755);
}

/// Writes `contents` to `path`, owned by `postgres` with the given mode.
pub fn write_postgres(path: &Path, contents: &str, mode: u32) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chown_postgres(path);
    chmod(path, mode);
}

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("local_addr of 127.0.0.1:0")
            .port();
        if given.insert(port) {
            return port;
        }
    }
    panic!("free_port: no unused port after 1000 attempts");
}

/// What a finished command did. `status` is the exit code, or 128 + signal number if killed.
#[derive(Clone)]
pub struct Out {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Panics (showing the output) unless the command exited 0; returns self for chaining.
    pub fn expect_ok(self, what: &str) -> Out {
        if !self.success() {
            panic!("{what} failed:\n{self}");
        }
        self
    }
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

impl fmt::Debug for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Runs `cmd` to completion (stdin is /dev/null) and captures its output. Accepts a `Command`
/// or a `&mut Command`.
pub fn run(mut cmd: impl BorrowMut<Command>) -> Out {
    let cmd = cmd.borrow_mut();
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    Out {
        status: output
            .status
            .code()
            .unwrap_or_else(|| 128 + output.status.signal().unwrap_or(0)),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `runuser -u postgres -- program args...`, not yet run.
pub fn postgres_command(program: impl AsRef<OsStr>, args: &[&str]) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program).args(args);
    cmd
}

/// Runs an arbitrary program as `postgres` (e.g. `run_as_postgres("sh", &["-c", "..."])`).
pub fn run_as_postgres(program: impl AsRef<OsStr>, args: &[&str]) -> Out {
    run(postgres_command(program, args))
}

/// Our binary as `postgres`, with every `PG_BACKREST_*` and `PGBACKREST_*` variable of the
/// test environment removed (add your own with `.env()`). Run it with `run()`.
///
/// Without `--config` it reads `/dev/null`, never the machine's
/// `/etc/pg_backrest/pg_backrest.conf` or `/etc/pgbackrest.conf`. Tests pass a config of their
/// own that sets repo1-path, lock-path and log-path under their `TestDir` (the fixtures do), or
/// use [`pgbr_in`].
pub fn pgbr(args: &[&str]) -> Command {
    pgbr_as(&bin(), args)
}

/// [`pgbr`] through another path to the binary (a symlink named `pgbackrest`).
pub fn pgbr_as(program: &Path, args: &[&str]) -> Command {
    let mut cmd = postgres_command(program, args);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("PG_BACKREST_") || key_text.starts_with("PGBACKREST_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("PG_BACKREST_CONFIG", "/dev/null");
    cmd
}

/// [`pgbr`] for a test whose config file sets none of the machine-wide paths (config error
/// cases, `version`, `help`): repo1-path, lock-path and log-path point into `dir` through the
/// environment, so nothing falls back to /var/lib/pg_backrest, /tmp/pg_backrest or
/// /var/log/pg_backrest, where another process may have left files. The environment outranks
/// the config file, so a test checking those options' values in a file uses [`pgbr`] with its
/// own paths instead.
pub fn pgbr_in(dir: &TestDir, args: &[&str]) -> Command {
    let mut cmd = pgbr(args);
    cmd.env("PG_BACKREST_REPO1_PATH", dir.join("repo"))
        .env("PG_BACKREST_LOCK_PATH", dir.join("lock"))
        .env("PG_BACKREST_LOG_PATH", dir.join("log"));
    cmd
}

/// Polls `f` every 100 ms until it returns true; panics naming `what` if `timeout` passes first.
/// This bounds a wait for something expected to happen; it is not a timing assertion.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if f() {
            return;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        sleep(Duration::from_millis(100));
    }
}

/// The last `n` lines of `text` (for panic messages).
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Temp files (`.pgbr-tmp.*`) left anywhere under `dir`.
pub fn temp_files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if e.file_name().to_string_lossy().starts_with(".pgbr-tmp.") {
                out.push(path);
            }
        }
    }
    out
}
