//! `POST /async/status` when a report may have been lost between the replay memory and the job:
//! the server remembers a request's signature (`hooks::authenticate`) before it applies its
//! report, so a node that died between the two, or an apply that failed and whose `503` never
//! reached the job, leaves a signature spent and a report not applied. The job's client, having
//! had no answer, sends the very same request again: a plain `401 replay` would tell it the
//! report was taken, and the job's result would be lost without a word.
//!
//! So a replayed report signed with v2 (which covers the body: the replay is the very report
//! accepted before) carrying a final status (`SUCCESS` or `ERROR`) while the job is still
//! active and has not recorded that status (nothing, or another outcome: its time limit ran
//! out) is answered `503 replay_unapplied`: the client signs it again (as after any `503` of
//! runyard's), and the fresh request is applied, or refused `409` naming what the job recorded.
//! Nothing is applied twice, and whoever replays a request they captured cannot sign again: all
//! they learn (503 or 401) is whether the job has recorded that outcome yet, which the job's
//! `runs[].reported` shows anyway. A refused report (`409 illegal_transition`)
//! says what the job reported (`error.reported`), so a client whose earlier try was taken after
//! all (the server's `5xx` answered after it applied) can tell that its report is the one there.

use runyard_hooks::wire::StatusReport;
use runyard_hooks::VerifyError;
use uuid::Uuid;

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::job::{Command, HookReport, Job, JobStatus, RunRecord, TransitionError};
use crate::store::StoreError;

/// What a replayed `/status` request signed with v2 (`body`, as signed) is answered, `job` read after its
/// signature was found spent: `503 replay_unapplied` when it carries a final status the job
/// has not recorded (nothing, or another outcome) while it is still active, else `401 replay`.
pub(super) fn replay_answer(job: &Job, body: &[u8]) -> ApiError {
    let status = serde_json::from_slice::<StatusReport>(body)
        .ok()
        .and_then(|r| r.status)
        .and_then(|s| s.parse::<JobStatus>().ok());
    let final_report = matches!(status, Some(JobStatus::Success | JobStatus::Error));
    // A job that recorded another outcome (its time limit ran out: TIMEOUT; or the other final
    // status) proves this one was not applied: signed again, it is refused 409 naming it.
    if final_report && job.status.is_active() && job.reported().map(|r| r.status()) != status {
        ApiError::replay_unapplied(
            "this request was accepted before but its report is not applied (the server may \
             have failed between the two): sign it again",
        )
    } else {
        VerifyError::Replay.into()
    }
}

/// What the job's current attempt reported (or its time limit decided), committed or not.
fn decided(job: &Job) -> Option<JobStatus> {
    job.runs
        .last()
        .filter(|r| r.attempt == job.attempt)
        .and_then(RunRecord::decided)
        .map(|r| r.status())
}

/// Applies the report `r` to job `id`; a `409 illegal_transition` says what the job reported
/// (`error.reported`), read after the refusal.
pub(super) async fn apply_report(st: &AppState, id: Uuid, r: HookReport) -> ApiResult<Job> {
    match st.app.store.apply(id, Command::Hook(r)).await {
        Ok(job) => {
            crate::worker::held_progress::follow(&st.app.store, &job);
            Ok(job)
        }
        Err(e @ StoreError::Transition(TransitionError::Illegal { .. })) => {
            let reported = st.job(id).await.ok().as_ref().and_then(decided);
            Err(ApiError::from(e).with_reported(reported))
        }
        Err(e) => Err(e.into()),
    }
}
