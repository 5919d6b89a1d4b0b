//! The server side: runs on the host that owns the storage (started over SSH as the hidden
//! `remote` command) and answers one request at a time.
//!
//! Requests (`J` frames, field `op`) and what follows them:
//! - `list {path}` → `{ok: {names}}`
//! - `read {path}` → `{ok: {found}}`, then, when found, `D`* and `E` (or an error `J` frame
//!   if reading fails midway)
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
//! On the database host (pg1-host), three more serve a backup taken from the repository host:
//! - `db-query {sql}` → `{ok: {rows}}`, on one database session kept for the whole protocol
//!   session, so pg_backup_start and pg_backup_stop run on the same connection
//! - `walk {pg_path, tablespaces, version_dir}` → `{ok: {tree}}`, the files to back up
//! - `backup-file {src, params}` → `{ok: {found}}`, then, when found, `D`* of the file in
//!   storage format (SHA-1 and gzip run here, so the network carries compressed bytes) and a
//!   final reply `{ok: {entry}}` describing what was stored
//!
//! Failures are replies `{error: {kind, message, hint}}` carrying the [`Kind`] across hosts.
//!
//! The server ends when the client closes the stream, when the stream fails (the client or
//! its SSH connection died) and after a caught signal; each way an unfinished write's writer
//! is dropped, which removes its temp file.

use std::io::{Read, Write};

use serde_json::{json, Value};

use super::frame::{self, Frame};
use super::PROTOCOL_VERSION;
use crate::command::backup::file::{self, CopyParams};
use crate::command::backup::walk::{self, SourceFile, Tablespace};
use crate::error::{Error, Kind, Result};
use crate::pg::db::Db;
use crate::pipeline::CHUNK;
use crate::storage::{AtomicWrite, Storage};

pub fn error_value(e: &Error) -> Value {
    json!({"error": {"kind": e.kind.wire_name(), "message": e.message, "hint": e.hint}})
}

fn ok(v: Value) -> Value {
    json!({ "ok": v })
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
    let hello =
        json!({"hello": "pg_backrest", "version": crate::VERSION, "protocol": PROTOCOL_VERSION});
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
        let path = |k: &str| {
            request
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let op = request.get("op").and_then(Value::as_str).unwrap_or("");
        let reply = match op {
            "list" => storage
                .list(&path("path"))
                .map(|names| ok(json!({ "names": names }))),
            "temp-files" => storage
                .temp_files(&path("path"))
                .map(|paths| ok(json!({ "paths": paths }))),
            "info" => storage
                .info(&path("path"))
                .map(|info| ok(json!({ "info": info }))),
            "list-info" => storage
                .list_info(&path("path"))
                .map(|entries| ok(json!({ "entries": entries }))),
            "create-path" => storage.create_path(&path("path")).map(|_| ok(json!({}))),
            "create-link" => storage
                .create_link(&path("target"), &path("link"))
                .map(|_| ok(json!({}))),
            "remove" => storage.remove(&path("path")).map(|_| ok(json!({}))),
            "remove-tree" => storage.remove_tree(&path("path")).map(|_| ok(json!({}))),
            "read" => {
                serve_read(storage, &path("path"), output)?;
                continue;
            }
            "db-query" => {
                let sql = path("sql");
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
                    Some(Ok(rows)) => Ok(ok(json!({ "rows": rows }))),
                    Some(Err(e)) => Err(e),
                    None => Err(Error::internal("no database session")),
                }
            }
            "walk" => serve_walk(&request),
            "backup-file" => {
                serve_backup_file(&request, &request["src"], output)?;
                continue;
            }
            "backup-files" => {
                // Each file is answered as its own backup-file request would be, back to
                // back. A request that is not a list cannot be answered file by file: the
                // connection ends, so that the client does not wait for replies.
                let Some(srcs) = request.get("srcs").and_then(Value::as_array) else {
                    return Err(Error::remote("invalid backup-files request: no srcs list"));
                };
                for src in srcs {
                    serve_backup_file(&request, src, output)?;
                }
                continue;
            }
            "write" => match receive_write(storage, &path("dir"), input) {
                // Abandoned by the client: it expects no reply.
                Ok(None) => continue,
                Ok(Some(v)) => Ok(v),
                Err(e) => Err(e),
            },
            _ => Err(Error::remote(format!("unknown request '{op}'"))),
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

fn serve_walk(request: &Value) -> Result<Value> {
    let pg_path = request.get("pg_path").and_then(Value::as_str).unwrap_or("");
    let version_dir = request
        .get("version_dir")
        .and_then(Value::as_str)
        .unwrap_or("");
    let tablespaces: Vec<Tablespace> =
        serde_json::from_value(request.get("tablespaces").cloned().unwrap_or_default())
            .map_err(|e| Error::remote(format!("invalid walk request: {e}")))?;
    let tree = walk::walk(std::path::Path::new(pg_path), &tablespaces, version_dir)?;
    let tree =
        serde_json::to_value(&tree).map_err(|e| Error::internal(format!("tree encoding: {e}")))?;
    Ok(ok(json!({ "tree": tree })))
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

/// Answers for one file, `src`, with the `params` of `request`.
fn serve_backup_file(request: &Value, src: &Value, output: &mut dyn Write) -> Result<()> {
    let parsed: std::result::Result<(SourceFile, CopyParams), _> =
        serde_json::from_value(src.clone()).and_then(|src| {
            serde_json::from_value(request.get("params").cloned().unwrap_or_default())
                .map(|p| (src, p))
        });
    let (src, params) = match parsed {
        Ok(x) => x,
        Err(e) => {
            return reply(
                output,
                &error_value(&Error::remote(format!("invalid backup-file request: {e}"))),
            )
        }
    };
    let file = match file::open_source(&src) {
        Ok(Some(f)) => f,
        Ok(None) => return reply(output, &ok(json!({"found": false}))),
        Err(e) => return reply(output, &error_value(&e)),
    };
    frame::write_json(output, &ok(json!({"found": true}))).map_err(wire)?;
    let result = {
        let mut frames =
            std::io::BufWriter::with_capacity(CHUNK, FrameWriter { out: &mut *output });
        let copied = file::copy_source(&file, &src, &mut frames, "the protocol stream", &params);
        let flushed = frames.flush().map_err(wire);
        copied.and_then(|entry| flushed.map(|_| entry))
    };
    let last = match result {
        Ok(entry) => match serde_json::to_value(&entry) {
            Ok(v) => ok(json!({ "entry": v })),
            Err(e) => error_value(&Error::internal(format!("entry encoding: {e}"))),
        },
        Err(e) => error_value(&e),
    };
    reply(output, &last)
}

fn serve_read(storage: &dyn Storage, path: &str, output: &mut dyn Write) -> Result<()> {
    let mut reader = match storage.open_read(path) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return frame::write_json(output, &ok(json!({"found": false})))
                .and_then(|_| output.flush())
                .map_err(wire)
        }
        Err(e) => {
            return frame::write_json(output, &error_value(&e))
                .and_then(|_| output.flush())
                .map_err(wire)
        }
    };
    frame::write_json(output, &ok(json!({"found": true}))).map_err(wire)?;
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

/// Receives a write stream and returns the reply, or `None` when the client abandoned it.
fn receive_write(storage: &dyn Storage, dir: &str, input: &mut dyn Read) -> Result<Option<Value>> {
    let mut writer: std::result::Result<Box<dyn AtomicWrite + '_>, Error> = storage.open_write(dir);
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
                let name = v
                    .get("commit")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if name.is_empty() || name.contains('/') {
                    return Err(Error::remote("write stream ended without a valid commit"));
                }
                return match writer {
                    Ok(w) => w.commit(&name).map(|_| Some(ok(json!({})))),
                    Err(e) => Err(e),
                };
            }
            Some(Frame::End) | None => {
                return Err(Error::new(Kind::Protocol, "write stream ended early"))
            }
        }
    }
}
