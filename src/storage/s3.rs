//! The S3 driver: the repository as objects in a bucket (AWS S3, MinIO, Ceph, Garage, ...),
//! laid out as pgBackRest lays it out, so either tool reads the other's repository.
//!
//! Keys are repo1-path without its leading `/`, then the relative path (`/repo` and
//! `archive/db/archive.info` give `repo/archive/db/archive.info`), as pgBackRest names them.
//! S3 has no directories, links or rename, which shapes the rest:
//! - a directory is a common prefix: it exists while an object is under it, creating one
//!   does nothing, and listing shows it;
//! - links are not supported ([`Storage::supports_links`]): a backup makes none, as
//!   pgBackRest's does not on object storage;
//! - an object appears only whole, by one PUT or by completing a multipart upload at commit.
//!   Parts are buffered up to repo1-storage-upload-chunk-size each, so memory is that per
//!   writer whatever the file's size. A writer dropped before commit aborts its upload; a
//!   process killed before commit leaves an incomplete upload, which no listing shows and
//!   which lifecycle rules or the next `AbortIncompleteMultipartUpload` expire, never an
//!   object. So writers need their final key when they open ([`Storage::open_write_named`]).
//!
//! Why rusty-s3 and ureq: rusty-s3 only signs requests (SigV4) and builds their URLs, leaving
//! I/O to the caller, and ureq sends them blocking, which is how the copy pipeline reads and
//! writes every other storage: no async runtime to bridge, streaming bodies, per-read
//! timeouts, rustls with a CA of our choice. object_store was the alternative: async only,
//! and its put/multipart API owns retries and buffering that pgBackRest compatibility (part
//! size from repo1-storage-upload-chunk-size, io-timeout as the bound) needs to control.

mod client;
mod credentials;
mod xml;

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rusty_s3::actions::{
    AbortMultipartUpload, CompleteMultipartUpload, CreateMultipartUpload, DeleteObject,
    DeleteObjects, GetObject, HeadObject, ListObjectsV2, ObjectIdentifier, PutObject, UploadPart,
};
use rusty_s3::S3Action;
use ureq::http::{Method, Response};
use ureq::Body;

use self::client::{Client, Request, SIGNATURE_TTL};
use super::{AtomicWrite, EntryInfo, EntryKind, Storage};
use crate::error::{Error, Kind, Result};

pub use self::client::split_endpoint;

/// S3 allows at most this many parts in one upload, and this many keys in one delete.
const MAX_PARTS: usize = 10_000;
const DELETE_BATCH: usize = 1000;
/// S3 refuses parts under 5 MiB but the last (EntityTooSmall), though pgBackRest accepts a
/// repo1-storage-upload-chunk-size down to 64 KiB: a smaller setting sends 5 MiB parts.
const MIN_PART: usize = 5 << 20;
/// Resumes of one read that may follow each other without a byte read in between.
const MAX_RESUMES_WITHOUT_PROGRESS: u32 = 3;

/// A value never shown: Debug prints `<redacted>`, and nothing else prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriStyle {
    /// `https://bucket.endpoint/key` (repo1-s3-uri-style=host, the default).
    Host,
    /// `https://endpoint/bucket/key`.
    Path,
}

/// repo1-s3-key-type and what each needs.
#[derive(Debug, Clone)]
pub enum S3Credentials {
    Shared {
        key: String,
        secret: Secret,
        token: Option<Secret>,
    },
    Auto {
        role: Option<String>,
    },
    WebId {
        role: String,
        token: Secret,
        region: String,
    },
}

/// Everything the driver needs, resolved from the repo1-s3-* and repo1-storage-* options.
#[derive(Debug, Clone)]
pub struct S3Options {
    pub bucket: String,
    /// repo1-s3-endpoint: `host` or `host:port`.
    pub endpoint: String,
    /// repo1-storage-host: connect here instead of the endpoint, and check the server's
    /// certificate against this name, as pgBackRest does; the Host header and the signature
    /// stay the endpoint's (`bucket.endpoint` in host style).
    pub storage_host: Option<String>,
    /// repo1-storage-port when set; otherwise the endpoint's port or 443.
    pub port: Option<u16>,
    pub region: String,
    pub uri_style: UriStyle,
    pub credentials: S3Credentials,
    pub kms_key_id: Option<String>,
    pub verify_tls: bool,
    pub ca_file: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
    /// repo1-storage-upload-chunk-size: the part size of multipart uploads, and the largest
    /// file sent in one PUT.
    pub chunk_size: usize,
    /// repo1-path: the key prefix.
    pub prefix: String,
    pub io_timeout: Duration,
}

pub struct S3Storage {
    client: Arc<Client>,
    /// repo1-path without leading or trailing `/`; empty for the bucket's root.
    prefix: String,
    chunk_size: usize,
}

impl S3Storage {
    pub fn new(opts: &S3Options) -> Result<S3Storage> {
        Ok(S3Storage {
            client: Arc::new(Client::new(opts)?),
            prefix: opts.prefix.trim_matches('/').to_string(),
            chunk_size: opts.chunk_size.max(MIN_PART),
        })
    }

    /// The key of a repository path. Paths are built by pg_backrest itself, but one that
    /// could name another object than it says (`..`, an empty component) is refused.
    fn key(&self, path: &str) -> Result<String> {
        let rel = path.trim_matches('/');
        if rel.split('/').any(|c| c == ".." || c == ".") || rel.contains("//") {
            return Err(Error::new(
                Kind::Assert,
                format!("invalid repository path '{path}'"),
            ));
        }
        Ok(match (self.prefix.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{rel}", self.prefix),
        })
    }

    /// The listing prefix of a directory: its key and a `/`, or nothing at the bucket root.
    fn dir_prefix(&self, dir: &str) -> Result<String> {
        let key = self.key(dir)?;
        Ok(if key.is_empty() {
            key
        } else {
            format!("{key}/")
        })
    }

    /// Every page of a listing below `prefix`; with `delimiter`, one level only.
    fn list_all(
        &self,
        prefix: &str,
        delimiter: bool,
        mut each: impl FnMut(xml::ListPage),
    ) -> Result<()> {
        let mut token: Option<String> = None;
        loop {
            let sign = |bucket: &rusty_s3::Bucket, c: &rusty_s3::Credentials| {
                let mut list = ListObjectsV2::new(bucket, Some(c));
                // Keys as they are: the driver does not percent-decode a listing.
                list.query_mut().remove("encoding-type");
                list.with_prefix(prefix);
                if delimiter {
                    list.with_delimiter("/");
                }
                if let Some(t) = &token {
                    list.with_continuation_token(t.as_str());
                }
                list.sign(SIGNATURE_TTL)
            };
            let response = self.client.send(&Request {
                method: Method::GET,
                key: prefix,
                sign: &sign,
                headers: Vec::new(),
                body: &[],
                accept: &[],
            })?;
            let doc = self.small_body(response, prefix)?;
            let page = xml::list_page(&doc).map_err(|e| {
                Error::new(
                    Kind::Format,
                    format!("S3 listing of '{}': {e}", self.client.describe(prefix)),
                )
            })?;
            let next = match page.is_truncated {
                Some(true) => page.next_continuation_token.clone(),
                _ => None,
            };
            each(page);
            match next {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(()),
            }
        }
    }

    fn small_body(&self, response: Response<Body>, key: &str) -> Result<String> {
        response
            .into_body()
            .into_with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| {
                Error::new(
                    Kind::FileRead,
                    format!(
                        "unable to read S3 response for '{}': {e}",
                        self.client.describe(key)
                    ),
                )
            })
    }

    /// Opens `key` at `offset`, up to `end` when given (a ranged read), and only if it is
    /// still `etag` (a resumed read). `Ok(Some(None))`: the range starts past the object's
    /// end, so there is nothing to read.
    fn get(
        &self,
        key: &str,
        offset: u64,
        end: Option<u64>,
        etag: Option<&str>,
    ) -> Result<Option<Option<Response<Body>>>> {
        let sign = |bucket: &rusty_s3::Bucket, c: &rusty_s3::Credentials| {
            GetObject::new(bucket, Some(c), key).sign(SIGNATURE_TTL)
        };
        let mut headers = Vec::new();
        match end {
            // HTTP ranges name their last byte, not the one after it.
            Some(end) => headers.push(("range", format!("bytes={offset}-{}", end - 1))),
            None if offset > 0 => headers.push(("range", format!("bytes={offset}-"))),
            None => {}
        }
        if let Some(etag) = etag {
            headers.push(("if-match", etag.to_string()));
        }
        let response = self.client.send(&Request {
            method: Method::GET,
            key,
            sign: &sign,
            headers,
            body: &[],
            accept: &[404, 412, 416],
        })?;
        match response.status().as_u16() {
            404 => Ok(None),
            416 => Ok(Some(None)),
            412 => Err(Error::new(
                Kind::FileRead,
                format!(
                    "'{}' changed while it was being read",
                    self.client.describe(key)
                ),
            )),
            // A server that ignores Range sends the object from its start: reading on would
            // repeat what was read. (From offset 0 the reader stops at `end` itself.)
            200 if offset > 0 => Err(Error::new(
                Kind::FileRead,
                format!(
                    "unable to resume reading '{}' at offset {offset}: the server ignored the range",
                    self.client.describe(key)
                ),
            )),
            _ => Ok(Some(Some(response))),
        }
    }

    fn head(&self, key: &str) -> Result<Option<(u64, i64)>> {
        let sign = |bucket: &rusty_s3::Bucket, c: &rusty_s3::Credentials| {
            HeadObject::new(bucket, Some(c), key).sign(SIGNATURE_TTL)
        };
        let response = self.client.send_drained(&Request {
            method: Method::HEAD,
            key,
            sign: &sign,
            headers: Vec::new(),
            body: &[],
            accept: &[404],
        })?;
        if response.status.as_u16() == 404 {
            return Ok(None);
        }
        let size = header(&response.headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mtime = header(&response.headers, "last-modified")
            .and_then(|v| chrono::DateTime::parse_from_rfc2822(&v).ok())
            .map(|t| t.timestamp())
            .unwrap_or(0);
        Ok(Some((size, mtime)))
    }

    /// Whether any object lies below `key/`.
    fn is_prefix(&self, key: &str) -> Result<bool> {
        let prefix = if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        };
        let sign = |bucket: &rusty_s3::Bucket, c: &rusty_s3::Credentials| {
            let mut list = ListObjectsV2::new(bucket, Some(c));
            list.query_mut().remove("encoding-type");
            list.with_prefix(prefix.as_str());
            list.with_max_keys(1);
            list.sign(SIGNATURE_TTL)
        };
        let response = self.client.send(&Request {
            method: Method::GET,
            key: &prefix,
            sign: &sign,
            headers: Vec::new(),
            body: &[],
            accept: &[],
        })?;
        let doc = self.small_body(response, &prefix)?;
        let page = xml::list_page(&doc)
            .map_err(|e| Error::new(Kind::Format, format!("S3 listing of '{prefix}': {e}")))?;
        Ok(!page.contents.is_empty() || !page.common_prefixes.is_empty())
    }

    fn delete_batch(&self, keys: &[String]) -> Result<()> {
        let objects: Vec<ObjectIdentifier> = keys
            .iter()
            .map(|k| ObjectIdentifier::new(k.clone()))
            .collect();
        let (body, md5) = {
            let bucket = self.client.bucket();
            let mut action = DeleteObjects::new(bucket, None, objects.iter());
            action.set_quiet(true);
            action.body_with_md5()
        };
        let sign = |bucket: &rusty_s3::Bucket, c: &rusty_s3::Credentials| {
            let mut action = DeleteObjects::new(bucket, Some(c), objects.iter());
            action.set_quiet(true);
            action.sign(SIGNATURE_TTL)
        };
        let first = keys.first().map(String::as_str).unwrap_or("");
        let response = self.client.send(&Request {
            method: Method::POST,
            key: first,
            sign: &sign,
            headers: vec![("content-md5", md5)],
            body: body.as_bytes(),
            accept: &[],
        })?;
        let doc = self.small_body(response, first)?;
        let failed = xml::delete_errors(&doc);
        if !failed.is_empty() {
            return Err(Error::new(
                Kind::FileRemove,
                format!(
                    "unable to remove {} object(s) of bucket '{}': {}",
                    failed.len(),
                    self.client.bucket().name(),
                    failed.join("; ")
                ),
            ));
        }
        Ok(())
    }
}

fn header(headers: &ureq::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

fn name_below<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    key.strip_prefix(prefix)
        .map(|n| n.trim_end_matches('/'))
        .filter(|n| !n.is_empty())
}

impl Storage for S3Storage {
    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let prefix = self.dir_prefix(dir)?;
        let mut names = Vec::new();
        self.list_all(&prefix, true, |page| {
            names.extend(
                page.contents
                    .iter()
                    .filter_map(|o| name_below(&o.key, &prefix))
                    .chain(
                        page.common_prefixes
                            .iter()
                            .filter_map(|p| name_below(&p.prefix, &prefix)),
                    )
                    .filter(|n| !n.starts_with(super::TEMP_PREFIX))
                    .map(String::from),
            );
        })?;
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Nothing is written under a temp name on S3: an unfinished upload is no object.
    fn temp_files(&self, _dir: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn open_read(&self, path: &str) -> Result<Option<Box<dyn Read + Send + '_>>> {
        self.read_from(path, 0, None)
    }

    fn open_read_range(
        &self,
        path: &str,
        start: u64,
        end: u64,
    ) -> Result<Option<Box<dyn Read + Send + '_>>> {
        if end <= start {
            // No bytes: an HTTP range cannot say so; the object must still exist.
            return match self.head(&self.key(path)?)? {
                Some(_) => Ok(Some(Box::new(io::empty()))),
                None => Ok(None),
            };
        }
        self.read_from(path, start, Some(end))
    }

    fn open_write(&self, dir: &str) -> Result<Box<dyn AtomicWrite + '_>> {
        Ok(Box::new(S3Writer::new(self, dir, None)?))
    }

    fn open_write_named(&self, dir: &str, name: &str) -> Result<Box<dyn AtomicWrite + '_>> {
        Ok(Box::new(S3Writer::new(self, dir, Some(name))?))
    }

    /// A directory is a prefix: there is nothing to create.
    fn create_path(&self, path: &str) -> Result<()> {
        self.key(path).map(|_| ())
    }

    fn create_link(&self, _target: &str, link: &str) -> Result<()> {
        Err(Error::new(
            Kind::FeatureNotSupported,
            format!(
                "S3 has no links: unable to create '{}'",
                self.describe(link)
            ),
        ))
    }

    fn supports_links(&self) -> bool {
        false
    }

    fn needs_name_at_open(&self) -> bool {
        true
    }

    fn remove(&self, path: &str) -> Result<()> {
        let key = self.key(path)?;
        let sign = |bucket: &rusty_s3::Bucket, c: &rusty_s3::Credentials| {
            DeleteObject::new(bucket, Some(c), &key).sign(SIGNATURE_TTL)
        };
        self.client.send_drained(&Request {
            method: Method::DELETE,
            key: &key,
            sign: &sign,
            headers: Vec::new(),
            body: &[],
            accept: &[404],
        })?;
        Ok(())
    }

    fn remove_many(&self, paths: &[String]) -> Result<()> {
        let keys = paths
            .iter()
            .map(|p| self.key(p))
            .collect::<Result<Vec<_>>>()?;
        for batch in keys.chunks(DELETE_BATCH) {
            crate::signal::check()?;
            self.delete_batch(batch)?;
        }
        Ok(())
    }

    fn removes_in_batches(&self) -> bool {
        true
    }

    fn remove_tree(&self, path: &str) -> Result<()> {
        let prefix = self.dir_prefix(path)?;
        let mut keys = Vec::new();
        self.list_all(&prefix, false, |page| {
            keys.extend(page.contents.into_iter().map(|o| o.key));
        })?;
        for batch in keys.chunks(DELETE_BATCH) {
            crate::signal::check()?;
            self.delete_batch(batch)?;
        }
        Ok(())
    }

    fn describe(&self, path: &str) -> String {
        self.client
            .describe(&self.key(path).unwrap_or_else(|_| path.to_string()))
    }

    fn info(&self, path: &str) -> Result<Option<EntryInfo>> {
        let key = self.key(path)?;
        let name = path
            .trim_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        if !key.is_empty() {
            if let Some((size, mtime)) = self.head(&key)? {
                return Ok(Some(EntryInfo {
                    name,
                    kind: EntryKind::File,
                    size,
                    mtime,
                    link_destination: None,
                }));
            }
        }
        // The repository's root always is; another directory is while it holds objects.
        if path.trim_matches('/').is_empty() || self.is_prefix(&key)? {
            return Ok(Some(EntryInfo {
                name,
                kind: EntryKind::Path,
                size: 0,
                mtime: 0,
                link_destination: None,
            }));
        }
        Ok(None)
    }

    fn list_info(&self, dir: &str) -> Result<Vec<EntryInfo>> {
        let prefix = self.dir_prefix(dir)?;
        let mut entries = Vec::new();
        self.list_all(&prefix, true, |page| {
            for o in &page.contents {
                if let Some(name) = name_below(&o.key, &prefix) {
                    let mtime = o
                        .last_modified
                        .as_deref()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.timestamp())
                        .unwrap_or(0);
                    entries.push(EntryInfo {
                        name: name.to_string(),
                        kind: EntryKind::File,
                        size: o.size,
                        mtime,
                        link_destination: None,
                    });
                }
            }
            for p in &page.common_prefixes {
                if let Some(name) = name_below(&p.prefix, &prefix) {
                    entries.push(EntryInfo {
                        name: name.to_string(),
                        kind: EntryKind::Path,
                        size: 0,
                        mtime: 0,
                        link_destination: None,
                    });
                }
            }
        })?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries.dedup_by(|a, b| a.name == b.name);
        Ok(entries)
    }
}

impl S3Storage {
    /// A reader of `path` from `start`, up to `end` when given.
    fn read_from(
        &self,
        path: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<Option<Box<dyn Read + Send + '_>>> {
        let key = self.key(path)?;
        let response = match self.get(&key, start, end, None)? {
            None => return Ok(None),
            Some(None) => return Ok(Some(Box::new(io::empty()))),
            Some(Some(response)) => response,
        };
        let length: Option<u64> =
            header(response.headers(), "content-length").and_then(|v| v.parse().ok());
        let etag = header(response.headers(), "etag");
        // A 206 answer's length is that of the range; a 200 (from 0) is the whole object's,
        // of which the reader takes up to `end`.
        let size = length.map(|n| match end {
            Some(end) => (start + n).min(end),
            None => start + n,
        });
        Ok(Some(Box::new(S3Reader {
            storage: self,
            key,
            etag,
            size,
            end,
            offset: start,
            body: Some(Box::new(
                response
                    .into_body()
                    .into_with_config()
                    .limit(u64::MAX)
                    .reader(),
            )),
            resumes: 0,
        })))
    }
}

/// A streamed GET that survives a dropped connection: it asks again from where it was, for
/// the same object (If-Match on its ETag), so a restore outlives a restart of the server.
struct S3Reader<'a> {
    storage: &'a S3Storage,
    key: String,
    etag: Option<String>,
    /// Where the first answer's body ends in the object (its Content-Length past the
    /// start): a body that ends before it was cut short.
    size: Option<u64>,
    /// The end of a ranged read: resumed reads ask up to it, and reading stops there.
    end: Option<u64>,
    offset: u64,
    body: Option<Box<dyn Read + Send>>,
    resumes: u32,
}

impl S3Reader<'_> {
    fn resume(&mut self, cause: io::Error) -> io::Result<()> {
        self.resumes += 1;
        if self.resumes > MAX_RESUMES_WITHOUT_PROGRESS {
            return Err(io::Error::other(Error::new(
                Kind::FileRead,
                format!(
                    "unable to read '{}' at offset {}: {cause}",
                    self.storage.client.describe(&self.key),
                    self.offset
                ),
            )));
        }
        crate::debug!(
            "S3 read of '{}' interrupted at {} ({cause}), resuming",
            self.storage.client.describe(&self.key),
            self.offset
        );
        self.body = None;
        match self
            .storage
            .get(&self.key, self.offset, self.end, self.etag.as_deref())
        {
            // The object shrank under the same ETag: cannot be; stop, the count tells.
            Ok(Some(None)) => {
                self.body = None;
                Ok(())
            }
            Ok(Some(Some(response))) => {
                self.body = Some(Box::new(
                    response
                        .into_body()
                        .into_with_config()
                        .limit(u64::MAX)
                        .reader(),
                ));
                Ok(())
            }
            Ok(None) => Err(io::Error::other(Error::new(
                Kind::FileMissing,
                format!(
                    "'{}' was removed while it was being read",
                    self.storage.client.describe(&self.key)
                ),
            ))),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

impl Read for S3Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let buf = match self.end {
            Some(end) => {
                let left = end.saturating_sub(self.offset);
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                &mut buf[..n]
            }
            None => buf,
        };
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(body) = self.body.as_mut() else {
                return Ok(0);
            };
            match body.read(buf) {
                Ok(0) => match self.size {
                    Some(size) if self.offset < size => {
                        self.resume(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the body ended after {} of {size} bytes", self.offset),
                        ))?;
                    }
                    _ => {
                        self.body = None;
                        return Ok(0);
                    }
                },
                Ok(n) => {
                    self.offset += n as u64;
                    self.resumes = 0;
                    // A decoder stops at the end of its stream and never asks for the body's
                    // end; reading it now returns the connection to the pool.
                    if self.size == Some(self.offset) {
                        let _ = body.read(&mut [0u8; 1]);
                        self.body = None;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.resume(e)?,
            }
        }
    }
}

/// An object being written: parts of chunk-size bytes go up as they fill; the object
/// appears at commit and not before.
struct S3Writer<'a> {
    storage: &'a S3Storage,
    dir: String,
    /// The object's key, when the name was given at open; otherwise it is known at commit,
    /// and the content must fit one part.
    key: Option<String>,
    buf: Vec<u8>,
    upload: Option<Multipart>,
    finished: bool,
}

struct Multipart {
    id: String,
    etags: Vec<String>,
}

impl<'a> S3Writer<'a> {
    fn new(storage: &'a S3Storage, dir: &str, name: Option<&str>) -> Result<S3Writer<'a>> {
        let key = match name {
            Some(n) => Some(storage.key(&join(dir, n))?),
            None => None,
        };
        storage.key(dir)?;
        Ok(S3Writer {
            storage,
            dir: dir.to_string(),
            key,
            buf: Vec::new(),
            upload: None,
            finished: false,
        })
    }

    fn client(&self) -> &Client {
        &self.storage.client
    }

    /// Sends the buffer as the next part, starting the upload with the first.
    fn send_part(&mut self) -> Result<()> {
        let Some(key) = self.key.clone() else {
            return Err(Error::new(
                Kind::Assert,
                format!(
                    "a file written to '{}' exceeds one S3 part ({} bytes) before its name is \
                     known; it must be opened with its name",
                    self.storage.describe(&self.dir),
                    self.storage.chunk_size
                ),
            ));
        };
        if self.upload.is_none() {
            let sign = |bucket: &rusty_s3::Bucket, c: &rusty_s3::Credentials| {
                CreateMultipartUpload::new(bucket, Some(c), &key).sign(SIGNATURE_TTL)
            };
            let response = self.client().send(&Request {
                method: Method::POST,
                key: &key,
                sign: &sign,
                headers: self.client().encryption_headers(),
                body: &[],
                accept: &[],
            })?;
            let doc = self.storage.small_body(response, &key)?;
            let id = xml::upload_id(&doc).ok_or_else(|| {
                Error::new(
                    Kind::Protocol,
                    format!(
                        "S3 did not start a multipart upload of '{}'",
                        self.client().describe(&key)
                    ),
                )
            })?;
            self.upload = Some(Multipart {
                id,
                etags: Vec::new(),
            });
        }
        let upload = self.upload.as_ref().expect("started above");
        let number = upload.etags.len() + 1;
        if number > MAX_PARTS {
            return Err(Error::new(
                Kind::FileWrite,
                format!(
                    "'{}' needs more than {MAX_PARTS} parts of {} bytes",
                    self.client().describe(&key),
                    self.storage.chunk_size
                ),
            )
            .with_hint("raise repo1-storage-upload-chunk-size"));
        }
        let id = upload.id.clone();
        let sign = |bucket: &rusty_s3::Bucket, c: &rusty_s3::Credentials| {
            UploadPart::new(bucket, Some(c), &key, number as u16, &id).sign(SIGNATURE_TTL)
        };
        let response = self.client().send_drained(&Request {
            method: Method::PUT,
            key: &key,
            sign: &sign,
            headers: Vec::new(),
            body: &self.buf,
            accept: &[],
        })?;
        let etag = header(&response.headers, "etag").ok_or_else(|| {
            Error::new(
                Kind::Protocol,
                format!(
                    "S3 gave no ETag for part {number} of '{}'",
                    self.client().describe(&key)
                ),
            )
        })?;
        self.upload
            .as_mut()
            .expect("started above")
            .etags
            .push(etag);
        self.buf.clear();
        Ok(())
    }

    fn finish(&mut self, name: &str) -> Result<()> {
        let key = self.storage.key(&join(&self.dir, name))?;
        match &self.key {
            Some(k) if *k != key => {
                return Err(Error::new(
                    Kind::Assert,
                    format!("S3 writer opened for '{k}' committed as '{key}'"),
                ))
            }
            Some(_) => {}
            None => self.key = Some(key.clone()),
        }
        if self.upload.is_none() {
            let sign = |bucket: &rusty_s3::Bucket, c: &rusty_s3::Credentials| {
                PutObject::new(bucket, Some(c), &key).sign(SIGNATURE_TTL)
            };
            self.client().send_drained(&Request {
                method: Method::PUT,
                key: &key,
                sign: &sign,
                headers: self.client().encryption_headers(),
                body: &self.buf,
                accept: &[],
            })?;
            self.finished = true;
            return Ok(());
        }
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        let upload = self.upload.as_ref().expect("checked above");
        let body = CompleteMultipartUpload::new(
            self.client().bucket(),
            None,
            &key,
            &upload.id,
            upload.etags.iter().map(String::as_str),
        )
        .body();
        let sign = |bucket: &rusty_s3::Bucket, c: &rusty_s3::Credentials| {
            CompleteMultipartUpload::new(
                bucket,
                Some(c),
                &key,
                &upload.id,
                upload.etags.iter().map(String::as_str),
            )
            .sign(SIGNATURE_TTL)
        };
        let response = self.client().send(&Request {
            method: Method::POST,
            key: &key,
            sign: &sign,
            headers: Vec::new(),
            body: body.as_bytes(),
            accept: &[],
        })?;
        // S3 may answer 200 and still have failed: the error is in the body.
        let doc = self.storage.small_body(response, &key)?;
        if let Some((code, message)) = xml::error_detail(&doc) {
            return Err(Error::new(
                Kind::FileWrite,
                format!(
                    "S3 could not complete the upload of '{}': {code}: {message}",
                    self.client().describe(&key)
                ),
            ));
        }
        self.finished = true;
        Ok(())
    }
}

fn join(dir: &str, name: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

impl Write for S3Writer<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.storage.chunk_size - self.buf.len();
        let take = data.len().min(room);
        // Grown as needed (most files are small), but never past one part: doubling would
        // hold 8 MiB for a 5 MiB part in every worker.
        let needed = self.buf.len() + take;
        if needed > self.buf.capacity() {
            let target = (self.buf.capacity() * 2)
                .max(needed)
                .min(self.storage.chunk_size);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() == self.storage.chunk_size {
            self.send_part().map_err(io::Error::other)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AtomicWrite for S3Writer<'_> {
    fn commit(mut self: Box<Self>, name: &str) -> Result<()> {
        self.finish(name)
    }
}

impl Drop for S3Writer<'_> {
    /// An upload never completed is aborted, so its parts are not kept (and billed); if the
    /// abort fails, the upload stays invisible until the bucket's lifecycle expires it.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (Some(upload), Some(key)) = (self.upload.take(), self.key.clone()) else {
            return;
        };
        let sign = |bucket: &rusty_s3::Bucket, c: &rusty_s3::Credentials| {
            AbortMultipartUpload::new(bucket, Some(c), &key, &upload.id).sign(SIGNATURE_TTL)
        };
        if let Err(e) = self.client().send_drained(&Request {
            method: Method::DELETE,
            key: &key,
            sign: &sign,
            headers: Vec::new(),
            body: &[],
            accept: &[404],
        }) {
            crate::debug!("unable to abort the S3 upload of '{key}': {}", e.message);
        }
    }
}
