//! `Sshd`: owns a real OpenSSH server on 127.0.0.1 (started as root, logins as `postgres` with
//! a generated key) plus the client-side files (key, known_hosts, ssh_config) to reach it, and
//! can stop, freeze (SIGSTOP) and restart it with all its per-connection children.

use super::{chmod, chown_postgres, free_port, mkdir_postgres, proc, run, tail, wait_until, Out};
use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An sshd listening on 127.0.0.1:`port()`, with its files under `dir/sshd/`.
pub struct Sshd {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    paused: bool,
}

fn keygen(path: &Path, comment: &str) {
    let out = run(Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-C", comment, "-f"])
        .arg(path));
    if !out.success() {
        panic!("ssh-keygen {} failed:\n{out}", path.display());
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn write(path: &Path, contents: &str, postgres_owned: bool, mode: u32) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    if postgres_owned {
        chown_postgres(path);
    }
    chmod(path, mode);
}

impl Sshd {
    /// Generates host and client keys and configs under `dir/sshd/`, starts sshd on a free
    /// port, and waits until it answers with an SSH banner.
    pub fn start(dir: &Path) -> Sshd {
        let dir = dir.join("sshd");
        mkdir_postgres(&dir);
        let port = free_port();
        let sshd = Sshd {
            dir,
            port,
            child: None,
            paused: false,
        };

        // Host key: root-owned, 0600 (sshd refuses group/world-readable host keys).
        keygen(&sshd.host_key(), "pgbr-test-host");
        // Client key: the postgres user's ssh reads it, and ssh insists on owner-only access.
        keygen(&sshd.client_key(), "pgbr-test-client");
        chown_postgres(&sshd.client_key());
        chmod(&sshd.client_key(), 0o600);
        chown_postgres(&sshd.client_key().with_extension("pub"));

        let client_pub = read(&sshd.client_key().with_extension("pub"));
        write(&sshd.authorized_keys(), &client_pub, true, 0o644);
        let host_pub = read(&sshd.host_key().with_extension("pub"));
        let host_pub = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        write(
            &sshd.known_hosts(),
            &format!("[127.0.0.1]:{port} {host_pub}\n"),
            true,
            0o644,
        );

        let sshd_config = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             AuthorizedKeysFile {authorized_keys}\n\
             PidFile {pid_file}\n\
             UsePAM yes\n\
             StrictModes no\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin no\n\
             PrintMotd no\n\
             MaxSessions 64\n\
             MaxStartups 100:30:200\n\
             LogLevel ERROR\n\
             Subsystem sftp /usr/lib/openssh/sftp-server\n",
            host_key = sshd.host_key().display(),
            authorized_keys = sshd.authorized_keys().display(),
            pid_file = sshd.dir.join("sshd.pid").display(),
        );
        write(&sshd.sshd_config(), &sshd_config, false, 0o644);

        let ssh_config = format!(
            "Host 127.0.0.1\n\
             \x20 Port {port}\n\
             \x20 User postgres\n\
             \x20 IdentityFile {key}\n\
             \x20 IdentitiesOnly yes\n\
             \x20 UserKnownHostsFile {known_hosts}\n\
             \x20 GlobalKnownHostsFile /dev/null\n\
             \x20 StrictHostKeyChecking yes\n\
             \x20 BatchMode yes\n\
             \x20 LogLevel ERROR\n",
            key = sshd.client_key().display(),
            known_hosts = sshd.known_hosts().display(),
        );
        write(&sshd.ssh_config_path(), &ssh_config, true, 0o644);

        let mut sshd = sshd;
        sshd.spawn();
        sshd
    }

    fn host_key(&self) -> PathBuf {
        self.dir.join("host_ed25519")
    }

    /// The client private key (owned by postgres, mode 0600).
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client_ed25519")
    }

    fn authorized_keys(&self) -> PathBuf {
        self.dir.join("authorized_keys")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    fn sshd_config(&self) -> PathBuf {
        self.dir.join("sshd_config")
    }

    /// Client config for `ssh -F`: key, known_hosts, BatchMode, for `Host 127.0.0.1`.
    pub fn ssh_config_path(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }

    /// sshd's own stderr (LogLevel ERROR), for panic messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether `pause()` is in effect.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Pid of the listening daemon, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "sshd on port {} is already running",
            self.port
        );
        let run_sshd = Path::new("/run/sshd"); // privilege-separation directory
        std::fs::create_dir_all(run_sshd).unwrap_or_else(|e| panic!("creating /run/sshd: {e}"));
        chmod(run_sshd, 0o755);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log_path().display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning sshd log handle: {e}"));
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(self.sshd_config())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning /usr/sbin/sshd: {e}"));
        self.child = Some(child);
        self.paused = false;
        let port = self.port;
        let mut exited = None;
        wait_until(
            &format!("sshd to accept connections on 127.0.0.1:{port}"),
            Duration::from_secs(30),
            || {
                if let Some(child) = self.child.as_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        exited = Some(status);
                        return true;
                    }
                }
                banner_ok(port)
            },
        );
        if let Some(status) = exited {
            self.child = None;
            panic!(
                "sshd exited during startup ({status}):\n{}",
                tail(&self.log(), 50)
            );
        }
    }

    /// Kills the daemon and every per-connection sshd (and user process) it forked.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let survivors = proc::kill_tree(child.id());
            let _ = child.wait(); // the daemon is our child: reap it
            if !survivors.is_empty() {
                let msg = format!("sshd stop: processes {survivors:?} survived SIGKILL for 30 s");
                if std::thread::panicking() {
                    eprintln!("warning: {msg}"); // no double panic from Drop
                } else {
                    panic!("{msg}\n{}", tail(&self.log(), 50));
                }
            }
        }
        self.paused = false;
    }

    /// Freezes the daemon and all its descendants (SIGSTOP): existing sessions and new
    /// connections stop getting answers, while TCP connects still succeed.
    pub fn pause(&mut self) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("pause: sshd on port {} is not running", self.port));
        proc::freeze_tree(pid);
        self.paused = true;
    }

    /// Undoes `pause()` (SIGCONT to the daemon and all its descendants).
    pub fn resume(&mut self) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("resume: sshd on port {} is not running", self.port));
        proc::thaw_tree(pid);
        self.paused = false;
    }

    /// Starts sshd again after `stop()`, on the same port with the same keys.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Runs `ssh -F <ssh_config> -p PORT [opts] postgres@127.0.0.1 <remote>` as postgres.
    pub fn ssh(&self, opts: &[&str], remote: &str) -> Out {
        let mut cmd = super::postgres_command("ssh", &["-F"]);
        cmd.arg(self.ssh_config_path())
            .args(["-p", &self.port.to_string()])
            .args(opts)
            .args(["postgres@127.0.0.1", remote]);
        run(cmd)
    }
}

/// Whether something on 127.0.0.1:port answers with an SSH identification banner.
fn banner_ok(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < 4 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    // Answer with our own identification so sshd logs no "kex_exchange_identification" error.
    use std::io::Write;
    let _ = s.write_all(b"SSH-2.0-pgbr_harness_probe\r\n");
    &buf[..4] == b"SSH-"
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
