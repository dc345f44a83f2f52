//! JSON bodies of the hook API, with the field names used on the wire, and the upload digests.
//!
//! Field names follow the webda protocol: `statusDetails`, `errorMessage` (camelCase) in status
//! reports, `Location` and `Map` (capitalised) in download answers. Absent optional fields are not
//! serialised, so "not reported" and "reported as null" stay distinct for the server.

use std::path::Path;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncReadExt;

/// Body of `POST {JOB_HOOK}/status`: any subset of the fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// New job status (`RUNNING`, `SUCCESS`, `ERROR`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Progress, a fraction from 0.0 to 1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// Free-form details shown with the status (wire name `statusDetails`).
    #[serde(
        rename = "statusDetails",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub status_details: Option<Value>,
    /// The job's result (wire name `results`), usually with `status: SUCCESS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Value>,
    /// Log lines to append.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<String>>,
    /// Error message (wire name `errorMessage`), usually with `status: ERROR`.
    #[serde(
        rename = "errorMessage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub error_message: Option<String>,
    /// With `status: ERROR`: `false` when the job must not be retried (the failure is final
    /// whatever `max_attempts` says); absent or `true`: retried with backoff while attempts are
    /// left, once the process has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<bool>,
}

impl StatusReport {
    /// Every field of the report as it goes on the wire: the hook refuses any other (422).
    pub const FIELDS: [&'static str; 7] = [
        "status",
        "progress",
        "statusDetails",
        "results",
        "logs",
        "errorMessage",
        "retry",
    ];
}

/// Description of a stored file (the `Map` of a download answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// md5 of the content, lowercase hex; also the file name a download is saved under.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// MIME type (`application/octet-stream` when unknown).
    #[serde(default)]
    pub mimetype: String,
    /// Original file name.
    #[serde(default)]
    pub name: String,
}

/// Answer of `GET {JOB_HOOK}/download/{store}/{uuid}/{property}/{index}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadResponse {
    /// Short-lived URL of the bytes (wire name `Location`): absolute, or a path on the hook's origin.
    #[serde(rename = "Location")]
    pub location: String,
    /// What the bytes are (wire name `Map`).
    #[serde(rename = "Map")]
    pub map: FileMeta,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Body of `PUT {JOB_HOOK}/upload/{store}/{uuid}/{property}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRequest {
    /// md5 of the content, lowercase hex.
    pub hash: String,
    /// md5 of `"WEBDA"` followed by the content, lowercase hex ([`upload_challenge`]): proves the
    /// uploader has the content, not only its hash.
    pub challenge: String,
    /// Metadata stored with the file (`{}` when absent).
    #[serde(default = "empty_object")]
    pub metadata: Value,
}

impl UploadRequest {
    /// Every field of the request as it goes on the wire: the hook refuses any other in a
    /// v2-signed request (422).
    pub const FIELDS: [&'static str; 3] = ["hash", "challenge", "metadata"];
}

/// Answer of an upload request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadResponse {
    /// True when the content is already stored: nothing more to send.
    pub done: bool,
    /// When not done: the HTTP method to send the bytes with (`PUT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// When not done: where to send the bytes (absolute, or a path on the hook's origin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Answer of `GET {JOB_HOOK}/job` (a runyard addition): the job's own description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSelf {
    /// The job id (= `JOB_ID`).
    pub id: String,
    /// The job type, e.g. `report.daily`.
    pub r#type: String,
    /// The job's arguments.
    #[serde(default)]
    pub args: Value,
    /// The current attempt, from 1.
    pub attempt: u32,
}

/// The detail of an error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `bad_signature`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

/// The error body of every API answer with a 4xx/5xx status: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Prefix hashed before the content in an upload challenge.
pub const CHALLENGE_PREFIX: &[u8] = b"WEBDA";

/// The upload challenge of a content given as chunks: lowercase hex of `md5("WEBDA" + content)`.
pub fn upload_challenge<I>(chunks: I) -> String
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let mut md5 = Md5::new();
    md5.update(CHALLENGE_PREFIX);
    for chunk in chunks {
        md5.update(chunk.as_ref());
    }
    hex::encode(md5.finalize())
}

/// The digests an upload needs, see [`UploadHasher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadDigest {
    /// md5 of the content, lowercase hex.
    pub hash: String,
    /// md5 of `"WEBDA"` + content, lowercase hex.
    pub challenge: String,
    /// Content length in bytes.
    pub size: u64,
}

/// Computes md5(content) and the upload challenge in one pass over the content.
#[derive(Debug, Clone)]
pub struct UploadHasher {
    hash: Md5,
    challenge: Md5,
    size: u64,
}

impl Default for UploadHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl UploadHasher {
    /// A hasher over empty content.
    pub fn new() -> Self {
        let mut challenge = Md5::new();
        challenge.update(CHALLENGE_PREFIX);
        UploadHasher {
            hash: Md5::new(),
            challenge,
            size: 0,
        }
    }

    /// Feeds the next chunk of content.
    pub fn update(&mut self, chunk: &[u8]) {
        self.hash.update(chunk);
        self.challenge.update(chunk);
        self.size += chunk.len() as u64;
    }

    /// The digests of everything fed so far.
    pub fn finish(self) -> UploadDigest {
        UploadDigest {
            hash: hex::encode(self.hash.finalize()),
            challenge: hex::encode(self.challenge.finalize()),
            size: self.size,
        }
    }
}

/// Reads the file at `path` once and returns its [`UploadDigest`].
pub async fn digest_file(path: &Path) -> std::io::Result<UploadDigest> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = UploadHasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn upload_request_fields_are_its_wire_names() {
        let req = UploadRequest {
            hash: "h".into(),
            challenge: "c".into(),
            metadata: json!({}),
        };
        assert_names(
            &serde_json::to_value(&req).expect("serialize"),
            &UploadRequest::FIELDS,
        );
    }

    /// The keys of `sent` are `fields`, in any order.
    fn assert_names(sent: &serde_json::Value, fields: &[&str]) {
        let mut keys: Vec<&str> = sent
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut fields = fields.to_vec();
        keys.sort_unstable();
        fields.sort_unstable();
        assert_eq!(keys, fields);
    }

    #[test]
    fn status_report_wire_names() {
        let report = StatusReport {
            status: Some("ERROR".into()),
            progress: Some(42.5),
            status_details: Some(json!({"step": 2})),
            results: Some(json!([1])),
            logs: Some(vec!["a".into()]),
            error_message: Some("boom".into()),
            retry: Some(false),
        };
        assert_eq!(
            serde_json::to_value(&report).expect("serialize"),
            json!({"status": "ERROR", "progress": 42.5, "statusDetails": {"step": 2},
                   "results": [1], "logs": ["a"], "errorMessage": "boom", "retry": false})
        );
        // `FIELDS` names every field, as sent.
        assert_names(
            &serde_json::to_value(&report).expect("serialize"),
            &StatusReport::FIELDS,
        );
        // Absent fields are not sent.
        assert_eq!(
            serde_json::to_string(&StatusReport::default()).expect("serialize"),
            "{}"
        );
        // What the webda Python client sends parses.
        let parsed: StatusReport =
            serde_json::from_str(r#"{"progress": 50, "statusDetails": null}"#).expect("parse");
        assert_eq!(parsed.progress, Some(50.0));
        assert_eq!(parsed.status, None);
    }

    #[test]
    fn download_response_wire_names() {
        let text = r#"{"Location": "/async/blob/x?t=1",
                       "Map": {"hash": "5d41402abc4b2a76b9719d911017c592", "size": 5,
                               "mimetype": "text/plain", "name": "hello.txt"}}"#;
        let parsed: DownloadResponse = serde_json::from_str(text).expect("parse");
        assert_eq!(parsed.location, "/async/blob/x?t=1");
        assert_eq!(parsed.map.size, 5);
        let back = serde_json::to_value(&parsed).expect("serialize");
        assert_eq!(back["Location"], "/async/blob/x?t=1");
        assert_eq!(back["Map"]["hash"], "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(back["Map"]["mimetype"], "text/plain");
    }

    #[test]
    fn upload_bodies() {
        let req: UploadRequest =
            serde_json::from_str(r#"{"hash": "h", "challenge": "c"}"#).expect("parse");
        assert_eq!(req.metadata, json!({}));
        // Exactly the bytes the Rust client signs and sends (docs/hooks.md's v2 PUT example).
        let sent = UploadRequest {
            hash: "5d41402abc4b2a76b9719d911017c592".into(),
            challenge: "2b03dabe69fdf9eaff35009811c22b22".into(),
            metadata: json!({}),
        };
        assert_eq!(
            serde_json::to_string(&sent).expect("serialize"),
            r#"{"hash":"5d41402abc4b2a76b9719d911017c592","challenge":"2b03dabe69fdf9eaff35009811c22b22","metadata":{}}"#
        );
        // And the status body of the v2 POST example.
        let running = StatusReport {
            status: Some("RUNNING".into()),
            ..StatusReport::default()
        };
        assert_eq!(
            serde_json::to_string(&running).expect("serialize"),
            r#"{"status":"RUNNING"}"#
        );
        let done = UploadResponse {
            done: true,
            method: None,
            url: None,
        };
        assert_eq!(
            serde_json::to_value(&done).expect("serialize"),
            json!({"done": true})
        );
        let todo: UploadResponse =
            serde_json::from_str(r#"{"done": false, "method": "PUT", "url": "/u"}"#)
                .expect("parse");
        assert_eq!(todo.method.as_deref(), Some("PUT"));
    }

    #[test]
    fn job_self_uses_type() {
        let job: JobSelf = serde_json::from_str(
            r#"{"id": "j", "type": "report.daily", "args": {"a": 1}, "attempt": 2}"#,
        )
        .expect("parse");
        assert_eq!(job.r#type, "report.daily");
        assert_eq!(
            serde_json::to_value(&job).expect("serialize")["type"],
            "report.daily"
        );
    }

    #[test]
    fn challenge_known_answers() {
        // python3 -c "import hashlib;print(hashlib.md5(b'WEBDAhello').hexdigest())"
        assert_eq!(
            upload_challenge([b"hello"]),
            "2b03dabe69fdf9eaff35009811c22b22"
        );
        assert_eq!(
            upload_challenge(["he", "llo"]),
            "2b03dabe69fdf9eaff35009811c22b22"
        );
        // python3 -c "import hashlib;print(hashlib.md5(b'WEBDA').hexdigest())"
        assert_eq!(
            upload_challenge(Vec::<Vec<u8>>::new()),
            "2790180983f75ff4cea54aaf56b4e40a"
        );
        let mut hasher = UploadHasher::new();
        hasher.update(b"hel");
        hasher.update(b"lo");
        assert_eq!(
            hasher.finish(),
            UploadDigest {
                // python3 -c "import hashlib;print(hashlib.md5(b'hello').hexdigest())"
                hash: "5d41402abc4b2a76b9719d911017c592".into(),
                challenge: "2b03dabe69fdf9eaff35009811c22b22".into(),
                size: 5,
            }
        );
        let empty = UploadHasher::new().finish();
        assert_eq!(empty.hash, "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(empty.challenge, "2790180983f75ff4cea54aaf56b4e40a");
    }

    #[tokio::test]
    async fn digest_of_a_file() {
        let path = std::env::temp_dir().join(format!(
            "runyard-hooks-digest-{}-{}",
            std::process::id(),
            crate::sign::now_ms()
        ));
        tokio::fs::write(&path, b"hello").await.expect("write");
        let digest = digest_file(&path).await;
        let _ = tokio::fs::remove_file(&path).await;
        let digest = digest.expect("digest");
        assert_eq!(digest.hash, "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(digest.challenge, "2b03dabe69fdf9eaff35009811c22b22");
        assert_eq!(digest.size, 5);
    }
}
