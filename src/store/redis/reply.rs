//! The replies of `lua/commit.lua`, one per write.

use uuid::Uuid;

use crate::store::{Result, StoreError};

/// What became of one write of a `commit.lua` call.
#[derive(Debug, Clone)]
pub(super) enum Reply {
    Ok,
    Conflict,
    Gone,
    Exists,
    Idem(String),
    /// Not written: a key of the write is of the wrong type (commit.lua's `ERR:`); the other
    /// writes of the call went on.
    Failed(String),
}

/// A reply of `commit.lua` to one write (of job `id`).
pub(super) fn parse_reply(r: Option<&str>, id: Uuid) -> Result<Reply> {
    let r = r.ok_or_else(|| StoreError::Backend("commit: a reply missing".into()))?;
    Ok(if r.starts_with("OK:") || r.starts_with("OKH:") {
        Reply::Ok
    } else if let Some(other) = r.strip_prefix("IDEM:") {
        Reply::Idem(other.to_string())
    } else if let Some(e) = r.strip_prefix("ERR:") {
        Reply::Failed(format!("commit: {e}"))
    } else if let Some(e) = r.strip_prefix("PART:") {
        // The job and its index entries are written (it is stored, and goes on: a submit is
        // answered as stored), what the key of the wrong type was for is not.
        tracing::error!(job_id = %id, error = %e,
            "job written without what a key of the wrong type was for (its event, a signal, ...)");
        Reply::Ok
    } else {
        match r {
            "CONFLICT" => Reply::Conflict,
            "GONE" => Reply::Gone,
            "EXISTS" => Reply::Exists,
            other => return Err(StoreError::Backend(format!("commit: unexpected `{other}`"))),
        }
    })
}
