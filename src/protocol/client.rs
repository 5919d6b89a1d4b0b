//! The client side: a synchronous API over the async streams of a remote `pg_backrest
//! remote` process. Every wait is bounded by io-timeout; after a timeout or a broken stream
//! the client is marked broken and refuses further use, so no half-understood exchange can
//! be mistaken for success.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::runtime::Runtime;

use super::frame::{self, Frame};
use super::request::{Commit, Payloads, Request};
use super::PROTOCOL_VERSION;
use crate::error::{Error, Kind, Result};

type Reader = BufReader<Pin<Box<dyn AsyncRead + Send>>>;
type Writer = BufWriter<Pin<Box<dyn AsyncWrite + Send>>>;

pub struct Client {
    reader: Reader,
    writer: Writer,
    stderr: Option<Pin<Box<dyn AsyncRead + Send>>>,
    io_timeout: Duration,
    /// Bound on one whole operation (request to final reply, streams included).
    protocol_timeout: Duration,
    op_deadline: Option<Instant>,
    /// While set, replies may take this long instead of io-timeout (a database query that
    /// waits for a checkpoint is silent for as long as the checkpoint takes).
    reply_wait: Option<Duration>,
    /// For messages: "repo1-host 'backup.example.com'".
    peer: String,
    /// The server's greeting: version, protocol, and what its storage can do.
    greeting: Value,
    broken: bool,
    /// Called once when the peer stops answering (to retire a wedged SSH master).
    on_broken: Option<Box<dyn FnOnce() + Send>>,
    /// Whatever must outlive the streams (the SSH child and session).
    keep_alive: Vec<Box<dyn std::any::Any + Send>>,
    // Dropped last: the streams above belong to this runtime.
    rt: Runtime,
}

pub fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("unable to start runtime: {e}")))
}

impl Client {
    /// Wraps connected streams and reads the server's greeting.
    pub fn new(
        rt: Runtime,
        reader: Pin<Box<dyn AsyncRead + Send>>,
        writer: Pin<Box<dyn AsyncWrite + Send>>,
        stderr: Option<Pin<Box<dyn AsyncRead + Send>>>,
        io_timeout: Duration,
        protocol_timeout: Duration,
        peer: String,
    ) -> Result<Client> {
        let mut c = Client {
            reader: BufReader::with_capacity(256 * 1024, reader),
            writer: BufWriter::with_capacity(256 * 1024, writer),
            stderr,
            io_timeout,
            protocol_timeout,
            op_deadline: None,
            reply_wait: None,
            peer,
            greeting: Value::Null,
            broken: false,
            on_broken: None,
            keep_alive: Vec::new(),
            rt,
        };
        let hello = match c.recv()? {
            Frame::Json(v) => v,
            other => {
                return Err(c.fail(Error::remote(format!("unexpected greeting {other}")), false))
            }
        };
        let protocol = hello.get("protocol").and_then(Value::as_u64);
        if hello.get("hello").and_then(Value::as_str) != Some("pg_backrest")
            || protocol != Some(PROTOCOL_VERSION)
        {
            let e = Error::remote(format!(
                "{} answered with an unexpected greeting {hello}",
                c.peer
            ))
            .with_hint("repo1-host-cmd must run a pg_backrest of a compatible version");
            return Err(c.fail(e, false));
        }
        c.greeting = hello;
        Ok(c)
    }

    /// The server's greeting.
    pub fn greeting(&self) -> &Value {
        &self.greeting
    }

    pub fn keep_alive(&mut self, thing: Box<dyn std::any::Any + Send>) {
        self.keep_alive.push(thing);
    }

    pub fn on_broken(&mut self, f: Box<dyn FnOnce() + Send>) {
        self.on_broken = Some(f);
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    fn fail(&mut self, e: Error, peer_silent: bool) -> Error {
        self.broken = true;
        if peer_silent {
            if let Some(f) = self.on_broken.take() {
                f();
            }
        }
        e
    }

    /// Runs one I/O step under io-timeout.
    fn step<T, F>(rt: &Runtime, limit: Duration, fut: F) -> std::result::Result<io::Result<T>, ()>
    where
        F: Future<Output = io::Result<T>>,
    {
        rt.block_on(async { tokio::time::timeout(limit, fut).await })
            .map_err(|_| ())
    }

    /// How long the next I/O step may wait: io-timeout, or less if the operation's
    /// protocol-timeout runs out first.
    fn step_limit(&self) -> Duration {
        let wait = self.reply_wait.unwrap_or(self.io_timeout);
        match self.op_deadline {
            Some(d) => wait.min(d.saturating_duration_since(Instant::now())),
            None => wait,
        }
    }

    fn timeout_error(&self) -> Error {
        let overall = self.op_deadline.is_some_and(|d| Instant::now() >= d);
        let (what, secs) = if overall {
            (
                "finish the operation within protocol-timeout",
                crate::config::fmt_seconds(self.protocol_timeout),
            )
        } else {
            (
                "answer within io-timeout",
                crate::config::fmt_seconds(self.io_timeout),
            )
        };
        Error::remote(format!("{} did not {what} ({secs})", self.peer)).with_hint(
            "check the network and the remote host; nothing was committed by this operation",
        )
    }

    /// Reads what the remote process said on stderr, for the error message.
    fn remote_stderr(&mut self) -> String {
        let Some(mut err) = self.stderr.take() else {
            return String::new();
        };
        let mut buf = Vec::new();
        let _ = Client::step(&self.rt, Duration::from_secs(2), async {
            err.read_to_end(&mut buf).await
        });
        let text = String::from_utf8_lossy(&buf);
        // The remote's own error line says most; a HINT line may follow it.
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let last = lines
            .iter()
            .rev()
            .find(|l| l.starts_with("ERROR:"))
            .or(lines.last())
            .copied()
            .unwrap_or("");
        if last.is_empty() {
            String::new()
        } else {
            format!(": remote said '{last}'")
        }
    }

    fn check_usable(&self) -> Result<()> {
        if self.broken {
            return Err(Error::remote(format!(
                "connection to {} is broken",
                self.peer
            )));
        }
        Ok(())
    }

    pub fn recv(&mut self) -> Result<Frame> {
        self.check_usable()?;
        let limit = self.step_limit();
        match Client::step(&self.rt, limit, frame::read_frame_async(&mut self.reader)) {
            Err(()) => {
                let e = self.timeout_error();
                Err(self.fail(e, true))
            }
            Ok(Ok(Some(f))) => Ok(f),
            Ok(Ok(None)) => {
                let said = self.remote_stderr();
                let e = Error::remote(format!("{} closed the connection{said}", self.peer));
                Err(self.fail(e, false))
            }
            Ok(Err(e)) => {
                let said = self.remote_stderr();
                let e = Error::remote(format!("lost connection to {}: {e}{said}", self.peer));
                Err(self.fail(e, false))
            }
        }
    }

    fn send_raw(&mut self, tag: u8, payload: &[u8]) -> Result<()> {
        self.check_usable()?;
        let limit = self.step_limit();
        let sent = Client::step(
            &self.rt,
            limit,
            frame::write_frame_async(&mut self.writer, tag, payload),
        );
        self.finish_write(sent)
    }

    fn finish_write(&mut self, result: std::result::Result<io::Result<()>, ()>) -> Result<()> {
        match result {
            Ok(Ok(())) => Ok(()),
            Err(()) => {
                let e = self.timeout_error();
                Err(self.fail(e, true))
            }
            Ok(Err(e)) => {
                let said = self.remote_stderr();
                let e = Error::remote(format!("lost connection to {}: {e}{said}", self.peer));
                Err(self.fail(e, false))
            }
        }
    }

    /// Sends a JSON frame that starts an operation: its protocol-timeout starts here.
    fn send_json(&mut self, v: &Value) -> Result<()> {
        self.op_deadline = Some(Instant::now() + self.protocol_timeout);
        self.send_raw(b'J', v.to_string().as_bytes())
    }

    fn send_encoded<T: Serialize + std::fmt::Debug>(&mut self, what: &str, v: &T) -> Result<()> {
        let v = serde_json::to_value(v)
            .map_err(|e| Error::internal(format!("unable to encode {what} {v:?}: {e}")))?;
        self.send_json(&v)
    }

    /// Sends a request without waiting for its reply (a write, whose data follows, or a
    /// batch whose replies are read one by one).
    pub fn send_request<P: Payloads>(&mut self, request: &Request<P>) -> Result<()> {
        self.send_encoded("request", request)
    }

    /// Ends a write stream with the name to commit it under.
    pub fn send_commit(&mut self, name: &str) -> Result<()> {
        self.send_encoded(
            "commit",
            &Commit {
                commit: name.to_string(),
            },
        )
    }

    pub fn send_data(&mut self, data: &[u8]) -> Result<()> {
        self.send_raw(b'D', data)
    }

    pub fn send_abort(&mut self) -> Result<()> {
        self.send_raw(b'A', &[])
    }

    pub fn flush(&mut self) -> Result<()> {
        self.check_usable()?;
        let limit = self.step_limit();
        let flushed = Client::step(&self.rt, limit, self.writer.flush());
        self.finish_write(flushed)
    }

    /// Reads a reply frame and unpacks `ok` or re-raises `error` with its original kind.
    pub fn reply(&mut self) -> Result<Value> {
        match self.recv()? {
            Frame::Json(v) => reply_value(v),
            other => {
                let e = Error::remote(format!(
                    "{} sent {other} where a reply was expected",
                    self.peer
                ));
                Err(self.fail(e, false))
            }
        }
    }

    /// Reads a reply to `op` and decodes its `ok` value as `R`.
    pub fn reply_as<R: DeserializeOwned>(&mut self, op: &str) -> Result<R> {
        let v = self.reply()?;
        decode_reply(op, &self.peer, v)
    }

    /// One request whose reply may legitimately take up to `wait` (and protocol-timeout).
    pub fn call_waiting<P: Payloads, R: DeserializeOwned>(
        &mut self,
        request: &Request<P>,
        wait: Duration,
    ) -> Result<R> {
        self.send_request(request)?;
        self.flush()?;
        self.reply_wait = Some(wait.max(self.io_timeout));
        let reply = self.reply_as(request.op());
        self.reply_wait = None;
        reply
    }

    /// One request, one reply, decoded as `R` (one of the reply types of
    /// [`super::request`]).
    pub fn call<P: Payloads, R: DeserializeOwned>(&mut self, request: &Request<P>) -> Result<R> {
        self.send_request(request)?;
        self.flush()?;
        self.reply_as(request.op())
    }
}

/// Decodes the `ok` value of a reply to `op`; one that does not fit is a protocol error, not
/// an empty answer.
pub fn decode_reply<R: DeserializeOwned>(op: &str, peer: &str, v: Value) -> Result<R> {
    serde_json::from_value(v)
        .map_err(|e| Error::remote(format!("malformed reply to '{op}' from {peer}: {e}")))
}

/// Unpacks a reply: `{ok: ...}` or `{error: {kind, message, hint}}`.
pub fn reply_value(v: Value) -> Result<Value> {
    if let Some(e) = v.get("error") {
        let kind = Kind::from_wire_name(e.get("kind").and_then(Value::as_str).unwrap_or(""));
        let message = e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("remote error")
            .to_string();
        let hint = e.get("hint").and_then(Value::as_str).map(String::from);
        return Err(Error {
            kind,
            message,
            hint,
        });
    }
    v.get("ok")
        .cloned()
        .ok_or_else(|| Error::remote(format!("malformed reply {v}")))
}

/// For tests: a client over one end of a socket pair (the server for the other end is
/// `crate::command::remote::server::test_pair`).
#[cfg(test)]
pub mod test_pair {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A protocol client over our end of a socket pair.
    pub fn client_over(ours: UnixStream, io_timeout: Duration, peer: &str) -> Result<Client> {
        let rt = runtime().unwrap();
        ours.set_nonblocking(true).unwrap();
        let stream = rt
            .block_on(async { tokio::net::UnixStream::from_std(ours) })
            .unwrap();
        let (r, w) = stream.into_split();
        let protocol_timeout = Duration::from_secs(60);
        Client::new(
            rt,
            Box::pin(r),
            Box::pin(w),
            None,
            io_timeout,
            protocol_timeout,
            peer.into(),
        )
    }
}
