//! `S3Server`: a real S3 server for repository tests, reached over HTTPS with a certificate the
//! client verifies. Three pieces, all on 127.0.0.1 and free ports, files under `dir/s3/`:
//!
//! ```text
//! client --HTTPS--> stunnel (port()) --HTTP--> FaultProxy (in this process) --HTTP--> s3s-fs
//! ```
//!
//! - s3s-fs 0.14.1 (the `s3s` project's file-system-backed S3 server, SigV4 auth with a random
//!   key and secret; installed once per machine by test/setup.sh) stores bucket `b`, key `k` as
//!   the file `data_dir()/b/k`.
//! - stunnel (Debian's stunnel4) terminates TLS with a server certificate for `localhost` and
//!   127.0.0.1, signed by a throwaway CA generated with openssl: clients trust `ca_file()`.
//! - The fault proxy (`s3_fault.rs`) passes everything through until a test injects faults
//!   through `faults()`. It also answers GET/HEAD of a key that is only a prefix of other keys
//!   with S3's 404 (s3s-fs says 500 there). Another s3s-fs limit, as it maps keys to files:
//!   keys `a` and `a/b` cannot both exist.
//!
//! s3s-fs runs with `nodelay.c` preloaded: it does not set TCP_NODELAY and writes a GET's
//! answer in pieces, so the last small piece waited ~40 ms for the client's delayed ACK
//! (Nagle), a stall per request of the server that made a restore of ~1,000 small files take
//! 40 s whatever the client did. The shim only sets the socket option; the server is s3s-fs.
//!
//! Endpoint: use `host()` ("localhost"), not the IP: pgBackRest 2.45 matches only DNS names in
//! the certificate's subjectAltName. [`S3Server::repo_options`] is path style
//! (`localhost:PORT/bucket/key`); [`S3Server::repo_options_host_style`] is virtual-hosted
//! (`bucket.localhost:PORT/key`), which s3s-fs serves as it runs with `--domain localhost`
//! and `--domain localhost:PORT` (pgBackRest's Host header has no port, ours has).
//! `bucket.localhost` does not resolve here, so those options add
//! `repo1-storage-host=127.0.0.1`; both tools then check the certificate against 127.0.0.1,
//! which is in it as an IP address (for rustls) and as a DNS name (pgBackRest 2.45 matches
//! DNS names only).

use super::s3_fault::{FaultProxy, PROBE_HEADER};
use super::{chmod, free_port, mkdir_postgres, run, tail, wait_until, Out};
use std::fs::File;
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The region the server is addressed as (s3s-fs accepts any; SigV4 signs it).
pub const S3_REGION: &str = "us-east-1";

/// An S3 server over HTTPS on `host()`:`port()`; stopped on drop.
pub struct S3Server {
    dir: PathBuf,
    s3_port: u16,
    tls_port: u16,
    key: String,
    secret: String,
    proxy: FaultProxy,
    s3s: Option<Child>,
    stunnel: Option<Child>,
    paused: bool,
}

/// The s3s-fs binary: on PATH or in ~/.cargo/bin (where `cargo install` puts it).
pub fn s3s_fs_binary() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.push(PathBuf::from("/root/.cargo/bin"));
    dirs.into_iter()
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "s3s-fs not found on PATH nor in ~/.cargo/bin: run `bash test/setup.sh` as root \
                 (installs it with `cargo install s3s-fs@0.14.1 --locked --features binary`, \
                 about 3 minutes, once per machine)"
            )
        })
}

/// test/harness/nodelay.c built once per test run (gcc, installed by test/setup.sh).
fn nodelay_shim() -> &'static Path {
    static SHIM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SHIM.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("test/harness/nodelay.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("nodelay-{}.so", std::process::id()));
        let built = run(Command::new("gcc")
            .args(["-O2", "-Wall", "-shared", "-fPIC", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-ldl"));
        if !built.success() {
            panic!(
                "building {} failed (gcc missing? run test/setup.sh):\n{built}",
                src.display()
            );
        }
        out
    })
}

/// `n` random bytes as upper-case hex (from /dev/urandom: no new crate for test keys).
fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .unwrap_or_else(|e| panic!("reading /dev/urandom: {e}"));
    buf.iter().map(|b| format!("{b:02X}")).collect()
}

fn openssl(what: &str, args: &[&str], cwd: &Path) {
    let out = run(Command::new("openssl").args(args).current_dir(cwd));
    if !out.success() {
        panic!("openssl {what} failed (is the openssl CLI installed? run test/setup.sh):\n{out}");
    }
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn log_file(path: &Path) -> (File, File) {
    let f = File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let f2 = f
        .try_clone()
        .unwrap_or_else(|e| panic!("cloning {} handle: {e}", path.display()));
    (f, f2)
}

/// Kills and reaps a child we started (SIGKILL: an abrupt server death, even when stopped).
fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl S3Server {
    /// Generates the CA, server certificate and credentials under `dir/s3/`, starts s3s-fs,
    /// the fault proxy and stunnel on free ports, and waits until HTTPS answers.
    pub fn start(dir: &Path) -> S3Server {
        let binary = s3s_fs_binary(); // fail early, with the setup hint
        let dir = dir.join("s3");
        mkdir_postgres(&dir); // postgres (running pg_backrest) reads ca.crt in here
        std::fs::create_dir_all(dir.join("data"))
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.join("data").display()));
        let s3_port = free_port();
        let tls_port = free_port();
        let mut server = S3Server {
            proxy: FaultProxy::start(s3_port, Some(dir.join("data"))),
            dir,
            s3_port,
            tls_port,
            key: random_hex(10),
            secret: random_hex(20),
            s3s: None,
            stunnel: None,
            paused: false,
        };
        server.make_certificates();
        let stunnel_conf = format!(
            "foreground = yes\n\
             pid =\n\
             syslog = no\n\
             debug = warning\n\
             [s3]\n\
             accept = 127.0.0.1:{tls_port}\n\
             connect = 127.0.0.1:{proxy_port}\n\
             cert = {cert}\n\
             key = {key}\n\
             ; close the client side at once when the backend side closes (dropped connections)\n\
             TIMEOUTclose = 0\n",
            proxy_port = server.proxy.port(),
            cert = server.dir.join("server.crt").display(),
            key = server.dir.join("server.key").display(),
        );
        write(&server.dir.join("stunnel.conf"), &stunnel_conf);
        server.spawn(&binary);
        server
    }

    /// A CA (ca.crt, ca.key) and a server certificate signed by it (server.crt, server.key)
    /// for DNS:localhost, DNS:*.localhost (virtual-hosted buckets, for clients that accept a
    /// wildcard over one label: pgBackRest does, rustls and OpenSSL do not), DNS:127.0.0.1
    /// (pgBackRest 2.45 checks repo1-storage-host=127.0.0.1 against DNS names only) and
    /// IP:127.0.0.1. P-256 keys: generated instantly.
    fn make_certificates(&self) {
        let d = &self.dir;
        openssl(
            "CA certificate",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "3650",
                "-subj",
                "/CN=pg_backrest test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            d,
        );
        openssl(
            "server key and request",
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
            d,
        );
        write(
            &d.join("server.ext"),
            "subjectAltName = DNS:localhost, DNS:*.localhost, DNS:127.0.0.1, IP:127.0.0.1\n\
             basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature, keyEncipherment\n\
             extendedKeyUsage = serverAuth\n",
        );
        let serial = format!("0x{}", random_hex(8));
        openssl(
            "server certificate",
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial,
                "-days",
                "3650",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ],
            d,
        );
        chmod(&d.join("ca.crt"), 0o644);
        chmod(&d.join("ca.key"), 0o600);
        chmod(&d.join("server.key"), 0o600);
    }

    /// Host name for clients: "localhost" (in the certificate as a DNS name; resolves to
    /// 127.0.0.1, where stunnel listens).
    pub fn host(&self) -> &'static str {
        "localhost"
    }

    /// The HTTPS port (stunnel).
    pub fn port(&self) -> u16 {
        self.tls_port
    }

    /// The plain-HTTP port of s3s-fs itself (bypasses TLS and the fault proxy).
    pub fn backend_port(&self) -> u16 {
        self.s3_port
    }

    /// `https://localhost:PORT` + `path` (path-style: "/bucket/key").
    pub fn url(&self, path: &str) -> String {
        format!("https://{}:{}{path}", self.host(), self.tls_port)
    }

    /// The CA certificate clients verify the server with (0644, readable by postgres).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn region(&self) -> &'static str {
        S3_REGION
    }

    /// The s3s-fs root: bucket `b`, key `k` is the file `data_dir()/b/k`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The fault injector between stunnel and s3s-fs.
    pub fn faults(&self) -> &FaultProxy {
        &self.proxy
    }

    /// pgBackRest-style repository options for this server (one `name=value` a line), for
    /// repository `repo` and `bucket`, to put in a stanza's or the global section.
    pub fn repo_options(&self, repo: u32, bucket: &str) -> String {
        format!(
            "repo{repo}-type=s3\n\
             repo{repo}-s3-bucket={bucket}\n\
             repo{repo}-s3-endpoint={host}\n\
             repo{repo}-storage-port={port}\n\
             repo{repo}-storage-ca-file={ca}\n\
             repo{repo}-s3-region={S3_REGION}\n\
             repo{repo}-s3-key={key}\n\
             repo{repo}-s3-key-secret={secret}\n\
             repo{repo}-s3-uri-style=path\n",
            host = self.host(),
            port = self.tls_port,
            ca = self.ca_file().display(),
            key = self.key,
            secret = self.secret,
        )
    }

    /// As [`S3Server::repo_options`], virtual-hosted: `repo{repo}-s3-uri-style=host` and
    /// `repo{repo}-storage-host=127.0.0.1` (`bucket.localhost` resolves nowhere; the
    /// connection goes to 127.0.0.1, the Host header says `bucket.localhost`).
    pub fn repo_options_host_style(&self, repo: u32, bucket: &str) -> String {
        self.repo_options(repo, bucket).replace(
            &format!("repo{repo}-s3-uri-style=path\n"),
            &format!("repo{repo}-s3-uri-style=host\nrepo{repo}-storage-host=127.0.0.1\n"),
        )
    }

    /// `curl -sS --aws-sigv4 aws:amz:us-east-1:s3 --user KEY:SECRET --cacert ca.crt <args>`,
    /// not yet run (add the method, URL, `-w`, ...). Write query values percent-encoded as
    /// SigV4 canonicalizes them (`prefix=dir%2F`): curl 7.88 signs the query as written.
    pub fn curl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("curl");
        cmd.args(self.curl_auth_args()).args(args);
        cmd
    }

    /// The options [`S3Server::curl`] starts with (repeat them after a `--next`).
    pub fn curl_auth_args(&self) -> Vec<String> {
        [
            "-sS",
            "--aws-sigv4",
            &format!("aws:amz:{S3_REGION}:s3"),
            "--user",
            &format!("{}:{}", self.key, self.secret),
            "--cacert",
            &self.ca_file().display().to_string(),
            // s3s-fs requires this header and curl 7.88 does not send it; curl signs it.
            "-H",
            "x-amz-content-sha256: UNSIGNED-PAYLOAD",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Creates `bucket` (PUT /bucket); panics if the server refuses.
    pub fn create_bucket(&self, bucket: &str) {
        let out = run(self.curl(&[
            "-X",
            "PUT",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &self.url(&format!("/{bucket}")),
        ]));
        if !out.success() || out.stdout != "200" {
            panic!(
                "creating bucket {bucket:?} on {} failed (HTTP {}):\n{out}\n--- s3s-fs log ---\n{}",
                self.url(""),
                out.stdout,
                tail(&self.log(), 30)
            );
        }
    }

    /// s3s-fs's and stunnel's output (errors and warnings), for panic messages.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!(
            "--- s3s-fs.log ---\n{}\n--- stunnel.log ---\n{}",
            read("s3s-fs.log"),
            read("stunnel.log")
        )
    }

    pub fn is_running(&self) -> bool {
        self.s3s.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn spawn(&mut self, binary: &Path) {
        assert!(
            self.s3s.is_none() && self.stunnel.is_none(),
            "S3 server on port {} is already running",
            self.tls_port
        );
        let (out, err) = log_file(&self.dir.join("s3s-fs.log"));
        let child = Command::new(binary)
            .env("LD_PRELOAD", nodelay_shim())
            .args(["--host", "127.0.0.1", "--port", &self.s3_port.to_string()])
            .args(["--access-key", &self.key, "--secret-key", &self.secret])
            // Virtual-hosted requests: `bucket.localhost[:PORT]`. Both forms are needed: with
            // a domain set, s3s-fs takes any other Host name for a bucket name.
            .args(["--domain", "localhost", "--domain"])
            .arg(format!("localhost:{}", self.tls_port))
            .arg(self.data_dir())
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
        self.s3s = Some(child);
        self.paused = false;
        let port = self.s3_port;
        self.wait_ready(&format!("s3s-fs to listen on 127.0.0.1:{port}"), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });

        let (out, err) = log_file(&self.dir.join("stunnel.log"));
        let child = Command::new("stunnel")
            .arg(self.dir.join("stunnel.conf"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning stunnel (run test/setup.sh): {e}"));
        self.stunnel = Some(child);
        let probe = self.url("/");
        let ca = self.ca_file();
        let header = format!("{PROBE_HEADER}: 1");
        self.wait_ready(&format!("HTTPS answers on {probe}"), || {
            // Any HTTP status (403 for this anonymous request) proves TLS with our CA, stunnel,
            // the proxy and s3s-fs all work; curl prints 000 when there is no answer.
            let out = run(Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
                .args(["--max-time", "5", "-H", &header, "--cacert"])
                .arg(&ca)
                .arg(&probe));
            out.success() && out.stdout != "000"
        });
    }

    /// Waits for `ready`, panicking with the logs if s3s-fs or stunnel exits meanwhile.
    fn wait_ready(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let mut exited = None;
        wait_until(what, Duration::from_secs(30), || {
            for (name, child) in [("s3s-fs", &mut self.s3s), ("stunnel", &mut self.stunnel)] {
                if let Some(c) = child.as_mut() {
                    if let Ok(Some(status)) = c.try_wait() {
                        exited = Some(format!("{name} exited during startup ({status})"));
                        return true;
                    }
                }
            }
            ready()
        });
        if let Some(msg) = exited {
            let log = self.log();
            kill(&mut self.stunnel);
            kill(&mut self.s3s);
            panic!("{msg}:\n{}", tail(&log, 60));
        }
    }

    /// Kills s3s-fs and stunnel (SIGKILL, like a crashed server): connections in progress
    /// break and new ones are refused. The data directory is kept.
    pub fn stop(&mut self) {
        kill(&mut self.stunnel);
        kill(&mut self.s3s);
        self.paused = false;
    }

    /// Starts s3s-fs and stunnel again after `stop()`: same ports, credentials, certificates
    /// and data. Pending faults stay pending.
    pub fn start_again(&mut self) {
        self.spawn(&s3s_fs_binary());
    }

    /// Freezes s3s-fs (SIGSTOP): TLS handshakes still succeed (stunnel runs), but requests
    /// get no answer, as from a hung server.
    pub fn pause(&mut self) {
        self.signal_s3s("STOP", "pause");
        self.paused = true;
    }

    /// Undoes `pause()` (SIGCONT).
    pub fn resume(&mut self) {
        self.signal_s3s("CONT", "resume");
        self.paused = false;
    }

    fn signal_s3s(&self, signal: &str, what: &str) {
        let pid = self
            .s3s
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: S3 server on port {} is not running", self.tls_port))
            .id();
        super::proc::signal(&[pid], signal);
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `curl` built by [`S3Server::curl`] with `-w '\n%{http_code}'` appended and splits the
/// output into (HTTP status, body). Status 0 means no HTTP answer (see `out.stderr`).
pub fn curl_status(server: &S3Server, args: &[&str]) -> (u16, String, Out) {
    let mut cmd = server.curl(args);
    cmd.args(["-w", "\n%{http_code}"]);
    let out = run(cmd);
    let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", &out.stdout));
    let status = code.trim().parse().unwrap_or(0);
    (status, body.to_owned(), out)
}
