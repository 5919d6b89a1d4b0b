//! The remote storage driver: the [`Storage`] interface forwarded over the protocol to a
//! `pg_backrest remote` on another host, whose own config names the storage root.
//!
//! One connection carries one operation at a time; a reader or writer holds the connection
//! for the length of its stream, and any other call meanwhile is refused as a bug rather
//! than interleaved on the wire.

use std::io::{self, Read, Write};
use std::sync::Mutex;

use super::{AtomicWrite, EntryInfo, Storage};
use crate::error::{Error, Result};
use crate::pipeline::CHUNK;
use crate::protocol::client::Client;
use crate::protocol::frame::Frame;
use crate::protocol::request::{self, Done, Entries, Found, InfoReply, Names, NoPayloads, Paths};
use crate::protocol::ssh::{self, RemoteCommand, SshTarget};

/// Storage requests carry none of the backup's payloads.
type Request = request::Request<NoPayloads>;

pub struct RemoteStorage {
    client: Mutex<Client>,
    host: String,
    /// What the server's storage can do, from its greeting (a posix one's when unsaid).
    links: bool,
    name_at_open: bool,
    /// Whether the server reads ranges of a file itself (`read` with `range`).
    ranges: bool,
}

impl RemoteStorage {
    /// Connects to `target` and starts the remote side there with `command`.
    pub fn connect(target: &SshTarget, command: &RemoteCommand) -> Result<RemoteStorage> {
        let client = ssh::spawn_remote(target, command)?;
        Ok(RemoteStorage::from_client(client, target.host.clone()))
    }

    pub fn from_client(client: Client, host: String) -> RemoteStorage {
        let storage = &client.greeting()["storage"];
        RemoteStorage {
            links: storage["links"].as_bool().unwrap_or(true),
            name_at_open: storage["name-at-open"].as_bool().unwrap_or(false),
            ranges: storage["ranges"].as_bool().unwrap_or(false),
            client: Mutex::new(client),
            host,
        }
    }

    /// A `read` request, of the whole file or of `range`.
    fn read(
        &self,
        path: &str,
        range: Option<[u64; 2]>,
    ) -> Result<Option<Box<dyn Read + Send + '_>>> {
        let reply: Found = self.lock()?.call(&Request::Read {
            path: path.into(),
            range,
        })?;
        if !reply.found {
            return Ok(None);
        }
        Ok(Some(Box::new(RemoteReader {
            storage: self,
            buf: Vec::new(),
            pos: 0,
            done: false,
        })))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Client>> {
        self.client
            .lock()
            .map_err(|_| Error::internal("remote client lock poisoned"))
    }
}

impl RemoteStorage {
    /// A request whose reply is only success or an error.
    fn call_done(&self, request: &Request) -> Result<()> {
        self.lock()?.call::<_, Done>(request).map(|_| ())
    }

    fn open_write_as(&self, dir: &str, name: Option<&str>) -> Result<Box<dyn AtomicWrite + '_>> {
        // No reply yet: the server answers once, after the commit, to save a round trip.
        self.lock()?.send_request(&Request::Write {
            dir: dir.into(),
            name: name.map(String::from),
        })?;
        Ok(Box::new(RemoteWriter {
            storage: self,
            buf: Vec::with_capacity(CHUNK),
            finished: false,
        }))
    }
}

fn smuggle(e: Error) -> io::Error {
    io::Error::other(e)
}

impl Storage for RemoteStorage {
    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let reply: Names = self.lock()?.call(&Request::List { path: dir.into() })?;
        Ok(reply.names)
    }

    fn temp_files(&self, dir: &str) -> Result<Vec<String>> {
        let reply: Paths = self
            .lock()?
            .call(&Request::TempFiles { path: dir.into() })?;
        Ok(reply.paths)
    }

    fn open_read(&self, path: &str) -> Result<Option<Box<dyn Read + Send + '_>>> {
        self.read(path, None)
    }

    fn open_read_range(
        &self,
        path: &str,
        start: u64,
        end: u64,
    ) -> Result<Option<Box<dyn Read + Send + '_>>> {
        if self.ranges {
            self.read(path, Some([start, end]))
        } else {
            // A server of a build before ranged reads would ignore the range and send the
            // whole file: ask for the whole file and skip what is not wanted.
            let whole = self.read(path, None)?;
            super::read_range_by_skipping(whole, start, end, &self.describe(path))
        }
    }

    fn open_write(&self, dir: &str) -> Result<Box<dyn AtomicWrite + '_>> {
        self.open_write_as(dir, None)
    }

    fn open_write_named(&self, dir: &str, name: &str) -> Result<Box<dyn AtomicWrite + '_>> {
        self.open_write_as(dir, Some(name))
    }

    fn needs_name_at_open(&self) -> bool {
        self.name_at_open
    }

    fn supports_links(&self) -> bool {
        self.links
    }

    fn create_path(&self, path: &str) -> Result<()> {
        self.call_done(&Request::CreatePath { path: path.into() })
    }

    fn create_link(&self, target: &str, link: &str) -> Result<()> {
        self.call_done(&Request::CreateLink {
            target: target.into(),
            link: link.into(),
        })
    }

    fn remove(&self, path: &str) -> Result<()> {
        self.call_done(&Request::Remove { path: path.into() })
    }

    fn remove_tree(&self, path: &str) -> Result<()> {
        self.call_done(&Request::RemoveTree { path: path.into() })
    }

    fn describe(&self, path: &str) -> String {
        format!("{}:{path}", self.host)
    }

    fn info(&self, path: &str) -> Result<Option<EntryInfo>> {
        let reply: InfoReply<EntryInfo> =
            self.lock()?.call(&Request::Info { path: path.into() })?;
        Ok(reply.info)
    }

    fn list_info(&self, dir: &str) -> Result<Vec<EntryInfo>> {
        let reply: Entries<EntryInfo> =
            self.lock()?.call(&Request::ListInfo { path: dir.into() })?;
        Ok(reply.entries)
    }
}

struct RemoteReader<'a> {
    storage: &'a RemoteStorage,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for RemoteReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() && !self.done {
            let frame = self
                .storage
                .lock()
                .and_then(|mut c| c.recv())
                .map_err(smuggle)?;
            match frame {
                Frame::Data(d) => {
                    self.buf = d;
                    self.pos = 0;
                }
                Frame::End => self.done = true,
                Frame::Json(v) => {
                    self.done = true;
                    let e = crate::protocol::client::reply_value(v)
                        .err()
                        .unwrap_or_else(|| Error::remote("unexpected reply inside a data stream"));
                    return Err(smuggle(e));
                }
                Frame::Abort => {
                    return Err(smuggle(Error::remote("remote abandoned the data stream")))
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for RemoteReader<'_> {
    fn drop(&mut self) {
        // Drain the rest of the stream so the connection is ready for the next request.
        while !self.done {
            match self.storage.lock().and_then(|mut c| c.recv()) {
                Ok(Frame::Data(_)) => {}
                _ => self.done = true,
            }
        }
    }
}

struct RemoteWriter<'a> {
    storage: &'a RemoteStorage,
    buf: Vec<u8>,
    finished: bool,
}

impl RemoteWriter<'_> {
    fn send_buffer(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.storage.lock()?.send_data(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl Write for RemoteWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buffer().map_err(smuggle)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AtomicWrite for RemoteWriter<'_> {
    fn commit(mut self: Box<Self>, name: &str) -> Result<()> {
        self.send_buffer()?;
        self.finished = true;
        let mut c = self.storage.lock()?;
        c.send_commit(name)?;
        c.flush()?;
        c.reply_as::<Done>("write").map(|_| ())
    }
}

impl Drop for RemoteWriter<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // Tell the server to discard its temp file. If the connection is gone, the
            // server's writer is dropped with it and removes the temp file itself.
            if let Ok(mut c) = self.storage.lock() {
                let _ = c.send_abort().and_then(|_| c.flush());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use crate::protocol::client::test_pair::client_over;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// A server thread over one end of a socket pair, a client over the other.
    fn pair(
        root: &std::path::Path,
        io_timeout: Duration,
    ) -> (RemoteStorage, std::thread::JoinHandle<Result<()>>) {
        let (c, server) = crate::command::remote::server::test_pair::serve(root, io_timeout);
        (RemoteStorage::from_client(c, "peer".into()), server)
    }

    #[test]
    fn every_storage_call_works_over_the_protocol() {
        let tmp = tempfile::tempdir().unwrap();
        let (remote, server) = pair(tmp.path(), Duration::from_secs(10));
        assert!(remote.list("a").unwrap().is_empty());
        assert!(remote.open_read("a/missing").unwrap().is_none());

        // A file larger than one frame streams both ways.
        let data: Vec<u8> = (0..(3 * CHUNK + 5)).map(|i| (i % 253) as u8).collect();
        let mut w = remote.open_write("a/b").unwrap();
        w.write_all(&data).unwrap();
        w.commit("f").unwrap();
        assert_eq!(std::fs::read(tmp.path().join("a/b/f")).unwrap(), data);
        assert_eq!(remote.list("a/b").unwrap(), vec!["f"]);
        let mut back = Vec::new();
        remote
            .open_read("a/b/f")
            .unwrap()
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);

        // A range: the server seeks and sends those bytes only; fewer where the file ends.
        // A client of an older server (no `ranges` in its greeting) skips the bytes itself.
        let range = |remote: &RemoteStorage, a: u64, b: u64| {
            let mut out = Vec::new();
            let mut r = remote.open_read_range("a/b/f", a, b).unwrap().unwrap();
            r.read_to_end(&mut out).unwrap();
            out
        };
        let (a, b) = (CHUNK as u64 + 3, 2 * CHUNK as u64 + 11);
        assert_eq!(range(&remote, a, b), data[a as usize..b as usize]);
        assert_eq!(range(&remote, b, 10 * CHUNK as u64), data[b as usize..]);
        assert!(range(&remote, 10 * CHUNK as u64, 11 * CHUNK as u64).is_empty());
        assert!(remote.open_read_range("a/missing", 0, 5).unwrap().is_none());
        let remote = RemoteStorage {
            ranges: false,
            ..remote
        };
        assert_eq!(range(&remote, a, b), data[a as usize..b as usize]);
        // A range reader dropped early is drained like any other.
        let mut r = remote.open_read_range("a/b/f", 0, b).unwrap().unwrap();
        r.read_exact(&mut [0u8; 7]).unwrap();
        drop(r);
        let remote = RemoteStorage {
            ranges: true,
            ..remote
        };
        let mut r = remote.open_read_range("a/b/f", 0, b).unwrap().unwrap();
        r.read_exact(&mut [0u8; 7]).unwrap();
        drop(r);
        assert_eq!(remote.list("a/b").unwrap(), vec!["f"]);

        // An abandoned write leaves nothing, and the connection stays usable.
        let mut w = remote.open_write("a/b").unwrap();
        w.write_all(&data).unwrap();
        drop(w);
        assert_eq!(remote.list("a/b").unwrap(), vec!["f"]);
        assert_eq!(
            std::fs::read_dir(tmp.path().join("a/b")).unwrap().count(),
            1,
            "temp file removed"
        );

        // What each entry is, as repo-ls shows it (a symlink not followed).
        std::os::unix::fs::symlink("f", tmp.path().join("a/b/l")).unwrap();
        let info = remote.info("a/b/f").unwrap().unwrap();
        assert_eq!(
            (info.name.as_str(), info.kind),
            ("f", crate::storage::EntryKind::File)
        );
        assert_eq!(info.size, data.len() as u64);
        assert!(info.mtime > 1_600_000_000, "{info:?}");
        assert_eq!(
            remote.info("a/b").unwrap().unwrap().kind,
            crate::storage::EntryKind::Path
        );
        assert_eq!(remote.info("a/missing").unwrap(), None);
        let listed = remote.list_info("a/b").unwrap();
        let shown: Vec<_> = listed
            .iter()
            .map(|e| {
                (
                    e.name.as_str(),
                    e.kind.name(),
                    e.link_destination.as_deref(),
                )
            })
            .collect();
        assert_eq!(shown, vec![("f", "file", None), ("l", "link", Some("f"))]);
        assert!(remote.list_info("a/none").unwrap().is_empty());
        std::fs::remove_file(tmp.path().join("a/b/l")).unwrap();

        // Empty directories and a tablespace link as a full backup makes them.
        remote.create_path("a/L/pg_data/pg_notify").unwrap();
        remote.create_path("a/L/pg_tblspc/1").unwrap();
        remote
            .create_link("../../pg_tblspc/1", "a/L/pg_data/pg_tblspc/1")
            .unwrap();
        assert!(tmp.path().join("a/L/pg_data/pg_notify").is_dir());
        let link = remote.info("a/L/pg_data/pg_tblspc/1").unwrap().unwrap();
        assert_eq!(
            (link.kind, link.link_destination.as_deref()),
            (crate::storage::EntryKind::Link, Some("../../pg_tblspc/1"))
        );
        let e = remote
            .create_link("../../../../..", "a/L/pg_data/pg_tblspc/2")
            .unwrap_err();
        assert_eq!(e.kind, Kind::Format, "{e:?}");
        remote.remove_tree("a/L").unwrap();

        // A reader dropped midway is drained; the next call works.
        let mut r = remote.open_read("a/b/f").unwrap().unwrap();
        let mut first = [0u8; 10];
        r.read_exact(&mut first).unwrap();
        drop(r);
        remote.remove("a/b/f").unwrap();
        assert!(remote.list("a/b").unwrap().is_empty());

        // Temp files a killed writer left: found below a directory, then removed.
        std::fs::write(tmp.path().join("a/b/.pgbr-tmp.9.9"), b"half").unwrap();
        assert_eq!(remote.temp_files("a").unwrap(), vec!["b/.pgbr-tmp.9.9"]);
        remote.remove("a/b/.pgbr-tmp.9.9").unwrap();
        assert!(remote.temp_files("a").unwrap().is_empty());

        // Errors keep their kind across the wire; a hostile path is refused.
        let e = remote.list("../etc").unwrap_err();
        assert_eq!(e.kind, Kind::Format);
        assert!(e.message.contains("refused storage path '../etc'"), "{e:?}");
        let e = remote.open_write("../x").unwrap().commit("f").unwrap_err();
        assert!(e.message.contains("refused storage path"), "{e:?}");
        std::fs::write(tmp.path().join("file"), b"x").unwrap();
        let e = remote
            .open_write("file/sub")
            .unwrap()
            .commit("f")
            .unwrap_err();
        assert_eq!(e.kind, Kind::PathCreate, "{e:?}");

        drop(remote);
        server.join().unwrap().unwrap();
    }

    #[test]
    fn a_silent_peer_fails_with_the_remote_kind_after_io_timeout() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        // Greets, then never answers.
        let mut greeter = theirs.try_clone().unwrap();
        crate::protocol::frame::write_json(
            &mut greeter,
            &serde_json::json!({"hello": "pg_backrest", "protocol": crate::protocol::PROTOCOL_VERSION}),
        )
        .unwrap();
        let c = client_over(ours, Duration::from_millis(300), "silent").unwrap();
        let remote = RemoteStorage::from_client(c, "silent".into());
        let e = remote.list("x").unwrap_err();
        assert_eq!(e.kind, Kind::Protocol);
        assert!(
            e.message.contains("did not answer within io-timeout"),
            "{e:?}"
        );
        // Broken stays broken: no half-understood exchange afterwards.
        assert!(remote.list("x").unwrap_err().message.contains("is broken"));
        drop(theirs);
    }

    #[test]
    fn a_peer_that_is_not_pg_backrest_is_refused() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut t = theirs.try_clone().unwrap();
        crate::protocol::frame::write_json(&mut t, &serde_json::json!({"motd": "welcome"}))
            .unwrap();
        let e = client_over(ours, Duration::from_secs(5), "x")
            .err()
            .unwrap();
        assert!(e.message.contains("unexpected greeting"), "{e:?}");
        drop(theirs);
    }
}
