//! A fresh job with every field at its starting value, so that code building a job (the submit
//! handler, tests) names only what differs: `Job { max_attempts: 3, ..Job::new(t, r, now) }`.

use parking_lot::Mutex;
use serde_json::json;
use uuid::{ContextV7, Timestamp, Uuid};

use super::{Backoff, Job, JobStatus, Micros};

/// How far ahead of the time it is made for an id may be ([`id_at`]): ids made for times that
/// step back by less than this stay in the order they were made in; past it they go back with
/// the times. Well inside the listing's widening of an id range (`ID_SKEW_MS`,
/// `src/store/paging.rs`).
pub const ID_AHEAD_MS: u64 = 10_000;

/// Makes the ids of one process ([`id_at`]): the context that orders ids within a millisecond
/// and the last time (ms) of an id made.
struct IdClock {
    context: ContextV7,
    last_ms: u64,
}

impl IdClock {
    const fn new() -> Self {
        Self {
            context: ContextV7::new(),
            last_ms: 0,
        }
    }

    fn make(&mut self, now: Micros) -> Uuid {
        // A v7 id holds 48 bits of milliseconds; a time before 1970 is 1970.
        const MAX_US: u64 = ((1 << 48) - 1) * 1000 + 999;
        let us = u64::try_from(now).unwrap_or(0).min(MAX_US);
        if (us / 1000).saturating_add(ID_AHEAD_MS) < self.last_ms {
            *self = Self::new();
        }
        let nanos = u32::try_from(us % 1_000_000).unwrap_or(0) * 1000;
        let id = Uuid::new_v7(Timestamp::from_unix(&self.context, us / 1_000_000, nanos));
        // The id's first 48 bits: its milliseconds.
        let made_ms = u64::try_from(id.as_u128() >> 80).unwrap_or(0);
        self.last_ms = self.last_ms.max(made_ms);
        id
    }
}

static IDS: Mutex<IdClock> = Mutex::new(IdClock::new());

/// A new time-ordered job id (UUID v7) carrying the time `now` (µs), the millisecond of the
/// job's `created_at`: on Redis the store's clock, not this node's, so that the listing's id
/// ranges (`created_after`, `created_before`) and its order go by the store's clock whichever
/// node made the job. Ids made in this process are unique and in the order they were made (a
/// counter within a millisecond, as `Uuid::now_v7`), also when `now` steps back less than
/// [`ID_AHEAD_MS`] (the id then carries the last time, that much ahead at most); a step back
/// further starts again from `now`.
pub fn id_at(now: Micros) -> Uuid {
    IDS.lock().make(now)
}

impl Job {
    /// A QUEUED job of `job_type` for `runner`, created at `now`: a new time-ordered id of that
    /// time ([`id_at`]), its own channel (the id), empty args, one attempt with the default
    /// backoff, no lease, no run yet.
    pub fn new(job_type: &str, runner: &str, now: Micros) -> Self {
        let id = id_at(now);
        Self {
            id,
            job_type: job_type.into(),
            args: json!({}),
            runner: runner.into(),
            status: JobStatus::Queued,
            channel_id: id.to_string(),
            user_id: None,
            attempt: 0,
            max_attempts: 1,
            backoff: Backoff::default(),
            timeout_ms: None,
            run_at: None,
            idempotency_key: None,
            progress: 0.0,
            status_details: None,
            result: None,
            error: None,
            exit_code: None,
            lease: None,
            handle: None,
            files: Default::default(),
            runs: Vec::new(),
            created_at: now,
            updated_at: now,
            queued_at: now,
            started_at: None,
            finished_at: None,
            progress_event_at: 0,
            progress_due: None,
            submit_hash: None,
            version: 0,
            schedule: None,
            fire_time: None,
            schedule_gen: None,
            emits: Vec::new(),
            notify: None,
            wait: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The milliseconds an id carries.
    fn ms(id: Uuid) -> u64 {
        u64::try_from(id.as_u128() >> 80).unwrap()
    }

    const T: Micros = 1_796_000_000_123_456;

    #[test]
    fn an_id_carries_the_millisecond_it_is_made_for() {
        let j = Job::new("t", "r", T);
        assert_eq!(ms(j.id), 1_796_000_000_123);
        assert_eq!(j.id.get_version_num(), 7);
        assert_eq!(j.channel_id, j.id.to_string());
        let mut c = IdClock::new();
        assert_eq!(ms(c.make(-5)), 0);
        assert_eq!(ms(c.make(Micros::MAX)), (1 << 48) - 1);
    }

    #[test]
    fn ids_of_one_process_are_unique_and_in_the_order_they_were_made() {
        let mut c = IdClock::new();
        let mut last = c.make(T);
        // A thousand in one millisecond, then the next millisecond's.
        for now in std::iter::repeat_n(T, 1000).chain([T + 1000]) {
            let id = c.make(now);
            assert!(id > last, "{id} after {last}");
            assert!(id.to_string() > last.to_string());
            last = id;
        }
        assert_eq!(ms(last), 1_796_000_000_124);
        // A step back within ID_AHEAD_MS: still after the last, carrying its time.
        let back = c.make(T - 5_000_000);
        assert!(back > last);
        assert_eq!(ms(back), 1_796_000_000_124);
        // Further back: the id goes back with the time, and on in order from there.
        let far = T - (ID_AHEAD_MS as Micros + 1_000) * 1000;
        let id = c.make(far);
        assert_eq!(ms(id), u64::try_from(far / 1000).unwrap());
        assert!(c.make(far) > id);
    }
}
