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
