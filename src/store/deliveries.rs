//! Webhook deliveries (see [`crate::notify`]): one record per (job event, webhook), written by the
//! store in the same commit as the event, so none is lost across a crash; claimed by one process
//! at a time (a claim is a hold on the record until a time, with a token), attempted, and
//! recorded. A process that dies holding a claim loses it when the hold runs out.
//!
//! The claim is the attempt's write-ahead record: it stores the attempt started ([`Attempt::started`]:
//! when, by which node), committed before the request goes out, in the same write that takes the
//! hold. The record of its answer replaces it. A claim whose answer was never recorded (its
//! sender was killed, paused past its hold, or restarted) becomes an attempt of outcome
//! [`AttemptOutcome::Unknown`] in the log when the delivery is claimed again (or, embedded, at the
//! next open): the receiver may have got it, and accepted it.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::Result;
use crate::job::{rfc3339, Event, Micros};

/// Attempts kept per delivery (the count goes on; the oldest records are dropped).
pub const MAX_ATTEMPT_RECORDS: usize = 50;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt (or being attempted).
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: at the end of the horizon, or when the receiver answered `410 Gone`.
    GivenUp,
}

impl DeliveryState {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::GivenUp => "given_up",
        }
    }

    /// Parses the stored word (unknown words read as pending).
    pub fn parse(s: &str) -> Self {
        match s {
            "delivered" => Self::Delivered,
            "given_up" => Self::GivenUp,
            _ => Self::Pending,
        }
    }
}

/// What became of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The receiver answered 2xx.
    Accepted,
    /// Not accepted: another status, no answer, a refused address.
    Failed,
    /// Being made: its sender's claim still holds (only ever the last attempt shown).
    InFlight,
    /// Its answer was never recorded: the sender was lost (killed, paused past its claim's hold,
    /// restarted) after the request may have gone out. The receiver may have got it, and
    /// accepted it.
    Unknown,
}

/// The `error` of an attempt of outcome [`AttemptOutcome::Unknown`].
pub const UNKNOWN_ERROR: &str = "unknown: the sender was lost before it recorded an answer";

/// One attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it started (µs).
    pub at: Micros,
    /// The node that made it ([`this_node`]); none on attempts recorded before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// What became of it; none on attempts recorded before it was kept ([`Attempt::outcome`]
    /// tells it from the status then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AttemptOutcome>,
    /// The receiver's HTTP status, when it answered.
    #[serde(default)]
    pub status: Option<u16>,
    /// What went wrong (no answer, refused address, non-2xx), none when delivered.
    #[serde(default)]
    pub error: Option<String>,
    /// How long it took, in milliseconds; none when not known (in flight, unknown). Stored as
    /// a number all the same (0 then): a build before the write-ahead attempt reads it as one,
    /// so a rolling upgrade or a rollback never meets a record it cannot read.
    #[serde(default, serialize_with = "stored_duration")]
    pub duration_ms: Option<u64>,
}

fn stored_duration<S: serde::Serializer>(d: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.unwrap_or(0))
}

impl Attempt {
    /// The write-ahead record of an attempt `by` starts at `at` (stored by the claim, before the
    /// request goes out): what the log shows should its answer never be recorded.
    pub fn started(at: Micros, by: &str) -> Self {
        Self {
            at,
            by: Some(by.to_string()),
            outcome: Some(AttemptOutcome::Unknown),
            status: None,
            error: Some(UNKNOWN_ERROR.to_string()),
            duration_ms: None,
        }
    }

    /// What became of it (an attempt stored without an outcome: accepted when it got a 2xx).
    pub fn outcome(&self) -> AttemptOutcome {
        self.outcome.unwrap_or(match self.status {
            Some(s) if (200..300).contains(&s) && self.error.is_none() => AttemptOutcome::Accepted,
            _ => AttemptOutcome::Failed,
        })
    }

    /// The write-ahead record of a claim, as a listing shows it at `now`: in flight while the
    /// claim's hold (ending at `hold_until`) lasts, else unknown.
    pub fn as_claimed_at(mut self, hold_until: Option<Micros>, now: Micros) -> Self {
        if hold_until.is_some_and(|end| end > now) {
            self.outcome = Some(AttemptOutcome::InFlight);
            self.error = None;
        } else {
            self.outcome = Some(AttemptOutcome::Unknown);
            self.error = Some(UNKNOWN_ERROR.to_string());
        }
        self
    }
}

/// This process, as the attempts it makes name it: `<host>-<pid>` (the host from `HOSTNAME`,
/// else the kernel's host name, else `local`).
pub fn this_node() -> &'static str {
    static NODE: LazyLock<String> = LazyLock::new(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "local".into());
        format!("{host}-{}", std::process::id())
    });
    &NODE
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Its id (increasing).
    pub id: u64,
    /// The job.
    pub job_id: Uuid,
    /// The receiver.
    pub url: String,
    /// The event's id in the streams.
    pub event_id: String,
    /// The event as stored (its `id` empty: see [`Delivery::body`]): its JSON, or on Redis with
    /// `store.records = "compact"` the compact form (`store/event_record.rs`).
    pub event: String,
    /// When the event happened (µs): the horizon counts from it.
    pub created_at: Micros,
    /// Where it stands.
    pub state: DeliveryState,
    /// When the next attempt is due (pending deliveries).
    pub next_at: Option<Micros>,
    /// Attempts made. In a listing, the claimed one too (the last of `log`); in a [`Claimed`],
    /// those before the claim's.
    pub attempts: u32,
    /// The last [`MAX_ATTEMPT_RECORDS`] attempts, oldest first; in a listing, a claimed
    /// delivery's last one is its claim's ([`AttemptOutcome::InFlight`] while the hold lasts,
    /// else [`AttemptOutcome::Unknown`]).
    pub log: Vec<Attempt>,
}

impl Delivery {
    /// The event, either form as stored.
    fn parsed(&self) -> Option<Event> {
        crate::store::event_record::read_inline(&self.event).ok()
    }

    /// The job's attempt the event is of, when the event can be read.
    pub fn event_attempt(&self) -> Option<u32> {
        self.parsed().map(|e| e.attempt)
    }

    /// The body POSTed: the event JSON with its id, whichever form it is stored in.
    pub fn body(&self) -> String {
        match self.parsed().ok_or(()) {
            Ok(mut ev) => {
                ev.id = self.event_id.clone();
                serde_json::to_string(&ev).unwrap_or_else(|_| self.event.clone())
            }
            Err(_) => self.event.clone(),
        }
    }

    /// As the API shows it.
    pub fn to_public(&self) -> Value {
        let ev = self.parsed();
        json!({
            "id": self.id,
            "url": self.url,
            "event_id": self.event_id,
            "event_type": ev.as_ref().map(|e| e.kind.clone()),
            "event_status": ev.as_ref().and_then(|e| e.runyard_status),
            "state": self.state,
            "created_at": rfc3339(self.created_at),
            "next_attempt_at": self.next_at.filter(|_| self.state == DeliveryState::Pending).map(rfc3339),
            "attempt_count": self.attempts,
            "attempts": self.log.iter().map(|a| json!({
                "at": rfc3339(a.at),
                "by": a.by,
                "outcome": a.outcome(),
                "status": a.status,
                "error": a.error,
                "duration_ms": a.duration_ms.filter(|_| !matches!(
                    a.outcome(),
                    AttemptOutcome::InFlight | AttemptOutcome::Unknown
                )),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Where a page of a job's deliveries starts, and its order (`GET /async/jobs/{id}/deliveries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryPage {
    /// Oldest first: the deliveries whose id is above this one (0: from the first).
    After(u64),
    /// Newest first: the deliveries whose id is below this one (`None`: from the newest).
    Before(Option<u64>),
}

/// A delivery held by this process.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The delivery.
    pub delivery: Delivery,
    /// The claim's token: only a record with it is accepted.
    pub token: u64,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Accepted (2xx).
    Delivered,
    /// Failed: retry after `retry_in`, unless that passes `horizon` after the event.
    Failed {
        /// The backoff delay (or the receiver's `Retry-After`, when longer).
        retry_in: Duration,
        /// `notify.horizon`.
        horizon: Duration,
    },
    /// Failed for good (the receiver answered `410 Gone`): given up now.
    Gone,
}

/// Adds `attempt` to a delivery's `log`, keeping the last [`MAX_ATTEMPT_RECORDS`].
pub fn push_log(log: &mut Vec<Attempt>, attempt: Attempt) {
    log.push(attempt);
    if log.len() > MAX_ATTEMPT_RECORDS {
        log.drain(..log.len() - MAX_ATTEMPT_RECORDS);
    }
}

/// The attempt as recorded, given the state it leaves its delivery in: one that gives the
/// delivery up at its horizon says so in its `error`, as a `410`'s does (`answer::describe` in
/// `crate::notify`). Before, only the state told: a `Retry-After` past the horizon read `the
/// receiver answered 429 (Retry-After: 7200 s)` (probe s53c F6). The stores call it with the
/// state they [`plan`] at the time of the record.
pub fn as_recorded(mut attempt: Attempt, outcome: Outcome, state: DeliveryState) -> Attempt {
    if state == DeliveryState::GivenUp && matches!(outcome, Outcome::Failed { .. }) {
        if let Some(e) = attempt.error.as_mut() {
            e.push_str(": given up, its next attempt would be past the horizon");
        }
    }
    attempt
}

/// The state and next due time after an attempt that ended `outcome` at `now`.
pub fn plan(created_at: Micros, now: Micros, outcome: Outcome) -> (DeliveryState, Option<Micros>) {
    match outcome {
        Outcome::Delivered => (DeliveryState::Delivered, None),
        Outcome::Gone => (DeliveryState::GivenUp, None),
        Outcome::Failed { retry_in, horizon } => {
            // A `Retry-After` may be any size: saturated, never wrapped.
            let us = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
            let due = now.saturating_add(us(retry_in));
            if due > created_at.saturating_add(us(horizon)) {
                (DeliveryState::GivenUp, None)
            } else {
                (DeliveryState::Pending, Some(due))
            }
        }
    }
}

/// A fresh claim token.
pub fn new_token() -> u64 {
    // Positive in an i64 (SQLite's integer).
    rand::random::<u64>() >> 1
}

/// The receiver a delivery goes to, as claims tell receivers apart: its URL up to the query.
/// Stored URLs are normalized at submit ([`crate::notify::parse_url`]: lowercase scheme and host,
/// no default port, no fragment), so this is the endpoint a key is derived for
/// ([`crate::notify::endpoint_of`]). The stores compute the same text (SQL in
/// `sqlite/deliveries.rs`, Lua in `redis/lua/dlv_claim.lua`).
pub fn endpoint_part(url: &str) -> &str {
    url.split_once('?').map_or(url, |(head, _)| head)
}

/// What a claim may take beyond `max`: at most `per_endpoint` attempts in flight per endpoint
/// ([`endpoint_part`]) in this process, `busy` counting those already in flight. A delivery of an
/// endpoint at its cap is passed over and stays due (a later one of another endpoint is claimed
/// instead), so one slow receiver cannot take every slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimLimits {
    /// The most attempts in flight per endpoint.
    pub per_endpoint: usize,
    /// Attempts in flight per endpoint.
    pub busy: HashMap<String, usize>,
}

impl ClaimLimits {
    /// No cap per endpoint.
    pub fn unlimited() -> Self {
        Self {
            per_endpoint: usize::MAX,
            busy: HashMap::new(),
        }
    }

    /// The endpoints at their cap, sorted.
    pub fn full(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .busy
            .iter()
            .filter(|(_, n)| **n >= self.per_endpoint)
            .map(|(e, _)| e.as_str())
            .collect();
        out.sort_unstable();
        out
    }

    /// Counts one more attempt at `url`'s endpoint when it is below its cap; `false` (nothing
    /// counted) when it is at its cap.
    pub fn take(&mut self, url: &str) -> bool {
        let n = self.busy.entry(endpoint_part(url).to_string()).or_default();
        if *n >= self.per_endpoint {
            return false;
        }
        *n += 1;
        true
    }
}

/// Deliveries: claim due ones, record attempts, list a job's, trim old ones.
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Claims up to `max` pending deliveries due now, oldest due first, each held for `hold`,
    /// passing over those of endpoints at their cap in `limits` (they stay due), however many:
    /// the embedded store in an indexed scan, Redis walking endpoints rather than deliveries
    /// (`redis/lua/dlv_claim.lua`). The same write stores each claim's attempt started
    /// ([`Attempt::started`] at the store's time, by [`this_node`]); a delivery whose last claim's
    /// answer was never recorded gets that attempt in its log first, as unknown (counted).
    async fn deliveries_claim(
        &self,
        max: usize,
        hold: Duration,
        limits: ClaimLimits,
    ) -> Result<Vec<Claimed>>;
    /// Records an attempt of a claimed delivery and its outcome ([`plan`], at the store's time),
    /// in place of the claim's attempt started. `None` (nothing written) when the claim was lost
    /// (its hold ran out and another process took it); else the new state.
    async fn delivery_record(
        &self,
        claimed: &Claimed,
        attempt: Attempt,
        outcome: Outcome,
    ) -> Result<Option<DeliveryState>>;
    /// A page of a job's deliveries, at most `limit`, from and in the order `page` says.
    async fn deliveries_page(
        &self,
        job: Uuid,
        page: DeliveryPage,
        limit: usize,
    ) -> Result<Vec<Delivery>>;
    /// A job's first deliveries, oldest first, at most `limit`.
    async fn deliveries(&self, job: Uuid, limit: usize) -> Result<Vec<Delivery>> {
        self.deliveries_page(job, DeliveryPage::After(0), limit)
            .await
    }
    /// When the next pending delivery is due (claims included: a claim is due when its hold ends).
    async fn deliveries_next_due(&self) -> Result<Option<Micros>>;
    /// Pending deliveries (due, being attempted, or waiting for a retry).
    async fn deliveries_pending(&self) -> Result<u64>;
    /// Deletes delivered and given-up deliveries that ended before `before`; returns how many.
    async fn deliveries_trim(&self, before: Micros) -> Result<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attempt as the build before the write-ahead attempt stored and read it.
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct EarlierAttempt {
        at: Micros,
        #[serde(default)]
        status: Option<u16>,
        #[serde(default)]
        error: Option<String>,
        duration_ms: u64,
    }

    /// A rolling upgrade or a rollback: an attempt whose answer is not known is stored in a
    /// form the earlier build reads (a number of milliseconds), and shown without one.
    #[test]
    fn an_unknown_attempt_is_stored_as_the_earlier_build_reads_it() {
        let a = Attempt::started(1_700_000_000_000_000, "host-1");
        let stored = serde_json::to_string(&a).unwrap();
        let earlier: EarlierAttempt = serde_json::from_str(&stored).expect(&stored);
        assert_eq!(earlier.duration_ms, 0);
        let back: Attempt = serde_json::from_str(&stored).unwrap();
        assert_eq!(back.outcome(), AttemptOutcome::Unknown);
        let d = Delivery {
            id: 1,
            job_id: Uuid::nil(),
            url: "https://example.com/hook".into(),
            event_id: "1-0".into(),
            event: String::new(),
            created_at: 0,
            state: DeliveryState::Pending,
            next_at: None,
            attempts: 1,
            log: vec![back],
        };
        assert_eq!(d.to_public()["attempts"][0]["duration_ms"], Value::Null);
    }

    #[test]
    fn a_gone_receiver_or_a_delay_past_the_horizon_ends_the_delivery() {
        let hour = Duration::from_secs(3600);
        let (t0, now) = (1_000_000_000, 1_000_000_000 + 60_000_000);
        let failed = |retry_in| Outcome::Failed {
            retry_in,
            horizon: hour,
        };
        assert_eq!(
            plan(t0, now, failed(Duration::from_secs(30))),
            (DeliveryState::Pending, Some(now + 30_000_000))
        );
        assert_eq!(plan(t0, now, Outcome::Gone), (DeliveryState::GivenUp, None));
        // Any `Retry-After`, however large, saturates rather than wrapping to a past time.
        for d in [2 * hour, Duration::from_secs(u64::MAX), Duration::MAX] {
            assert_eq!(
                plan(t0, now, failed(d)),
                (DeliveryState::GivenUp, None),
                "{d:?}"
            );
        }
    }
}
