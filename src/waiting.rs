//! Waiting jobs: a job submitted with `wait_for` is `WAITING` until every item has its count of
//! readiness signals (then `QUEUED`), or until its `deadline` (then it runs, fails with
//! `deadline_missed`, or is cancelled as `skipped`).
//!
//! The release is decided by the store, never by memory:
//! - embedded store: a signal write looks up the jobs waiting on its key (`wait_keys`) and
//!   releases the ones whose conditions are met, in the signal's own transaction;
//! - Redis: a signal write marks the jobs waiting on its key (`P:wait:{key}`) in `P:wait:due`,
//!   in the signal's script, and publishes a notice; every node's [`wait_loop`] checks the marked
//!   jobs and releases them with the job's compare-and-set, so a crash between the two only
//!   delays the check until a node runs again.
//!
//! Deadlines: one index ordered by time per store, and one timer per process ([`wait_loop`])
//! sleeping until the earliest, woken when a job starts waiting; the deadline is applied through
//! the job's status machine (a compare-and-set on Redis), so it fires exactly once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::job::{Job, JobStatus, Micros, MAX_RFC3339_US};
use crate::store::log_quiet::warn_unless_refused;
use crate::store::{Notice, Store};

pub use crate::job::wait::{
    all_met, OnDeadline, ReleasedBy, Seen, Wait, WaitItem, DEADLINE_MISSED, SKIPPED,
};
pub use crate::store::waits::{counters, seen_now, WaitCounters, WaitCounts};

/// The most records one item may wait for.
pub const MAX_COUNT: u32 = 10_000;
/// The most items of one `wait_for`.
pub const MAX_ITEMS: usize = 100;
/// Fills a WAITING job's `seen` and `signal_ids` with what the store holds now (for display).
pub async fn fill_seen(store: &dyn Store, job: &mut Job) -> crate::store::Result<()> {
    if let Some(w) = job.wait.as_mut() {
        let seen = seen_now(store, &w.items, w.until()).await?;
        for (item, (n, ids)) in w.items.iter_mut().zip(seen) {
            item.seen = n;
            item.signal_ids = ids;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Input

/// The waiting fields of a submit body (or of a schedule's job template), unresolved.
#[derive(Debug, Clone, Default)]
pub struct WaitRequest {
    items: Vec<(String, u32, Option<String>)>,
    deadline: Option<String>,
    on_deadline: Option<OnDeadline>,
}

fn text<'a>(v: &'a Value, field: &str) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("`{field}` must be a string (RFC 3339, \"+4h\" or \"HH:MM\")"))
}

impl WaitRequest {
    /// Holds the keys of a new wait (a submit, a schedule's new template) to the rule of a key
    /// to write ([`crate::store::signals::check_key`]: no invisible characters, no white space
    /// at either end), and refuses a key named twice with the same `since` (one record would
    /// meet both items: two records are `count: 2`). The same key with another `since` is two
    /// conditions (1 record since 18:00 and 5 in the last week): taken.
    pub fn check_new_keys(&self) -> Result<(), String> {
        for (n, (key, _, since)) in self.items.iter().enumerate() {
            crate::store::signals::check_key(key)
                .map_err(|e| format!("`wait_for[{n}].key`: {e}"))?;
            let twin = self.items[..n]
                .iter()
                .position(|(k, _, s)| k == key && s == since);
            if let Some(first) = twin {
                return Err(format!(
                    "`wait_for[{n}].key`: {key:?} is already `wait_for[{first}]` with the same \
                     `since`: name it once (for several records of it, give its `count`)"
                ));
            }
        }
        Ok(())
    }

    /// Reads `wait_for`, `deadline` and `on_deadline`; `None` when none is given.
    pub fn from_fields(
        wait_for: Option<&Value>,
        deadline: Option<&Value>,
        on_deadline: Option<&Value>,
    ) -> Result<Option<Self>, String> {
        let wait_for = wait_for.filter(|v| !v.is_null());
        let deadline = deadline.filter(|v| !v.is_null());
        let on_deadline = on_deadline.filter(|v| !v.is_null());
        let Some(wf) = wait_for else {
            if deadline.is_some() || on_deadline.is_some() {
                return Err(
                    "`deadline` and `on_deadline` need `wait_for` (the signals to wait for)".into(),
                );
            }
            return Ok(None);
        };
        let Value::Array(list) = wf else {
            return Err("`wait_for` must be a list of {key, count, since}".into());
        };
        if list.is_empty() || list.len() > MAX_ITEMS {
            return Err(format!("`wait_for` must have 1 to {MAX_ITEMS} items"));
        }
        let mut items = Vec::with_capacity(list.len());
        for (n, it) in list.iter().enumerate() {
            let Value::Object(m) = it else {
                return Err(format!(
                    "`wait_for[{n}]` must be an object {{key, count, since}}"
                ));
            };
            if let Some(k) = m
                .keys()
                .find(|k| !["key", "count", "since"].contains(&k.as_str()))
            {
                return Err(format!(
                    "`wait_for[{n}]`: unknown field `{k}` (expected key, count, since)"
                ));
            }
            let key = m
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("`wait_for[{n}].key` must be a string"))?;
            // The rule of a key to read: a schedule's stored template with a key an older build
            // took keeps waiting for it (`check_new_keys` holds new ones to the write rule).
            crate::store::signals::check_key_read(key)
                .map_err(|e| format!("`wait_for[{n}].key`: {e}"))?;
            let count = match m.get("count") {
                None | Some(Value::Null) => 1,
                Some(v) => v
                    .as_u64()
                    .filter(|c| (1..=MAX_COUNT as u64).contains(c))
                    .ok_or_else(|| {
                        format!("`wait_for[{n}].count` must be a whole number from 1 to {MAX_COUNT}, got {v}")
                    })? as u32,
            };
            let since = match m.get("since") {
                None | Some(Value::Null) => None,
                Some(v) => Some(text(v, &format!("wait_for[{n}].since"))?.to_string()),
            };
            items.push((key.to_string(), count, since));
        }
        let deadline = deadline.map(|v| text(v, "deadline")).transpose()?;
        let on_deadline = match on_deadline {
            None => None,
            Some(v) => Some(match v.as_str() {
                Some("run") => OnDeadline::Run,
                Some("fail") => OnDeadline::Fail,
                Some("skip") => OnDeadline::Skip,
                _ => {
                    return Err(format!(
                        "`on_deadline` must be \"run\", \"fail\" or \"skip\", got {v}"
                    ))
                }
            }),
        };
        if on_deadline.is_some() && deadline.is_none() {
            return Err("`on_deadline` needs a `deadline`".into());
        }
        Ok(Some(Self {
            items,
            deadline: deadline.map(str::to_string),
            on_deadline,
        }))
    }

    /// Resolves the times against `base` (the submit or fire time) in time zone `tz`. A deadline
    /// at or before `now` is refused when `refuse_past` (a submit; a late schedule fire keeps it,
    /// and its deadline applies at once). `strict` for a request being checked (a submit, a
    /// schedule's `POST` or `PUT`): an `HH:MM` must have two digits each. A fire resolves its
    /// schedule's stored template leniently: one stored before that rule fires as it did.
    pub fn resolve(
        &self,
        base: Micros,
        tz: &str,
        now: Micros,
        refuse_past: bool,
        strict: bool,
    ) -> Result<Wait, String> {
        let tz: chrono_tz::Tz = tz
            .parse()
            .map_err(|_| format!("unknown time zone `{tz}`"))?;
        let mut items = Vec::with_capacity(self.items.len());
        for (n, (key, count, since)) in self.items.iter().enumerate() {
            let since = since
                .as_deref()
                .map(|s| {
                    resolve_time(s, base, tz, Dir::Before, strict)
                        .map_err(|e| format!("`wait_for[{n}].since`: {e}"))
                })
                .transpose()?;
            items.push(WaitItem {
                key: key.clone(),
                needed: *count,
                since,
                seen: 0,
                signal_ids: vec![],
            });
        }
        let deadline = self
            .deadline
            .as_deref()
            .map(|s| {
                resolve_time(s, base, tz, Dir::After, strict)
                    .map_err(|e| format!("`deadline`: {e}"))
            })
            .transpose()?;
        if let Some(d) = deadline {
            if refuse_past && d <= now {
                return Err(format!(
                    "`deadline`: {} is in the past",
                    crate::job::rfc3339(d)
                ));
            }
            // Only records written from `since` on count, and only until the deadline: one that
            // starts at or after it could never be met, the deadline's outcome certain. Refused
            // at a submit; a schedule's fire keeps it, and its deadline applies as it comes (as a
            // past deadline does).
            for (n, item) in items.iter().enumerate().filter(|_| refuse_past) {
                if let Some(since) = item.since.filter(|s| *s >= d) {
                    return Err(format!(
                        "`wait_for[{n}].since` ({}) is not before `deadline` ({}): no record \
                         could count in time",
                        crate::job::rfc3339(since),
                        crate::job::rfc3339(d)
                    ));
                }
            }
        }
        Ok(Wait {
            items,
            deadline,
            on_deadline: self.on_deadline.unwrap_or_default(),
            released_by: None,
            released_at: None,
        })
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    /// The last such local time at or before the base (`since`).
    Before,
    /// The next such local time after the base (`deadline`).
    After,
}

fn to_us(t: DateTime<Utc>) -> Micros {
    t.timestamp_micros()
}

/// The instant right after the gap a spring-forward leaves in `tz`'s local times, for a local
/// time `naive` inside it: the first whole minute after it that exists (transitions fall on whole
/// minutes), as the schedule's fires do (`schedule::cron`). Looks up to two days on (a zone that
/// skipped a whole day, as Samoa at the end of 2011).
fn after_gap(tz: chrono_tz::Tz, naive: chrono::NaiveDateTime) -> Option<DateTime<chrono_tz::Tz>> {
    (1..=2 * 24 * 60).find_map(|m| {
        match tz.from_local_datetime(&(naive + chrono::Duration::minutes(m))) {
            chrono::LocalResult::Single(x) => Some(x),
            chrono::LocalResult::Ambiguous(a, _) => Some(a),
            chrono::LocalResult::None => None,
        }
    })
}

/// One of: RFC 3339; `+DURATION` / `-DURATION` (from `base`; `-` only for `since`); `HH:MM`
/// local time in `tz` (the last one at or before `base` for `since`, the next one after it for
/// `deadline`).
fn resolve_time(
    s: &str,
    base: Micros,
    tz: chrono_tz::Tz,
    dir: Dir,
    strict: bool,
) -> Result<Micros, String> {
    let s = s.trim();
    let form = "expected RFC 3339, \"+4h\" or \"HH:MM\"";
    if let Some(rest) = s.strip_prefix('+').or_else(|| s.strip_prefix('-')) {
        let neg = s.starts_with('-');
        if neg && dir == Dir::After {
            return Err(format!(
                "`{s}`: a deadline is after the submit or fire time (\"+4h\")"
            ));
        }
        let d = humantime::parse_duration(rest.trim())
            .map_err(|e| format!("`{s}` is not a duration: {e}"))?;
        if d > Duration::from_secs(366 * 24 * 3600) {
            return Err(format!("`{s}`: at most 366 days"));
        }
        let us = d.as_micros() as i64;
        let t = if neg { base - us } else { base + us };
        return Ok(t.clamp(0, MAX_RFC3339_US));
    }
    // `HH:MM` with two digits each: chrono's `%H:%M` also takes `9:5`, which reads as a typo
    // of 09:05, 09:50 or 19:05; refused with the form asked for.
    let two_digits = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
    if let Some((h, m)) = s.split_once(':').filter(|(h, m)| {
        strict
            && (1..=2).contains(&h.len())
            && (1..=2).contains(&m.len())
            && !(two_digits(h) && two_digits(m))
            && (h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit())
    }) {
        return Err(format!(
            "`{s}`: write a time of day as HH:MM, two digits each (\"{h:0>2}:{m:0>2}\")"
        ));
    }
    if let Ok(t) = NaiveTime::parse_from_str(s, "%H:%M") {
        let base_utc = DateTime::<Utc>::from_timestamp_micros(base)
            .ok_or_else(|| format!("`{s}`: the base time is out of range"))?;
        let local_date = base_utc.with_timezone(&tz).date_naive();
        // Candidates on the days around the base's local date; the gap of a spring-forward
        // moves a time that does not exist to right after the gap.
        let mut best: Option<Micros> = None;
        for off in -2i64..=2 {
            let Some(day) = local_date.checked_add_signed(chrono::Duration::days(off)) else {
                continue;
            };
            let naive = day.and_time(t);
            let at = match tz.from_local_datetime(&naive) {
                chrono::LocalResult::Single(x) => x,
                chrono::LocalResult::Ambiguous(a, _) => a,
                chrono::LocalResult::None => match after_gap(tz, naive) {
                    Some(x) => x,
                    None => continue,
                },
            };
            let us = to_us(at.with_timezone(&Utc));
            let ok = match dir {
                Dir::Before => us <= base,
                Dir::After => us > base,
            };
            if ok {
                best = Some(match (best, dir) {
                    (None, _) => us,
                    (Some(b), Dir::Before) => b.max(us),
                    (Some(b), Dir::After) => b.min(us),
                });
            }
        }
        return best.ok_or_else(|| format!("`{s}`: no such local time near the base"));
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("`{s}` is not a time ({form})"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1000)
        .ok()
        .filter(|us| (0..=MAX_RFC3339_US).contains(us))
        .ok_or_else(|| format!("`{s}` is outside 1970..9999"))
}

/// The wait of a schedule's fire: the template's fields resolved against the fire time in the
/// schedule's time zone. `None` when the template does not wait (or, never expected since the
/// template was checked at creation, cannot be read: logged).
pub fn for_fire(template: &Value, fire_time: Micros, tz: &str, now: Micros) -> Option<Wait> {
    let req = WaitRequest::from_fields(
        template.get("wait_for"),
        template.get("deadline"),
        template.get("on_deadline"),
    );
    match req.and_then(|r| {
        r.map(|r| r.resolve(fire_time, tz, now, false, false))
            .transpose()
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "a schedule's waiting template cannot be resolved; the job does not wait");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Counters

// ---------------------------------------------------------------------------------------------
// The loop

/// Longest sleep of the deadline timer without a wake-up (one indexed read; a safety net for a
/// wake-up lost between processes).
const IDLE_RECHECK: Duration = Duration::from_secs(30);
/// Shortest sleep after a round that fired nothing (a deadline judged by another clock).
const MIN_SLEEP: Duration = Duration::from_millis(5);
/// Jobs handled per round.
const BATCH: usize = 1000;

/// The per-process waiting loop: checks jobs marked by signal writes (Redis) and applies due
/// deadlines, sleeping until the earliest deadline or a notice that a job started waiting.
pub async fn wait_loop(store: Arc<dyn Store>, stop: CancellationToken) {
    // No sweep of every waiting job at start: nothing a restart can lose needs one. The embedded
    // store releases in the signal's transaction; on Redis the marks a signal wrote stay in
    // `P:waitdue` until a node has checked them (the first round below), and overdue deadlines
    // are in the deadline index.
    let mut rx = store.subscribe_to(|n| {
        matches!(
            n,
            Notice::Changed {
                status: JobStatus::Waiting,
                ..
            }
        )
    });
    let mut stuck: Option<(Micros, Duration)> = None;
    loop {
        let mut busy = false;
        match store.wait_check_marked(BATCH).await {
            Ok(n) => busy |= n >= BATCH,
            Err(e) => warn_unless_refused!(e, "cannot check waiting jobs"),
        }
        match store.wait_fire_deadlines(BATCH).await {
            Ok(jobs) => busy |= jobs.len() >= BATCH,
            Err(e) => warn_unless_refused!(e, "cannot apply waiting jobs' deadlines"),
        }
        if busy {
            continue;
        }
        let mut first = true;
        'sleep: loop {
            let next = store.wait_next_deadline().await;
            // A deadline is the store's time: waited for by its clock (a node whose wall clock
            // is behind would otherwise sleep up to `IDLE_RECHECK` past it).
            let now = store.time().await;
            let wait = match next {
                // The first deadline still past after a round: a job whose record this build
                // cannot read (passed over by the round, logged by the store), or one that
                // fell due as the round ended. Asked again after a wait that doubles while that
                // stays so (10 ms up to a second), not every `MIN_SLEEP`: the deadlines after
                // it fire at most that late.
                Ok(Some(d)) if first && d <= now => {
                    let back = match stuck {
                        Some((at, w)) if at == d => (w * 2).min(Duration::from_secs(1)),
                        _ => Duration::from_millis(10),
                    };
                    stuck = Some((d, back));
                    back
                }
                Ok(Some(d)) => Duration::from_micros(u64::try_from(d - now).unwrap_or(0))
                    .clamp(if first { MIN_SLEEP } else { Duration::ZERO }, IDLE_RECHECK),
                Ok(None) => IDLE_RECHECK,
                Err(e) => {
                    warn_unless_refused!(e, "cannot read the next deadline");
                    Duration::from_secs(1)
                }
            };
            first = false;
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break 'sleep,
                    _ = stop.cancelled() => return,
                    n = rx.recv() => match n {
                        // A job started waiting (its deadline may be earlier), or a signal
                        // marked waiting jobs for a check (Redis).
                        Ok(Notice::Changed { status: JobStatus::Waiting, job_id }) => {
                            // Fold a burst of notices into one round.
                            let mut marked = job_id.is_nil();
                            while let Ok(n) = rx.try_recv() {
                                if let Notice::Changed { status: JobStatus::Waiting, job_id } = n {
                                    marked |= job_id.is_nil();
                                }
                            }
                            if marked {
                                break 'sleep;
                            }
                            continue 'sleep;
                        }
                        Err(RecvError::Lagged(_)) => break 'sleep,
                        Err(RecvError::Closed) => return,
                        _ => {}
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::now_us;

    fn at(s: &str) -> Micros {
        resolve_time(s, 0, chrono_tz::UTC, Dir::Before, true).unwrap()
    }

    #[test]
    fn times_resolve_against_the_base_in_the_zone() {
        let base = at("2026-03-10T20:30:00Z");
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        // 18:00 Berlin (UTC+1 in March before DST) = 17:00Z, the same day.
        assert_eq!(
            resolve_time("18:00", base, berlin, Dir::Before, true).unwrap(),
            at("2026-03-10T17:00:00Z")
        );
        // Before 18:00 local: the day before.
        let morning = at("2026-03-10T08:00:00Z");
        assert_eq!(
            resolve_time("18:00", morning, berlin, Dir::Before, true).unwrap(),
            at("2026-03-09T17:00:00Z")
        );
        // Deadline: the next 06:00 after the base.
        assert_eq!(
            resolve_time("06:00", base, chrono_tz::UTC, Dir::After, true).unwrap(),
            at("2026-03-11T06:00:00Z")
        );
        assert_eq!(
            resolve_time("+4h", base, chrono_tz::UTC, Dir::After, true).unwrap(),
            base + 4 * 3600 * 1_000_000
        );
        assert_eq!(
            resolve_time("-30m", base, chrono_tz::UTC, Dir::Before, true).unwrap(),
            base - 1800 * 1_000_000
        );
        assert!(resolve_time("-30m", base, chrono_tz::UTC, Dir::After, true).is_err());
        assert!(resolve_time("25:00", base, chrono_tz::UTC, Dir::After, true).is_err());
        assert!(resolve_time("tomorrow", base, chrono_tz::UTC, Dir::After, true).is_err());
        // Two digits each: `9:5` could be 09:05, 09:50 or 19:05.
        for typo in ["9:5", "9:05", "09:5", "9:50"] {
            let e = resolve_time(typo, base, chrono_tz::UTC, Dir::After, true).unwrap_err();
            assert!(e.contains("two digits each"), "{typo}: {e}");
        }
        // Not when a schedule's stored template is resolved at a fire (stored before the rule).
        assert_eq!(
            resolve_time("9:5", base, chrono_tz::UTC, Dir::After, false),
            resolve_time("09:05", base, chrono_tz::UTC, Dir::After, true)
        );
        let template = serde_json::json!({"wait_for": [{"key": "k"}], "deadline": "9:05"});
        let fired = for_fire(&template, base, "UTC", base);
        assert!(
            fired.is_some_and(|w| w.deadline.is_some()),
            "the fire's job still waits"
        );
        assert!(resolve_time("9:5", base, chrono_tz::UTC, Dir::After, true)
            .unwrap_err()
            .contains("\"09:05\""));
        // 02:30 does not exist in Berlin on 2026-03-29: right after the gap (03:00 local, 01:00Z).
        let spring = at("2026-03-29T12:00:00Z");
        assert_eq!(
            resolve_time("02:30", spring, berlin, Dir::Before, true).unwrap(),
            at("2026-03-29T01:00:00Z")
        );
        // A schedule `30 2 * * *` fires right after the gap too (01:00Z): its `since: "02:30"`
        // is that instant, not the day before's 02:30 (which would count yesterday's records).
        let fire = at("2026-03-29T01:00:00Z");
        assert_eq!(
            resolve_time("02:30", fire, berlin, Dir::Before, true).unwrap(),
            fire
        );
        assert_eq!(
            resolve_time(
                "02:30",
                at("2026-03-29T01:20:00Z"),
                berlin,
                Dir::Before,
                true
            )
            .unwrap(),
            fire
        );
        // A deadline of 02:30 asked before the gap: right after it, not half an hour later.
        assert_eq!(
            resolve_time(
                "02:30",
                at("2026-03-28T22:00:00Z"),
                berlin,
                Dir::After,
                true
            )
            .unwrap(),
            fire
        );
        let ny: chrono_tz::Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            resolve_time("02:30", at("2026-03-08T07:00:00Z"), ny, Dir::Before, true).unwrap(),
            at("2026-03-08T07:00:00Z")
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        let f = |v: Value| {
            WaitRequest::from_fields(v.get("wait_for"), v.get("deadline"), v.get("on_deadline"))
        };
        use serde_json::json;
        for (body, field) in [
            (json!({"wait_for": [{"key": "k", "count": 0}]}), "count"),
            (json!({"wait_for": [{"key": "k", "count": 10001}]}), "count"),
            (json!({"wait_for": [{"key": ""}]}), "key"),
            (json!({"wait_for": [{"key": "a\nb"}]}), "key"),
            (
                json!({"wait_for": [{"key": "k"}], "deadline": "+1h", "on_deadline": "later"}),
                "on_deadline",
            ),
            (json!({"deadline": "+1h"}), "deadline"),
            (json!({"wait_for": []}), "wait_for"),
        ] {
            let e = f(body.clone()).unwrap_err();
            assert!(e.contains(field), "{body}: {e}");
        }
        let ok =
            f(json!({"wait_for": [{"key": "k", "count": 3, "since": "18:00"}], "deadline": "+1h"}))
                .unwrap()
                .unwrap();
        let now = now_us();
        let w = ok.resolve(now, "UTC", now, true, true).unwrap();
        assert_eq!(w.items[0].needed, 3);
        assert_eq!(w.deadline, Some(now + 3_600_000_000));
        let past = f(json!({"wait_for": [{"key": "k"}], "deadline": "2020-01-01T00:00:00Z"}))
            .unwrap()
            .unwrap();
        assert!(past
            .resolve(now, "UTC", now, true, true)
            .unwrap_err()
            .contains("deadline"));
        assert!(past.resolve(now, "UTC", now, false, true).is_ok());
        // Records counted only from a time at or after the deadline: never met.
        let late = f(json!({"wait_for": [{"key": "k", "since": "+2h"}], "deadline": "+1h"}))
            .unwrap()
            .unwrap();
        let e = late.resolve(now, "UTC", now, true, true).unwrap_err();
        assert!(
            e.contains("wait_for[0].since") && e.contains("deadline"),
            "{e}"
        );
        let ok = f(json!({"wait_for": [{"key": "k", "since": "+30m"}], "deadline": "+1h"}))
            .unwrap()
            .unwrap();
        assert!(ok.resolve(now, "UTC", now, true, true).is_ok());
        // A schedule's fire keeps it: the job waits, and its deadline decides.
        assert!(late.resolve(now, "UTC", now, false, true).is_ok());
    }
}
