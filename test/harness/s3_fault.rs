//! `FaultProxy`: a small HTTP/1.1 proxy on 127.0.0.1 that sits between the TLS terminator and
//! the S3 server (see `s3.rs`) and, when told to, answers requests itself with an S3 error (500
//! InternalError, 503 SlowDown, 403 AccessDenied), drops the connection, or delays them, so
//! tests can check how a client retries and reports S3 failures. Otherwise it passes requests
//! and responses through byte for byte (so SigV4 signatures stay valid), but for one fix of an
//! s3s-fs quirk: GET/HEAD of a key that is only a prefix of other keys gets S3's 404 NoSuchKey
//! instead of s3s-fs's 500 (see `is_directory_key`).
//!
//! Plain std threads, one per connection, one upstream connection per client connection, no
//! Nagle on either (see `serve`).
//! Message framing follows RFC 9112 as far as S3 clients need it: request bodies by
//! Content-Length or chunked transfer coding, `Expect: 100-continue`, responses by
//! Content-Length, chunked, or (without either) until the server closes; no body for HEAD, 1xx,
//! 204 and 304.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Requests carrying this header are never faulted nor logged (the harness's readiness probe).
pub const PROBE_HEADER: &str = "x-pgbr-harness-probe";

/// What the proxy does to a request a [`Fault`] matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// `500 Internal Server Error`, S3 code `InternalError`.
    InternalError,
    /// `503 Slow Down`, S3 code `SlowDown` (S3's throttling answer).
    SlowDown,
    /// `403 Forbidden`, S3 code `AccessDenied`.
    AccessDenied,
    /// Reads the request, then closes the connection without an answer.
    Drop,
    /// Passes the request through after this long (for client timeouts).
    Delay(Duration),
}

impl FaultKind {
    /// HTTP status, reason phrase, S3 error code and message of an error answer.
    fn error(self) -> Option<(u16, &'static str, &'static str, &'static str)> {
        match self {
            FaultKind::InternalError => Some((
                500,
                "Internal Server Error",
                "InternalError",
                "We encountered an internal error. Please try again.",
            )),
            FaultKind::SlowDown => Some((
                503,
                "Slow Down",
                "SlowDown",
                "Please reduce your request rate.",
            )),
            FaultKind::AccessDenied => Some((403, "Forbidden", "AccessDenied", "Access Denied")),
            FaultKind::Drop | FaultKind::Delay(_) => None,
        }
    }

    /// The HTTP status an error answer has (None for `Drop` and `Delay`).
    pub fn status(self) -> Option<u16> {
        self.error().map(|e| e.0)
    }

    /// The S3 error code in the XML body (None for `Drop` and `Delay`).
    pub fn code(self) -> Option<&'static str> {
        self.error().map(|e| e.2)
    }
}

/// A rule: the next `count` requests matching `method` and `target_contains` get `kind`.
/// Rules are tried in the order they were injected; a request uses at most one.
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    pub count: usize,
    /// Exact HTTP method ("PUT", "GET", ...), or any.
    pub method: Option<String>,
    /// Substring of the request target (path and query, e.g. "/bucket/archive/" or
    /// "list-type=2" or "uploadId="), or any.
    pub target_contains: Option<String>,
}

impl Fault {
    /// The next `count` requests, whatever they are.
    pub fn new(kind: FaultKind, count: usize) -> Fault {
        Fault {
            kind,
            count,
            method: None,
            target_contains: None,
        }
    }

    /// Only requests with this method.
    pub fn method(mut self, method: &str) -> Fault {
        self.method = Some(method.to_owned());
        self
    }

    /// Only requests whose target (path and query) contains `s`.
    pub fn target_contains(mut self, s: &str) -> Fault {
        self.target_contains = Some(s.to_owned());
        self
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.count > 0
            && self.method.as_deref().is_none_or(|m| m == method)
            && self
                .target_contains
                .as_deref()
                .is_none_or(|s| target.contains(s))
    }
}

/// A request the proxy saw, and the fault it got (None: passed through).
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// The Host header as sent (`localhost:PORT` path-style, `bucket.localhost:PORT`
    /// virtual-hosted; pgBackRest sends no port).
    pub host: String,
    pub fault: Option<FaultKind>,
}

#[derive(Default)]
struct State {
    faults: Vec<Fault>,
    seen: Vec<Seen>,
    /// The S3 server's data directory, for the directory-key fix (see `is_directory_key`).
    data_dir: Option<std::path::PathBuf>,
}

/// The proxy: listens on 127.0.0.1:`port()`, forwards to 127.0.0.1:`upstream_port`. Stops
/// accepting on drop; connections in progress end when either side closes.
pub struct FaultProxy {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    /// Connections accepted (stunnel opens one per client connection).
    connections: Arc<AtomicU64>,
}

impl FaultProxy {
    /// Starts the proxy in front of 127.0.0.1:`upstream_port`. With `data_dir` (the s3s-fs
    /// root), GET and HEAD of a key stored there as a directory get 404 NoSuchKey, as from S3.
    pub fn start(upstream_port: u16, data_dir: Option<std::path::PathBuf>) -> FaultProxy {
        let port = super::free_port();
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("fault proxy: binding 127.0.0.1:{port}: {e}"));
        let state = Arc::new(Mutex::new(State {
            data_dir,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let acceptor = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            let connections = Arc::clone(&connections);
            thread::Builder::new()
                .name(format!("fault-proxy-{port}"))
                .spawn(move || {
                    let ids = AtomicU64::new(1);
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let Ok(conn) = conn else { continue };
                        connections.fetch_add(1, Ordering::Relaxed);
                        let state = Arc::clone(&state);
                        let id = ids.fetch_add(1, Ordering::Relaxed);
                        // Errors end the connection, as a failing server would: nothing to report.
                        let _ = thread::Builder::new()
                            .name(format!("fault-proxy-{port}-{id}"))
                            .spawn(move || {
                                let _ = serve(conn, upstream_port, &state);
                            });
                    }
                })
                .unwrap_or_else(|e| panic!("fault proxy: spawning accept thread: {e}"))
        };
        FaultProxy {
            port,
            state,
            stop,
            acceptor: Some(acceptor),
            connections,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Client connections accepted so far (the readiness probes' included).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a rule (after the ones already pending).
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// The next `count` requests, whatever they are, get `kind`.
    pub fn fail_next(&self, kind: FaultKind, count: usize) {
        self.inject(Fault::new(kind, count));
    }

    /// Removes every pending rule: from now on everything passes through.
    pub fn clear(&self) {
        self.lock().faults.clear();
    }

    /// How many faulted requests the pending rules still have to serve.
    pub fn pending(&self) -> usize {
        self.lock().faults.iter().map(|f| f.count).sum()
    }

    /// Every request seen so far (probe requests excluded), oldest first.
    pub fn requests(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear_requests(&self) {
        self.lock().seen.clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the thread sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A parsed message head (the raw bytes are forwarded, not these).
struct Head {
    /// Request: method, target. Response: version, status code.
    first: String,
    second: String,
    chunked: bool,
    length: Option<u64>,
    close: bool,
    expect_continue: bool,
    probe: bool,
    host: String,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads a message head up to and including the empty line. None on a clean EOF before it.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = r.read_until(b'\n', &mut head)?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside message head",
                ))
            };
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                head.clear(); // stray empty line between messages (RFC 9112 2.2)
                continue;
            }
            return Ok(Some(head));
        }
        if head.len() > 256 * 1024 {
            return Err(bad("message head over 256 KiB"));
        }
    }
}

fn parse_head(raw: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(raw).map_err(|_| bad("message head is not UTF-8"))?;
    let mut lines = text.split("\r\n").flat_map(|l| l.split('\n'));
    let start = lines.next().unwrap_or_default();
    let mut parts = start.splitn(3, ' ');
    let first = parts.next().unwrap_or_default().to_owned();
    let second = parts
        .next()
        .ok_or_else(|| bad(format!("malformed start line {start:?}")))?
        .to_owned();
    let mut head = Head {
        first,
        second,
        chunked: false,
        length: None,
        close: start.ends_with(" HTTP/1.0") || start.starts_with("HTTP/1.0 "),
        expect_continue: false,
        probe: false,
        host: String::new(),
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        let lower = value.to_ascii_lowercase();
        match name.as_str() {
            "transfer-encoding" => head.chunked = lower.contains("chunked"),
            "content-length" => {
                head.length = Some(
                    value
                        .parse()
                        .map_err(|_| bad(format!("bad Content-Length {value:?}")))?,
                )
            }
            "connection" if lower.split(',').any(|t| t.trim() == "close") => head.close = true,
            "expect" => head.expect_continue = lower == "100-continue",
            "host" => head.host = lower,
            _ if name == PROBE_HEADER => head.probe = true,
            _ => {}
        }
    }
    Ok(head)
}

fn request_body(h: &Head) -> Body {
    if h.chunked {
        Body::Chunked
    } else {
        match h.length {
            Some(n) => Body::Length(n),
            None => Body::None,
        }
    }
}

fn response_body(method: &str, status: u16, h: &Head) -> Body {
    if method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
        Body::None
    } else if h.chunked {
        Body::Chunked
    } else {
        match h.length {
            Some(n) => Body::Length(n),
            None => Body::UntilClose,
        }
    }
}

fn copy_exact(r: &mut impl BufRead, w: &mut impl Write, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), w)?;
    if copied != n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("EOF after {copied} of {n} body bytes"),
        ));
    }
    Ok(())
}

fn copy_line(r: &mut impl BufRead, w: &mut impl Write) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "EOF inside chunked body",
        ));
    }
    w.write_all(&line)?;
    Ok(line)
}

/// Copies a body as it is framed on the wire (chunk-size lines and trailers included).
fn copy_body(r: &mut impl BufRead, w: &mut impl Write, body: Body) -> io::Result<()> {
    match body {
        Body::None => Ok(()),
        Body::Length(n) => copy_exact(r, w, n),
        Body::UntilClose => io::copy(r, w).map(|_| ()),
        Body::Chunked => loop {
            let line = copy_line(r, w)?;
            let text = String::from_utf8_lossy(&line);
            let size_text = text.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size_text, 16)
                .map_err(|_| bad(format!("bad chunk size line {text:?}")))?;
            if size == 0 {
                // Trailer fields, then the empty line.
                loop {
                    let line = copy_line(r, w)?;
                    if line == b"\r\n" || line == b"\n" {
                        return Ok(());
                    }
                }
            }
            copy_exact(r, w, size)?;
            copy_line(r, w)?; // CRLF after the chunk data
        },
    }
}

fn error_response(kind: FaultKind, method: &str, target: &str, close: bool) -> Vec<u8> {
    let (status, reason, code, message) = kind.error().expect("error fault");
    s3_error(status, reason, code, message, method, target, close)
}

/// An S3 error answer: XML body (none for HEAD), a request id, keep-alive unless `close`.
fn s3_error(
    status: u16,
    reason: &str,
    code: &str,
    message: &str,
    method: &str,
    target: &str,
    close: bool,
) -> Vec<u8> {
    static IDS: AtomicU64 = AtomicU64::new(1);
    let id = format!("pgbr-fault-{}", IDS.fetch_add(1, Ordering::Relaxed));
    let resource = target.split('?').next().unwrap_or_default();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><Resource>{resource}</Resource>\
         <RequestId>{id}</RequestId></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nx-amz-request-id: {id}\r\nServer: pgbr-fault-proxy\r\n{}\r\n",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Percent-decodes a URL path (invalid escapes are kept as they are).
fn percent_decode(path: &str) -> Vec<u8> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("not hex");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The bucket a virtual-hosted request names in its Host header (`bucket.localhost[:port]`,
/// the harness's domain), or None for a path-style one (`localhost`, an IP address).
fn virtual_host_bucket(host: &str) -> Option<&str> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    name.strip_suffix(".localhost").filter(|b| !b.is_empty())
}

/// Whether a GET or HEAD of `target` names an object key that s3s-fs stores as a directory
/// (a prefix of other keys: `repo` when `repo/x` exists). s3s-fs 0.14.1 answers those with
/// 500 InternalError ("Is a directory"); S3 answers 404 NoSuchKey, and clients such as
/// pgBackRest HEAD a path before listing it. Path-style targets start with the bucket;
/// virtual-hosted ones (see [`virtual_host_bucket`]) are the key alone.
fn is_directory_key(data_dir: &std::path::Path, method: &str, target: &str, host: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    if method != "GET" && method != "HEAD" {
        return false;
    }
    let path = target.split('?').next().unwrap_or_default();
    let mut decoded = percent_decode(path.trim_start_matches('/'));
    if let Some(bucket) = virtual_host_bucket(host) {
        if decoded.is_empty() {
            return false; // bucket-level request
        }
        decoded = [bucket.as_bytes(), b"/", &decoded].concat();
    }
    let Some(slash) = decoded.iter().position(|&c| c == b'/') else {
        return false; // bucket-level request (ListObjects, ...)
    };
    let key = &decoded[slash + 1..];
    if key.is_empty() || key.split(|&c| c == b'/').any(|seg| seg == b"..") {
        return false;
    }
    data_dir
        .join(std::ffi::OsStr::from_bytes(&decoded))
        .is_dir()
}

/// The fault for this request, if a rule matches (and uses up one of its count); logs it.
fn choose(state: &Mutex<State>, method: &str, target: &str, host: &str) -> Option<FaultKind> {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    let kind = st
        .faults
        .iter_mut()
        .find(|f| f.matches(method, target))
        .map(|f| {
            f.count -= 1;
            f.kind
        });
    st.faults.retain(|f| f.count > 0);
    st.seen.push(Seen {
        method: method.to_owned(),
        target: target.to_owned(),
        host: host.to_owned(),
        fault: kind,
    });
    kind
}

type Upstream = (BufReader<TcpStream>, TcpStream);

/// Serves one client connection until either side closes or a fault drops it.
fn serve(client: TcpStream, upstream_port: u16, state: &Mutex<State>) -> io::Result<()> {
    // No Nagle on either side: a message goes out as a head and then a body, two writes, and
    // the second would wait for the ACK of the first (up to 40 ms of delayed ACK) on every
    // request and every answer: a stall of the harness, not of the client under test.
    client.set_nodelay(true)?;
    let mut client_r = BufReader::new(client.try_clone()?);
    let mut client_w = client;
    let mut upstream: Option<Upstream> = None;
    loop {
        let Some(raw) = read_head(&mut client_r)? else {
            return Ok(());
        };
        let req = parse_head(&raw)?;
        let (method, target) = (req.first.as_str(), req.second.as_str());
        let body = request_body(&req);
        let fault = if req.probe {
            None
        } else {
            choose(state, method, target, &req.host)
        };
        match fault {
            Some(FaultKind::Drop) => {
                if !req.expect_continue {
                    copy_body(&mut client_r, &mut io::sink(), body)?;
                }
                return Ok(()); // dropping both halves closes the connection unanswered
            }
            Some(FaultKind::Delay(d)) => thread::sleep(d),
            Some(kind) => {
                // With Expect: 100-continue the client may or may not send the body now: answer
                // and close rather than guess where the next request starts.
                let close = req.close || req.expect_continue;
                if !req.expect_continue {
                    copy_body(&mut client_r, &mut io::sink(), body)?;
                }
                client_w.write_all(&error_response(kind, method, target, close))?;
                client_w.flush()?;
                if close {
                    return Ok(());
                }
                continue;
            }
            None => {}
        }

        let data_dir = state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .data_dir
            .clone();
        if data_dir.is_some_and(|d| is_directory_key(&d, method, target, &req.host)) {
            copy_body(&mut client_r, &mut io::sink(), body)?;
            let answer = s3_error(
                404,
                "Not Found",
                "NoSuchKey",
                "The specified key does not exist.",
                method,
                target,
                req.close,
            );
            client_w.write_all(&answer)?;
            client_w.flush()?;
            if req.close {
                return Ok(());
            }
            continue;
        }

        if upstream.is_none() {
            // Server down: close the client's connection, as an unreachable backend would.
            let conn = TcpStream::connect(("127.0.0.1", upstream_port))?;
            conn.set_nodelay(true)?;
            upstream = Some((BufReader::new(conn.try_clone()?), conn));
        }
        let (up_r, up_w) = upstream.as_mut().expect("upstream connected");
        up_w.write_all(&raw)?;
        up_w.flush()?;
        if req.expect_continue {
            // Relay interim answers until 100 Continue; a final answer instead means the
            // server refused the body: relay it and close.
            loop {
                let raw_resp = read_head(up_r)?.ok_or_else(|| bad("server closed"))?;
                let resp = parse_head(&raw_resp)?;
                let status: u16 = resp.second.parse().map_err(|_| bad("bad status"))?;
                client_w.write_all(&raw_resp)?;
                if status == 100 {
                    break;
                }
                if !(100..200).contains(&status) {
                    copy_body(up_r, &mut client_w, response_body(method, status, &resp))?;
                    client_w.flush()?;
                    return Ok(());
                }
            }
            client_w.flush()?;
        }
        copy_body(&mut client_r, up_w, body)?;
        up_w.flush()?;
        let (close, final_body) = loop {
            let raw_resp = read_head(up_r)?.ok_or_else(|| bad("server closed"))?;
            let resp = parse_head(&raw_resp)?;
            let status: u16 = resp.second.parse().map_err(|_| bad("bad status"))?;
            client_w.write_all(&raw_resp)?;
            let rb = response_body(method, status, &resp);
            copy_body(up_r, &mut client_w, rb)?;
            if !(100..200).contains(&status) {
                break (resp.close, rb);
            }
        };
        client_w.flush()?;
        if close || req.close || final_body == Body::UntilClose {
            return Ok(());
        }
    }
}
