//! Files: downloading a stored file (checked against its md5) and uploading one (skipped when
//! the server already has the content).

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use reqwest::header::CONTENT_LENGTH;
use reqwest::Method;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::error::{http_error, parse_json, transport};
use super::{is_md5_hex, resolve_url, ClientError, JobClient, UploadOutcome, JOBS_STORE};
use crate::vocab::{valid_file_uuid, valid_property};
use crate::wire::{digest_file, DownloadResponse, UploadDigest, UploadRequest, UploadResponse};

/// `Err(InvalidArgument)` unless `store` and `property` are names the server takes (1-64
/// letters, digits, `_`, `-`) and `uuid` is a plain name (not empty, no `/`, `\\` or `.`):
/// nothing is sent for a file path the server refuses, and a `.` or `..` segment, which the URL
/// would resolve as a path, never sends the request to another route.
fn check_file_path(store: &str, uuid: &str, property: &str) -> Result<(), ClientError> {
    for (what, name) in [("store", store), ("property", property)] {
        if !valid_property(name) {
            return Err(ClientError::InvalidArgument(format!(
                "a file {what} must be 1-64 letters, digits, `_` or `-` (got `{name}`); nothing sent"
            )));
        }
    }
    if !valid_file_uuid(uuid) {
        return Err(ClientError::InvalidArgument(format!(
            "a file uuid must be a plain name without `/`, `\\` or `.` (got `{uuid}`); nothing sent"
        )));
    }
    Ok(())
}

impl JobClient {
    /// Downloads file `index` of `property` of `uuid` in `store` into `dir`, named by its md5
    /// (`Map.hash`), and returns its path. An existing file of that name is kept as is (already
    /// downloaded). The bytes are written to a temporary file first and only renamed into place
    /// once their md5 matches.
    pub async fn download(
        &self,
        store: &str,
        uuid: &str,
        property: &str,
        index: u32,
        dir: &Path,
    ) -> Result<PathBuf, ClientError> {
        check_file_path(store, uuid, property)?;
        let index = index.to_string();
        let url = self.endpoint(&["download", store, uuid, property, &index]);
        let context = format!("GET {}", url.path());
        let bytes = self.hook_call(Method::GET, url, None).await?;
        let answer: DownloadResponse = parse_json(&context, &bytes)?;
        let expected = answer.map.hash.to_ascii_lowercase();
        if !is_md5_hex(&expected) {
            return Err(ClientError::BadResponse {
                context,
                reason: "Map.hash is not an md5 hex digest".to_owned(),
            });
        }
        let target = dir.join(&expected);
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            return Ok(target);
        }

        let location = resolve_url(&self.hook, &answer.location, "download Location")?;
        let context = format!("GET {}", location.path());
        let mut response = send_transfer(self.transfer_http.get(location), &context).await?;

        let temp = dir.join(format!(
            ".{expected}.{}.{}.part",
            std::process::id(),
            crate::sign::now_ms()
        ));
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| ClientError::Io { path, source }
        };
        let mut file = tokio::fs::File::create(&temp)
            .await
            .map_err(io_err(&temp))?;
        let mut md5 = Md5::new();
        let written: Result<(), ClientError> = async {
            while let Some(chunk) = response.chunk().await.map_err(|e| transport(&context, e))? {
                md5.update(&chunk);
                file.write_all(&chunk).await.map_err(io_err(&temp))?;
            }
            file.flush().await.map_err(io_err(&temp))?;
            Ok(())
        }
        .await;
        drop(file);
        let result = written.and_then(|()| {
            let actual = hex::encode(md5.finalize());
            if actual == expected {
                Ok(())
            } else {
                Err(ClientError::HashMismatch {
                    expected: expected.clone(),
                    actual,
                })
            }
        });
        if let Err(err) = result {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(err);
        }
        if let Err(source) = tokio::fs::rename(&temp, &target).await {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(ClientError::Io {
                path: target,
                source,
            });
        }
        Ok(target)
    }

    /// Uploads the file at `path` as `property` of this job (store `jobs`, uuid = the job id).
    ///
    /// Sends `{hash, challenge, metadata}` to `PUT {hook}/upload/jobs/{id}/{property}`; if the
    /// server already has the content it answers `done` and nothing more is sent, otherwise the
    /// bytes go to the returned `url` with the returned method (default `PUT`), which must answer
    /// 2xx. `metadata` `null` is sent as `{}`.
    ///
    /// Tried again, whole (signed afresh, a new upload URL), within the report window like a
    /// status report (retry.rs) when a step got no answer or an answer of 408, 429 or 5xx: the
    /// hook's node may be restarting. The server attaches the same file from the same attempt
    /// once, so a try whose answer was lost is not attached twice.
    pub async fn upload(
        &self,
        property: &str,
        path: &Path,
        metadata: Value,
    ) -> Result<UploadOutcome, ClientError> {
        check_file_path(JOBS_STORE, &self.id, property)?;
        let digest = digest_file(path).await.map_err(|source| ClientError::Io {
            path: path.to_owned(),
            source,
        })?;
        let request = UploadRequest {
            hash: digest.hash.clone(),
            challenge: digest.challenge.clone(),
            metadata: if metadata.is_null() {
                Value::Object(serde_json::Map::new())
            } else {
                metadata
            },
        };
        let body = serde_json::to_vec(&request).map_err(|source| ClientError::Json {
            context: "upload request".to_owned(),
            source,
        })?;
        self.within_window(|| self.upload_once(property, path, &body, &digest))
            .await
    }

    /// One try of [`JobClient::upload`]: the hook's `PUT` with `body`, then the bytes.
    async fn upload_once(
        &self,
        property: &str,
        path: &Path,
        body: &[u8],
        digest: &UploadDigest,
    ) -> Result<UploadOutcome, ClientError> {
        let body = body.to_vec();
        let url = self.endpoint(&["upload", JOBS_STORE, &self.id, property]);
        let context = format!("PUT {}", url.path());
        let bytes = self.hook_call(Method::PUT, url, Some(body)).await?;
        let answer: UploadResponse = parse_json(&context, &bytes)?;
        if answer.done {
            return Ok(UploadOutcome::AlreadyStored(digest.clone()));
        }

        let method_name = answer
            .method
            .as_deref()
            .unwrap_or("PUT")
            .to_ascii_uppercase();
        let method =
            Method::from_bytes(method_name.as_bytes()).map_err(|_| ClientError::BadResponse {
                context: context.clone(),
                reason: "invalid upload method".to_owned(),
            })?;
        let Some(target) = answer.url.as_deref() else {
            return Err(ClientError::BadResponse {
                context,
                reason: "done is false but there is no url".to_owned(),
            });
        };
        let target = resolve_url(&self.hook, target, "upload")?;
        let context = format!("{method} {}", target.path());
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| ClientError::Io {
                path: path.to_owned(),
                source,
            })?;
        let len = file
            .metadata()
            .await
            .map_err(|source| ClientError::Io {
                path: path.to_owned(),
                source,
            })?
            .len();
        let request = self
            .transfer_http
            .request(method, target)
            .header(CONTENT_LENGTH, len)
            .body(reqwest::Body::from(file));
        send_transfer(request, &context).await?;
        Ok(UploadOutcome::Uploaded(digest.clone()))
    }
}

/// Sends a request for the bytes (no job headers); a non-2xx answer is an error.
async fn send_transfer(
    request: reqwest::RequestBuilder,
    context: &str,
) -> Result<reqwest::Response, ClientError> {
    let response = request.send().await.map_err(|e| transport(context, e))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.bytes().await.unwrap_or_default();
        return Err(http_error(context.to_string(), status, &body));
    }
    Ok(response)
}
