//! The S3 XML documents pg_backrest reads: listings, error documents, multipart upload ids,
//! batch-delete results and STS credentials. Parsed leniently: a field a server leaves out
//! (s3s-fs omits ETag in listings, which stops rusty-s3's own parser) is only missing.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListPage {
    #[serde(default)]
    pub contents: Vec<ListedObject>,
    #[serde(default)]
    pub common_prefixes: Vec<ListedPrefix>,
    #[serde(default)]
    pub is_truncated: Option<bool>,
    #[serde(default)]
    pub next_continuation_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedObject {
    pub key: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub last_modified: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedPrefix {
    pub prefix: String,
}

pub fn list_page(doc: &str) -> Result<ListPage, String> {
    quick_xml::de::from_str(doc).map_err(|e| format!("unreadable listing: {e}"))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorDoc {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Code and message of an S3 `<Error>` document; `None` when `doc` is not one.
pub fn error_detail(doc: &str) -> Option<(String, String)> {
    if !doc.contains("<Error>") && !doc.contains("<Error ") {
        return None;
    }
    let start = doc.find("<Error")?;
    let parsed: ErrorDoc = quick_xml::de::from_str(&doc[start..]).ok()?;
    let code = parsed.code?;
    Some((code, parsed.message.unwrap_or_default()))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Initiated {
    upload_id: String,
}

pub fn upload_id(doc: &str) -> Option<String> {
    quick_xml::de::from_str::<Initiated>(doc)
        .ok()
        .map(|i| i.upload_id)
        .filter(|id| !id.is_empty())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteResult {
    #[serde(default)]
    error: Vec<DeleteError>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteError {
    #[serde(default)]
    key: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The keys a batch delete could not delete, each with its error.
pub fn delete_errors(doc: &str) -> Vec<String> {
    match quick_xml::de::from_str::<DeleteResult>(doc) {
        Ok(r) => r
            .error
            .into_iter()
            .map(|e| format!("{}: {} {}", e.key, e.code, e.message))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsResponse {
    assume_role_with_web_identity_result: StsResult,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsResult {
    credentials: StsCredentials,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

/// Key, secret, token and expiration of an AssumeRoleWithWebIdentity answer.
pub fn sts_credentials(doc: &str) -> Option<(String, String, String, String)> {
    let r: StsResponse = quick_xml::de::from_str(doc).ok()?;
    let c = r.assume_role_with_web_identity_result.credentials;
    Some((
        c.access_key_id,
        c.secret_access_key,
        c.session_token,
        c.expiration,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_without_etags_parses() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>r/</Prefix>
<KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>
<Contents><Key>r/a.info</Key><LastModified>2026-12-03T07:00:00.000Z</LastModified><Size>12</Size></Contents>
<Contents><Key>r/b</Key><Size>0</Size></Contents>
<CommonPrefixes><Prefix>r/archive/</Prefix></CommonPrefixes>
<NextContinuationToken>tok</NextContinuationToken></ListBucketResult>"#;
        let page = list_page(doc).unwrap();
        assert_eq!(page.contents.len(), 2);
        assert_eq!(page.contents[0].key, "r/a.info");
        assert_eq!(page.contents[0].size, 12);
        assert_eq!(page.common_prefixes[0].prefix, "r/archive/");
        assert_eq!(page.is_truncated, Some(true));
        assert_eq!(page.next_continuation_token.as_deref(), Some("tok"));
        let empty = list_page("<ListBucketResult><Name>b</Name></ListBucketResult>").unwrap();
        assert!(empty.contents.is_empty() && empty.common_prefixes.is_empty());
    }

    #[test]
    fn error_documents_give_code_and_message() {
        let doc = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>\
                   <Message>Access Denied</Message><RequestId>1</RequestId></Error>";
        assert_eq!(
            error_detail(doc),
            Some(("AccessDenied".into(), "Access Denied".into()))
        );
        assert_eq!(error_detail("<CompleteMultipartUploadResult/>"), None);
        assert_eq!(error_detail(""), None);
    }

    #[test]
    fn upload_ids_and_delete_errors() {
        let doc = "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>\
                   <UploadId>abc-1</UploadId></InitiateMultipartUploadResult>";
        assert_eq!(upload_id(doc).as_deref(), Some("abc-1"));
        assert_eq!(upload_id("<X/>"), None);
        let doc = "<DeleteResult><Deleted><Key>a</Key></Deleted><Error><Key>b</Key>\
                   <Code>AccessDenied</Code><Message>no</Message></Error></DeleteResult>";
        assert_eq!(delete_errors(doc), vec!["b: AccessDenied no".to_string()]);
        assert!(
            delete_errors("<DeleteResult><Deleted><Key>a</Key></Deleted></DeleteResult>")
                .is_empty()
        );
    }
}
