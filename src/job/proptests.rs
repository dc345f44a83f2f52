//! Property tests of the status machine ([`apply`]) and of the embedded store's use of it.
//!
//! Random sequences of commands from several actors (workers holding fencing tokens, stale
//! workers, clients cancelling and retrying, the job's own hook, the reaper, adopting workers,
//! launches given back after a host failure, the scheduler) are applied to a job, and after every command the invariants are checked:
//!
//! - a terminal status stays terminal, except through an explicit `Retry`;
//! - `attempt` never decreases;
//! - a command carrying a fencing token that is not the current lease's never writes (and a
//!   `StaleLease` refusal leaves the job equal to what it was);
//! - any refused command changes nothing (the job compares equal);
//! - an accepted command bumps `version` by one, and emits a status event exactly when the status
//!   changed, with the new status in it;
//! - the job stays well formed (progress in 0..=1, a lease while active and none while waiting,
//!   `finished_at` exactly when terminal, bounded run records);
//! - an outcome the running attempt reported that ends the job (SUCCESS, or an ERROR with
//!   `retry: false` or no attempts left) is never turned into CANCELLED;
//! - files go only at a `Claim` or a `Retry`, and only the job's own uploads (those carrying an
//!   `attempt`); after a `Claim` no file carries one; a job's upload from another attempt than
//!   the job's is never attached.
//!
//! The store-level test runs the same kind of sequences through [`SqliteStore`]'s `apply` and
//! checks that the backend adds nothing: same outcome, same job (but for the clock), and the
//! events stored are the ones the pure function emitted.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestRunner};
use serde_json::json;

use super::transition::{
    apply, releases_in_a_row, ApplyCtx, Command, EventKind, FinishOutcome, HookReport,
    RELEASES_GIVEN_BACK,
};
use super::{Backoff, Event, FileRef, Job, JobStatus, Micros, Reported, MAX_RUN_RECORDS};
use crate::job::TransitionError;

/// Which fencing token a worker-side command carries.
#[derive(Debug, Clone)]
enum Tok {
    /// The current lease's token (a never-issued one when there is no lease).
    Current,
    /// One of the tokens issued so far (often a stale one).
    Issued(usize),
    /// A token no claim ever got.
    Never(u64),
}

#[derive(Debug, Clone)]
enum Outcome {
    Success(bool),
    Failed(Option<i32>),
    Timeout,
}

#[derive(Debug, Clone)]
enum Op {
    Claim {
        worker: u8,
        lease_ok: bool,
    },
    Started {
        tok: Tok,
        handle: bool,
    },
    Progress {
        tok: Option<Tok>,
        progress: Option<f64>,
        details: bool,
    },
    Hook {
        status: Option<JobStatus>,
        progress: Option<f64>,
        results: bool,
        error: Option<String>,
    },
    Finish {
        tok: Tok,
        outcome: Outcome,
    },
    Release {
        tok: Tok,
    },
    HostFailure {
        tok: Tok,
    },
    TimeLimit {
        tok: Tok,
    },
    Stopped {
        tok: Tok,
    },
    StopLost {
        tok: Tok,
    },
    /// The embedded store reopened after a crash.
    Orphan,
    LeaseExpired,
    Adopt {
        /// The fence's token the reaper adopts under, if any.
        tok: Option<Tok>,
        worker: u8,
        lease_ok: bool,
    },
    Cancel,
    Retry,
    Promote,
    Attach {
        by_job: bool,
        /// A job's upload from the attempt before the job's (it arrived late).
        stale: bool,
    },
}

fn progress_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => 0.0..=1.0f64,
        1 => Just(0.0),
        1 => Just(1.0),
        1 => -2.0..3.0f64,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => any::<f64>(),
    ]
}

fn tok() -> impl Strategy<Value = Tok> {
    prop_oneof![
        4 => Just(Tok::Current),
        3 => (0usize..8).prop_map(Tok::Issued),
        1 => (0u64..4).prop_map(Tok::Never),
    ]
}

fn status() -> impl Strategy<Value = JobStatus> {
    prop::sample::select(JobStatus::ALL.to_vec())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, prop::bool::weighted(0.8))
            .prop_map(|(worker, lease_ok)| Op::Claim { worker, lease_ok }),
        3 => (tok(), any::<bool>()).prop_map(|(tok, handle)| Op::Started { tok, handle }),
        2 => (prop::option::of(tok()), prop::option::of(progress_value()), any::<bool>())
            .prop_map(|(tok, progress, details)| Op::Progress { tok, progress, details }),
        3 => (
            prop::option::of(status()),
            prop::option::of(progress_value()),
            any::<bool>(),
            prop::option::of("[a-z ]{0,8}"),
        )
            .prop_map(|(status, progress, results, error)| Op::Hook {
                status,
                progress,
                results,
                error,
            }),
        3 => (
            tok(),
            prop_oneof![
                any::<bool>().prop_map(Outcome::Success),
                prop::option::of(-3i32..3).prop_map(Outcome::Failed),
                Just(Outcome::Timeout),
            ]
        )
            .prop_map(|(tok, outcome)| Op::Finish { tok, outcome }),
        1 => tok().prop_map(|tok| Op::Release { tok }),
        1 => tok().prop_map(|tok| Op::HostFailure { tok }),
        1 => tok().prop_map(|tok| Op::TimeLimit { tok }),
        1 => tok().prop_map(|tok| Op::Stopped { tok }),
        1 => tok().prop_map(|tok| Op::StopLost { tok }),
        1 => Just(Op::Orphan),
        2 => Just(Op::LeaseExpired),
        1 => (prop::option::of(tok()), 0u8..3, prop::bool::weighted(0.8))
            .prop_map(|(tok, worker, lease_ok)| Op::Adopt { tok, worker, lease_ok }),
        2 => Just(Op::Cancel),
        2 => Just(Op::Retry),
        2 => Just(Op::Promote),
        2 => (any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(by_job, stale)| Op::Attach { by_job, stale }),
    ]
}

/// A sequence of (time step in µs, command). Steps are mostly forward, sometimes a small step
/// back (a clock that was stepped).
fn ops(max: usize) -> impl Strategy<Value = Vec<(i64, Op)>> {
    prop::collection::vec(
        (
            prop_oneof![8 => 0i64..3_000_000, 1 => -1_000_000i64..0],
            op(),
        ),
        1..max,
    )
}

/// A freshly submitted job: QUEUED, or SCHEDULED (delayed); 1 to 4 attempts.
fn new_job() -> impl Strategy<Value = Job> {
    (
        1u32..=4,
        any::<bool>(),
        0u64..5_000,
        1.0f64..=3.0,
        any::<bool>(),
    )
        .prop_map(
            |(max_attempts, scheduled, initial_ms, multiplier, jitter)| {
                let now: Micros = 1_700_000_000_000_000;
                Job {
                    args: json!({"n": 1}),
                    status: if scheduled {
                        JobStatus::Scheduled
                    } else {
                        JobStatus::Queued
                    },
                    channel_id: "prop".into(),
                    max_attempts,
                    // Backoff values stay small here: a backoff large enough to overflow the clock is
                    // the submit-validation hole of issue 9, fixed and tested at the API edge.
                    backoff: Backoff {
                        initial_ms,
                        max_ms: initial_ms.saturating_mul(10),
                        multiplier,
                        jitter,
                    },
                    run_at: scheduled.then_some(now + 1_000_000),
                    ..Job::new("prop.test", "r", now)
                }
            },
        )
}

/// The actors' side of a run: the tokens the claims got, the next token to hand out.
struct Actors {
    issued: Vec<u64>,
    next: u64,
}

impl Actors {
    fn new() -> Self {
        Actors {
            issued: Vec::new(),
            next: 1,
        }
    }

    fn token(&self, job: &Job, t: &Tok) -> u64 {
        match t {
            Tok::Current => job.lease.as_ref().map_or(1_000_000, |l| l.token),
            Tok::Issued(i) if !self.issued.is_empty() => self.issued[i % self.issued.len()],
            Tok::Issued(i) => 1_000_000 + *i as u64,
            Tok::Never(n) => 1_000_000 + n,
        }
    }

    fn fresh(&mut self) -> u64 {
        let t = self.next;
        self.next += 1;
        self.issued.push(t);
        t
    }

    /// The command `op` stands for, against `job` at `now`. `lease_ok` leases run an hour past
    /// `now`, the others ended an hour before it (so a reaper or adopter sees them expired).
    fn command(&mut self, job: &Job, op: &Op, now: Micros) -> Command {
        const HOUR: Micros = 3_600_000_000;
        let lease = |ok: bool| if ok { now + HOUR } else { now - HOUR };
        match op {
            Op::Claim { worker, lease_ok } => Command::Claim {
                worker: format!("w{worker}"),
                token: self.fresh(),
                lease_until: lease(*lease_ok),
            },
            Op::Started { tok, handle } => Command::Started {
                token: self.token(job, tok),
                handle: handle.then(|| runyard_hooks::RunHandle {
                    kind: runyard_hooks::RunKind::Local,
                    id: "42".into(),
                    data: json!({"pid": 42}),
                }),
            },
            Op::Progress {
                tok,
                progress,
                details,
            } => Command::Progress {
                token: tok.as_ref().map(|t| self.token(job, t)),
                progress: *progress,
                details: details.then(|| json!({"step": 1})),
            },
            Op::Hook {
                status,
                progress,
                results,
                error,
            } => Command::Hook(HookReport {
                status: *status,
                progress: *progress,
                details: None,
                results: results.then(|| json!({"ok": true})),
                error: error.clone(),
                retry: error.as_ref().map(|e| e.len() % 2 == 0),
            }),
            Op::Finish { tok, outcome } => Command::Finish {
                token: self.token(job, tok),
                outcome: match outcome {
                    Outcome::Success(r) => FinishOutcome::Success(r.then(|| json!([1, 2]))),
                    Outcome::Failed(code) => FinishOutcome::Failed {
                        message: "exit".into(),
                        exit_code: *code,
                    },
                    Outcome::Timeout => FinishOutcome::Timeout("timed out".into()),
                },
            },
            Op::Release { tok } => Command::Release {
                token: self.token(job, tok),
            },
            Op::HostFailure { tok } => Command::HostFailure {
                token: self.token(job, tok),
                message: "cannot start: Too many open files".into(),
            },
            Op::TimeLimit { tok } => Command::TimeLimit {
                token: self.token(job, tok),
                message: "timed out after 1s".into(),
            },
            Op::Stopped { tok } => Command::Stopped {
                token: self.token(job, tok),
            },
            Op::StopLost { tok } => Command::StopLost {
                token: self.token(job, tok),
            },
            Op::Orphan => Command::OrphanLease,
            Op::LeaseExpired => Command::LeaseExpired { token: None },
            Op::Adopt {
                tok,
                worker,
                lease_ok,
            } => Command::Adopt {
                expected: tok.as_ref().map(|t| self.token(job, t)),
                worker: format!("w{worker}"),
                token: self.fresh(),
                lease_until: lease(*lease_ok),
            },
            Op::Cancel => Command::Cancel,
            Op::Retry => Command::Retry { runner: None },
            Op::Promote => Command::Promote,
            Op::Attach { by_job, stale } => Command::AttachFile {
                property: "inputs".into(),
                file: FileRef {
                    hash: "5d41402abc4b2a76b9719d911017c592".into(),
                    size: 5,
                    mimetype: "text/plain".into(),
                    name: "a.txt".into(),
                    metadata: json!({}),
                    attempt: None,
                },
                by_attempt: by_job.then_some(job.attempt.saturating_sub(u32::from(*stale))),
            },
        }
    }
}

/// The fencing token a command carries, if it is a worker's write.
fn carried_token(cmd: &Command) -> Option<u64> {
    match cmd {
        Command::Started { token, .. }
        | Command::Finish { token, .. }
        | Command::Release { token }
        | Command::Stopped { token }
        | Command::StopLost { token }
        | Command::TimeLimit { token, .. }
        | Command::HostFailure { token, .. } => Some(*token),
        Command::Progress { token, .. } => *token,
        Command::Adopt { expected, .. } => *expected,
        _ => None,
    }
}

/// Checks the invariants of one step: `before` --cmd--> (`result`, `after`).
fn check_step(
    before: &Job,
    cmd: &Command,
    result: &Result<Option<EventKind>, TransitionError>,
    after: &Job,
) -> Result<(), TestCaseError> {
    prop_assert!(after.attempt >= before.attempt, "attempt went down");
    match result {
        Err(e) => {
            prop_assert_eq!(after, before, "refused ({}) but changed", e);
        }
        Ok(ev) => {
            prop_assert_eq!(after.version, before.version + 1, "version not bumped once");
            if before.status.is_terminal() {
                // A retry; or, of a job cancelled while it ran, its worker giving up the lease
                // it kept (nothing else changes).
                let stopped = matches!(cmd, Command::Stopped { .. } | Command::StopLost { .. })
                    && before.status == JobStatus::Cancelled
                    && after.lease.is_none()
                    && after.status == before.status;
                // Or, the store reopened, the lease it kept runs out now (never later).
                let orphaned = matches!(cmd, Command::OrphanLease)
                    && before.status == JobStatus::Cancelled
                    && after.status == before.status
                    && after
                        .lease
                        .as_ref()
                        .zip(before.lease.as_ref())
                        .is_some_and(|(a, b)| {
                            a.expires_at <= b.expires_at
                                && (a.token, &a.worker) == (b.token, &b.worker)
                        });
                prop_assert!(
                    matches!(cmd, Command::Retry { .. }) || stopped || orphaned,
                    "a terminal job ({}) accepted {:?}",
                    before.status,
                    cmd
                );
            }
            // A retry never runs beside an attempt whose worker may still stop it: its lease
            // was given up (`Stopped`, or `StopLost` once it ran out), or no reaper came for
            // `ABANDONED_STOP` after it ran out.
            if matches!(cmd, Command::Retry { .. }) && before.status == JobStatus::Cancelled {
                prop_assert!(
                    before.lease.as_ref().is_none_or(
                        |l| l.expires_at + crate::job::ABANDONED_STOP <= after.updated_at
                    ),
                    "retried while the cancelled attempt was being stopped: {:?}",
                    before.lease
                );
            }
            if matches!(cmd, Command::StopLost { .. }) {
                prop_assert!(
                    before
                        .lease
                        .as_ref()
                        .is_some_and(|l| l.expires_at < after.updated_at),
                    "a lease given up by a reaper before it ran out: {:?}",
                    before.lease
                );
            }
            if let Some(t) = carried_token(cmd) {
                prop_assert_eq!(
                    before.lease.as_ref().map(|l| l.token),
                    Some(t),
                    "a write with a stale token was accepted: {:?}",
                    cmd
                );
            }
            let changed = after.status != before.status;
            // An attempt out of time ends TIMEOUT (or CANCELLED), whatever its work then says.
            if changed
                && after.status.is_terminal()
                && matches!(before.reported(), Some(Reported::Timeout { .. }))
            {
                prop_assert!(
                    matches!(after.status, JobStatus::Timeout | JobStatus::Cancelled),
                    "an attempt out of time ended {} by {:?}",
                    after.status,
                    cmd
                );
            }
            prop_assert_eq!(
                *ev == Some(EventKind::Status),
                changed,
                "status event {:?} for {} -> {}",
                ev,
                before.status,
                after.status
            );
            if changed && !matches!(cmd, Command::Retry { .. }) {
                prop_assert!(
                    before.status.can_move_to(after.status),
                    "illegal move {} -> {}",
                    before.status,
                    after.status
                );
            }
            // Only an attempt given back (a release, a host failure) or a retry changes
            // `max_attempts`; a release only for a bounded row of releases.
            if after.max_attempts != before.max_attempts {
                match cmd {
                    Command::Release { .. } | Command::HostFailure { .. } => {
                        prop_assert_eq!(after.max_attempts, before.max_attempts + 1);
                    }
                    Command::Retry { .. } => {
                        prop_assert_eq!(after.max_attempts, before.attempt + 1)
                    }
                    _ => prop_assert!(false, "{:?} changed max_attempts", cmd),
                }
            }
            if matches!(cmd, Command::Release { .. }) && after.max_attempts > before.max_attempts {
                let in_a_row = releases_in_a_row(after);
                prop_assert!(
                    in_a_row <= RELEASES_GIVEN_BACK,
                    "{} releases given back",
                    in_a_row
                );
            }
            check_reports_and_files(before, cmd, after)?;
            if let Some(kind) = ev {
                let e = Event::for_job(after, *kind);
                prop_assert_eq!(e.runyard_status, Some(after.status));
                prop_assert_eq!(e.attempt, after.attempt);
            }
        }
    }
    // Well formed whatever happened.
    prop_assert!(
        (0.0..=1.0).contains(&after.progress),
        "progress {}",
        after.progress
    );
    prop_assert_eq!(after.finished_at.is_some(), after.status.is_terminal());
    if after.status.is_active() {
        prop_assert!(after.lease.is_some(), "active without a lease");
        prop_assert!(after.attempt >= 1);
    }
    if matches!(after.status, JobStatus::Queued | JobStatus::Scheduled) {
        prop_assert!(after.lease.is_none(), "{} with a lease", after.status);
    }
    prop_assert!(after.runs.len() <= MAX_RUN_RECORDS);
    Ok(())
}

/// The invariants of an accepted command about a final report and about files.
fn check_reports_and_files(before: &Job, cmd: &Command, after: &Job) -> Result<(), TestCaseError> {
    // The rule stated again here (not `attempts::ends_the_job`), as fail_attempt applies it.
    let final_report = match before.reported() {
        Some(Reported::Success) => true,
        Some(Reported::Error { retry, .. }) => !retry || before.attempt >= before.max_attempts,
        _ => false,
    };
    if final_report && after.status != before.status {
        prop_assert!(
            after.status != JobStatus::Cancelled,
            "a final report ({:?}) ended CANCELLED by {:?}",
            before.reported(),
            cmd
        );
    }
    // Files: each property's list stays as it was, with files added at its end; only a claim
    // or a retry drops files, and only the job's own uploads.
    let new_attempt = matches!(cmd, Command::Claim { .. } | Command::Retry { .. });
    for (property, list) in &before.files {
        let kept: Vec<&FileRef> = list
            .iter()
            .filter(|f| !new_attempt || f.attempt.is_none())
            .collect();
        let now: Vec<&FileRef> = after.files.get(property).into_iter().flatten().collect();
        prop_assert!(
            now.len() >= kept.len() && now[..kept.len()] == kept[..],
            "{:?} dropped files of {}: {:?} -> {:?}",
            cmd,
            property,
            list,
            now
        );
    }
    if matches!(cmd, Command::Claim { .. }) {
        let carried = after.files.values().flatten().any(|f| f.attempt.is_some());
        prop_assert!(!carried, "an upload survived a claim: {:?}", after.files);
    }
    if let Command::AttachFile {
        by_attempt: Some(a),
        ..
    } = cmd
    {
        prop_assert_eq!(*a, before.attempt, "an upload attached to another attempt");
    }
    Ok(())
}

fn ctx(now: Micros) -> ApplyCtx {
    ApplyCtx {
        now,
        jitter: 0.5,
        progress_interval: 0,
    }
}

/// The number of cases of the pure status machine property: 256 (about 3 s in a debug build),
/// or `RUNYARD_PROPTEST_CASES` for a longer run.
fn pure_cases() -> u32 {
    std::env::var("RUNYARD_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

#[test]
fn status_machine_invariants_hold_for_any_command_sequence() {
    let mut runner = TestRunner::new(PtConfig {
        cases: pure_cases(),
        ..PtConfig::default()
    });
    let stats = std::cell::Cell::new([0usize; 2]);
    runner
        .run(&(new_job(), ops(60)), |(mut job, steps)| {
            let mut actors = Actors::new();
            let mut now = job.created_at;
            for (dt, op) in steps {
                now += dt;
                let cmd = actors.command(&job, &op, now);
                let before = job.clone();
                let result = apply(&mut job, cmd.clone(), &ctx(now));
                let mut s = stats.get();
                s[usize::from(result.is_ok())] += 1;
                stats.set(s);
                check_step(&before, &cmd, &result, &job)?;
                if result == Err(TransitionError::StaleLease) {
                    prop_assert_eq!(&job, &before);
                }
            }
            Ok(())
        })
        .unwrap();
    // The generator must reach both outcomes often, or the property says little.
    let stats = stats.get();
    assert!(
        stats[0] > 500 && stats[1] > 500,
        "refused/accepted: {stats:?}"
    );
}

/// The job with everything that depends on the wall clock or on jitter blanked out.
fn clockless(j: &Job) -> Job {
    let mut j = j.clone();
    let blank = |t: &mut Option<Micros>| {
        if t.is_some() {
            *t = Some(0)
        }
    };
    j.updated_at = 0;
    j.queued_at = 0;
    j.progress_event_at = 0;
    blank(&mut j.progress_due);
    blank(&mut j.started_at);
    blank(&mut j.finished_at);
    blank(&mut j.run_at);
    for r in &mut j.runs {
        r.claimed_at = 0;
        blank(&mut r.started_at);
        blank(&mut r.ended_at);
    }
    j
}

/// The number of cases of the store-level property (each a fresh job in one store).
const STORE_CASES: u32 = 64;

#[test]
fn sqlite_store_apply_equals_pure_apply() {
    use crate::store::sqlite::SqliteStore;
    use crate::store::{EventLog, JobStore, StoreError, StoreSettings};

    let dir = tempfile::tempdir().unwrap();
    let settings = StoreSettings {
        progress_interval: std::time::Duration::ZERO,
        ..StoreSettings::default()
    };
    let store = SqliteStore::open(dir.path(), settings, false).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(PtConfig {
        cases: STORE_CASES,
        ..PtConfig::default()
    });
    runner
        .run(&(new_job(), ops(30)), |(job, steps)| {
            rt.block_on(async {
                let mut model = job.clone();
                model.channel_id = format!("prop-{}", model.id);
                let stored = store.submit(model.clone()).await.unwrap();
                prop_assert!(stored.created);
                let mut model_events: Vec<(JobStatus, String)> = Vec::new();
                let mut actors = Actors::new();
                for (_, op) in steps {
                    // Only the embedded store's open orphans leases, at its own time: no
                    // command a caller applies.
                    if matches!(op, Op::Orphan) {
                        continue;
                    }
                    let now = super::now_us();
                    let cmd = actors.command(&model, &op, now);
                    let expected = apply(&mut model, cmd.clone(), &ctx(now));
                    let got = store.apply(model.id, cmd).await;
                    match (&expected, got) {
                        (Ok(ev), Ok(job)) => {
                            prop_assert_eq!(clockless(&job), clockless(&model));
                            if let Some(kind) = ev {
                                let k = if *kind == EventKind::Status {
                                    "status"
                                } else {
                                    "progress"
                                };
                                model_events.push((model.status, k.to_string()));
                            }
                            // Later commands see the stored job, clock included.
                            model = job;
                        }
                        (Err(e), Err(StoreError::Transition(g))) => prop_assert_eq!(e, &g),
                        (e, g) => prop_assert!(false, "pure {:?}, store {:?}", e, g),
                    }
                }
                let events = store
                    .events(Some(&model.channel_id), None, 10_000)
                    .await
                    .unwrap();
                let stored_events: Vec<(JobStatus, String)> = events
                    .iter()
                    .skip(1) // the submit's own event
                    .map(|e| (e.runyard_status.unwrap(), e.kind.clone()))
                    .collect();
                prop_assert_eq!(stored_events, model_events);
                Ok(())
            })
        })
        .unwrap();
}

/// A job stored by either backend is its JSON: it must read back with the very floats it was
/// written with. Found by `sqlite_store_apply_equals_pure_apply`: without serde_json's
/// `float_roundtrip`, `backoff.multiplier` 1.3883369014429081 came back as 1.388336901442908.
#[test]
fn job_json_keeps_floats_exactly() {
    let mut job = new_job()
        .new_tree(&mut TestRunner::deterministic())
        .unwrap()
        .current();
    job.backoff.multiplier = 1.388_336_901_442_908_1;
    job.progress = 0.300_000_000_000_000_04;
    job.args = json!({"x": 1.388_336_901_442_908_1, "y": 5e-324, "z": 1.797_693_134_862_315_7e308});
    let back: Job = serde_json::from_str(&serde_json::to_string(&job).unwrap()).unwrap();
    assert_eq!(back, job);
    TestRunner::new(PtConfig {
        cases: 1024,
        ..PtConfig::default()
    })
    .run(&(any::<f64>(), 0.0..=1.0f64), |(x, p)| {
        let mut j = job.clone();
        j.progress = p;
        if x.is_finite() {
            j.args = json!({ "x": x });
            j.backoff.multiplier = x;
        }
        let back: Job = serde_json::from_str(&serde_json::to_string(&j).unwrap()).unwrap();
        prop_assert_eq!(back, j);
        Ok(())
    })
    .unwrap();
}
