//! The rule for a job or schedule that a path names (`On::Job`, `On::Schedule`): a caller
//! confined by `types` / `channels` acts only on one within them (403 otherwise, naming only
//! the caller's own confinement). One rule, applied twice: by the guard before the handler
//! runs ([`super::access`], which lets an unknown one through to the handler's 404), and by the
//! handler on the very record it loaded and acts on. The second check closes the window between
//! the two lookups: a schedule (or job) that did not exist when the guard looked, created in
//! between (an admin's `POST`), would otherwise be read, fired, paused, replaced or deleted by
//! any caller whose route scope allows it, whatever its channels.

use super::tokens::Grant;
use super::Refusal;
use crate::job::Job;
use crate::store::schedules::Schedule;

/// The channel a schedule's jobs get: its template's `channel`, if it names one.
pub fn schedule_channel(s: &Schedule) -> Option<&str> {
    s.spec.job.get("channel").and_then(|c| c.as_str())
}

/// `job` is within `grant`, or 403.
pub fn job(grant: &Grant, job: &Job) -> Result<(), Refusal> {
    if !grant.is_confined() {
        return Ok(());
    }
    grant.check_existing(&job.job_type, Some(&job.channel_id))
}

/// For a caller without `jobs:read` that follows events (a channel JWT): the job `id` (the
/// `result_url` of its events) is of a channel the grant reads, else 404 as for no job, so that
/// the ids of other channels' jobs are not confirmed. An unknown id is the same 404, from the
/// same one read (answered by the handler after a second read, its time would tell the two
/// apart); a malformed one passes: the handler answers 400 (and checks the job it finds by
/// [`hidden_job`]).
pub async fn channel_result(
    store: &dyn crate::store::Store,
    grant: &Grant,
    id: Option<String>,
) -> Result<(), Refusal> {
    let Some(id) = id.and_then(|s| uuid::Uuid::parse_str(&s).ok()) else {
        return Ok(());
    };
    match store.get(id).await? {
        Some(job) => hidden_job(grant, &job),
        None => Err(Refusal::NotFound("job not found".into())),
    }
}

/// [`channel_result`]'s rule on a job that exists: within the grant's channels (a channel JWT
/// is confined to its channel; a grant confined to none reads none this way), else 404.
pub fn hidden_job(grant: &Grant, job: &Job) -> Result<(), Refusal> {
    if grant.confined_to_channels() && grant.sees(&job.job_type, Some(&job.channel_id)) {
        return Ok(());
    }
    Err(Refusal::NotFound("job not found".into()))
}

/// For a schedule whose record does not read (its job's type and channel are not known): only a
/// grant confined to no types or channels may act on it (delete it), or 403.
pub fn unreadable_schedule(grant: &Grant) -> Result<(), Refusal> {
    if !grant.is_confined() {
        return Ok(());
    }
    Err(Refusal::Forbidden(format!(
        "{} is confined to some job types or channels, and the record of the schedule this \
         path names does not read: whether it is within them is not known",
        grant.who
    )))
}

/// The schedule `s` (its template's type and channel) is within `grant`, or 403.
pub fn schedule(grant: &Grant, s: &Schedule) -> Result<(), Refusal> {
    if !grant.is_confined() {
        return Ok(());
    }
    grant.check_existing(&s.proto.job_type, schedule_channel(s))
}
