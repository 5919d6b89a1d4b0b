//! The server side of the protocol: runs on the host that owns the storage (started over SSH
//! as the hidden `remote` command) and answers one request at a time. Each `J` frame between
//! requests is decoded into a [`Request`] and dispatched with an exhaustive match, so an op
//! added to the enum cannot be left unanswered. A frame that does not decode gets an error
//! reply (an op this build does not know, from a peer of another version: `unknown request`;
//! a missing or mistyped field: `invalid OP request`); a malformed `write` gets it as the
//! answer to its commit, after its data is discarded, and a malformed `backup-files` ends the
//! session: its client waits for one reply per file, which cannot be given.
//!
//! Requests and what follows them:
//! - `list {path}` → `{ok: {names}}`
//! - `read {path, range?}` → `{ok: {found}}`, then, when found, `D`* and `E` (or an error
//!   `J` frame if reading fails midway); with `range: [start, end]` only those bytes (the
//!   greeting's `storage.ranges` says the server reads ranges)
//! - `write {dir}`, then `D`* from the client, then `{commit: name}` or `A` (abandon) →
//!   one reply after the commit. The reply comes only at the end so that a write costs a
//!   single round trip; if opening or writing fails, the rest of the stream is discarded and
//!   the error is the reply.
//! - `temp-files {path}` → `{ok: {paths}}`, the temp files at any depth below `path`
//! - `remove {path}`, `remove-tree {path}` → `{ok: {}}`
//! - `create-path {path}`, `create-link {target, link}` → `{ok: {}}`: the empty directories
//!   and tablespace links of a full backup
//! - `info {path}` → `{ok: {info}}` (null when missing), `list-info {path}` →
//!   `{ok: {entries}}`: name, kind, size, mtime, link_destination (repo-ls)
//!
//! On the database host (pg1-host), four more serve a backup taken from the repository host:
//! - `db-query {sql}` → `{ok: {rows}}`, on one database session kept for the whole protocol
//!   session, so pg_backup_start and pg_backup_stop run on the same connection
//! - `walk {pg_path, tablespaces, version_dir}` → `{ok: {tree}}`, the files to back up
//! - `backup-file {src, params}` → `{ok: {found}}`, then, when found, `D`* of the file in
//!   storage format (SHA-1 and gzip run here, so the network carries compressed bytes) and a
//!   final reply `{ok: {entry}}` describing what was stored
//! - `backup-files {srcs, params}` → one `backup-file` answer per file, back to back
//!
//! Failures are replies `{error: {kind, message, hint}}` carrying the [`Kind`] across hosts.
//!
//! The server ends when the client closes the stream, when the stream fails (the client or
//! its SSH connection died) and after a caught signal; each way an unfinished write's writer
//! is dropped, which removes its temp file.

use std::io::{Read, Write};

use serde::Serialize;
use serde_json::{json, Value};

use super::Request;
use crate::command::backup::file::{self, CopyParams};
use crate::command::backup::walk::{self, SourceFile, Tablespace};
use crate::error::{Error, Kind, Result};
use crate::pg::db::Db;
use crate::pipeline::CHUNK;
use crate::protocol::frame::{self, Frame};
use crate::protocol::request::{
    Commit, Done, Entries, EntryReply, Found, InfoReply, Names, Paths, Rows, TreeReply,
};
use crate::protocol::PROTOCOL_VERSION;
use crate::storage::{AtomicWrite, Storage};

fn error_value(e: &Error) -> Value {
    json!({"error": {"kind": e.kind.wire_name(), "message": e.message, "hint": e.hint}})
}

/// A success reply carrying `v`, one of the reply types of [`crate::protocol::request`].
fn ok<T: Serialize>(v: T) -> Result<Value> {
    serde_json::to_value(v)
        .map(|v| json!({ "ok": v }))
        .map_err(|e| Error::internal(format!("reply encoding: {e}")))
}

fn wire(e: std::io::Error) -> Error {
    Error::remote(format!("protocol stream failed: {e}"))
}

/// Serves requests until the client closes the stream. `connect_db` opens the database
/// session the first time a `db-query` needs it.
pub fn serve(
    storage: &dyn Storage,
    connect_db: &dyn Fn() -> Result<Db>,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<()> {
    let mut db: Option<Db> = None;
    // What the storage can do travels with the greeting: a repository host whose repository
    // is in S3 takes writes named at open and makes no links.
    let hello = json!({
        "hello": "pg_backrest",
        "version": crate::VERSION,
        "protocol": PROTOCOL_VERSION,
        "storage": {
            "links": storage.supports_links(),
            "name-at-open": storage.needs_name_at_open(),
            "ranges": true,
        },
    });
    frame::write_json(output, &hello)
        .and_then(|_| output.flush())
        .map_err(wire)?;
    loop {
        // A caught signal ends the server between requests; one that arrives during a
        // stream fails that stream first (its reply says so), dropping its writer.
        crate::signal::check()?;
        let request = match frame::read_frame(input).map_err(wire)? {
            None => return Ok(()),
            Some(Frame::Json(v)) => v,
            Some(other) => {
                return Err(Error::remote(format!(
                    "unexpected frame {other} between requests"
                )))
            }
        };
        let op = request
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let request: Request = match serde_json::from_value(request) {
            Ok(r) => r,
            Err(e) if op == "backup-files" => {
                // Its client waits for one reply per file: an error reply would be taken
                // for the first file's. Ending the session makes it fail at once.
                return Err(Error::remote(format!("invalid {op} request: {e}")));
            }
            Err(e) if op == "write" => {
                // Its data follows: discarded, and the commit answered with the error, as
                // when the temp file cannot be opened.
                let e = Error::remote(format!("invalid {op} request: {e}"));
                match receive_write(storage, "", Err(e), input) {
                    Ok(None) => {}
                    Ok(Some(v)) => reply(output, &v)?,
                    Err(e) => reply(output, &error_value(&e))?,
                }
                continue;
            }
            Err(e) => {
                let what = if op.is_empty() {
                    String::from("invalid request")
                } else {
                    format!("invalid {op} request")
                };
                reply(output, &error_value(&Error::remote(format!("{what}: {e}"))))?;
                continue;
            }
        };
        let reply = match request {
            Request::List { path } => storage.list(&path).and_then(|names| ok(Names { names })),
            Request::TempFiles { path } => storage
                .temp_files(&path)
                .and_then(|paths| ok(Paths { paths })),
            Request::Info { path } => storage.info(&path).and_then(|info| ok(InfoReply { info })),
            Request::ListInfo { path } => storage
                .list_info(&path)
                .and_then(|entries| ok(Entries { entries })),
            Request::CreatePath { path } => storage.create_path(&path).and_then(|_| ok(Done {})),
            Request::CreateLink { target, link } => storage
                .create_link(&target, &link)
                .and_then(|_| ok(Done {})),
            Request::Remove { path } => storage.remove(&path).and_then(|_| ok(Done {})),
            Request::RemoveTree { path } => storage.remove_tree(&path).and_then(|_| ok(Done {})),
            Request::Read { path, range } => {
                serve_read(storage, &path, range, output)?;
                continue;
            }
            Request::DbQuery { sql } => {
                if db.is_none() {
                    match connect_db() {
                        Ok(d) => db = Some(d),
                        Err(e) => {
                            reply(output, &error_value(&e))?;
                            continue;
                        }
                    }
                }
                match db.as_ref().map(|d| d.query_rows(&sql)) {
                    Some(Ok(rows)) => ok(Rows { rows }),
                    Some(Err(e)) => Err(e),
                    None => Err(Error::internal("no database session")),
                }
            }
            Request::Walk {
                pg_path,
                tablespaces,
                version_dir,
            } => serve_walk(&pg_path, &tablespaces, &version_dir),
            Request::BackupFile { src, params } => {
                serve_backup_file(&src, &params, output)?;
                continue;
            }
            Request::BackupFiles { srcs, params } => {
                // Each file is answered as its own backup-file request would be, back to
                // back.
                for src in &srcs {
                    serve_backup_file(src, &params, output)?;
                }
                continue;
            }
            Request::Write { dir, name } => {
                let writer = match &name {
                    Some(name) => storage.open_write_named(&dir, name),
                    None => storage.open_write(&dir),
                };
                match receive_write(storage, &dir, writer, input) {
                    // Abandoned by the client: it expects no reply.
                    Ok(None) => continue,
                    Ok(Some(v)) => Ok(v),
                    Err(e) => Err(e),
                }
            }
            Request::Unknown => Err(Error::remote(format!("unknown request '{op}'"))),
        };
        let reply = reply.unwrap_or_else(|e| error_value(&e));
        frame::write_json(output, &reply)
            .and_then(|_| output.flush())
            .map_err(wire)?;
    }
}

fn reply(output: &mut dyn Write, v: &Value) -> Result<()> {
    frame::write_json(output, v)
        .and_then(|_| output.flush())
        .map_err(wire)
}

fn serve_walk(pg_path: &str, tablespaces: &[Tablespace], version_dir: &str) -> Result<Value> {
    let tree = walk::walk(std::path::Path::new(pg_path), tablespaces, version_dir)?;
    ok(TreeReply { tree })
}

/// Data frames of at most one chunk each.
struct FrameWriter<'a> {
    out: &'a mut dyn Write,
}

impl Write for FrameWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(CHUNK);
        frame::write_data(self.out, &buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Answers for one file of a `backup-file` or `backup-files` request.
fn serve_backup_file(src: &SourceFile, params: &CopyParams, output: &mut dyn Write) -> Result<()> {
    let file = match file::open_source(src) {
        Ok(Some(f)) => f,
        Ok(None) => return reply(output, &ok(Found { found: false })?),
        Err(e) => return reply(output, &error_value(&e)),
    };
    frame::write_json(output, &ok(Found { found: true })?).map_err(wire)?;
    let result = {
        let mut frames =
            std::io::BufWriter::with_capacity(CHUNK, FrameWriter { out: &mut *output });
        let copied = file::copy_source(&file, src, &mut frames, "the protocol stream", params);
        let flushed = frames.flush().map_err(wire);
        copied.and_then(|entry| flushed.map(|_| entry))
    };
    let last = result
        .and_then(|entry| ok(EntryReply { entry }))
        .unwrap_or_else(|e| error_value(&e));
    reply(output, &last)
}

fn serve_read(
    storage: &dyn Storage,
    path: &str,
    range: Option<[u64; 2]>,
    output: &mut dyn Write,
) -> Result<()> {
    let opened = match range {
        Some([start, end]) => storage.open_read_range(path, start, end),
        None => storage.open_read(path),
    };
    let mut reader = match opened {
        Ok(Some(r)) => r,
        Ok(None) => return reply(output, &ok(Found { found: false })?),
        Err(e) => {
            return frame::write_json(output, &error_value(&e))
                .and_then(|_| output.flush())
                .map_err(wire)
        }
    };
    frame::write_json(output, &ok(Found { found: true })?).map_err(wire)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        if let Err(e) = crate::signal::check() {
            return reply(output, &error_value(&e));
        }
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => frame::write_data(output, &buf[..n]).map_err(wire)?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let e = crate::pipeline::io_error("read", &storage.describe(path), e);
                return frame::write_json(output, &error_value(&e))
                    .and_then(|_| output.flush())
                    .map_err(wire);
            }
        }
    }
    frame::write_empty(output, b'E')
        .and_then(|_| output.flush())
        .map_err(wire)
}

/// Receives a write stream into `writer` (or, when that is an error, discards it and
/// answers the commit with the error) and returns the reply, or `None` when the client
/// abandoned it.
fn receive_write<'a>(
    storage: &dyn Storage,
    dir: &str,
    mut writer: Result<Box<dyn AtomicWrite + 'a>>,
    input: &mut dyn Read,
) -> Result<Option<Value>> {
    loop {
        // Returning drops the writer, which removes its temp file.
        crate::signal::check()?;
        match frame::read_frame(input).map_err(wire)? {
            Some(Frame::Data(d)) => {
                if let Ok(w) = writer.as_mut() {
                    if let Err(e) = w.write_all(&d) {
                        writer = Err(crate::pipeline::io_error(
                            "write",
                            &storage.describe(dir),
                            e,
                        ));
                    }
                }
            }
            Some(Frame::Abort) => return Ok(None),
            Some(Frame::Json(v)) => {
                let name = serde_json::from_value::<Commit>(v)
                    .map(|c| c.commit)
                    .unwrap_or_default();
                if name.is_empty() || name.contains('/') {
                    return Err(Error::remote("write stream ended without a valid commit"));
                }
                return match writer {
                    Ok(w) => w.commit(&name).and_then(|_| ok(Done {}).map(Some)),
                    Err(e) => Err(e),
                };
            }
            Some(Frame::End) | None => {
                return Err(Error::new(Kind::Protocol, "write stream ended early"))
            }
        }
    }
}

/// For tests: a server over one end of a socket pair, a protocol client over the other.
#[cfg(test)]
pub mod test_pair {
    use crate::error::{Error, Result};
    use crate::protocol::client::{test_pair::client_over, Client};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// A server thread serving the storage at `root` (no database), and a client of it.
    pub fn serve(
        root: &std::path::Path,
        io_timeout: Duration,
    ) -> (Client, std::thread::JoinHandle<Result<()>>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let server = serve_over(root, theirs);
        (client_over(ours, io_timeout, "test peer").unwrap(), server)
    }

    /// A server thread on `theirs`, serving the storage at `root` (no database).
    pub fn serve_over(
        root: &std::path::Path,
        theirs: UnixStream,
    ) -> std::thread::JoinHandle<Result<()>> {
        let root = root.to_path_buf();
        std::thread::spawn(move || {
            let storage = crate::storage::posix::PosixStorage::new(root);
            let mut input = theirs.try_clone().unwrap();
            let mut output = theirs;
            let no_db = || Err(Error::config("no database here"));
            super::serve(&storage, &no_db, &mut input, &mut output)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// Sends raw JSON frames, as a peer of another version might, and reads the replies.
    struct RawPeer {
        stream: UnixStream,
    }

    impl RawPeer {
        fn start(root: &std::path::Path) -> (RawPeer, std::thread::JoinHandle<Result<()>>) {
            let (ours, theirs) = UnixStream::pair().unwrap();
            ours.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let server = test_pair::serve_over(root, theirs);
            let mut peer = RawPeer { stream: ours };
            let hello = peer.recv().unwrap();
            assert_eq!(hello["protocol"], PROTOCOL_VERSION, "{hello}");
            (peer, server)
        }

        fn send(&mut self, v: Value) {
            frame::write_json(&mut self.stream, &v).unwrap();
        }

        fn recv(&mut self) -> Option<Value> {
            match frame::read_frame(&mut self.stream).unwrap() {
                Some(Frame::Json(v)) => Some(v),
                None => None,
                Some(other) => panic!("unexpected {other}"),
            }
        }
    }

    /// An op this build does not know and a request missing a field each get an error reply
    /// of kind protocol that says what was wrong, and the session goes on.
    #[test]
    fn unknown_and_malformed_requests_get_an_error_reply() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("d/f"), b"x").unwrap();
        let (mut peer, server) = RawPeer::start(tmp.path());
        let protocol_error = |v: &Value, message: &str| {
            assert_eq!(v["error"]["kind"], Kind::Protocol.wire_name(), "{v}");
            assert_eq!(v["error"]["message"], message, "{v}");
        };

        peer.send(json!({"op": "bogus", "path": "d"}));
        protocol_error(&peer.recv().unwrap(), "unknown request 'bogus'");
        peer.send(json!({"op": "list"}));
        protocol_error(
            &peer.recv().unwrap(),
            "invalid list request: missing field `path`",
        );
        peer.send(json!({"op": "create-link", "target": 5, "link": "l"}));
        let v = peer.recv().unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("invalid create-link request: invalid type: integer `5`"),
            "{v}"
        );
        // A write's data is discarded and its commit answered with the error.
        peer.send(json!({"op": "write", "dri": "d"}));
        frame::write_data(&mut peer.stream, b"data").unwrap();
        peer.send(json!({"commit": "g"}));
        protocol_error(
            &peer.recv().unwrap(),
            "invalid write request: missing field `dir`",
        );
        assert!(!tmp.path().join("g").exists() && !tmp.path().join("d/g").exists());
        peer.send(json!({"path": "d"}));
        protocol_error(&peer.recv().unwrap(), "invalid request: missing field `op`");

        // Still serving.
        peer.send(json!({"op": "list", "path": "d"}));
        assert_eq!(peer.recv().unwrap(), json!({"ok": {"names": ["f"]}}));
        drop(peer);
        server.join().unwrap().unwrap();
    }

    /// A batch request the server cannot answer file by file ends the session, so the
    /// client fails at once instead of waiting for replies that will not come.
    #[test]
    fn a_malformed_batch_request_ends_the_session() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut peer, server) = RawPeer::start(tmp.path());
        peer.send(json!({"op": "backup-files", "srcs": "nope", "params": {}}));
        assert_eq!(peer.recv(), None, "closed without a reply");
        let e = server.join().unwrap().unwrap_err();
        assert_eq!(e.kind, Kind::Protocol);
        assert!(
            e.message.starts_with("invalid backup-files request: "),
            "{e:?}"
        );
    }
}
