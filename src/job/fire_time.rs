//! How a schedule's fire time is written, in keys and in the API: a job made by a fire shows it
//! (`fire_time`), so the rendering belongs to the job model; [`crate::schedule`] re-exports it.

use chrono::{TimeZone, Utc};

use super::Micros;

/// The fire time as it appears in keys and the API (RFC 3339, UTC, fraction only when needed).
pub fn fire_time_text(us: Micros) -> String {
    Utc.timestamp_micros(us)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}
