//! One S3 request, sent until it succeeds or its time is up: signing (SigV4, by rusty-s3),
//! TLS (rustls, with the CA the options name), retries with backoff, and the one typed error
//! a request that failed for good becomes.
//!
//! repo1-storage-host means what it means to pgBackRest: the connection, SNI and certificate
//! check are the storage host's, while the URL's host (the endpoint, or `bucket.endpoint` in
//! host style) is sent as the signed Host header. A certificate made for the storage host
//! thus works with either tool.
//!
//! io-timeout bounds the whole request, its retries included: pgBackRest nests connect, TLS
//! and HTTP retries, each with its own io-timeout, so one call to a dead server took 16.7 s at
//! io-timeout=2. Here each attempt gets what is left of one io-timeout, and once a response
//! streams, io-timeout is the longest wait for the next bytes.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusty_s3::{Bucket, Credentials, UrlStyle};
use ureq::http::{self, Response};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::Body;

use super::credentials::CredentialSource;
use super::xml;
use super::{S3Options, UriStyle};
use crate::error::{Error, Kind, Result};

/// How long a presigned URL is valid: one attempt, with room for clock skew.
pub const SIGNATURE_TTL: Duration = Duration::from_secs(3600);
/// The first pause between attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// An attempt always gets at least this long, even when the budget is nearly spent.
const MIN_ATTEMPT: Duration = Duration::from_millis(200);

/// A connection pool to one bucket, shared by every reader and writer of the storage.
pub struct Client {
    agent: ureq::Agent,
    bucket: Bucket,
    credentials: CredentialSource,
    io_timeout: Duration,
    kms_key_id: Option<String>,
    /// repo1-storage-host, as a URL host (an IPv6 address in brackets): every request
    /// connects there instead of to its URL's host.
    storage_host: Option<String>,
}

/// One request: what to send, and what to say when it fails.
pub struct Request<'a> {
    pub method: http::Method,
    /// The object key (or prefix) the request is about, for messages.
    pub key: &'a str,
    /// Builds the presigned URL for an attempt: the signature carries the time, so each
    /// attempt signs anew.
    pub sign: &'a dyn Fn(&Bucket, &Credentials) -> url::Url,
    pub headers: Vec<(&'static str, String)>,
    pub body: &'a [u8],
    /// Statuses that are an answer rather than a failure (404 for a lookup).
    pub accept: &'a [u16],
}

impl Client {
    pub fn new(opts: &S3Options) -> Result<Client> {
        let (host, port) = split_endpoint(&opts.endpoint, opts.port);
        let base = format!("https://{host}:{port}");
        let endpoint: url::Url = base.parse().map_err(|e| {
            Error::new(
                Kind::OptionInvalidValue,
                format!("invalid S3 endpoint '{}': {e}", opts.endpoint),
            )
        })?;
        let style = match opts.uri_style {
            UriStyle::Host => UrlStyle::VirtualHost,
            UriStyle::Path => UrlStyle::Path,
        };
        let bucket = Bucket::new(endpoint, style, opts.bucket.clone(), opts.region.clone())
            .map_err(|e| {
                Error::new(
                    Kind::OptionInvalidValue,
                    format!(
                        "invalid S3 bucket '{}' or endpoint '{}': {e}",
                        opts.bucket, opts.endpoint
                    ),
                )
            })?;
        let tls = tls_config(opts)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(opts.io_timeout))
            .timeout_recv_response(Some(opts.io_timeout))
            .timeout_per_read(Some(opts.io_timeout))
            .timeout_per_write(Some(opts.io_timeout))
            .max_idle_connections(64)
            .max_idle_connections_per_host(64)
            .user_agent(concat!("pg_backrest/", env!("CARGO_PKG_VERSION")))
            .build();
        let storage_host = match &opts.storage_host {
            Some(h) => Some(storage_host_of(h)?),
            None => None,
        };
        Ok(Client {
            agent: ureq::Agent::new_with_config(config),
            bucket,
            credentials: CredentialSource::new(&opts.credentials, opts.io_timeout)?,
            io_timeout: opts.io_timeout,
            kms_key_id: opts.kms_key_id.clone(),
            storage_host,
        })
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// The server-side encryption headers a new object gets (repo1-s3-kms-key-id).
    pub fn encryption_headers(&self) -> Vec<(&'static str, String)> {
        match &self.kms_key_id {
            Some(id) => vec![
                ("x-amz-server-side-encryption", "aws:kms".to_string()),
                ("x-amz-server-side-encryption-aws-kms-key-id", id.clone()),
            ],
            None => Vec::new(),
        }
    }

    /// Sends `req` until it is answered with a 2xx or an accepted status, retrying what a
    /// retry can cure (no connection, a timeout, 5xx, throttling) for up to io-timeout.
    pub fn send(&self, req: &Request<'_>) -> Result<Response<Body>> {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let left = self
                .io_timeout
                .saturating_sub(started.elapsed())
                .max(MIN_ATTEMPT);
            let failure = match self.attempt(req, left) {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if (200..300).contains(&status) || req.accept.contains(&status) {
                        return Ok(response);
                    }
                    let failure = Failure::from_response(status, response);
                    if !failure.retryable {
                        return Err(self.error(req, &failure, attempts, started));
                    }
                    failure
                }
                Err(e) => {
                    let failure = Failure::from_transport(e);
                    if !failure.retryable {
                        return Err(self.error(req, &failure, attempts, started));
                    }
                    failure
                }
            };
            let elapsed = started.elapsed();
            if elapsed + backoff.min(MAX_BACKOFF) >= self.io_timeout {
                return Err(self.error(req, &failure, attempts, started));
            }
            crate::debug!(
                "S3 {} '{}' failed ({}), retrying",
                req.method,
                self.describe(req.key),
                failure.text
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// As [`Client::send`], for an answer whose body says nothing: the body is read to its
    /// end, which is what returns the connection to the pool (a body left unread closes it,
    /// and the next request pays a new TCP and TLS handshake).
    pub fn send_drained(&self, req: &Request<'_>) -> Result<http::response::Parts> {
        let (parts, body) = self.send(req)?.into_parts();
        let _ = std::io::copy(
            &mut body.into_reader().take(64 * 1024),
            &mut std::io::sink(),
        );
        Ok(parts)
    }

    fn attempt(
        &self,
        req: &Request<'_>,
        left: Duration,
    ) -> std::result::Result<Response<Body>, ureq::Error> {
        let credentials = self
            .credentials
            .current()
            .map_err(|e| ureq::Error::Io(std::io::Error::other(e)))?;
        let mut url = (req.sign)(&self.bucket, &credentials);
        let mut builder = http::Request::builder();
        if let Some(storage_host) = &self.storage_host {
            let host = connect_elsewhere(&mut url, storage_host)?;
            builder = builder.header(http::header::HOST, host);
        }
        let mut builder = builder.method(req.method.clone()).uri(url.as_str());
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        let request = builder.body(req.body).map_err(ureq::Error::Http)?;
        let request = self
            .agent
            .configure_request(request)
            .timeout_connect(Some(left))
            .timeout_recv_response(Some(left))
            .build();
        self.agent.run(request)
    }

    /// `s3://bucket/key`, how messages name an object.
    pub fn describe(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket.name())
    }

    fn error(
        &self,
        req: &Request<'_>,
        failure: &Failure,
        attempts: u32,
        started: Instant,
    ) -> Error {
        let tries = if attempts > 1 {
            format!(
                " (after {attempts} attempts in {:.1}s)",
                started.elapsed().as_secs_f64()
            )
        } else {
            String::new()
        };
        let e = Error::new(
            failure.kind,
            format!(
                "S3 {} of '{}' failed: {}{tries}",
                req.method,
                self.describe(req.key),
                failure.text
            ),
        );
        if let Some(hint) = &failure.hint {
            return e.with_hint(hint.clone());
        }
        match failure.kind {
            Kind::HostConnect => e.with_hint(
                "check that the S3 server is running and reachable (repo1-s3-endpoint, \
                 repo1-storage-host, repo1-storage-port); io-timeout bounds the retries",
            ),
            Kind::Crypto => e.with_hint(
                "the server's TLS certificate was not accepted: name its CA with \
                 repo1-storage-ca-file or repo1-storage-ca-path",
            ),
            Kind::Access => e.with_hint(
                "check repo1-s3-key, repo1-s3-key-secret (and repo1-s3-token), and that they \
                 may read and write the bucket",
            ),
            _ => e,
        }
    }
}

/// Why an attempt failed, and whether another may succeed.
struct Failure {
    kind: Kind,
    text: String,
    retryable: bool,
    /// An error of ours that stopped the attempt before it was sent (credentials): its
    /// hint is the one to give.
    hint: Option<String>,
}

impl Failure {
    fn from_response(status: u16, response: Response<Body>) -> Failure {
        let mut text = String::new();
        // The error document is small; a body that is not one is cut short.
        let _ = response
            .into_body()
            .into_reader()
            .take(64 * 1024)
            .read_to_string(&mut text);
        let detail = xml::error_detail(&text);
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let text = match detail {
            Some((code, message)) => format!("HTTP {status} {reason} ({code}: {message})"),
            None => format!("HTTP {status} {reason}"),
        };
        let retryable = status >= 500 || status == 429 || status == 408;
        let kind = match status {
            401 | 403 => Kind::Access,
            _ => Kind::Protocol,
        };
        Failure {
            kind,
            text,
            retryable,
            hint: None,
        }
    }

    fn from_transport(e: ureq::Error) -> Failure {
        let text = transport_text(&e);
        let (kind, retryable) = match &e {
            ureq::Error::Rustls(rustls::Error::InvalidCertificate(_)) => (Kind::Crypto, false),
            ureq::Error::Rustls(_) | ureq::Error::Tls(_) | ureq::Error::Pem(_) => {
                (Kind::Crypto, false)
            }
            ureq::Error::BadUri(_) | ureq::Error::Http(_) => (Kind::Assert, false),
            ureq::Error::HostNotFound => (Kind::HostConnect, true),
            ureq::Error::Io(io) => match io.get_ref() {
                // Credentials that could not be had: say so as they said it.
                Some(inner) if inner.is::<Error>() => (
                    inner
                        .downcast_ref::<Error>()
                        .map_or(Kind::Assert, |e| e.kind),
                    false,
                ),
                // rustls reports a refused certificate through the TLS stream's io::Error.
                Some(inner) if inner.is::<rustls::Error>() => (Kind::Crypto, false),
                _ => (Kind::HostConnect, true),
            },
            _ => (Kind::HostConnect, true),
        };
        let hint = match &e {
            ureq::Error::Io(io) => io
                .get_ref()
                .and_then(|i| i.downcast_ref::<Error>())
                .and_then(|inner| inner.hint.clone()),
            _ => None,
        };
        Failure {
            kind,
            text,
            retryable,
            hint,
        }
    }
}

fn transport_text(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => match io.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
            Some(inner) => inner.message.clone(),
            None => io.to_string(),
        },
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        other => other.to_string(),
    }
}

/// Host and port of an endpoint written `host`, `host:port` or `https://host[:port]`; an
/// explicit repo1-storage-port wins, then the endpoint's own, then 443.
pub fn split_endpoint(endpoint: &str, port: Option<u16>) -> (String, u16) {
    let bare = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    let (host, own_port) = match bare.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (bare, None), // bare IPv6
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) => (h, Some(p)),
            Err(_) => (bare, None),
        },
        None => (bare, None),
    };
    (host.to_string(), port.or(own_port).unwrap_or(443))
}

/// The TLS settings of repo1-storage-verify-tls, -ca-file and -ca-path. Without a CA option
/// the system's bundle is trusted, as pgBackRest trusts OpenSSL's default store.
fn tls_config(opts: &S3Options) -> Result<TlsConfig> {
    let builder = TlsConfig::builder();
    if !opts.verify_tls {
        return Ok(builder.disable_verification(true).build());
    }
    let mut certs: Vec<Certificate<'static>> = Vec::new();
    if let Some(file) = &opts.ca_file {
        certs.extend(read_certs(file)?);
    }
    if let Some(dir) = &opts.ca_path {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Error::new(
                Kind::PathOpen,
                format!("unable to list CA path '{}': {e}", dir.display()),
            )
        })?;
        for entry in entries.flatten() {
            // c_rehash leaves links and other files beside the certificates: take what parses.
            if let Ok(found) = read_certs(&entry.path()) {
                certs.extend(found);
            }
        }
    }
    if opts.ca_file.is_none() && opts.ca_path.is_none() {
        for bundle in SYSTEM_BUNDLES {
            if let Ok(found) = read_certs(std::path::Path::new(bundle)) {
                if !found.is_empty() {
                    certs.extend(found);
                    break;
                }
            }
        }
    }
    let roots = if certs.is_empty() && opts.ca_file.is_none() && opts.ca_path.is_none() {
        RootCerts::WebPki
    } else {
        RootCerts::Specific(Arc::new(certs))
    };
    Ok(builder.root_certs(roots).build())
}

const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

fn read_certs(path: &std::path::Path) -> Result<Vec<Certificate<'static>>> {
    let pem = std::fs::read(path).map_err(|e| {
        Error::new(
            Kind::FileOpen,
            format!("unable to read CA file '{}': {e}", path.display()),
        )
    })?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(Error::new(
            Kind::Crypto,
            format!("no certificate in CA file '{}'", path.display()),
        ));
    }
    Ok(certs)
}

/// repo1-storage-host as a URL host: `host`, `host:port` (the port is repo1-storage-port's
/// business and dropped here) or an IPv6 address, bracketed.
fn storage_host_of(value: &str) -> Result<String> {
    let (host, _) = split_endpoint(value, None);
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let mut probe: url::Url = "https://endpoint/".parse().expect("constant URL");
    probe.set_host(Some(&host)).map_err(|e| {
        Error::new(
            Kind::OptionInvalidValue,
            format!("invalid repo1-storage-host '{value}': {e}"),
        )
    })?;
    Ok(host)
}

/// Points `url` at `storage_host` (same port) and returns the Host header the request was
/// signed for: the URL's host, with its port unless the scheme's default (as rusty-s3 signs).
fn connect_elsewhere(
    url: &mut url::Url,
    storage_host: &str,
) -> std::result::Result<String, ureq::Error> {
    let host = url
        .host_str()
        .ok_or_else(|| ureq::Error::BadUri(url.to_string()))?;
    let header = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    url.set_host(Some(storage_host))
        .map_err(|_| ureq::Error::BadUri(storage_host.to_owned()))?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_split_into_host_and_port() {
        assert_eq!(
            split_endpoint("s3.amazonaws.com", None),
            ("s3.amazonaws.com".into(), 443)
        );
        assert_eq!(split_endpoint("minio:9000", None), ("minio".into(), 9000));
        assert_eq!(
            split_endpoint("https://minio:9000/", None),
            ("minio".into(), 9000)
        );
        assert_eq!(
            split_endpoint("minio:9000", Some(9443)),
            ("minio".into(), 9443)
        );
        assert_eq!(split_endpoint("[::1]:9000", None), ("[::1]".into(), 9000));
    }

    #[test]
    fn a_storage_host_takes_the_connection_and_the_url_host_goes_to_the_host_header() {
        assert_eq!(storage_host_of("127.0.0.1").unwrap(), "127.0.0.1");
        assert_eq!(storage_host_of("minio:9000").unwrap(), "minio");
        assert_eq!(storage_host_of("::1").unwrap(), "[::1]");
        assert_eq!(storage_host_of("[::1]").unwrap(), "[::1]");
        assert!(storage_host_of("bad host").is_err());

        let mut url: url::Url = "https://b.s3.example:9443/k?X-Amz-Signature=1"
            .parse()
            .unwrap();
        assert_eq!(
            connect_elsewhere(&mut url, "127.0.0.1").unwrap(),
            "b.s3.example:9443"
        );
        assert_eq!(url.as_str(), "https://127.0.0.1:9443/k?X-Amz-Signature=1");
        let mut url: url::Url = "https://b.s3.example/k".parse().unwrap();
        assert_eq!(
            connect_elsewhere(&mut url, "[::1]").unwrap(),
            "b.s3.example"
        );
        assert_eq!(url.as_str(), "https://[::1]/k");
    }
}
