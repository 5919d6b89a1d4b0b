//! Where the S3 credentials come from (repo1-s3-key-type): the options (`shared`), the
//! instance metadata service of the machine (`auto`), or a web identity token exchanged with
//! STS (`web-id`, Kubernetes service accounts). Temporary credentials are fetched when first
//! needed and again a few minutes before they expire.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusty_s3::Credentials;

use super::{S3Credentials, Secret};
use crate::error::{Error, Kind, Result};

/// pgBackRest's address of the instance metadata service (IMDSv2).
const METADATA: &str = "http://169.254.169.254";
/// Fetch new temporary credentials this long before the old ones expire.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

pub struct CredentialSource {
    /// What the options say; shared keys are also the cache's one entry from the start.
    kind: S3Credentials,
    cached: Mutex<Option<(Arc<Credentials>, Option<SystemTime>)>>,
    io_timeout: Duration,
}

impl CredentialSource {
    pub fn new(creds: &S3Credentials, io_timeout: Duration) -> Result<CredentialSource> {
        let cached = match creds {
            S3Credentials::Shared { key, secret, token } => {
                let c = match token {
                    Some(t) => Credentials::new_with_token(key, secret.expose(), t.expose()),
                    None => Credentials::new(key, secret.expose()),
                };
                Some((Arc::new(c), None))
            }
            S3Credentials::Auto { .. } | S3Credentials::WebId { .. } => None,
        };
        Ok(CredentialSource {
            kind: creds.clone(),
            cached: Mutex::new(cached),
            io_timeout,
        })
    }

    /// Credentials good for the next request.
    pub fn current(&self) -> Result<Arc<Credentials>> {
        let mut cached = self
            .cached
            .lock()
            .map_err(|_| Error::internal("S3 credential cache poisoned"))?;
        if let Some((c, expires)) = cached.as_ref() {
            let fresh = match expires {
                None => true,
                Some(t) => SystemTime::now() + REFRESH_MARGIN < *t,
            };
            if fresh {
                return Ok(c.clone());
            }
        }
        let (c, expires) = match &self.kind {
            S3Credentials::Shared { .. } => {
                return Err(Error::internal("static S3 credentials missing"))
            }
            S3Credentials::Auto { role } => self.fetch_from_metadata(role.as_deref())?,
            S3Credentials::WebId {
                role,
                token,
                region,
            } => self.fetch_from_web_identity(role, token, region)?,
        };
        let c = Arc::new(c);
        *cached = Some((c.clone(), expires));
        Ok(c)
    }

    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(self.io_timeout))
            .build()
            .into()
    }

    /// IMDSv2: a session token, the role (repo1-s3-role or the one the instance has), then
    /// the role's temporary credentials.
    fn fetch_from_metadata(&self, role: Option<&str>) -> Result<(Credentials, Option<SystemTime>)> {
        let agent = self.agent();
        let fail = |what: &str, e: String| {
            Error::new(
                Kind::HostConnect,
                format!(
                    "unable to get S3 credentials from the instance metadata service ({what}): {e}"
                ),
            )
            .with_hint(
                "repo1-s3-key-type=auto needs an instance role (EC2); elsewhere set \
                 repo1-s3-key-type=shared with repo1-s3-key and repo1-s3-key-secret",
            )
        };
        let token = agent
            .put(format!("{METADATA}/latest/api/token"))
            .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
            .send_empty()
            .map_err(|e| fail("token", e.to_string()))
            .and_then(|r| body_text(r, 200).map_err(|e| fail("token", e)))?;
        let get = |path: &str| {
            agent
                .get(format!("{METADATA}{path}"))
                .header("x-aws-ec2-metadata-token", &token)
                .call()
                .map_err(|e| fail(path, e.to_string()))
                .and_then(|r| body_text(r, 200).map_err(|e| fail(path, e)))
        };
        let role = match role {
            Some(r) => r.to_string(),
            None => get("/latest/meta-data/iam/security-credentials/")?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
        };
        let doc = get(&format!(
            "/latest/meta-data/iam/security-credentials/{role}"
        ))?;
        let json: serde_json::Value =
            serde_json::from_str(&doc).map_err(|e| fail("credentials", e.to_string()))?;
        let field = |name: &str| {
            json.get(name)
                .and_then(|v| v.as_str())
                .map(String::from)
                .ok_or_else(|| fail("credentials", format!("no {name}")))
        };
        let creds = Credentials::new_with_token(
            field("AccessKeyId")?,
            field("SecretAccessKey")?,
            field("Token")?,
        );
        Ok((creds, parse_expiration(&field("Expiration")?)))
    }

    /// STS AssumeRoleWithWebIdentity with the token of AWS_WEB_IDENTITY_TOKEN_FILE.
    fn fetch_from_web_identity(
        &self,
        role: &str,
        token: &Secret,
        region: &str,
    ) -> Result<(Credentials, Option<SystemTime>)> {
        let fail = |e: String| {
            Error::new(
                Kind::HostConnect,
                format!("unable to get S3 credentials from STS for role '{role}': {e}"),
            )
        };
        let url = format!("https://sts.{region}.amazonaws.com/");
        let response = self
            .agent()
            .get(&url)
            .query("Action", "AssumeRoleWithWebIdentity")
            .query("RoleArn", role)
            .query("RoleSessionName", "pgbackrest")
            .query("Version", "2011-06-15")
            .query("WebIdentityToken", token.expose())
            .call()
            .map_err(|e| fail(e.to_string()))?;
        let doc = body_text(response, 200).map_err(fail)?;
        let creds = super::xml::sts_credentials(&doc)
            .ok_or_else(|| fail("no credentials in STS response".into()))?;
        Ok((
            Credentials::new_with_token(creds.0, creds.1, creds.2),
            parse_expiration(&creds.3),
        ))
    }
}

fn body_text(
    response: http::Response<ureq::Body>,
    want: u16,
) -> std::result::Result<String, String> {
    let status = response.status().as_u16();
    let text = response
        .into_body()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    if status != want {
        return Err(format!("HTTP {status}"));
    }
    Ok(text)
}

fn parse_expiration(text: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64))
}

use ureq::http;
