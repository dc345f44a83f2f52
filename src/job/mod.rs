//! The job model: what is stored about a job, and the only code that changes it ([`transition`]).

mod error_text;
mod file_ref;
mod fire_time;
mod new;
pub mod notify_spec;
mod public;
pub mod select;
pub mod status;
pub mod transition;
pub mod wait;

#[cfg(test)]
mod proptests;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

pub use error_text::{cut_error, MAX_ERROR_BYTES, MAX_LOGGED_ERROR_BYTES};
pub use file_ref::{FileRef, MAX_FILES_PER_PROPERTY};
pub use fire_time::fire_time_text;
pub use new::{id_at, ID_AHEAD_MS};
pub use runyard_hooks::RunHandle;
pub use select::SelectError;
pub use status::JobStatus;
pub use transition::{
    apply, heartbeat, ApplyCtx, Beat, Command, EventKind, FinishOutcome, HookReport,
    TransitionError,
};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// The current time in microseconds since the epoch.
pub fn now_us() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The last instant RFC 3339 can show: 9999-12-31T23:59:59.999999Z.
pub const MAX_RFC3339_US: Micros = 253_402_300_799_999_999;

/// RFC 3339 with microseconds, or `None` when `us` is outside 1970..=9999 (RFC 3339 has four-digit
/// years; the formatter would fail on later ones).
pub fn try_rfc3339(us: Micros) -> Option<String> {
    if !(0..=MAX_RFC3339_US).contains(&us) {
        return None;
    }
    let t = std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::from_micros(u64::try_from(us).ok()?))?;
    Some(humantime::format_rfc3339_micros(t).to_string())
}

/// RFC 3339 with microseconds, for API output; total: a time outside 1970..=9999 is shown as the
/// nearest end of that range (see [`Job::to_public`] for how a job with such a time is flagged).
pub fn rfc3339(us: Micros) -> String {
    try_rfc3339(us.clamp(0, MAX_RFC3339_US)).unwrap_or_else(|| "1970-01-01T00:00:00.000000Z".into())
}

/// Characters that change how a name shows without showing themselves: the zero-width ones
/// (U+200B-U+200D, U+FEFF), the word joiner and the invisible operators (U+2060-U+2064), the
/// deprecated format controls (U+206A-U+206F), the soft hyphen (U+00AD), the combining
/// grapheme joiner (U+034F), the Hangul fillers (U+115F, U+1160, U+3164, U+FFA0), the Khmer
/// inherent vowels (U+17B4, U+17B5), the Mongolian vowel separator (U+180E), the braille blank
/// (U+2800), the interlinear annotation marks (U+FFF9-U+FFFB), the musical format controls
/// (U+1D173-U+1D17A), the language tag (U+E0001), and the bidirectional controls
/// ([`crate::logging::bidi`]: direction marks and overrides, `invoice\u{202E}fdp.exe` shows as
/// `invoiceexe.pdf`). Refused in file names and signal keys (a key of U+2060 alone showed as
/// nothing and was taken: probe s53b). The variation selectors (U+FE00-U+FE0F) and the tag
/// characters U+E0020-U+E007F are not: emoji need them (a presentation, a flag of England).
pub fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200D}'
            | '\u{FEFF}'
            | '\u{2060}'..='\u{2064}'
            | '\u{206A}'..='\u{206F}'
            | '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{3164}'
            | '\u{FFA0}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180E}'
            | '\u{2800}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
    ) || crate::logging::bidi(c)
}

/// A value someone sent, as a message echoes it: its control, invisible and bidirectional
/// characters ([`invisible`]) as escapes (`\u{200b}`, `\u{202e}`), and cut after `max`
/// characters (with its length in bytes). A refusal echoed them raw: "got `s\u{200b}x`" showed as
/// a valid-looking `sx`, and U+202E reversed the rest of the message (probe s54b F9).
pub fn echoed(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max.saturating_mul(4)) + 16);
    for (n, c) in s.chars().enumerate() {
        if n == max {
            out.push_str(&format!("... ({} bytes)", s.len()));
            break;
        }
        if c.is_control() || invisible(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The longest retry delay a backoff may ask for (30 days), in milliseconds.
pub const MAX_BACKOFF_MS: u64 = 30 * 24 * 3600 * 1000;

/// Retry backoff: `initial * multiplier^(attempt-1)`, capped at `max`, with "equal jitter"
/// (a random point in the upper half) when `jitter` is set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// Delay before the first retry, in milliseconds.
    pub initial_ms: u64,
    /// Upper bound of a delay, in milliseconds.
    pub max_ms: u64,
    /// Growth factor per attempt (>= 1).
    pub multiplier: f64,
    /// Randomise each delay within its upper half.
    pub jitter: bool,
}

/// A submit's `backoff`: any of the policy's fields; those left out are the runner's.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffPatch {
    /// Delay before the first retry, in milliseconds.
    pub initial_ms: Option<u64>,
    /// Upper bound of a delay, in milliseconds.
    pub max_ms: Option<u64>,
    /// Growth factor per attempt (>= 1).
    pub multiplier: Option<f64>,
    /// Randomise each delay within its upper half.
    pub jitter: Option<bool>,
}

impl BackoffPatch {
    /// `base` with the fields given here.
    pub fn over(self, base: Backoff) -> Backoff {
        Backoff {
            initial_ms: self.initial_ms.unwrap_or(base.initial_ms),
            max_ms: self.max_ms.unwrap_or(base.max_ms),
            multiplier: self.multiplier.unwrap_or(base.multiplier),
            jitter: self.jitter.unwrap_or(base.jitter),
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial_ms: 1000,
            max_ms: 300_000,
            multiplier: 2.0,
            jitter: true,
        }
    }
}

impl Backoff {
    /// The delay before the retry that follows attempt `attempt` (1-based), given a random
    /// `unit` in `[0, 1)`.
    pub fn delay_ms(&self, attempt: u32, unit: f64) -> u64 {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let raw = (self.initial_ms as f64) * self.multiplier.max(1.0).powi(exp);
        // Bounded even for a policy stored before the bounds were checked.
        let capped = raw.min(self.max_ms.min(MAX_BACKOFF_MS) as f64).max(0.0);
        let d = if self.jitter {
            capped / 2.0 + capped / 2.0 * unit.clamp(0.0, 1.0)
        } else {
            capped
        };
        d as u64
    }

    /// Checks the values, naming the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0 && self.multiplier <= 100.0) {
            return Err("backoff.multiplier must be between 1 and 100".into());
        }
        if self.max_ms > MAX_BACKOFF_MS {
            return Err(format!(
                "backoff.max_ms must be at most {MAX_BACKOFF_MS} (30 days), got {}",
                self.max_ms
            ));
        }
        if self.initial_ms > self.max_ms {
            return Err(format!(
                "backoff.initial_ms ({}) must not exceed backoff.max_ms ({})",
                self.initial_ms, self.max_ms
            ));
        }
        Ok(())
    }
}

/// The claim a worker holds on a running job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// The worker's id.
    pub worker: String,
    /// The fencing token: every write by the worker must carry it.
    pub token: u64,
    /// When the lease runs out unless renewed.
    pub expires_at: Micros,
}

/// One attempt's story, kept on the job (bounded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The attempt number.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: String,
    /// The fencing token of the claim.
    pub token: u64,
    /// When it was claimed.
    pub claimed_at: Micros,
    /// When the work started (launch returned).
    pub started_at: Option<Micros>,
    /// When the attempt ended.
    pub ended_at: Option<Micros>,
    /// How it ended: a status, or `LOST`/`RELEASED`.
    pub outcome: Option<String>,
    /// The outcome the job reported through its hook (SUCCESS or ERROR), kept until its process
    /// has ended: the worker commits it then (docs/hooks.md, "When a job ends"). Never
    /// [`Reported::Timeout`]: that is `time_limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<Reported>,
    /// Set (to the job's `error` then, e.g. `timed out after 1s`) when the worker found the
    /// attempt's time limit run out, before it stopped its work (`Command::TimeLimit`): the
    /// attempt ends TIMEOUT. A field of its own, not a [`Reported`], so that builds before it
    /// read the record (they ignore the field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit: Option<String>,
    /// The job's `error` when the attempt ended (kept once the next attempt starts clean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunRecord {
    /// The outcome decided for the attempt before its process ended: its time limit, or what
    /// the job reported.
    pub fn decided(&self) -> Option<Reported> {
        match &self.time_limit {
            Some(message) => Some(Reported::Timeout {
                message: message.clone(),
            }),
            None => self.reported.clone(),
        }
    }
}

/// An attempt's outcome decided before its process ended, not yet committed: reported by the job
/// through its hook, or its time limit ([`RunRecord::decided`]). Either way the job can no
/// longer report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reported {
    /// `status: SUCCESS`.
    Success,
    /// `status: ERROR`.
    Error {
        /// Its `errorMessage`.
        message: String,
        /// False when the report said `retry: false` (no further attempt).
        retry: bool,
    },
    /// Not the job's word: its time limit ran out and its process is being stopped (stored as
    /// [`RunRecord::time_limit`]). A report sent while it stops is refused, so what it says
    /// cannot replace the TIMEOUT.
    Timeout {
        /// The job's `error`, e.g. `timed out after 1s`.
        message: String,
    },
}

impl Reported {
    /// `SUCCESS`, `ERROR` or `TIMEOUT`.
    pub fn status(&self) -> JobStatus {
        match self {
            Reported::Success => JobStatus::Success,
            Reported::Error { .. } => JobStatus::Error,
            Reported::Timeout { .. } => JobStatus::Timeout,
        }
    }
}

/// How many run records a job keeps.
pub const MAX_RUN_RECORDS: usize = 50;

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// UUID v7: time-ordered.
    pub id: Uuid,
    /// Dotted type name.
    #[serde(rename = "type")]
    pub job_type: String,
    /// Arguments.
    pub args: Value,
    /// The name of the runner that runs it (chosen at submit).
    pub runner: String,
    /// Current status.
    pub status: JobStatus,
    /// The channel its events go to.
    pub channel_id: String,
    /// The submitting user, when known.
    pub user_id: Option<String>,
    /// Attempts claimed so far (the current or last attempt's number).
    pub attempt: u32,
    /// How many attempts it may use.
    pub max_attempts: u32,
    /// Delay policy between attempts.
    pub backoff: Backoff,
    /// Per-attempt time limit.
    pub timeout_ms: Option<u64>,
    /// When a SCHEDULED job becomes QUEUED; kept once it has, until a retry or backoff sets it.
    pub run_at: Option<Micros>,
    /// Client-chosen key making submit idempotent.
    pub idempotency_key: Option<String>,
    /// With an idempotency key: SHA-256 of the canonical submit (body and files), so that the key
    /// reused with another body is refused (409 `idempotency_conflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_hash: Option<String>,
    /// Progress 0..=1.
    pub progress: f64,
    /// Free-form details reported with progress.
    pub status_details: Option<Value>,
    /// The result of a successful run.
    pub result: Option<Value>,
    /// Last error message.
    pub error: Option<String>,
    /// Exit code of the last process or container.
    pub exit_code: Option<i32>,
    /// The claim while a worker holds it.
    pub lease: Option<Lease>,
    /// What identifies the running work (pid, container id, Kubernetes Job).
    pub handle: Option<RunHandle>,
    /// Files by property (`inputs`, `outputs`, ...).
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, Vec<FileRef>>,
    /// The story of each attempt.
    pub runs: Vec<RunRecord>,
    /// When it was accepted.
    pub created_at: Micros,
    /// Last change.
    pub updated_at: Micros,
    /// When it last became QUEUED (a job given back keeps the one it had: its place in queue).
    pub queued_at: Micros,
    /// When the current/last attempt started running.
    pub started_at: Option<Micros>,
    /// When it reached a terminal status.
    pub finished_at: Option<Micros>,
    /// When the last progress event was emitted (throttling).
    #[serde(default)]
    pub progress_event_at: Micros,
    /// A progress report was held back by the throttle and no progress event has carried it
    /// yet: its event is due then (`progress_event_at` + `progress_interval`), sent by
    /// [`Command::ProgressFlush`](crate::job::Command::ProgressFlush).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_due: Option<Micros>,
    /// Bumped on every write; optimistic concurrency for backends that need it.
    pub version: u64,
    /// The cron schedule whose fire submitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// That fire's time (µs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fire_time: Option<Micros>,
    /// Its schedule's creation time (µs): not the job of an earlier schedule of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_gen: Option<Micros>,
    /// Signal keys written when the job ends SUCCESS (in the same store transaction).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emits: Vec<String>,
    /// The webhook its events go to (signed webhooks out, [`crate::notify`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<notify_spec::NotifySpec>,
    /// Why the job waits (`wait_for`, `deadline`) and how it was released (see `crate::waiting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<wait::Wait>,
}

/// How long after its lease ran out a cancelled job's attempt still counts as being stopped when
/// no reaper has made sure its work is gone (µs; 5 minutes): see [`Job::still_stopping`].
pub const ABANDONED_STOP: Micros = 300_000_000;

impl Job {
    /// Cancelled while it ran, and the lease its worker kept is still there: neither has the
    /// worker said its work stopped (`Stopped`), nor has a reaper, once the lease ran out (the
    /// worker gone or hung), made sure the work is gone (`StopLost`). Its last attempt may
    /// still be running, so nothing that must not run beside it (a retry, a schedule's next
    /// fire under `forbid` or `buffer_one`) starts yet. Where no reaper comes (no worker left
    /// that serves the job's runner), [`ABANDONED_STOP`] after the lease ran out it is over.
    pub fn still_stopping(&self, now: Micros) -> bool {
        self.status == JobStatus::Cancelled
            && self
                .lease
                .as_ref()
                .is_some_and(|l| l.expires_at.saturating_add(ABANDONED_STOP) > now)
    }

    /// The outcome decided for the current attempt (reported through its hook, or its time
    /// limit: [`RunRecord::decided`]) and not committed yet (its process has not ended).
    pub fn reported(&self) -> Option<Reported> {
        self.runs
            .last()
            .filter(|r| r.attempt == self.attempt && r.ended_at.is_none())
            .and_then(RunRecord::decided)
    }

    /// The relative URL of the job's result.
    pub fn result_url(&self) -> String {
        format!("/async/jobs/{}/result", self.id)
    }
}

/// An event: a status change or a (throttled) progress report, in Superset's shape plus runyard's
/// own fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the stream; strictly increasing, compared as the backend defines.
    pub id: String,
    /// The channel it belongs to.
    pub channel_id: String,
    /// The job (empty for a `resync` event).
    pub job_id: String,
    /// The submitting user.
    pub user_id: Option<String>,
    /// `status`, `progress` or `resync`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Superset's word: pending, running, done, error.
    pub status: String,
    /// The runyard status.
    pub runyard_status: Option<JobStatus>,
    /// Progress 0..=1.
    pub progress: f64,
    /// Errors, Superset style: `[{"message", "error_type", "level"}]`.
    pub errors: Vec<Value>,
    /// Where the result is fetched.
    pub result_url: Option<String>,
    /// The attempt number.
    pub attempt: u32,
    /// When it happened (RFC 3339).
    pub ts: String,
}

impl Event {
    /// The event for `job` after a change of `kind`; the backend fills `id`.
    pub fn for_job(job: &Job, kind: EventKind) -> Self {
        let errors = match (&job.error, job.status) {
            (Some(e), s) if !matches!(s, JobStatus::Success | JobStatus::Running) => {
                vec![json!({"message": e, "error_type": "JOB_ERROR", "level": "error"})]
            }
            _ => vec![],
        };
        Event {
            id: String::new(),
            channel_id: job.channel_id.clone(),
            job_id: job.id.to_string(),
            user_id: job.user_id.clone(),
            kind: match kind {
                EventKind::Status => "status",
                EventKind::Progress => "progress",
            }
            .into(),
            status: job.status.superset().into(),
            runyard_status: Some(job.status),
            progress: job.progress,
            errors,
            result_url: Some(job.result_url()),
            attempt: job.attempt,
            ts: rfc3339(job.updated_at),
        }
    }

    /// The marker telling a client that events after its `last_id` were dropped by retention.
    pub fn resync(channel: &str) -> Self {
        Event {
            id: String::new(),
            channel_id: channel.into(),
            job_id: String::new(),
            user_id: None,
            kind: "resync".into(),
            status: String::new(),
            runyard_status: None,
            progress: 0.0,
            errors: vec![],
            result_url: None,
            attempt: 0,
            ts: rfc3339(now_us()),
        }
    }
}

/// What a channel name must be ([`valid_name`] with 256), as the refusals say it.
pub const CHANNEL_RULE: &str =
    "`channel` must be 1-256 characters of ASCII letters, digits, '.', '_', '-', ':'";

/// A name of 1-`max` ASCII letters, digits, `.`, `_`, `-`, `:` (job types, channels).
pub fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echoed_value_shows_what_hides_and_is_cut() {
        assert_eq!(
            echoed("s\u{200b}x\u{202e}y\n", 80),
            "s\\u{200b}x\\u{202e}y\\u{a}"
        );
        assert_eq!(echoed("abcd", 3), "abc... (4 bytes)");
        assert_eq!(echoed("abc", 3), "abc");
    }

    #[test]
    fn backoff_grows_caps_and_jitters_in_upper_half() {
        let b = Backoff {
            initial_ms: 100,
            max_ms: 1000,
            multiplier: 2.0,
            jitter: false,
        };
        assert_eq!(
            (1..=6).map(|a| b.delay_ms(a, 0.0)).collect::<Vec<_>>(),
            vec![100, 200, 400, 800, 1000, 1000]
        );
        let j = Backoff { jitter: true, ..b };
        assert_eq!(j.delay_ms(3, 0.0), 200);
        assert_eq!(j.delay_ms(3, 0.999_999), 399);
        assert!(Backoff {
            multiplier: 0.5,
            ..b
        }
        .validate()
        .is_err());
    }

    #[test]
    fn backoff_bounds_and_total_time_rendering() {
        let huge = Backoff {
            initial_ms: u64::MAX,
            max_ms: u64::MAX,
            multiplier: 100.0,
            jitter: false,
        };
        assert!(huge.validate().unwrap_err().contains("backoff.max_ms"));
        assert_eq!(huge.delay_ms(64, 0.0), MAX_BACKOFF_MS);
        let top = Backoff {
            initial_ms: MAX_BACKOFF_MS,
            max_ms: MAX_BACKOFF_MS,
            ..huge
        };
        assert!(top.validate().is_ok());
        for us in [
            i64::MIN,
            -1,
            0,
            MAX_RFC3339_US,
            MAX_RFC3339_US + 1,
            i64::MAX,
        ] {
            assert_eq!(
                rfc3339(us).len(),
                "1970-01-01T00:00:00.000000Z".len(),
                "{us}"
            );
        }
        assert_eq!(
            rfc3339(MAX_RFC3339_US),
            "9999-12-31T23:59:59.999999Z".to_string()
        );
        assert_eq!(try_rfc3339(i64::MAX), None);
        assert_eq!(try_rfc3339(-1), None);
    }
}
