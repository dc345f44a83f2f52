//! Cron schedules: each fire of a schedule submits one job, exactly once across every process
//! that shares the store.
//!
//! - [`cron`]: fire times of a pattern in a time zone, daylight-saving rules included.
//! - This module: the stored record ([`Schedule`]) and the one decision taken at a wake-up
//!   ([`plan`]): which fire times are due, what the misfire and overlap policies make of them.
//! - [`fields`]: what a new pattern's fields must be beyond what croner takes (`*/90`).
//! - [`firing`]: the loop every `serve` and `worker` process runs.
//!
//! # Exactly once
//! A process that finds a schedule due reads its record, decides ([`plan`]) and writes the
//! decision back with a compare-and-set on the record's version
//! ([`crate::store::ScheduleStore::schedule_cas`]): the write moves `next_fire` past the fire
//! times it handled and lists the fires to submit in `pending`. Of several processes deciding at
//! once, one write succeeds; the others read again and find nothing due. The winner then submits
//! each pending fire with the idempotency key `schedule:{name}:{fire_time}` and removes it from
//! `pending` (again by compare-and-set). If it dies in between, any process submits the pending
//! fire after [`PENDING_GRACE`]; the key makes a second submit return the first job. So a fire
//! time makes exactly one job whatever happens.

pub mod cron;
pub mod fields;
pub mod firing;
pub mod unreadable;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

pub use crate::job::fire_time_text;
use crate::job::{rfc3339, Job, Micros};
pub use crate::store::schedules::{
    Counters, Misfire, Overlap, PendingFire, RunEntry, Schedule, ScheduleSpec, PENDING_GRACE_US,
};
pub use cron::{CronSpec, CronSpecError};

/// A fire later than this after its time counts as missed (the `skip` policy drops it).
pub const ON_TIME_US: Micros = 2_000_000;
/// Run entries kept per schedule.
pub const LAST_RUNS: usize = 20;
/// Most fire times one decision looks at (a long downtime of a per-second schedule).
pub const MAX_DUE: usize = 100_000;
/// Most fires one decision submits under `misfire = "all"` (the newest are kept).
pub const MAX_CATCHUP: usize = 1_000;
/// How often a schedule with a buffered fire checks whether the job before it has ended.
pub const BUFFER_RECHECK_US: Micros = 1_000_000;

/// Process-wide counters of what this process's fire loops decided (exported by
/// [`crate::metrics`]): each is counted once, by the process whose compare-and-set won.
pub mod counters {
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Jobs submitted by fires.
    pub static FIRES: AtomicU64 = AtomicU64::new(0);
    /// Fire times missed (misfire policy or catch-up window).
    pub static MISFIRES: AtomicU64 = AtomicU64::new(0);
    /// Fires skipped because a job of the schedule was still active.
    pub static SKIPPED_OVERLAPS: AtomicU64 = AtomicU64::new(0);

    /// Adds to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        if n > 0 {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// (fires, misfires, skipped overlaps).
    pub fn snapshot() -> (u64, u64, u64) {
        (
            FIRES.load(Ordering::Relaxed),
            MISFIRES.load(Ordering::Relaxed),
            SKIPPED_OVERLAPS.load(Ordering::Relaxed),
        )
    }
}

/// Microseconds to a UTC time.
pub fn to_utc(us: Micros) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

/// A UTC time to microseconds.
pub fn to_us(t: DateTime<Utc>) -> Micros {
    t.timestamp_micros()
}

/// How every fire's idempotency key starts; reserved: a submit's own key may not start so
/// (`api/jobs.rs`), so no caller can take or read a fire's job through its key.
pub const FIRE_KEY_PREFIX: &str = "schedule:";

/// The idempotency key of a fire.
pub fn fire_key(name: &str, fire_time: Micros) -> String {
    format!("{FIRE_KEY_PREFIX}{name}:{}", fire_time_text(fire_time))
}

impl Schedule {
    /// The parsed pattern (validated at creation; an error only for a corrupt record).
    pub fn cron(&self) -> Result<CronSpec, CronSpecError> {
        CronSpec::parse(&self.spec.cron, &self.spec.timezone)
    }

    /// Appends a run entry, keeping [`LAST_RUNS`].
    pub fn record(&mut self, mut e: RunEntry) {
        // A skip names a job of an earlier entry: its type and channel are that entry's.
        if e.job_of.is_none() && e.job_id.is_some() {
            e.job_of = (self.last_runs.iter())
                .find(|r| r.job_id == e.job_id)
                .and_then(|r| r.job_of.clone());
        }
        self.last_runs.push(e);
        // Past the bound, the oldest entry without a job goes first (a skip, a miss, an error):
        // the jobs the overlap policy looks at are not pushed out by the skips they cause.
        while self.last_runs.len() > LAST_RUNS {
            let at = self
                .last_runs
                .iter()
                .position(|r| r.job_id.is_none())
                .unwrap_or(0);
            self.last_runs.remove(at);
        }
    }

    /// The jobs its recorded runs name (the last [`LAST_RUNS`]: clock fires, triggers and
    /// backfills alike), newest first, each once.
    pub fn recent_jobs(&self) -> Vec<Uuid> {
        let mut out: Vec<Uuid> = Vec::new();
        for id in self.last_runs.iter().rev().filter_map(|r| r.job_id) {
            if !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }

    /// Pauses (`POST .../pause`, a `PUT` saying `paused: true`): no fire until resumed.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// Resumes a paused schedule at `now` (`POST .../resume`, a `PUT` saying `paused: false`):
    /// it goes on from the next fire time after `now`; the times that passed while it was
    /// paused are not made up (the misfire policy never sees them). Nothing when not paused.
    pub fn resume(&mut self, now: Micros) {
        if self.paused {
            self.paused = false;
            if let Ok(c) = self.cron() {
                self.next_fire = c.next_after(to_utc(now)).map(to_us);
            }
        }
    }

    /// The next `n` fire times after `now` (or after the pending `next_fire`).
    pub fn next_fires(&self, now: Micros, n: usize) -> Vec<Micros> {
        let Ok(c) = self.cron() else { return vec![] };
        let mut out = Vec::new();
        let mut t = match self.next_fire {
            Some(f) if f > now => Some(to_utc(f)),
            _ => c.next_after(to_utc(now)),
        };
        while let Some(x) = t {
            if out.len() >= n {
                break;
            }
            out.push(to_us(x));
            t = c.next_after(x);
        }
        out
    }

    /// The schedule as the API shows it.
    pub fn to_public(&self, now: Micros) -> Value {
        self.to_public_for(now, &|_| true)
    }

    /// The schedule as the API shows it to a caller who may see the jobs of the runs `sees`
    /// takes (by the type and channel of each run's job, `None` for an entry recorded without
    /// them); the others' `job_id` is null.
    pub fn to_public_for(&self, now: Micros, sees: &SeesRun) -> Value {
        let s = &self.spec;
        let runs: Vec<Value> = self
            .last_runs
            .iter()
            .rev()
            .map(|r| {
                json!({
                    "fire_time": fire_time_text(r.fire_time),
                    "outcome": r.outcome,
                    "job_id": r.job_id.filter(|_| sees(r.job_of.as_ref())),
                    "count": r.count,
                    "error": r.error,
                    "at": rfc3339(r.at),
                })
            })
            .collect();
        json!({
            "name": s.name,
            "cron": s.cron,
            "timezone": s.timezone,
            "job": s.job,
            "overlap": s.overlap,
            "misfire": s.misfire,
            "catchup_window": duration_text(s.catchup_window_ms),
            "jitter": duration_text(s.jitter_ms),
            "paused": self.paused,
            "next_fires": if self.paused { vec![] } else {
                self.next_fires(now, 5).into_iter().map(fire_time_text).collect::<Vec<_>>()
            },
            "pending": self.pending.iter().map(|p| fire_time_text(p.fire_time)).collect::<Vec<_>>(),
            "buffered": self.buffered.map(fire_time_text),
            "last_runs": runs,
            "counters": self.counters,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

/// What [`plan`] knows about the schedule's jobs: whether any of its recent ones
/// ([`Schedule::recent_jobs`]) is still active, a trigger's or a backfill's as well as a clock
/// fire's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous {
    /// None is active.
    Idle,
    /// These jobs are still active (not terminal), newest first; never empty.
    Active(Vec<Uuid>),
}

impl Previous {
    /// The active jobs, newest first.
    pub fn jobs(&self) -> &[Uuid] {
        match self {
            Self::Idle => &[],
            Self::Active(ids) => ids,
        }
    }
}

/// [`plan_busy`] for a loop that began working at `now`.
pub fn plan(s: &mut Schedule, c: &CronSpec, now: Micros, prev: &Previous) -> bool {
    plan_busy(s, c, (now, now), prev)
}

/// Decides what a wake-up at `now` does to `s`: moves `next_fire` past every due fire time,
/// applies the misfire and overlap policies, moves a buffered fire to `pending` once the job
/// before it ended. Returns false when nothing changed (nothing to write).
///
/// `busy_since` (at most `now`) is when the fire loop deciding this began working without a
/// pause: a fire time is late by how long before that it was (a loop working through a backlog
/// of thousands of schedules due at once reaches the last ones seconds after their time, and
/// they are late, not missed: only a fire time that passed while no loop ran is).
pub fn plan_busy(
    s: &mut Schedule,
    c: &CronSpec,
    (now, busy_since): (Micros, Micros),
    prev: &Previous,
) -> bool {
    let seen = busy_since.min(now);
    let changed = release_buffered(s, now, prev);
    let Some(first) = s.next_fire.filter(|f| !s.paused && *f <= now) else {
        return changed;
    };
    // The times before the catch-up window can only be missed: counted (up to MAX_DUE), not
    // kept, and the window's own times are read from its start, so a long outage of a frequent
    // schedule still fires what its window holds (reading from the oldest, the window was never
    // reached past MAX_DUE times).
    let window = (s.spec.catchup_window_ms as i64 * 1000).max(ON_TIME_US);
    let (mut early, mut last_early) = (0u64, None);
    let mut t = Some(to_utc(first));
    while let Some(x) = t.filter(|x| to_us(*x) < seen - window) {
        if early >= MAX_DUE as u64 {
            t = c.next_after(to_utc(seen - window - 1));
            break;
        }
        early += 1;
        last_early = Some(to_us(x));
        t = c.next_after(x);
    }
    // The newest MAX_DUE fire times in [the window's start, now] (every policy keeps the newest).
    let (due, dropped, last_dropped) = newest_due(c, t, now);
    s.next_fire = c.next_after(to_utc(now)).map(to_us);
    let chosen = by_misfire(s, &due, seen);
    let missed = early + dropped + (due.len() - chosen.len()) as u64;
    if missed > 0 {
        s.counters.misfires += missed;
        let last_missed = due
            .iter()
            .rev()
            .find(|t| !chosen.contains(t))
            .copied()
            .or(last_dropped)
            .or(last_early)
            .unwrap_or(first);
        s.record(RunEntry {
            fire_time: last_missed,
            outcome: "missed".into(),
            job_id: None,
            count: missed,
            error: None,
            at: now,
            job_of: None,
        });
    }
    by_overlap(s, chosen, now, prev);
    true
}

/// Jumps ahead [`newest_due`] may take.
const MAX_JUMPS: usize = 4;

/// The newest fire times of `c` from `t` to `now` (at most [`MAX_DUE`]), oldest first; how many
/// older ones were read and passed over (counted as missed), and the newest of those. A window
/// holding more (a per-second schedule down for days with a window as long) is not walked time
/// by time to its end: each time [`MAX_DUE`] times were read short of `now`, the reading drops
/// them and jumps ahead to the first time at or after the newest fire time (at or before
/// `now`, found by bisection) less what they spanned, at most [`MAX_JUMPS`] times; it stops
/// after `10 * MAX_DUE` times in all. The times jumped over are missed but not counted.
fn newest_due(
    c: &CronSpec,
    mut t: Option<DateTime<Utc>>,
    now: Micros,
) -> (Vec<Micros>, u64, Option<Micros>) {
    let mut due = std::collections::VecDeque::with_capacity(MAX_DUE.min(1024));
    let (mut dropped, mut last_dropped, mut read, mut jumps) = (0u64, None, 0usize, 0usize);
    let mut newest = None;
    while let Some(x) = t.filter(|x| to_us(*x) <= now) {
        if due.len() == MAX_DUE {
            last_dropped = due.pop_front();
            dropped += 1;
        }
        due.push_back(to_us(x));
        read += 1;
        t = c.next_after(x);
        if read >= 10 * MAX_DUE {
            break;
        }
        if read % MAX_DUE != 0 || jumps == MAX_JUMPS {
            continue;
        }
        let Some(next) = t.map(to_us).filter(|n| *n <= now) else {
            break;
        };
        // None: the bisection's answer did not check out; read on without jumping.
        let Some(newest) = *newest.get_or_insert_with(|| {
            let r = newest_at_or_before(c, next, now);
            if r.is_none() {
                tracing::warn!(
                    "a catch-up's search for the newest fire time did not check out: reading on \
                     without jumping (the newest due time may not be reached)"
                );
            }
            r
        }) else {
            continue;
        };
        let span = due.back().copied().unwrap_or(now) - due.front().copied().unwrap_or(now);
        if let Some(y) = c.next_after(to_utc(newest - span - 1)) {
            if to_us(y) > next && to_us(y) <= now {
                dropped += due.len() as u64;
                // The newest time passed over is the last one before `y` (jumped over), or,
                // when none was jumped over, the newest one read.
                last_dropped = newest_at_or_before(c, next, to_us(y) - 1).or(due.back().copied());
                due.clear();
                jumps += 1;
                t = Some(y);
            }
        }
    }
    (due.into(), dropped, last_dropped)
}

/// The newest fire time of `c` in `[lo, now]`, given that `lo` is one: by bisection on
/// [`CronSpec::next_after`] (about 45 calls for a year in microseconds). `None` when the answer
/// does not check out (a fire time after it at or before `now`: `next_after` was not monotone,
/// which a bisection cannot see), so a caller never takes a wrong "newest" for a fact.
fn newest_at_or_before(c: &CronSpec, lo: Micros, now: Micros) -> Option<Micros> {
    // Invariant: a fire time lies in (a, now]; none lies in (b, now].
    let (mut a, mut b) = (lo - 1, now);
    while b - a > 1 {
        let m = a + (b - a) / 2;
        if c.next_after(to_utc(m)).is_some_and(|y| to_us(y) <= now) {
            a = m;
        } else {
            b = m;
        }
    }
    let r = c.next_after(to_utc(a)).map(to_us).filter(|r| *r <= now)?;
    let after = c.next_after(to_utc(r)).map(to_us);
    after.is_none_or(|n| n > now).then_some(r)
}

/// A buffered fire waits for the schedule's active jobs to end: moves it to `pending` once they
/// did, or sets when to look again. Returns whether `s` changed.
fn release_buffered(s: &mut Schedule, now: Micros, prev: &Previous) -> bool {
    // A paused schedule does not fire: its buffered fire waits for the resume.
    let Some(b) = s.buffered.filter(|_| !s.paused) else {
        return false;
    };
    if s.spec.overlap != Overlap::BufferOne {
        // The policy was changed (a `PUT`) while the fire waited: it goes as the policy now
        // says, as a fire coming now would (`forbid`: skipped while a job is active).
        s.buffered = None;
        s.recheck_at = None;
        by_overlap(s, vec![b], now, prev);
        return true;
    }
    if prev.jobs().is_empty() && s.pending.is_empty() {
        s.pending.push(PendingFire {
            fire_time: b,
            decided_at: now,
            cancel: None,
            cancel_also: vec![],
            manual: false,
        });
        s.buffered = None;
        s.recheck_at = None;
        true
    } else if s.recheck_at.is_none_or(|r| r <= now) {
        s.recheck_at = Some(now + BUFFER_RECHECK_US);
        true
    } else {
        false
    }
}

/// The misfire policy: which of the `due` fire times still fire, seen due at `now`.
fn by_misfire(s: &Schedule, due: &[Micros], now: Micros) -> Vec<Micros> {
    let window = (s.spec.catchup_window_ms as i64 * 1000).max(ON_TIME_US);
    match s.spec.misfire {
        Misfire::Skip => due
            .last()
            .copied()
            .filter(|t| now - t <= ON_TIME_US)
            .into_iter()
            .collect(),
        Misfire::RunOnce => due
            .last()
            .copied()
            .filter(|t| now - t <= window)
            .into_iter()
            .collect(),
        Misfire::All => {
            let mut v: Vec<Micros> = due.iter().copied().filter(|t| now - t <= window).collect();
            if v.len() > MAX_CATCHUP {
                v.drain(..v.len() - MAX_CATCHUP);
            }
            v
        }
    }
}

/// The overlap policy: each chosen fire time goes to `pending`, the buffer, or is skipped.
fn by_overlap(s: &mut Schedule, chosen: Vec<Micros>, now: Micros, prev: &Previous) {
    let active = prev.jobs();
    let prev_active = active.first().copied();
    for t in chosen {
        let busy = prev_active.is_some() || !s.pending.is_empty();
        let fire = PendingFire {
            fire_time: t,
            decided_at: now,
            cancel: None,
            cancel_also: vec![],
            manual: false,
        };
        match s.spec.overlap {
            Overlap::Allow => s.pending.push(fire),
            Overlap::CancelOther => s.pending.push(PendingFire {
                cancel: prev_active,
                cancel_also: active.get(1..).unwrap_or_default().to_vec(),
                ..fire
            }),
            Overlap::Forbid | Overlap::BufferOne if !busy => s.pending.push(fire),
            Overlap::BufferOne if s.buffered.is_none() => {
                s.buffered = Some(t);
                s.recheck_at = Some(now + BUFFER_RECHECK_US);
            }
            Overlap::Forbid | Overlap::BufferOne => {
                s.counters.skipped_overlaps += 1;
                s.record(RunEntry {
                    fire_time: t,
                    outcome: "skipped_overlap".into(),
                    job_id: prev_active,
                    count: 1,
                    error: None,
                    at: now,
                    job_of: None,
                });
            }
        }
    }
}

/// A new schedule record for `spec` at `now`.
pub fn new_schedule(spec: ScheduleSpec, proto: Job, c: &CronSpec, now: Micros) -> Schedule {
    Schedule {
        paused: spec.paused,
        next_fire: c.next_after(to_utc(now)).map(to_us),
        spec,
        proto,
        pending: vec![],
        buffered: None,
        recheck_at: None,
        last_runs: vec![],
        counters: Counters::default(),
        created_at: now,
        updated_at: now,
        // The first version is the creation time (µs), not 1: a name deleted and created again
        // never has a version that a write of the earlier schedule, read before the delete, can
        // expect.
        version: u64::try_from(now).unwrap_or(0).max(1),
    }
}

/// The fire time of a `trigger` at `now` (µs): millisecond precision, so two triggers in the same
/// millisecond are one fire; never a whole second, whose key (`schedule:{name}:{second}`) is the
/// clock fire's of that second (a trigger landing on `…:00.000` took it, and two fires made one
/// job): such a trigger's time is the millisecond after.
pub fn trigger_time(now: Micros) -> Micros {
    let t = now / 1000 * 1000;
    if t % 1_000_000 == 0 {
        t + 1000
    } else {
        t
    }
}

/// Two job templates submit the same job: equal, but for `args` absent, `null` or `{}` (all
/// three submit `{}`).
pub fn same_template(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    fn without_empty_args(job: &serde_json::Value) -> std::borrow::Cow<'_, serde_json::Value> {
        let empty =
            |a: &serde_json::Value| a.is_null() || a.as_object().is_some_and(|o| o.is_empty());
        match job.get("args") {
            Some(args) if empty(args) => {
                let mut j = job.clone();
                if let Some(o) = j.as_object_mut() {
                    o.remove("args");
                }
                std::borrow::Cow::Owned(j)
            }
            _ => std::borrow::Cow::Borrowed(job),
        }
    }
    without_empty_args(a) == without_empty_args(b)
}

/// Whether a caller may be shown a run's job, by that job's (type, channel) when recorded.
pub type SeesRun<'a> = dyn Fn(Option<&(String, String)>) -> bool + 'a;

/// `ms` as a schedule shows it: days, hours, minutes, seconds and milliseconds, the zero ones
/// left out (`"40days 12h"`, `"1h 30m"`, `"0s"`). humantime's own form counts months of 30.44
/// days and years of 365.25 (40 days is `"1month 9days 13h 30m 36s"`); both parse back alike.
pub fn duration_text(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let parts = [
        (ms / 86_400_000, "day"),
        (ms / 3_600_000 % 24, "h"),
        (ms / 60_000 % 60, "m"),
        (ms / 1000 % 60, "s"),
        (ms % 1000, "ms"),
    ];
    let words: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| match (*n, *unit) {
            (1, "day") => "1day".to_string(),
            (n, "day") => format!("{n}days"),
            (n, unit) => format!("{n}{unit}"),
        })
        .collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::firing::job_for_fire;
    use super::*;
    use crate::job::JobStatus;

    #[test]
    fn durations_are_shown_in_days_at_most_and_parse_back() {
        let day = 86_400_000;
        assert_eq!(duration_text(40 * day), "40days");
        assert_eq!(duration_text(day), "1day");
        assert_eq!(duration_text(366 * day), "366days");
        assert_eq!(duration_text(90 * 60_000), "1h 30m");
        assert_eq!(duration_text(0), "0s");
        assert_eq!(duration_text(day + 3_723_004), "1day 1h 2m 3s 4ms");
        for ms in [0, 250, 1000, 90 * 60_000, day, 40 * day + 1, 366 * day] {
            let back = humantime::parse_duration(&duration_text(ms)).unwrap();
            assert_eq!(back.as_millis() as u64, ms, "{}", duration_text(ms));
        }
    }

    #[test]
    fn a_trigger_never_takes_a_clock_fires_whole_second() {
        let sec = 1_796_415_491_000_000;
        assert_eq!(trigger_time(sec), sec + 1000);
        assert_eq!(
            trigger_time(sec + 999),
            sec + 1000,
            "µs cut to the millisecond"
        );
        assert_eq!(trigger_time(sec + 36_879_123), sec + 36_879_000);
        assert_ne!(fire_time_text(trigger_time(sec)), fire_time_text(sec));
    }

    const S: Micros = 1_000_000;

    fn sched(
        cron: &str,
        overlap: Overlap,
        misfire: Misfire,
        catchup_s: u64,
        now: Micros,
    ) -> (Schedule, CronSpec) {
        let c = CronSpec::parse(cron, "UTC").unwrap();
        let spec = ScheduleSpec {
            name: "n".into(),
            cron: cron.into(),
            timezone: "UTC".into(),
            job: json!({"type": "t"}),
            overlap,
            misfire,
            catchup_window_ms: catchup_s * 1000,
            jitter_ms: 0,
            paused: false,
        };
        let proto: Job = serde_json::from_value(json!({
            "id": Uuid::nil(), "type": "t", "args": {}, "runner": "r", "status": "QUEUED",
            "channel_id": "c", "user_id": null, "attempt": 0, "max_attempts": 1,
            "backoff": {"initial_ms": 1, "max_ms": 1, "multiplier": 1.0, "jitter": false},
            "timeout_ms": null, "run_at": null, "idempotency_key": null, "progress": 0.0,
            "status_details": null, "result": null, "error": null, "exit_code": null,
            "lease": null, "handle": null, "runs": [], "created_at": 0, "updated_at": 0,
            "queued_at": 0, "started_at": null, "finished_at": null, "version": 0
        }))
        .unwrap();
        (new_schedule(spec, proto, &c, now), c)
    }

    fn pending(s: &Schedule) -> Vec<Micros> {
        s.pending.iter().map(|p| p.fire_time / S).collect()
    }

    // 2026-01-01T00:00:00Z
    const T0: Micros = 1_767_225_600 * S;

    #[test]
    fn on_time_fire_and_nothing_twice() {
        let (mut s, c) = sched("*/10 * * * * *", Overlap::Allow, Misfire::Skip, 0, T0);
        assert_eq!(s.next_fire, Some(T0 + 10 * S));
        assert!(
            !plan(&mut s, &c, T0 + 9 * S, &Previous::Idle),
            "not due yet"
        );
        assert!(plan(&mut s, &c, T0 + 10 * S + 300_000, &Previous::Idle));
        assert_eq!(pending(&s), vec![T0 / S + 10]);
        assert_eq!(s.next_fire, Some(T0 + 20 * S));
        // The same wake-up again (another process that read the new record): nothing to do.
        assert!(!plan(&mut s, &c, T0 + 10 * S + 400_000, &Previous::Idle));
        assert_eq!(pending(&s).len(), 1);
    }

    fn at(x: &str) -> Micros {
        DateTime::parse_from_rfc3339(x).unwrap().timestamp_micros()
    }

    /// A wake-up at `woken` of `cron` in Europe/Berlin (run_once, a year's window, created at
    /// `created`, `next_fire` at `next`): the schedule as `plan` leaves it.
    fn berlin_woken(cron: &str, created: &str, next: &str, woken: &str) -> Schedule {
        let (mut s, _) = sched(
            cron,
            Overlap::Allow,
            Misfire::RunOnce,
            366 * 86_400,
            at(created),
        );
        s.spec.timezone = "Europe/Berlin".into();
        let c = s.cron().unwrap();
        s.next_fire = Some(at(next));
        plan(&mut s, &c, at(woken), &Previous::Idle);
        s
    }

    #[test]
    fn a_wake_up_in_the_repeated_hour_keeps_the_schedule_firing() {
        // Every second of 02:xx, first pass only; clocks go back at 01:00 UTC on 2026-10-25.
        // Woken in the second pass: the first pass's last second fires, and the schedule goes
        // on the next night (it had no next fire time at all: stopped for good, silently).
        let s = berlin_woken(
            "* * 2 * * *",
            "2026-10-24T00:00:00Z",
            "2026-10-25T00:00:00Z",
            "2026-10-25T01:30:00Z",
        );
        assert_eq!(pending(&s), vec![at("2026-10-25T00:59:59Z") / S]);
        assert_eq!(s.next_fire, Some(at("2026-10-26T01:00:00Z")));
        // A year down, across the night clocks go back: run_once fires the newest due time
        // (a wrong "newest" from the bisection fired one 35 days old).
        let s = berlin_woken(
            "* * 2-23 * * *",
            "2025-12-08T15:30:00Z",
            "2025-12-08T15:30:43Z",
            "2026-12-09T15:30:42.123Z",
        );
        assert_eq!(pending(&s), vec![at("2026-12-09T15:30:42Z") / S]);
    }

    #[test]
    fn a_catch_up_jump_names_the_newest_time_it_passed_over() {
        // Every second of the 1st, 2nd and 31st, `all`, a 40-day window, woken May 1st: the
        // reading jumps over part of April 1st-2nd; the missed line names their newest second.
        let (mut s, c) = sched(
            "* * * 1,2,31 * *",
            Overlap::Allow,
            Misfire::All,
            40 * 86_400,
            at("2026-03-30T00:00:00Z"),
        );
        plan(&mut s, &c, at("2026-05-01T00:05:00Z"), &Previous::Idle);
        let missed = s.last_runs.iter().find(|r| r.outcome == "missed").unwrap();
        assert_eq!(missed.fire_time, at("2026-04-02T23:59:59Z"));
    }

    #[test]
    fn misfire_policies_after_downtime() {
        // Down from T0+5 to T0+47: fires at 10, 20, 30, 40 were missed.
        let now = T0 + 47 * S;
        let (mut s, c) = sched(
            "*/10 * * * * *",
            Overlap::Allow,
            Misfire::Skip,
            3600,
            T0 + 5 * S,
        );
        plan(&mut s, &c, now, &Previous::Idle);
        assert!(pending(&s).is_empty(), "skip drops late fires");
        assert_eq!(s.counters.misfires, 4);
        assert_eq!(s.next_fire, Some(T0 + 50 * S));

        let (mut s, c) = sched(
            "*/10 * * * * *",
            Overlap::Allow,
            Misfire::RunOnce,
            3600,
            T0 + 5 * S,
        );
        plan(&mut s, &c, now, &Previous::Idle);
        assert_eq!(pending(&s), vec![T0 / S + 40]);
        assert_eq!(s.counters.misfires, 3);

        let (mut s, c) = sched(
            "*/10 * * * * *",
            Overlap::Allow,
            Misfire::All,
            3600,
            T0 + 5 * S,
        );
        plan(&mut s, &c, now, &Previous::Idle);
        assert_eq!(
            pending(&s),
            vec![T0 / S + 10, T0 / S + 20, T0 / S + 30, T0 / S + 40]
        );
        assert_eq!(s.counters.misfires, 0);

        // A 20 s catch-up window keeps 30 and 40 only.
        let (mut s, c) = sched(
            "*/10 * * * * *",
            Overlap::Allow,
            Misfire::All,
            20,
            T0 + 5 * S,
        );
        plan(&mut s, &c, now, &Previous::Idle);
        assert_eq!(pending(&s), vec![T0 / S + 30, T0 / S + 40]);
        assert_eq!(s.counters.misfires, 2);
        // Run once outside its window: nothing.
        let (mut s, c) = sched(
            "*/10 * * * * *",
            Overlap::Allow,
            Misfire::RunOnce,
            5,
            T0 + 5 * S,
        );
        plan(&mut s, &c, now, &Previous::Idle);
        assert!(pending(&s).is_empty());

        // 30 hours down, a fire every second: the window's last hour still fires (read from the
        // window's start, not from the oldest missed time, which stopped at 100,000 times).
        let down = T0 + 30 * 3600 * S;
        let (mut s, c) = sched("* * * * * *", Overlap::Allow, Misfire::RunOnce, 3600, T0);
        plan(&mut s, &c, down, &Previous::Idle);
        assert_eq!(pending(&s), vec![down / S]);
        assert!(
            s.counters.misfires >= MAX_DUE as u64,
            "{}",
            s.counters.misfires
        );
        let (mut s, c) = sched("* * * * * *", Overlap::Allow, Misfire::All, 3600, T0);
        plan(&mut s, &c, down, &Previous::Idle);
        assert_eq!(pending(&s).len(), MAX_CATCHUP);
        assert_eq!(pending(&s).last(), Some(&(down / S)));
        // A window holding more than three times MAX_DUE times (5 days of seconds, down as
        // long): still the newest fire, or the newest MAX_CATCHUP, up to the wake-up.
        let days = 5 * 24 * 3600;
        let down = T0 + days * S;
        let (mut s, c) = sched(
            "* * * * * *",
            Overlap::Allow,
            Misfire::RunOnce,
            days as u64,
            T0,
        );
        plan(&mut s, &c, down, &Previous::Idle);
        assert_eq!(pending(&s), vec![down / S]);
        assert!(s.counters.misfires >= MAX_DUE as u64);
        let (mut s, c) = sched("* * * * * *", Overlap::Allow, Misfire::All, days as u64, T0);
        plan(&mut s, &c, down, &Previous::Idle);
        let p = pending(&s);
        assert_eq!(p.len(), MAX_CATCHUP);
        assert_eq!(p.first(), Some(&(down / S - MAX_CATCHUP as i64 + 1)));
        assert_eq!(p.last(), Some(&(down / S)));
        // A window whose first 100,000 times span a month's gap: every second of the 1st-3rd,
        // the window from January 3rd, noon, woken on March 3rd at 23:59:59.5. The jump from
        // the first 100,000 lands in February; a second one reaches March.
        let start = T0 + (2 * 24 + 12) * 3600 * S;
        let down = T0 + (61 * 86_400 + 86_399) * S + S / 2;
        let window = ((down - start) / S) as u64;
        for misfire in [Misfire::RunOnce, Misfire::Skip] {
            let (mut s, c) = sched("* * * 1-3 * *", Overlap::Allow, misfire, window, T0);
            plan(&mut s, &c, down, &Previous::Idle);
            assert_eq!(pending(&s), vec![down / S], "{misfire:?}");
        }
        // Woken a week after the last of those times: no jump lands past it (a stretch of
        // 100,000 seconds before the wake-up holds no time, so the reading looks further back).
        let late = down + 7 * 86_400 * S;
        let window = ((late - start) / S) as u64;
        let (mut s, c) = sched(
            "* * * 1-3 * *",
            Overlap::Allow,
            Misfire::RunOnce,
            window,
            T0,
        );
        plan(&mut s, &c, late, &Previous::Idle);
        assert_eq!(pending(&s), vec![down / S]);
        // Every second of January, woken on February 19th at 13:00 with a year's window: the
        // first jump must land near the newest time, not up to twice the gap before the
        // wake-up (the reading then ran out of its budget on January 23rd).
        let (mut s, c) = sched(
            "* * * * 1 *",
            Overlap::Allow,
            Misfire::RunOnce,
            366 * 86_400,
            T0 - 200 * 86_400 * S,
        );
        let woken = T0 + 49 * 86_400 * S + 13 * 3600 * S;
        plan(&mut s, &c, woken, &Previous::Idle);
        assert_eq!(pending(&s), vec![T0 / S + 31 * 86_400 - 1]);
        let missed = s
            .last_runs
            .iter()
            .find(|r| r.outcome == "missed")
            .expect("missed");
        assert_eq!(
            missed.fire_time / S,
            T0 / S + 31 * 86_400 - 2,
            "the newest missed time"
        );
    }

    /// A fire time reached late by a loop that was working through a backlog since before it is
    /// late, not missed: `skip` and a short window fire it. One that passed before the loop
    /// began working (a node down, or started after it) is missed.
    #[test]
    fn a_fire_reached_late_by_a_busy_loop_is_not_missed() {
        for misfire in [Misfire::Skip, Misfire::RunOnce, Misfire::All] {
            let (mut s, c) = sched("*/10 * * * * *", Overlap::Allow, misfire, 0, T0);
            // Reached 40 s after its time, the loop busy since 0.5 s before it.
            let (now, busy) = (T0 + 50 * S, T0 + 10 * S - S / 2);
            assert!(plan_busy(&mut s, &c, (now, busy), &Previous::Idle));
            // `skip` and `run_once` make one job for the newest; `all` one per time.
            let want: Vec<Micros> = match misfire {
                Misfire::All => [10, 20, 30, 40, 50].map(|t| T0 / S + t).to_vec(),
                _ => vec![T0 / S + 50],
            };
            assert_eq!(pending(&s), want, "{misfire:?}");
            let (mut s, c) = sched("*/10 * * * * *", Overlap::Allow, misfire, 0, T0);
            // One due time only, reached 5 s late by a busy loop: fired, nothing missed.
            let (now, busy) = (T0 + 15 * S, T0 + 10 * S - S / 2);
            plan_busy(&mut s, &c, (now, busy), &Previous::Idle);
            assert_eq!(pending(&s), vec![T0 / S + 10], "{misfire:?}");
            assert_eq!(s.counters.misfires, 0, "{misfire:?}");
            // The same, the loop working only since 3 s after it (down before): missed under
            // `skip` (and the 2 s minimum window of the others).
            let (mut s, c) = sched("*/10 * * * * *", Overlap::Allow, misfire, 0, T0);
            plan_busy(&mut s, &c, (now, T0 + 13 * S), &Previous::Idle);
            assert!(pending(&s).is_empty(), "{misfire:?}");
            assert_eq!(s.counters.misfires, 1, "{misfire:?}");
        }
    }

    #[test]
    fn overlap_policies() {
        let id = Uuid::now_v7();
        let prev = &Previous::Active(vec![id]);
        let at = T0 + 10 * S;
        let (mut s, c) = sched("*/10 * * * * *", Overlap::Forbid, Misfire::Skip, 0, T0);
        plan(&mut s, &c, at, prev);
        assert!(pending(&s).is_empty());
        assert_eq!(s.counters.skipped_overlaps, 1);
        assert_eq!(s.last_runs.last().unwrap().outcome, "skipped_overlap");

        let (mut s, c) = sched("*/10 * * * * *", Overlap::Allow, Misfire::Skip, 0, T0);
        plan(&mut s, &c, at, prev);
        assert_eq!(pending(&s), vec![T0 / S + 10]);

        let (mut s, c) = sched("*/10 * * * * *", Overlap::CancelOther, Misfire::Skip, 0, T0);
        plan(&mut s, &c, at, prev);
        assert_eq!(s.pending[0].cancel, Some(id));
        // Every active job is cancelled, a trigger's as well as a clock fire's.
        let (mut s, c) = sched("*/10 * * * * *", Overlap::CancelOther, Misfire::Skip, 0, T0);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        plan(&mut s, &c, at, &Previous::Active(vec![b, a]));
        assert_eq!(
            (s.pending[0].cancel, &s.pending[0].cancel_also),
            (Some(b), &vec![a])
        );

        let (mut s, c) = sched("*/10 * * * * *", Overlap::BufferOne, Misfire::Skip, 0, T0);
        plan(&mut s, &c, at, prev);
        assert_eq!(s.buffered, Some(at));
        assert!(pending(&s).is_empty());
        // The next fire while still busy is skipped; the buffer keeps the first.
        plan(&mut s, &c, at + 10 * S, prev);
        assert_eq!(s.buffered, Some(at));
        assert_eq!(s.counters.skipped_overlaps, 1);
        // The job ended: the buffered fire is submitted.
        assert!(plan(&mut s, &c, at + 12 * S, &Previous::Idle));
        assert_eq!(pending(&s), vec![T0 / S + 10]);
        assert_eq!(s.buffered, None);
    }

    /// A fire `buffer_one` kept, then a `PUT` to another policy while the job still runs: the
    /// fire goes as the new policy says at the next look (it ran when the job ended before).
    #[test]
    fn a_buffered_fire_follows_a_changed_overlap_policy() {
        let id = Uuid::now_v7();
        let prev = &Previous::Active(vec![id]);
        let at = T0 + 10 * S;
        let buffered = |to: Overlap| {
            let (mut s, c) = sched("*/10 * * * * *", Overlap::BufferOne, Misfire::Skip, 0, T0);
            plan(&mut s, &c, at, prev);
            assert_eq!(s.buffered, Some(at));
            s.spec.overlap = to;
            assert!(plan(&mut s, &c, at + 2 * S, prev), "changed at the recheck");
            assert_eq!(s.buffered, None);
            s
        };
        let s = buffered(Overlap::Forbid);
        assert!(pending(&s).is_empty(), "forbid: skipped while the job runs");
        assert_eq!(s.counters.skipped_overlaps, 1);
        assert_eq!(s.last_runs.last().unwrap().outcome, "skipped_overlap");
        let s = buffered(Overlap::Allow);
        assert_eq!(pending(&s), vec![T0 / S + 10]);
        let s = buffered(Overlap::CancelOther);
        assert_eq!(
            (pending(&s), s.pending[0].cancel),
            (vec![T0 / S + 10], Some(id))
        );
    }

    #[test]
    fn skips_do_not_push_out_the_job_they_wait_for() {
        let (mut s, _) = sched("* * * * * *", Overlap::Forbid, Misfire::Skip, 0, T0);
        let entry = |t: Micros, job_id: Option<Uuid>| RunEntry {
            fire_time: t,
            outcome: if job_id.is_some() {
                "submitted"
            } else {
                "skipped_overlap"
            }
            .into(),
            job_id,
            count: 1,
            error: None,
            at: t,
            job_of: None,
        };
        let long = Uuid::now_v7();
        s.record(entry(T0, Some(long)));
        for i in 1..=25 {
            s.record(entry(T0 + i * S, None));
        }
        assert_eq!(s.last_runs.len(), LAST_RUNS);
        assert_eq!(s.recent_jobs(), vec![long]);
        // Jobs push out the oldest job once no entry without one is left.
        for i in 0..LAST_RUNS as i64 {
            s.record(entry(T0 + (100 + i) * S, Some(Uuid::now_v7())));
        }
        assert!(!s.recent_jobs().contains(&long));
        assert_eq!(s.last_runs.len(), LAST_RUNS);
    }

    #[test]
    fn paused_does_not_fire_and_wake_follows_state() {
        let (mut s, c) = sched("*/10 * * * * *", Overlap::Allow, Misfire::All, 3600, T0);
        s.paused = true;
        assert_eq!(s.wake_at(), None);
        assert!(!plan(&mut s, &c, T0 + 60 * S, &Previous::Idle));
        s.paused = false;
        assert_eq!(s.wake_at(), Some(T0 + 10 * S));
        plan(&mut s, &c, T0 + 10 * S, &Previous::Idle);
        assert_eq!(s.wake_at(), Some(T0 + 10 * S + PENDING_GRACE_US));

        // A fire buffered behind a running job, then a pause: the job's end submits nothing
        // until the resume.
        let (mut s, c) = sched("*/10 * * * * *", Overlap::BufferOne, Misfire::Skip, 0, T0);
        let at = T0 + 10 * S;
        plan(&mut s, &c, at, &Previous::Active(vec![Uuid::now_v7()]));
        assert_eq!(s.buffered, Some(at));
        s.pause();
        assert_eq!(s.wake_at(), None);
        assert!(!plan(&mut s, &c, at + 5 * S, &Previous::Idle));
        assert!(pending(&s).is_empty());
        s.resume(at + 6 * S);
        assert!(plan(&mut s, &c, at + 7 * S, &Previous::Idle));
        assert_eq!(pending(&s), vec![T0 / S + 10]);
    }

    #[test]
    fn fire_jobs_carry_key_schedule_and_jitter() {
        let (mut s, _) = sched("*/10 * * * * *", Overlap::Allow, Misfire::All, 3600, T0);
        let clock_fire = |t: Micros| PendingFire {
            fire_time: t,
            decided_at: t,
            cancel: None,
            cancel_also: vec![],
            manual: false,
        };
        let j = job_for_fire(&s, &clock_fire(T0 + 10 * S), None, T0 + 10 * S);
        assert_eq!(
            j.idempotency_key.as_deref(),
            Some("schedule:n:2026-01-01T00:00:10Z")
        );
        assert_eq!(j.schedule.as_deref(), Some("n"));
        assert_eq!(j.fire_time, Some(T0 + 10 * S));
        assert_eq!(j.status, JobStatus::Queued);
        assert_eq!(j.channel_id, j.id.to_string());
        s.spec.jitter_ms = 60_000;
        let a = job_for_fire(&s, &clock_fire(T0 + 10 * S), None, T0 + 10 * S);
        let b = job_for_fire(&s, &clock_fire(T0 + 10 * S), None, T0 + 10 * S);
        assert_eq!(a.run_at, b.run_at, "every process computes the same jitter");
        let d = a.run_at.unwrap_or(T0 + 10 * S) - (T0 + 10 * S);
        assert!((0..60_000_000).contains(&d));
        // A trigger or a backfill runs at once: no jitter.
        for t in [T0 + 10 * S, T0 + 20 * S, T0 + 30 * S] {
            let asked = PendingFire {
                manual: true,
                ..clock_fire(t)
            };
            let j = job_for_fire(&s, &asked, None, t);
            assert_eq!((j.status, j.run_at), (JobStatus::Queued, None));
            let by_clock = job_for_fire(&s, &clock_fire(t), None, t);
            assert_eq!(
                by_clock.status,
                JobStatus::Scheduled,
                "jittered by the clock"
            );
        }
    }

    /// A job a fire key returned is this schedule's when made after it (a `PUT` may have
    /// changed the template since), or recorded as one of its runs; one made around its
    /// creation only with the template's type (and channel, when it names one); an earlier
    /// schedule's job of the same name never.
    #[test]
    fn a_fire_adopts_only_this_schedules_jobs() {
        let (mut s, _) = sched("0 3 * * *", Overlap::Allow, Misfire::Skip, 0, T0);
        assert_eq!(s.created_at, T0);
        let proto = s.proto.clone();
        let job = |ty: &str, channel: &str, at: Micros| {
            let mut j = proto.clone();
            j.id = Uuid::now_v7();
            j.job_type = ty.into();
            j.channel_id = channel.into();
            j.created_at = at;
            j
        };
        let made_by = |s: &Schedule, j: &Job| firing::made_by(s, j);
        assert!(made_by(&s, &job("t", "x", T0 + 120 * S)), "made after it");
        assert!(
            made_by(&s, &job("other", "x", T0 + 120 * S)),
            "after a PUT changed the type"
        );
        assert!(
            made_by(&s, &job("t", "x", T0 - 30 * S)),
            "its type, the clocks' margin"
        );
        assert!(
            !made_by(&s, &job("t", "x", T0 - 300 * S)),
            "made before it: an earlier one's"
        );
        assert!(
            !made_by(&s, &job("other", "x", T0 - 30 * S)),
            "another type, made then"
        );
        let recorded = job("other", "x", T0 - 30 * S);
        s.record(RunEntry {
            fire_time: T0,
            outcome: "submitted".into(),
            job_id: Some(recorded.id),
            count: 1,
            error: None,
            at: T0,
            job_of: None,
        });
        assert!(made_by(&s, &recorded), "one of its recorded runs");
        s.spec.job = json!({"type": "t", "channel": "c1"});
        assert!(made_by(&s, &job("t", "c1", T0)), "its type and channel");
        assert!(
            !made_by(&s, &job("t", "c2", T0)),
            "another channel, made then"
        );
        assert!(
            made_by(&s, &job("t", "c2", T0 + 120 * S)),
            "after a PUT changed the channel"
        );
        // A job that carries its schedule's creation time: this one's exactly when it is this
        // schedule's, whenever it was made, whatever its type and channel.
        let stamped = |gen: Micros, at: Micros| {
            let mut j = job("t", "c1", at);
            j.schedule_gen = Some(gen);
            j
        };
        assert!(
            !made_by(&s, &stamped(T0 - 1, T0 - 30 * S)),
            "an earlier schedule's, made within the clocks' margin"
        );
        assert!(
            !made_by(&s, &stamped(T0 - 1, T0 + 120 * S)),
            "an earlier schedule's, its node's clock ahead"
        );
        assert!(
            made_by(&s, &stamped(T0, T0 - 300 * S)),
            "its own, its node's clock behind"
        );
    }
}
