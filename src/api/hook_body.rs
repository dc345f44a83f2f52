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
    st.app
        .verifier
        .precheck(&hh, st.app.store.time().await / 1000)?;
    let limit = st.app.config.api.request_timeout;
    let read = body_bytes(Request::from_parts(parts.clone(), body), &());
    let bytes = tokio::time::timeout(limit, read)
        .await
        .map_err(|_| super::gate::timed_out(limit))??;
    Ok((parts, bytes))
}

/// The fields of a `POST /async/status` body (a JSON object, parsed already) that the report does
/// not have (`StatusReport::FIELDS`), each named with the field meant when it is a near miss.
/// Ignored, `{"status":"SUCCESS","result":{...}}` would end the job without its result and
/// `{"status":"ERROR","error":"..."}` lose its reason: a v2-signed report with one is refused
/// ([`refuse_unknown`]); a v1 one (the webda client, which does not read the answer) is applied
/// as before with a note in the job's log ([`ignored_notes`]).
pub fn unknown_report_fields(bytes: &[u8]) -> ApiResult<Vec<Unknown>> {
    unknown_fields(bytes, &runyard_hooks::wire::StatusReport::FIELDS, meant)
}

/// The keys of the JSON object `bytes` not among `fields`, each as `` `k` `` or
/// `` `k` (did you mean `f`?) ``.
pub fn unknown_fields(
    bytes: &[u8],
    fields: &[&'static str],
    meant: fn(&str) -> Option<&'static str>,
) -> ApiResult<Vec<Unknown>> {
    use std::collections::BTreeMap;
    let keys: BTreeMap<String, serde::de::IgnoredAny> =
        serde_json::from_slice(bytes).map_err(ApiError::malformed_json)?;
    Ok(keys
        .keys()
        .filter(|k| !fields.contains(&k.as_str()))
        .map(|k| Unknown {
            name: short(k),
            meant: meant(k),
        })
        .collect())
}

/// A field a body does not have, and the one it likely stands for.
pub struct Unknown {
    /// Its name (at most 100 bytes of it).
    name: String,
    /// The field meant, for a near miss.
    meant: Option<&'static str>,
}

impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`", self.name)?;
        match self.meant {
            Some(m) => write!(f, " (did you mean `{m}`?)"),
            None => Ok(()),
        }
    }
}

/// A field name as a message or note shows it: its control characters escaped (a name is the
/// caller's text: no line break into the log, no look of runyard's own notes), a backtick as
/// \`, at most 100 bytes (cut at a character boundary).
fn short(k: &str) -> String {
    // A backtick in a name would end its quoting early: shown as \`.
    let k = crate::logging::visible(k);
    let k = if k.contains('`') {
        std::borrow::Cow::Owned(k.replace('`', "\\`"))
    } else {
        k
    };
    if k.len() <= 100 {
        return k.into_owned();
    }
    let mut end = 100;
    while !k.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &k[..end])
}

/// `422 invalid_request` naming the `unknown` fields of a `what` body (`report`, `upload
/// request`) and the fields it has; nothing when there are none.
pub fn refuse_unknown(unknown: &[Unknown], what: &str, fields: &[&str]) -> ApiResult<()> {
    if unknown.is_empty() {
        return Ok(());
    }
    // Named up to MAX_NOTES, as the v1 notes are: a body of 100,000 unknown fields does not
    // make an answer of as many names.
    let mut named = unknown
        .iter()
        .take(MAX_NOTES)
        .map(Unknown::to_string)
        .collect::<Vec<_>>();
    if unknown.len() > MAX_NOTES {
        named.push(format!("and {} more", unknown.len() - MAX_NOTES));
    }
    Err(ApiError::invalid_request(format!(
        "unknown field{} {} in the {what}: its fields are {}",
        if unknown.len() == 1 { "" } else { "s" },
        named.join(", "),
        fields
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// The fields of an upload request (`PUT /async/upload/...`, a JSON object) it does not have
/// (`UploadRequest::FIELDS`): refused with 422 naming them when the call is signed with v2 (a
/// `meta` for `metadata` would store the file without its metadata); signed with v1 (webda's
/// `upload_to()`), taken without them as before: the notes for the job's log are returned.
pub fn upload_field_notes(parts: &Parts, bytes: &[u8]) -> ApiResult<Vec<String>> {
    let fields = runyard_hooks::wire::UploadRequest::FIELDS;
    let unknown = unknown_fields(bytes, &fields, upload_meant)?;
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let hh = HookHeaders::from_headers(&parts.headers)?;
    if hh.version == runyard_hooks::SigVersion::V2 {
        refuse_unknown(&unknown, "upload request", &fields)?;
    }
    Ok(ignored_notes(&unknown, "upload request"))
}

/// Writes [`upload_field_notes`]' lines to the job's log, once the upload is taken (a refused
/// one leaves none). A note the store did not take does not fail an upload that worked.
pub async fn note_ignored(st: &AppState, job: Uuid, notes: Vec<String>) {
    if notes.is_empty() {
        return;
    }
    let ts = crate::job::now_us();
    let notes = notes
        .into_iter()
        .map(|l| (runyard_hooks::LogStream::Job, ts, l))
        .collect();
    if let Err(e) = st.app.store.append_logs(job, notes).await {
        tracing::debug!(job_id = %job, error = %e, "the note of ignored upload fields was not stored");
    }
}

/// The upload request field a name not among them likely stands for.
fn upload_meant(name: &str) -> Option<&'static str> {
    let norm = name.to_lowercase();
    let fields = runyard_hooks::wire::UploadRequest::FIELDS;
    if let Some(f) = fields.iter().find(|f| f.to_lowercase() == norm) {
        return Some(f);
    }
    match norm.as_str() {
        "meta" | "metas" | "metadatas" | "meta_data" | "map" => Some("metadata"),
        "md5" | "digest" | "checksum" => Some("hash"),
        _ => None,
    }
}

/// At most this many notes on ignored fields a request, then one that says how many more.
const MAX_NOTES: usize = 20;

/// The job's log lines (its `job` stream) that say which fields of a v1-signed `what` body were
/// ignored: `[runyard] report field `error` ignored (did you mean `errorMessage`?)`.
pub fn ignored_notes(unknown: &[Unknown], what: &str) -> Vec<String> {
    let mut notes: Vec<String> = unknown
        .iter()
        .take(MAX_NOTES)
        .map(|u| match u.meant {
            Some(m) => format!(
                "[runyard] {what} field `{}` ignored (did you mean `{m}`?)",
                u.name
            ),
            None => format!("[runyard] {what} field `{}` ignored", u.name),
        })
        .collect();
    if unknown.len() > MAX_NOTES {
        let n = unknown.len() - MAX_NOTES;
        notes.push(format!(
            "[runyard] {n} more unknown {what} field(s) ignored"
        ));
    }
    notes
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

#[cfg(test)]
mod tests {
    /// A field name shown in a note or a 422: control characters escaped (no line of its own in
    /// the job's log), cut at 100 bytes on a character boundary.
    #[test]
    fn a_field_name_is_shown_escaped_and_cut() {
        assert_eq!(super::short("meta"), "meta");
        assert_eq!(
            super::short("x\n[runyard] job cancelled"),
            "x\\n[runyard] job cancelled"
        );
        let long = "é".repeat(80);
        let shown = super::short(&long);
        assert!(shown.ends_with("...") && shown.len() <= 103, "{shown}");
        assert_eq!(super::short("a` or `b"), "a\\` or \\`b");
    }

    /// A v2 body with many unknown fields is refused naming the first 20 and how many more
    /// (probe s50 F9: 104,001 of them made an 866 KB answer).
    #[test]
    fn a_refusal_names_at_most_twenty_unknown_fields() {
        let body: serde_json::Map<String, serde_json::Value> = (0..1000)
            .map(|i| (format!("f{i:04}"), serde_json::Value::Null))
            .collect();
        let bytes = serde_json::to_vec(&body).expect("json");
        let fields = runyard_hooks::wire::StatusReport::FIELDS;
        let unknown = super::unknown_fields(&bytes, &fields, super::meant).expect("an object");
        assert_eq!(unknown.len(), 1000);
        let e = super::refuse_unknown(&unknown, "report", &fields).expect_err("refused");
        let text = format!("{e:?}");
        assert!(
            text.contains("`f0019`") && !text.contains("`f0020`"),
            "{text}"
        );
        assert!(text.contains("and 980 more"), "{text}");
        assert!(text.len() < 2000, "{} bytes", text.len());
    }
}
