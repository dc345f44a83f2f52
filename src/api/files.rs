//! Client file routes: attach an input before a job runs, fetch any file of a job.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::parse_job_id;
use super::hooks::{check_property, file_error, file_index, job_file, valid_property};
use super::AppState;
use crate::auth::access::Caller;
use crate::job::{Command, FileRef, MAX_FILES_PER_PROPERTY};

/// Longest file name taken, in bytes (as most file systems' names).
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// A file's type (`Content-Type`, kept with it and sent back on download) is at most
/// [`MAX_FILE_NAME_BYTES`] bytes; the refusal reads "Content-Type is at most ...".
pub fn check_mimetype(m: &str) -> Result<(), String> {
    if m.len() > MAX_FILE_NAME_BYTES {
        return Err(format!(
            "Content-Type is at most {MAX_FILE_NAME_BYTES} bytes (got {})",
            m.len()
        ));
    }
    Ok(())
}

/// The request's `Content-Type` (kept as an uploaded file's type), checked: 400 `bad_body` when
/// over [`MAX_FILE_NAME_BYTES`].
pub fn content_type(headers: &HeaderMap) -> ApiResult<Option<&str>> {
    let c = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if let Some(c) = c {
        check_mimetype(c).map_err(|m| ApiError::bad_request("bad_body", format!("the {m}")))?;
    }
    Ok(c)
}

/// `metadata.{key}`, when present and not null, is a string that `check` accepts (422 naming it
/// otherwise: `lead` and the check's words).
pub fn check_metadata(
    metadata: &Value,
    key: &str,
    check: fn(&str) -> Result<(), String>,
    lead: &str,
) -> ApiResult<()> {
    let Some(v) = metadata.get(key).filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let v = v
        .as_str()
        .ok_or_else(|| ApiError::invalid_request(format!("`metadata.{key}` must be a string")))?;
    check(v).map_err(|m| ApiError::invalid_request(format!("`metadata.{key}`: {lead}{m}")))
}

/// Checks a file's name (`?name=`, a multipart part's `filename`, a job's upload `metadata.name`):
/// empty (no name), or at most [`MAX_FILE_NAME_BYTES`] bytes without `/`, `\\` or control
/// characters, and not `.` or `..`. A name is a label for downloads (`Content-Disposition`), never
/// a path: one that looks like a path is refused rather than cut, so the caller knows.
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_FILE_NAME_BYTES {
        return Err(format!(
            "a file name is at most {MAX_FILE_NAME_BYTES} bytes (got {})",
            name.len()
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control() || crate::job::invisible(c))
    {
        return Err(format!(
            "a file name may not be `.` or `..`, nor hold `/`, `\\`, control or invisible \
             formatting characters (got {name:?})"
        ));
    }
    Ok(())
}

/// Query of the attach route.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AttachParams {
    name: Option<String>,
}

/// `PUT /async/jobs/{id}/files/{property}`: the body is the file; `?name=` names it.
#[utoipa::path(put, path = "/async/jobs/{id}/files/{property}", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "The job id"), ("property" = String, Path, description = "1-64 letters, digits, `_`, `-`"), AttachParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes (its `Content-Type` is kept)"),
    responses(
        (status = 201, description = "Attached", body = super::openapi::schemas::Attached),
        (status = 400, description = "`bad_id`, `bad_path`, `bad_query`, `bad_body` (also a `Content-Type` over 255 bytes)", body = super::openapi::schemas::ErrorBody), (status = 404, description = "`not_found`: no such job", body = super::openapi::schemas::ErrorBody),
        (status = 409, description = "`illegal_transition`: the job has finished; `md5_collision`: other bytes with the same md5 are already stored (an MD5 collision): nothing is stored or attached", body = super::openapi::schemas::ErrorBody),
        (status = 413, description = "`too_large`: over `hooks.max_file_bytes`", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn attach(
    State(st): State<AppState>,
    Caller(caller): Caller,
    Path((id, property)): Path<(String, String)>,
    q: Result<Query<AttachParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let id = parse_job_id(&id)?;
    let Query(q) = q.map_err(|e| ApiError::bad_query(e.body_text()))?;
    check_property(&property)?;
    if let Some(n) = &q.name {
        check_file_name(n).map_err(|m| ApiError::bad_query(format!("`name`: {m}")))?;
    }
    let mimetype = content_type(&headers)?
        .unwrap_or("application/octet-stream")
        .to_string();
    let job = st.job_for(id, &caller).await?;
    if job.status.is_terminal() {
        return Err(ApiError::conflict(
            "illegal_transition",
            format!("job is {}: no more files", job.status),
        ));
    }
    let stored = st
        .app
        .blobs
        .put(
            body.into_data_stream(),
            st.app.config.hooks.max_file_bytes,
            None,
        )
        .await
        .map_err(file_error)?;
    let file = FileRef {
        hash: stored.hash.clone(),
        size: stored.size,
        mimetype,
        name: q.name.unwrap_or_default(),
        metadata: json!({}),
        attempt: None,
    };
    let job = st
        .app
        .store
        .apply(
            id,
            Command::AttachFile {
                property: property.clone(),
                file,
                by_attempt: None,
            },
        )
        .await?;
    let index = job
        .files
        .get(&property)
        .map(|l| l.len().saturating_sub(1))
        .unwrap_or(0);
    Ok((
        StatusCode::CREATED,
        Json(json!({"job_id": id, "property": property, "index": index, "hash": stored.hash, "size": stored.size})),
    )
        .into_response())
}

/// `GET /async/jobs/{id}/files/{property}/{index}`: the bytes.
#[utoipa::path(get, path = "/async/jobs/{id}/files/{property}/{index}", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "The job id"), ("property" = String, Path), ("index" = u64, Path, description = "0 for the first file")),
    responses(
        (status = 200, description = "The file's bytes, with its stored `Content-Type`", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "`bad_id`, `bad_path`", body = super::openapi::schemas::ErrorBody),
        (status = 404, description = "`not_found`: no such job or file", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn fetch(
    State(st): State<AppState>,
    Caller(caller): Caller,
    Path((id, property, index)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let id = parse_job_id(&id)?;
    check_property(&property)?;
    let index = file_index(&index)?;
    let job = st.job_for(id, &caller).await?;
    let f = job_file(&job, &property, index)?;
    stream_blob(&st, &f.hash, &f.mimetype, &f.name).await
}

/// Reads a multipart submit: the `job` part (JSON) and file parts named by property. Files are
/// stored as they come (content-addressed) and attached to the job before it is stored, so they
/// are there before it can start. `check` runs on the `job` part as soon as it is read: when it
/// refuses the job (an invalid body, a type or channel outside the caller's grant), its error is
/// the answer and no later file part is read or stored. File parts sent before the `job` part,
/// and the files of a submit refused after they were read (a `notify` address refused by its
/// DNS check, an idempotency conflict), stay unreferenced until retention's file collection
/// (`BlobStore::gc`) removes them.
pub async fn read_multipart(
    st: &AppState,
    mut mp: axum::extract::Multipart,
    check: impl Fn(&[u8]) -> ApiResult<()>,
) -> ApiResult<(bytes::Bytes, Vec<(String, FileRef)>)> {
    let mut job_json = None;
    let mut files: Vec<(String, FileRef)> = Vec::new();
    loop {
        let field = mp
            .next_field()
            .await
            .map_err(super::error::multipart_error)?;
        let Some(field) = field else { break };
        let name = field.name().unwrap_or("").to_string();
        if name == "job" {
            if job_json.is_some() {
                return Err(ApiError::bad_request(
                    "bad_multipart",
                    "more than one `job` part: a submit is one job",
                ));
            }
            // Read a piece at a time and refused past the limit: not read whole first (up to
            // the route's file limit, 257 MiB by default) and measured after.
            let max = st.app.config.api.max_body_bytes;
            let mut part = Vec::new();
            let mut field = field;
            while let Some(piece) = field.chunk().await.map_err(super::error::multipart_error)? {
                if part.len() + piece.len() > max {
                    return Err(ApiError::too_large("the `job` part is too large"));
                }
                part.extend_from_slice(&piece);
            }
            let b = axum::body::Bytes::from(part);
            check(&b)?;
            job_json = Some(b);
            continue;
        }
        if !valid_property(&name) {
            return Err(ApiError::bad_request(
                "bad_multipart",
                format!(
                    "file part `{name}`: its name must be a property (letters, digits, '_', '-')"
                ),
            ));
        }
        // Counted before its content is read: a submit of many tiny parts would otherwise
        // make a job record of megabytes (every listing of its channel sends it whole).
        if files.len() >= MAX_FILES_PER_PROPERTY {
            return Err(ApiError::too_large(format!(
                "a multipart submit carries at most {MAX_FILES_PER_PROPERTY} files"
            )));
        }
        let file_name = field.file_name().unwrap_or("").to_string();
        check_file_name(&file_name).map_err(|m| {
            ApiError::bad_request("bad_multipart", format!("file part `{name}`: {m}"))
        })?;
        let mimetype = field
            .content_type()
            .unwrap_or("application/octet-stream")
            .to_string();
        check_mimetype(&mimetype).map_err(|m| {
            ApiError::bad_request("bad_multipart", format!("file part `{name}`: its {m}"))
        })?;
        let stored = st
            .app
            .blobs
            .put(field, st.app.config.hooks.max_file_bytes, None)
            .await
            .map_err(file_error)?;
        files.push((
            name,
            FileRef {
                hash: stored.hash,
                size: stored.size,
                mimetype,
                name: file_name,
                metadata: json!({}),
                attempt: None,
            },
        ));
    }
    let job_json = job_json.ok_or_else(|| {
        ApiError::bad_request("bad_multipart", "a `job` part (the job JSON) is required")
    })?;
    Ok((job_json, files))
}

/// Streams a stored blob.
pub async fn stream_blob(
    st: &AppState,
    hash: &str,
    mimetype: &str,
    name: &str,
) -> ApiResult<Response> {
    let path = st.app.blobs.path(hash).map_err(file_error)?;
    let f = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiError::not_found("file content not found"))?;
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(f));
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    if let Ok(v) = mimetype.parse() {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, len.into());
    // The content's md5 (the blob's key): a strong validator, and what `runyard files get`
    // checks the bytes it received against.
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("\"{hash}\"")) {
        h.insert(header::ETAG, v);
    }
    // The type is the uploader's word: never rendered by a browser on the API's origin (a
    // `text/html` file would run its script there). Always a download, never sniffed, and
    // sandboxed should a browser show it anyway.
    h.insert(
        header::CONTENT_DISPOSITION,
        super::edge::content_disposition(name)
            .unwrap_or(axum::http::HeaderValue::from_static("attachment")),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    Ok(res)
}
