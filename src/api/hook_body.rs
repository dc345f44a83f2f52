//! A job hook call's body, read after the checks its headers allow without it.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::request::Parts;
use runyard_hooks::HookHeaders;
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::extract::body_bytes;
use super::AppState;

/// Reads the body of a hook call (`/async/status`, `/async/upload/...`, `/async/signal/...`)
/// once its headers pass the checks that need neither the job's secret nor the body: present
/// and well formed, a job id, the signed time within the window, the version taken (401 at once
/// otherwise, the unread body then drained for at most 5 s, `connections::linger`). The body
/// must arrive within `api.request_timeout` (503 `request_timeout`; the upload's route is
/// otherwise exempt from it). So a call with forged but well-formed headers holds its
/// connection that long at most, and what it sends costs its own size (`body_bytes`).
pub async fn read(st: &AppState, req: Request) -> ApiResult<(Parts, Bytes)> {
    let (parts, body) = req.into_parts();
    let hh = HookHeaders::from_headers(&parts.headers)?;
    Uuid::parse_str(&hh.job_id)
        .map_err(|_| ApiError::unauthorized_as("invalid_header", "X-Job-Id is not a job id"))?;
    st.app.verifier.precheck(&hh, runyard_hooks::now_ms())?;
    let limit = st.app.config.api.request_timeout;
    let read = body_bytes(Request::from_parts(parts.clone(), body), &());
    let bytes = tokio::time::timeout(limit, read)
        .await
        .map_err(|_| super::gate::timed_out(limit))??;
    Ok((parts, bytes))
}

/// Refuses a `POST /async/status` body (a JSON object, parsed already) with a field the report
/// does not have (`StatusReport::FIELDS`): `422 invalid_request` naming it, and the field meant
/// when it is a near miss. Ignored, `{"status":"SUCCESS","result":{...}}` would end the job
/// without its result and `{"status":"ERROR","error":"..."}` lose its reason, both answered 200.
pub fn check_report_fields(bytes: &[u8]) -> ApiResult<()> {
    use std::collections::BTreeMap;
    let fields = runyard_hooks::wire::StatusReport::FIELDS;
    let keys: BTreeMap<String, serde::de::IgnoredAny> =
        serde_json::from_slice(bytes).map_err(ApiError::malformed_json)?;
    let unknown: Vec<String> = keys
        .keys()
        .filter(|k| !fields.contains(&k.as_str()))
        .map(|k| match meant(k) {
            Some(m) => format!("`{k}` (did you mean `{m}`?)"),
            None => format!("`{k}`"),
        })
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid_request(format!(
        "unknown field{} {} in the report: its fields are {}",
        if unknown.len() == 1 { "" } else { "s" },
        unknown.join(", "),
        fields.map(|f| format!("`{f}`")).join(", ")
    )))
}

/// The report field a name not among them likely stands for: the same but for case, `_` and
/// `-`, or a usual other name of it (`result`, `error`, `message`, `log`, `details`).
fn meant(name: &str) -> Option<&'static str> {
    let norm: String = name
        .chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .collect::<String>()
        .to_lowercase();
    let fields = runyard_hooks::wire::StatusReport::FIELDS;
    if let Some(f) = fields.iter().find(|f| f.to_lowercase() == norm) {
        return Some(f);
    }
    match norm.as_str() {
        "result" | "output" | "outputs" => Some("results"),
        "error" | "errors" | "message" | "errormsg" | "reason" => Some("errorMessage"),
        "log" | "lines" => Some("logs"),
        "details" | "detail" | "statusdetail" => Some("statusDetails"),
        "state" => Some("status"),
        _ => None,
    }
}
