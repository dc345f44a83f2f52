//! The job hook API: what a running job calls, authenticated by its signature (v1 or v2, see
//! docs/hooks.md). A job may touch only its own job (403 otherwise); a job that is not running
//! can no longer report (409).

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::Json;
use base64::Engine;
use runyard_hooks::wire::{
    DownloadResponse, FileMeta, JobSelf, StatusReport, UploadRequest, UploadResponse,
};
use runyard_hooks::{HookHeaders, SigVersion, VerifyError};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::parse_json;
use super::signed_url::URL_TTL_SECS;
use super::AppState;
use crate::files::{valid_hash, FileError};
use crate::job::{now_us, Command, FileRef, HookReport, Job, JobStatus, Reported};
use crate::store::LogStream;

/// Most log lines one report may carry.
pub const MAX_REPORT_LINES: usize = 1000;
/// Most lines one report stores once its entries are split (`hook_lines`): the newest are kept,
/// after a note saying how many went. As many as the worker's log buffer
/// (`worker::reporter::MAX_BUFFERED_LINES`), half the default `retention.log_lines_per_job`: the
/// note is not the first line retention trims.
pub const MAX_STORED_LINES: usize = 5_000;
/// Longest log line kept whole: the one limit of every log path (`runyard_hooks::MAX_LINE_BYTES`).
pub use runyard_hooks::MAX_LINE_BYTES;

/// Authenticates a hook call; returns the job it is for.
pub async fn authenticate(
    st: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Job> {
    match verify(st, method, uri, headers, body).await? {
        (job, true, _) => Ok(job),
        (_, false, _) => Err(VerifyError::Replay.into()),
    }
}

/// Checks a hook call's signature and remembers it: the job it is for, whether this is the
/// first time the signature is seen (false: a replay), and whether it covers the request's
/// method, path and body (v2; v1 signs only the time).
async fn verify(
    st: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<(Job, bool, bool)> {
    let mut hh = HookHeaders::from_headers(headers)?;
    let id = Uuid::parse_str(&hh.job_id)
        .map_err(|_| ApiError::unauthorized_as("invalid_header", "X-Job-Id is not a job id"))?;
    // The canonical id, so that re-spelling X-Job-Id (no hyphens, braces, urn:) is still a replay.
    hh.job_id = id.to_string();
    let job = st.job(id).await?;
    let secret =
        runyard_hooks::derive_job_secret(&st.app.master_key, &job.id.to_string(), job.attempt);
    let pq = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or(uri.path());
    let now = st.app.store.time().await / 1000; // the store's clock: every node's window alike
    let v = &st.app.verifier;
    let checked = match v.verify_signature(&hh, &secret, method.as_str(), pq, body, now) {
        // Behind a proxy that strips public_url's path prefix, the job signed the longer path.
        Err(VerifyError::BadSignature) if !st.app.path_prefix.is_empty() => {
            let full = format!("{}{pq}", st.app.path_prefix);
            v.verify_signature(&hh, &secret, method.as_str(), &full, body, now)
        }
        r => r,
    }?;
    // Only now, so that forged requests cannot fill it: the store's replay memory (shared by
    // every API node on Redis).
    let first = st
        .app
        .store
        .remember_once(&checked.replay_key, checked.expires_at_ms, now)
        .await
        .map_err(|e| ApiError::from(VerifyError::ReplayUnavailable(e)))?;
    Ok((job, first, hh.version == SigVersion::V2))
}

/// Refuses (`409 illegal_transition`) a call of a job that is not active, or whose attempt
/// has said how it ended or ran out of time (only its process ending is awaited).
pub(super) fn require_active(job: &Job, what: &str) -> ApiResult<()> {
    if !job.status.is_active() {
        Err(ApiError::conflict(
            "illegal_transition",
            format!("job is {}: it cannot {what}", job.status),
        ))
    } else if let Some(r) = job.reported() {
        // Its outcome is said (or its time ran out); only its process ending is awaited.
        let why = match r {
            Reported::Timeout { .. } => "its time limit ran out".to_string(),
            r => format!("job reported {}", r.status()),
        };
        Err(ApiError::conflict(
            "illegal_transition",
            format!("{why}: it cannot {what}"),
        ))
    } else {
        Ok(())
    }
}

/// `POST /async/status`.
#[utoipa::path(post, path = "/async/status", tag = "hooks",
    request_body(content = Option<super::openapi::schemas::StatusReport>, description = "The report; an empty body is an empty report"),
    responses(
        (status = 200, description = "The job after the report", body = super::openapi::schemas::StatusAnswer),
        (status = 400, description = "`bad_json`: malformed JSON", body = super::openapi::schemas::ErrorBody),
        (status = 409, description = "`illegal_transition`, `stale_lease`: the job is not running (or reported already: `error.reported` says what it reported, `SUCCESS`, `ERROR` or `TIMEOUT`)", body = super::openapi::schemas::ErrorBody),
        (status = 413, description = "`too_large`: more than 1000 entries in `logs`, or over `api.max_body_bytes`", body = super::openapi::schemas::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: a body that is not `application/json`", body = super::openapi::schemas::ErrorBody),
        (status = 422, description = "`invalid_request`: the body does not match the schema (the message names the field), in a v2-signed report, a field the report does not have (named, with the one meant for a near miss: `result` for `results`, `error` for `errorMessage`; a v1-signed one is applied without it and a `[runyard] report field ... ignored` line goes to the job's log), a bad `status`", body = super::openapi::schemas::ErrorBody),
        (status = 503, description = "`replay_unapplied`: a report with `SUCCESS` or `ERROR` signed with v2 sent again as it was (after no answer), accepted before but not applied (the job is active and has not reported; otherwise a replay is `401 replay`): sign it again; `replay_unavailable`: the replay memory (the store) cannot be reached; `unavailable`: the store failed; sign again", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn status(State(st): State<AppState>, req: Request) -> ApiResult<Json<Value>> {
    let (parts, bytes) = super::hook_body::read(&st, req).await?;
    let (job, first, v2) = verify(&st, &parts.method, &parts.uri, &parts.headers, &bytes).await?;
    if !first && !v2 {
        return Err(VerifyError::Replay.into()); // v1 does not sign the body: it tells nothing
    }
    if !first {
        // Its report may not have been applied: read the job as it is now.
        let job = st.job(job.id).await?;
        return Err(super::hook_replay::replay_answer(&job, &bytes));
    }
    // The webda client sends no body at all for an empty report.
    let mut ignored = Vec::new();
    let report: StatusReport = if bytes.iter().all(u8::is_ascii_whitespace) {
        StatusReport::default()
    } else {
        super::edge::require_json(&parts.headers)?;
        let report = parse_json(&bytes)?;
        let unknown = super::hook_body::unknown_report_fields(&bytes)?;
        if v2 {
            super::hook_body::refuse_unknown(&unknown, "report", &StatusReport::FIELDS)?;
        }
        // v1 (webda's client, which does not read the answer): applied as before, with a note.
        ignored = super::hook_body::ignored_notes(&unknown, "report");
        report
    };
    let status = report
        .status
        .as_deref()
        .map(|s| s.parse::<JobStatus>().map_err(ApiError::invalid_request))
        .transpose()?;
    let mut logs = report.logs.unwrap_or_default();
    if logs.len() > MAX_REPORT_LINES {
        return Err(ApiError::too_large(format!(
            "a report may carry at most {MAX_REPORT_LINES} log lines"
        )));
    }
    logs.extend(ignored);
    let lines = super::hook_lines::split(logs, MAX_STORED_LINES);
    let r = HookReport {
        status,
        progress: report.progress,
        details: report.status_details,
        results: report.results,
        error: report.error_message,
        retry: report.retry,
    };
    // Out of time, a job being stopped can no longer report, but the log lines it sends while
    // it stops (a SIGTERM handler's last words) are kept: only lines, nothing to apply.
    let lines_only = r == HookReport::default()
        && job.status.is_active()
        && matches!(job.reported(), Some(Reported::Timeout { .. }));
    let updated = if lines_only {
        job
    } else {
        super::hook_replay::apply_report(&st, job.id, r).await?
    };
    if !lines.is_empty() {
        let ts = now_us();
        let lines = lines.into_iter().map(|l| (LogStream::Job, ts, l)).collect();
        st.app.store.append_logs(updated.id, lines).await?;
    }
    if !lines_only && updated.reported().is_some() {
        // The worker running it (when in this process) stops waiting for the process sooner.
        crate::worker::reports::reported(updated.id);
    }
    Ok(Json(json!({
        "job_id": updated.id,
        "status": updated.status,
        "progress": updated.progress,
        "reported": updated.reported().map(|r| r.status()),
    })))
}

/// `GET /async/job`: the job's own id, type, args and attempt.
#[utoipa::path(get, path = "/async/job", tag = "hooks",
    responses(
        (status = 200, description = "The job's description", body = super::openapi::schemas::JobSelf),
        (status = 409, description = "`illegal_transition`: the job is not running", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn job_self(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<JobSelf>> {
    let job = authenticate(&st, &method, &uri, &headers, b"").await?;
    require_active(&job, "read its description")?;
    Ok(Json(JobSelf {
        id: job.id.to_string(),
        r#type: job.job_type,
        args: job.args,
        attempt: job.attempt,
    }))
}

/// Checks a property name: letters, digits, `_` and `-`, 1-64 characters (the rule the job
/// clients check too).
pub use runyard_hooks::vocab::valid_property;

/// A path's `property` segment: 1-64 letters, digits, `_` or `-`, else 400 `bad_path`.
pub fn check_property(property: &str) -> ApiResult<()> {
    if valid_property(property) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "bad_path",
            "property must be 1-64 letters, digits, '_' or '-'",
        ))
    }
}

/// A path's file `index` segment: a number, else 400 `bad_path`.
pub fn file_index(index: &str) -> ApiResult<usize> {
    index
        .parse()
        .map_err(|_| ApiError::bad_request("bad_path", "index must be a non-negative integer"))
}

/// The job's file `property[index]`, or 404.
pub fn job_file<'a>(job: &'a Job, property: &str, index: usize) -> ApiResult<&'a FileRef> {
    job.files
        .get(property)
        .and_then(|l| l.get(index))
        .ok_or_else(|| ApiError::not_found(format!("no file {property}[{index}] on this job")))
}

fn check_target(job: &Job, store: &str, uuid: &str, property: &str) -> ApiResult<()> {
    if !valid_property(property)
        || !valid_property(store)
        || !runyard_hooks::vocab::valid_file_uuid(uuid)
    {
        return Err(ApiError::bad_request(
            "bad_path",
            runyard_hooks::vocab::FILE_PATH_RULE,
        ));
    }
    if store != "jobs" || uuid != job.id.to_string() {
        return Err(ApiError::forbidden(
            "a job may only touch its own files (store `jobs`, uuid = JOB_ID)",
        ));
    }
    Ok(())
}

/// `GET /async/download/{store}/{uuid}/{property}/{index}`.
#[utoipa::path(get, path = "/async/download/{store}/{uuid}/{property}/{index}", tag = "hooks",
    params(("store" = String, Path, description = "`jobs`"), ("uuid" = String, Path, description = "The job id (the caller's own)"), ("property" = String, Path), ("index" = u64, Path)),
    responses(
        (status = 200, description = "A signed URL for the file's bytes", body = super::openapi::schemas::DownloadResponse),
        (status = 400, description = "`bad_path`", body = super::openapi::schemas::ErrorBody),
        (status = 403, description = "`forbidden`: not the job's own files", body = super::openapi::schemas::ErrorBody),
        (status = 404, description = "`not_found`: no such job or file", body = super::openapi::schemas::ErrorBody),
        (status = 409, description = "`illegal_transition`: the job is not running", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn download(
    State(st): State<AppState>,
    Path((store, uuid, property, index)): Path<(String, String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Json<DownloadResponse>> {
    let job = authenticate(&st, &method, &uri, &headers, b"").await?;
    check_target(&job, &store, &uuid, &property)?;
    require_active(&job, "download files")?;
    let f = job_file(&job, &property, file_index(&index)?)?;
    Ok(Json(DownloadResponse {
        location: st.app.blob_url(&f.hash).await,
        map: FileMeta {
            hash: f.hash.clone(),
            size: f.size,
            mimetype: f.mimetype.clone(),
            name: f.name.clone(),
        },
    }))
}

/// `PUT /async/upload/{store}/{uuid}/{property}`.
#[utoipa::path(put, path = "/async/upload/{store}/{uuid}/{property}", tag = "hooks",
    params(("store" = String, Path, description = "`jobs`"), ("uuid" = String, Path, description = "The job id (the caller's own)"), ("property" = String, Path)), request_body = super::openapi::schemas::UploadRequest,
    responses(
        (status = 200, description = "Done (the server has the bytes), or a signed URL to PUT them to", body = super::openapi::schemas::UploadResponse),
        (status = 400, description = "`bad_path`, `bad_json`", body = super::openapi::schemas::ErrorBody),
        (status = 403, description = "`forbidden`: not the job's own files", body = super::openapi::schemas::ErrorBody),
        (status = 409, description = "`illegal_transition`: the job is not running; `stale_attempt`: the job went on to another attempt", body = super::openapi::schemas::ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = super::openapi::schemas::ErrorBody),
        (status = 422, description = "`invalid_request`: the body does not match the schema (a field it does not have, in a v2-signed call; a v1-signed one is taken without it, a note in the job's log), bad hashes, `metadata` over 4 KiB, a `metadata.name` that is not a file name, a `metadata.mimetype` over 255 bytes", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn upload(
    State(st): State<AppState>,
    Path((store, uuid, property)): Path<(String, String, String)>,
    req: Request,
) -> ApiResult<Json<UploadResponse>> {
    let (parts, bytes) = super::hook_body::read(&st, req).await?;
    let job = authenticate(&st, &parts.method, &parts.uri, &parts.headers, &bytes).await?;
    check_target(&job, &store, &uuid, &property)?;
    require_active(&job, "upload files")?;
    super::edge::require_json(&parts.headers)?;
    let req: UploadRequest = parse_json(&bytes)?;
    let notes = super::hook_body::upload_field_notes(&parts, &bytes)?;
    if !valid_hash(&req.hash) || !valid_hash(&req.challenge) {
        return Err(ApiError::invalid_request(
            "`hash` and `challenge` must be md5 hex digests (32 lowercase hex digits)",
        ));
    }
    super::files::check_metadata(&req.metadata, "name", super::files::check_file_name, "")?;
    super::files::check_metadata(
        &req.metadata,
        "mimetype",
        super::files::check_mimetype,
        "its ",
    )?;
    let meta = serde_json::to_string(&req.metadata).unwrap_or_default();
    if meta.len() > 4096 {
        return Err(ApiError::invalid_request("`metadata` is limited to 4 KiB"));
    }
    let blobs = &st.app.blobs;
    if blobs.exists(&req.hash).await {
        let proven = blobs.challenge(&req.hash).await.map_err(file_error)?;
        // The proof that the job holds the content: compared in constant time.
        if bool::from(subtle::ConstantTimeEq::ct_eq(
            proven.as_bytes(),
            req.challenge.as_bytes(),
        )) {
            let size = tokio::fs::metadata(blobs.path(&req.hash).map_err(file_error)?)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            attach(
                &st,
                &job,
                &property,
                &req.hash,
                size,
                &req.metadata,
                None,
                job.attempt,
            )
            .await?;
            super::hook_body::note_ignored(&st, job.id, notes).await;
            return Ok(Json(UploadResponse {
                done: true,
                method: None,
                url: None,
            }));
        }
    }
    let exp = (st.app.signed_url_now().await + URL_TTL_SECS).to_string();
    let meta = super::signed_url::with_nonce(meta);
    let meta_b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(meta.as_bytes());
    let id = job.id.to_string();
    let attempt = job.attempt.to_string();
    let sig = st
        .app
        .signer
        .sign(&["put", &id, &attempt, &property, &req.hash, &exp, &meta_b64]);
    let url = format!(
        "{}/async/blobs/upload?job={id}&attempt={attempt}&property={property}&hash={}&exp={exp}&meta={meta_b64}&sig={sig}",
        st.app.public_url, req.hash
    );
    super::hook_body::note_ignored(&st, job.id, notes).await;
    Ok(Json(UploadResponse {
        done: false,
        method: Some("PUT".into()),
        url: Some(url),
    }))
}

/// Attaches the job's own upload, from `attempt` (the one its hook token or signed URL was
/// checked against): refused (`409 stale_attempt`) if the job has gone on to another attempt
/// meanwhile, e.g. while the bytes streamed.
#[allow(clippy::too_many_arguments)]
async fn attach(
    st: &AppState,
    job: &Job,
    property: &str,
    hash: &str,
    size: u64,
    metadata: &Value,
    content_type: Option<&str>,
    attempt: u32,
) -> ApiResult<()> {
    let s = |k: &str| metadata.get(k).and_then(Value::as_str).map(str::to_string);
    let file = FileRef {
        hash: hash.to_string(),
        size,
        mimetype: s("mimetype")
            .or_else(|| content_type.map(str::to_string))
            .unwrap_or_else(|| "application/octet-stream".into()),
        name: s("name").unwrap_or_default(),
        metadata: metadata.clone(),
        attempt: None,
    };
    st.app
        .store
        .apply(
            job.id,
            Command::AttachFile {
                property: property.to_string(),
                file,
                by_attempt: Some(attempt),
            },
        )
        .await?;
    Ok(())
}

/// Maps file store errors.
pub fn file_error(e: FileError) -> ApiError {
    match e {
        FileError::TooLarge(_) => ApiError::too_large(e.to_string()),
        FileError::Mismatch { .. } => ApiError::unprocessable("md5_mismatch", e.to_string()),
        FileError::BadHash(_) => ApiError::invalid_request(e.to_string()),
        FileError::Collision(_) => ApiError::md5_collision(e.to_string()),
        FileError::Body(_) => ApiError::bad_request("bad_body", e.to_string()),
        FileError::Io(_) => ApiError::internal("file_store_error", e.to_string()),
    }
}

/// Query of the signed upload URL.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadTarget {
    job: String,
    attempt: u32,
    property: String,
    hash: String,
    exp: i64,
    #[serde(default)]
    meta: String,
    sig: String,
}

/// Checks a signed upload URL: its signature and expiry, the job's current attempt and status,
/// and that it is used once (remembered by the store, shared by every API node on Redis, until
/// it expires anyway). Returns the target and the job.
async fn check_upload_url(
    st: &AppState,
    q: Result<Query<UploadTarget>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<(UploadTarget, Job)> {
    let Query(t) = q.map_err(|_| ApiError::bad_signed_url("upload"))?;
    let attempt = t.attempt.to_string();
    let exp = t.exp.to_string();
    if !st.app.signer.check(
        &["put", &t.job, &attempt, &t.property, &t.hash, &exp, &t.meta],
        t.exp,
        &t.sig,
        st.app.signed_url_now().await,
    ) {
        return Err(ApiError::bad_signed_url("upload"));
    }
    let id = Uuid::parse_str(&t.job).map_err(|_| ApiError::bad_request("bad_id", "bad job id"))?;
    let job = st.job(id).await?;
    if job.attempt != t.attempt {
        return Err(ApiError::conflict(
            "stale_attempt",
            "this upload URL belongs to an earlier attempt",
        ));
    }
    require_active(&job, "upload files")?;
    let first = st
        .app
        .store
        .remember_once(
            &format!("upload-url:{}", t.sig),
            t.exp.saturating_add(1).saturating_mul(1000),
            st.app.store.time().await / 1000,
        )
        .await
        .map_err(|e| ApiError::unavailable("replay_unavailable", e.to_string()))?;
    if !first {
        return Err(ApiError::refused(
            "url_used",
            "this upload URL was already used: ask for a new one (PUT /async/upload/...)",
        ));
    }
    Ok((t, job))
}

/// `PUT /async/blobs/upload?...` (signed URL from an upload answer): the bytes.
#[utoipa::path(put, path = "/async/blobs/upload", tag = "hooks", params(UploadTarget),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"),
    responses(
        (status = 200, description = "Stored and attached", body = super::openapi::schemas::BlobStored),
        (status = 400, description = "`bad_id`, `bad_body` (also a `Content-Type` over 255 bytes)", body = super::openapi::schemas::ErrorBody),
        (status = 403, description = "`bad_signature`: invalid or expired URL; `url_used`", body = super::openapi::schemas::ErrorBody),
        (status = 404, description = "`not_found`: no such job", body = super::openapi::schemas::ErrorBody),
        (status = 409, description = "`stale_attempt` (also when the job went on to another attempt while the bytes arrived), `illegal_transition`; `md5_collision`: other bytes with the same md5 are already stored (an MD5 collision): nothing is stored or attached", body = super::openapi::schemas::ErrorBody),
        (status = 413, description = "`too_large`", body = super::openapi::schemas::ErrorBody),
        (status = 422, description = "`md5_mismatch`: the bytes do not match `hash`", body = super::openapi::schemas::ErrorBody),
        (status = 503, description = "`replay_unavailable`", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn blob_upload(
    State(st): State<AppState>,
    q: Result<Query<UploadTarget>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    // Before the URL is taken (it is good for one use): a refusal here leaves it usable.
    let ctype = super::files::content_type(&headers)?;
    let (t, job) = check_upload_url(&st, q).await?;
    let metadata: Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t.meta.as_bytes())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({}));
    let stored = st
        .app
        .blobs
        .put(
            body.into_data_stream(),
            st.app.config.hooks.max_file_bytes,
            Some(&t.hash),
        )
        .await
        .map_err(file_error)?;
    attach(
        &st,
        &job,
        &t.property,
        &stored.hash,
        stored.size,
        &metadata,
        ctype,
        t.attempt,
    )
    .await?;
    Ok(Json(
        json!({"done": true, "hash": stored.hash, "size": stored.size}),
    ))
}

/// Query of the signed download URL.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DownloadTarget {
    exp: i64,
    sig: String,
}

/// `GET /async/blobs/{hash}?exp=&sig=` (signed URL from a download answer): the bytes.
#[utoipa::path(get, path = "/async/blobs/{hash}", tag = "hooks",
    params(("hash" = String, Path, description = "MD5 hex of the content"), DownloadTarget),
    responses(
        (status = 200, description = "The bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 403, description = "`bad_signature`: invalid or expired URL", body = super::openapi::schemas::ErrorBody),
        (status = 404, description = "`not_found`: the content is gone", body = super::openapi::schemas::ErrorBody),
    ))]
pub async fn blob_download(
    State(st): State<AppState>,
    Path(hash): Path<String>,
    q: Result<Query<DownloadTarget>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(t) = q.map_err(|_| ApiError::bad_signed_url("download"))?;
    let now = st.app.signed_url_now().await;
    if !valid_hash(&hash)
        || !st
            .app
            .signer
            .check(&["get", &hash, &t.exp.to_string()], t.exp, &t.sig, now)
    {
        return Err(ApiError::bad_signed_url("download"));
    }
    super::files::stream_blob(&st, &hash, "application/octet-stream", "").await
}
