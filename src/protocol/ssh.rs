//! SSH transport through the `openssh` crate (OpenSSH's own client in multiplex mode).
//!
//! A per-command SSH handshake costs more than archiving a segment, and archive_command
//! runs once per segment. So unless ssh-persist is 0, the master connection outlives the
//! command: its control socket lives under lock-path (`ssh-<uid>-<hash>/`), it closes itself
//! after ssh-persist idle seconds (ControlPersist), and the next command reuses it after a
//! liveness check. A master found wedged is retired so the next command starts afresh.

use std::num::NonZeroUsize;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use sha1::{Digest, Sha1};

use super::client::{self, Client};
use crate::error::{Error, Kind, Result};

/// Where and how to reach the other host.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// Which option named the host, for messages ("repo1-host").
    pub role: &'static str,
    pub host: String,
    pub user: String,
    pub port: u16,
    pub ssh_config: Option<PathBuf>,
    /// Idle seconds the master connection stays for the next command; 0 closes it at exit.
    pub persist: u64,
    /// Control sockets go under this directory (lock-path).
    pub control_root: PathBuf,
    pub io_timeout: Duration,
    pub protocol_timeout: Duration,
}

impl SshTarget {
    fn peer(&self) -> String {
        format!("{} '{}'", self.role, self.host)
    }

    /// The directory of this target's control sockets: under lock-path when the socket path
    /// fits the 107-byte limit of unix sockets, else under /tmp. ssh binds the socket under a
    /// temporary name first, so the longest path is
    /// `<dir>/.ssh-connectionXXXXXX/master.XXXXXXXXXXXXXXXX` (46 bytes after `<dir>`).
    fn control_dir(&self) -> PathBuf {
        let key = format!(
            "{}@{}:{}:{:?}:{}",
            self.user,
            self.host,
            self.port,
            self.ssh_config,
            nix::unistd::geteuid()
        );
        let hash = hex::encode(Sha1::digest(key.as_bytes()));
        let preferred = self.control_root.join(format!("ssh-{}", &hash[..10]));
        if preferred.as_os_str().len() + 46 <= 107 {
            preferred
        } else {
            PathBuf::from(format!("/tmp/pg_backrest-ssh-{}", &hash[..10]))
        }
    }

    fn builder(&self) -> SessionBuilder {
        let mut b = SessionBuilder::default();
        b.user(self.user.clone())
            .port(self.port)
            .known_hosts_check(KnownHosts::Strict)
            // ssh takes whole seconds, and 0 would mean no timeout: at least 1 s.
            .connect_timeout(self.io_timeout.max(Duration::from_secs(1)))
            .server_alive_interval((self.io_timeout / 3).max(Duration::from_secs(1)));
        if let Some(c) = &self.ssh_config {
            b.config_file(c);
        }
        b
    }
}

fn connect_error(t: &SshTarget, e: openssh::Error) -> Error {
    Error::new(
        Kind::HostConnect,
        format!(
            "unable to connect to {} over SSH as '{}' port {}: {e}",
            t.peer(),
            t.user,
            t.port
        ),
    )
    .with_hint(
        "check that 'ssh -p PORT USER@HOST' works for this OS user without a password prompt",
    )
}

/// A master connection that another command left running, if it still answers.
async fn reuse_master(t: &SshTarget, dir: &Path) -> Option<Session> {
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(".ssh-connection")
        {
            continue;
        }
        let ctl = path.join("master");
        if ctl.exists() {
            let session = Session::resume_mux(
                ctl.into_boxed_path(),
                Some(path.join("log").into_boxed_path()),
            );
            if let Ok(Ok(())) = tokio::time::timeout(t.io_timeout, session.check()).await {
                return Some(session);
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), session.close()).await;
            let _ = std::fs::remove_dir_all(&path);
        } else if older_than(&path, Duration::from_secs(120)) {
            // A master that exited after its idle time leaves its directory behind. A young
            // directory without a socket may be a master being started right now: leave it.
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    None
}

fn older_than(path: &Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|d| d > age)
}

async fn session(t: &SshTarget) -> Result<Session> {
    let mut builder = t.builder();
    let dir = t.control_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o770)
        .create(&t.control_root)
        .map_err(|e| Error::io("create lock path", &t.control_root, e))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .or_else(|e| if dir.is_dir() { Ok(()) } else { Err(e) })
        .map_err(|e| Error::io("create SSH control directory", &dir, e))?;
    // Our own directory even without persistence: openssh's default is under the user's home.
    builder.control_directory(&dir);
    let Some(persist) = NonZeroUsize::new(t.persist as usize) else {
        return builder
            .connect_mux(&t.host)
            .await
            .map_err(|e| connect_error(t, e));
    };
    if let Some(s) = reuse_master(t, &dir).await {
        crate::debug!("reusing SSH master connection to {}", t.peer());
        return Ok(s);
    }
    builder.control_persist(ControlPersist::IdleFor(persist));
    let master = builder
        .launch_master(&t.host)
        .await
        .map_err(|e| connect_error(t, e))?;
    // The master must outlive this process; it removes itself after `persist` idle seconds.
    let master = master.keep();
    Ok(Session::resume_mux(
        master.join("master").into_boxed_path(),
        Some(master.join("log").into_boxed_path()),
    ))
}

/// What starts the remote side on the other host: a program and its arguments.
#[derive(Debug, Clone)]
pub struct RemoteCommand {
    pub program: String,
    pub args: Vec<String>,
}

/// Starts `command` on the target host and returns a protocol client talking to it.
pub fn spawn_remote(t: &SshTarget, command: &RemoteCommand) -> Result<Client> {
    let (program, args) = (command.program.as_str(), &command.args);
    let rt = client::runtime()?;
    let io = t.io_timeout;
    let setup = rt.block_on(async {
        let session = Arc::new(tokio::time::timeout(io * 2, session(t)).await.map_err(
            |_| {
                Error::new(
                    Kind::HostConnect,
                    format!("timed out connecting to {} over SSH", t.peer()),
                )
            },
        )??);
        let mut cmd = Session::to_command(session.clone(), program.to_string());
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = tokio::time::timeout(io, cmd.spawn())
            .await
            .map_err(|_| Error::remote(format!("timed out starting '{program}' on {}", t.peer())))?
            .map_err(|e| {
                Error::remote(format!("unable to start '{program}' on {}: {e}", t.peer()))
            })?;
        let stdin = child.stdin().take();
        let stdout = child.stdout().take();
        let stderr = child.stderr().take();
        Ok::<_, Error>((session, child, stdin, stdout, stderr))
    })?;
    let (session, child, stdin, stdout, stderr) = setup;
    let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
        return Err(Error::internal("remote process has no stdin/stdout"));
    };
    let ctl = session.control_socket().to_path_buf();
    let persistent = t.persist > 0;
    let mut c = Client::new(
        rt,
        Box::pin(stdout),
        Box::pin(stdin),
        stderr.map(|s| Box::pin(s) as _),
        io,
        t.protocol_timeout,
        t.peer(),
    )?;
    if persistent {
        // A master whose peer went silent would make every later command wait io-timeout:
        // stop it (the local control socket still answers) and forget its socket.
        c.on_broken(Box::new(move || {
            let _ = std::process::Command::new("ssh")
                .arg("-o")
                .arg(format!("ControlPath={}", ctl.display()))
                .args(["-O", "exit", "retired-master"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            if let Some(dir) = ctl.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }));
    }
    c.keep_alive(Box::new(child));
    c.keep_alive(Box::new(session));
    Ok(c)
}
