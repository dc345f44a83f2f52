//! The schemas of answers the handlers build as JSON values (`json!`), and of the hook wire types
//! (they live in the `runyard-hooks` crate, which does not depend on utoipa). Each mirrors the
//! code that builds the answer, named in its doc; schemathesis checks every answer against them
//! in CI (`scripts/openapi-check.sh`), so a field renamed on one side fails there.
//!
//! Fields that may be absent or null are `Option`s: not required, `null` allowed. Objects allow
//! more properties than listed (a new field is not a breaking change).

#![allow(dead_code)] // Schema-only types: never built, only described.

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::openapi::schema::{AnyOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::job::JobStatus;

/// Every error answer: `{"error": {"code", "message"}}` (src/api/error.rs).
#[derive(ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable machine code and a message for a person.
#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Stable code, e.g. `invalid_request`, `unknown_type`, `not_found`.
    pub code: String,
    /// What went wrong; names the field when a field is wrong.
    pub message: String,
    /// A submit without an idempotency key answered `503` (the store did not confirm it): the id
    /// the job has if it was stored all the same; `GET /async/jobs/{job_id}` tells.
    pub job_id: Option<uuid::Uuid>,
    /// A job's status report refused `409` (`POST /async/status`) because its attempt reported
    /// already, or its time ran out: what it reported (`SUCCESS`, `ERROR`) or `TIMEOUT`.
    pub reported: Option<JobStatus>,
}

/// The 202 of a submit (`jobs::accepted`). A replayed idempotent submit carries the header
/// `Idempotent-Replayed: true`.
#[derive(ToSchema)]
pub struct Accepted {
    pub job_id: uuid::Uuid,
    pub channel_id: String,
    pub status: JobStatus,
    pub result_url: String,
}

/// A job as the API shows it (`Job::to_public`).
#[derive(ToSchema)]
pub struct JobView {
    pub id: uuid::Uuid,
    #[schema(rename = "type")]
    pub job_type: String,
    pub status: JobStatus,
    pub args: Value,
    pub runner: String,
    pub channel_id: String,
    pub user_id: Option<String>,
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout_ms: Option<u64>,
    /// 0..=1.
    pub progress: f64,
    pub status_details: Option<Value>,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    pub idempotency_key: Option<String>,
    /// The worker holding the job's lease.
    pub worker: Option<String>,
    /// What runs it: `{kind, id}` (a process id, a container, a pod).
    pub handle: Option<Value>,
    /// One per attempt (the last 50): `{attempt, worker, claimed_at, started_at, ended_at,
    /// outcome, reported, error}`; `error` is the job's error when the attempt ended.
    pub runs: Vec<Value>,
    /// Files by property: `{hash, size, mimetype, name, metadata}`, and `attempt` for a file the
    /// job uploaded (kept only until another attempt starts).
    pub files: BTreeMap<String, Vec<Value>>,
    pub run_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub result_url: String,
    /// Signal keys written when it ends SUCCESS (only when set).
    pub emits: Option<Vec<String>>,
    /// Its webhook; null when it has none.
    #[schema(required = true)]
    pub notify: Option<NotifyView>,
    /// Why it waits (only for a job with `wait_for`): `items` [{key, needed, since, seen,
    /// signal_ids (the first records' `seq`, at most 32), signal_ids_truncated}], deadline,
    /// on_deadline, released_by, released_at (docs/api.md).
    pub wait: Option<Value>,
    /// The schedule that made it (only then), and its fire time.
    pub schedule: Option<String>,
    pub fire_time: Option<String>,
    /// Set when a stored time cannot be shown in RFC 3339.
    pub render_error: Option<String>,
}

/// The answer of a cancel or a retry: the job ([`JobView`]) to a caller that may read jobs
/// (`jobs:read`), only `{id, status, attempt}` ([`JobBrief`]) to one that may not.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // Schema-only: never built.
pub enum JobActed {
    Job(JobView),
    Brief(JobBrief),
}

/// A job as a caller without `jobs:read` is told of it after acting on it.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobBrief {
    pub id: uuid::Uuid,
    pub status: JobStatus,
    pub attempt: u32,
}

/// A job of `GET /async/jobs` with `fields`: the members of [`JobView`], only `id` required
/// (each job holds the members named, `id`, and `render_error` when it has one).
pub struct JobFields;

impl PartialSchema for JobFields {
    fn schema() -> RefOr<Schema> {
        let mut schema = JobView::schema();
        if let RefOr::T(Schema::Object(o)) = &mut schema {
            o.required = vec!["id".into()];
            o.description = Some(
                "A job with only the members `fields` named (`GET /async/jobs?fields=`): those \
                 of `JobView`, `id` always, `render_error` when the job has one."
                    .into(),
            );
        }
        schema
    }
}

impl ToSchema for JobFields {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        <JobView as ToSchema>::schemas(schemas);
    }
}

/// An item of [`JobPage`]: a whole job ([`JobView`]) or, with `fields`, a lean one
/// ([`JobFields`]). `anyOf`, not `oneOf`: a whole job matches both.
pub struct ListedJob;

impl PartialSchema for ListedJob {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(Ref::from_schema_name(JobView::name()))
            .item(Ref::from_schema_name(JobFields::name()))
            .description(Some(
                "A whole job (`JobView`), or with `fields` only the members named (`JobFields`).",
            ))
            .into()
    }
}

impl ToSchema for ListedJob {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((JobView::name().into(), JobView::schema()));
        schemas.push((JobFields::name().into(), JobFields::schema()));
        <JobView as ToSchema>::schemas(schemas);
    }
}

/// A page of `GET /async/jobs`.
#[derive(ToSchema)]
pub struct JobPage {
    /// Newest first: whole jobs, or with `fields` each holding only the members named, `id`,
    /// and `render_error` when it has one.
    pub jobs: Vec<ListedJob>,
    /// Pass as `cursor` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// `GET /async/jobs/{id}/logs`.
#[derive(ToSchema)]
pub struct LogPage {
    pub job_id: uuid::Uuid,
    pub status: JobStatus,
    /// `{seq, ts, stream, line}` each.
    pub lines: Vec<Value>,
    /// Pass as `after` for the next lines.
    pub next: u64,
}

/// `GET /async/jobs/{id}/result`.
#[derive(ToSchema)]
pub struct JobResult {
    pub job_id: uuid::Uuid,
    pub status: JobStatus,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
}

/// `PUT /async/jobs/{id}/files/{property}`.
#[derive(ToSchema)]
pub struct Attached {
    pub job_id: uuid::Uuid,
    pub property: String,
    /// Its index in the property's list.
    pub index: u64,
    /// MD5 hex of the content.
    pub hash: String,
    pub size: u64,
}

/// `GET /async/jobs/{id}/deliveries` (`api::notify::deliveries`).
#[derive(ToSchema)]
pub struct Deliveries {
    pub job_id: uuid::Uuid,
    /// The job's webhook; null when it has none.
    pub notify: Option<NotifyView>,
    /// A page of the job's deliveries, in the order asked for.
    pub deliveries: Vec<DeliveryView>,
    /// The page's last delivery (the cursor given when the page is empty; null for an empty
    /// newest-first page without `before`): pass it as `after` (oldest first) or `before`
    /// (newest first) for the next page.
    pub next: Option<u64>,
}

/// A job's webhook (`NotifySpec`).
#[derive(ToSchema)]
pub struct NotifyView {
    pub url: String,
    pub events: Vec<NotifyEventWord>,
}

/// An event word of a webhook.
#[derive(ToSchema)]
#[allow(non_camel_case_types)]
pub enum NotifyEventWord {
    terminal,
    status,
    progress,
}

/// One delivery (`Delivery::to_public`).
#[derive(ToSchema)]
pub struct DeliveryView {
    /// Increasing per store.
    pub id: u64,
    pub url: String,
    /// The delivered event's id in the streams.
    pub event_id: String,
    /// `status` or `progress`.
    pub event_type: Option<String>,
    /// A status event's status.
    pub event_status: Option<JobStatus>,
    pub state: DeliveryStateWord,
    pub created_at: String,
    /// A pending delivery's next attempt (while an attempt is in flight: the end of its claim's
    /// hold, when it is made again if its answer is not recorded by then).
    pub next_attempt_at: Option<String>,
    /// Attempts made, the one in flight included (the records below keep the last 50).
    pub attempt_count: u64,
    pub attempts: Vec<DeliveryAttemptView>,
}

/// Where a delivery stands (`DeliveryState`).
#[derive(ToSchema)]
#[allow(non_camel_case_types)]
pub enum DeliveryStateWord {
    pending,
    delivered,
    given_up,
}

/// One attempt of a delivery.
#[derive(ToSchema)]
pub struct DeliveryAttemptView {
    /// When it started (for an attempt in flight or unknown: when its sender claimed it, just
    /// before sending).
    pub at: String,
    /// The node that made it (`<host>-<pid>`); null on attempts recorded before it was kept.
    pub by: Option<String>,
    pub outcome: AttemptOutcomeWord,
    /// The receiver's HTTP status; null without an answer (and when in flight or unknown).
    pub status: Option<u16>,
    /// What went wrong; for an `unknown` attempt, `unknown: the sender was lost before it
    /// recorded an answer`.
    pub error: Option<String>,
    /// How long it took; null when in flight or unknown.
    pub duration_ms: Option<u64>,
}

/// What became of an attempt (`AttemptOutcome`): `accepted` (2xx), `failed` (another status, no
/// answer, a refused address), `in_flight` (being made: only ever the last, while its sender's
/// claim holds), `unknown` (its sender was lost, killed, paused or restarted, before it recorded
/// an answer: the receiver may have got it, and accepted it).
#[derive(ToSchema)]
#[allow(non_camel_case_types)]
pub enum AttemptOutcomeWord {
    accepted,
    failed,
    in_flight,
    unknown,
}

/// `POST /async/notify/keys`: an endpoint's signing key (shown to admins only; not cached).
#[derive(ToSchema)]
pub struct EndpointKey {
    pub url: String,
    pub endpoint: String,
    pub key: String,
    pub header: String,
    pub scheme: String,
}

/// A schedule (`Schedule::to_public`).
#[derive(ToSchema)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    /// The job template: the body of a submit.
    pub job: Value,
    pub overlap: String,
    pub misfire: String,
    pub catchup_window: String,
    pub jitter: String,
    pub paused: bool,
    pub next_fires: Vec<String>,
    pub pending: Vec<String>,
    pub buffered: Option<String>,
    pub last_runs: Vec<Value>,
    pub counters: Value,
    pub created_at: String,
    pub updated_at: String,
}

/// `GET /async/schedules`.
#[derive(ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

/// One fire of a schedule (`schedule_fires::fired`).
#[derive(ToSchema)]
pub struct Fired {
    pub job_id: uuid::Uuid,
    pub fire_time: Option<String>,
    pub status: JobStatus,
    /// False when the fire time had made its job already.
    pub created: bool,
    pub result_url: String,
}

/// `POST /async/schedules/{name}/backfill`.
#[derive(ToSchema)]
pub struct Backfilled {
    pub name: String,
    /// The fire times that have their job (made now, or earlier: `created: false`).
    pub fires: Vec<Fired>,
    /// The fire times that could not make a job, and why (also in the schedule's `last_runs`).
    pub refused: Vec<RefusedFire>,
}

/// A fire time that made no job (`Backfilled::refused`).
#[derive(ToSchema)]
pub struct RefusedFire {
    pub fire_time: String,
    pub error: String,
}

/// A signal written (`signals::written`).
#[derive(ToSchema)]
pub struct SignalWritten {
    pub key: String,
    pub seq: u64,
    pub at: String,
    pub id: Option<String>,
}

/// `GET /async/signals/{key}`.
#[derive(ToSchema)]
pub struct SignalList {
    pub key: String,
    /// `{seq, at, id, payload}` each, by time (ties by `seq`).
    pub signals: Vec<Value>,
    /// Pass as `since` for the next page: one microsecond after the last record's time, when the
    /// page ended at its `limit` or at 4 MiB of records; null when no record follows.
    pub next_since: Option<String>,
}

/// `GET /async/signals` (`signals::list_keys`).
#[derive(ToSchema)]
pub struct SignalKeys {
    pub keys: Vec<SignalKey>,
    /// The next page's `after`; null on the last page.
    pub next_after: Option<String>,
}

/// One signal key of `GET /async/signals`.
#[derive(ToSchema)]
pub struct SignalKey {
    pub key: String,
    pub count: u64,
    /// RFC 3339 time of the newest record.
    pub latest: String,
}

/// The body of `POST /async/jobs/batch` (`batch::BatchBody`).
#[derive(ToSchema)]
pub struct BatchRequest {
    /// 1 to 1,000 submit bodies, each as `POST /async/jobs` takes it.
    pub jobs: Vec<Value>,
}

/// The 200 of `POST /async/jobs/batch` (`batch::submit_batch`).
#[derive(ToSchema)]
pub struct BatchResults {
    /// One per item, in order: `{status_code: 202|200, idempotent_replayed, job_id, channel_id,
    /// status, result_url}` or `{status_code: 4xx, error: {code, message}}`.
    pub results: Vec<Value>,
    pub accepted: u64,
    pub failed: u64,
}

/// `GET /async/runners`.
#[derive(ToSchema)]
pub struct RunnerList {
    /// `{name, kind, types, concurrency, in_use, timeout_ms, max_attempts}` each; `in_use` is
    /// `null` for a token confined to types or channels.
    pub runners: Vec<Value>,
}

/// `GET /async/whoami`.
#[derive(ToSchema)]
pub struct WhoAmI {
    /// The token's name, `jwt:<sub>`, or `anonymous` without `[auth]`.
    pub who: String,
    pub scopes: Vec<String>,
    /// True when confined to `types` or `channels`.
    pub confined: bool,
}

/// `GET /async/stats`.
#[derive(ToSchema)]
pub struct Stats {
    pub by_status: BTreeMap<String, u64>,
    pub by_type: BTreeMap<String, BTreeMap<String, u64>>,
    /// `{type, depth, oldest}` for each type with queued jobs.
    pub queues: Vec<Value>,
}

/// `GET /api/v1/async_event/`: events after `last_id` (`crate::job::Event` each).
#[derive(ToSchema)]
pub struct EventPage {
    pub result: Vec<Value>,
    /// Where to resume (`?last_id=`): the last event read, shown or not (a caller confined to
    /// types reads past events it is not shown); the `last_id` asked when none was read.
    pub last_id: Option<String>,
}

/// `/health`, `/health/ready`, `/health/live`.
#[derive(ToSchema)]
pub struct Health {
    /// `ok`, `unavailable` (the store does not answer) or `draining` (the process is stopping).
    pub status: String,
    /// The store's backend (not on `/health/live`).
    pub store: Option<String>,
    /// The store's error (503 only).
    pub error: Option<String>,
}

/// A job's report (`runyard_hooks::wire::StatusReport`); an empty body is an empty report. Any
/// other field is refused in a v2-signed report (422); a v1-signed one is applied without it,
/// a note in the job's log (docs/hooks.md).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    /// `RUNNING`, `SUCCESS`, `ERROR`, ...
    pub status: Option<String>,
    /// 0..=1.
    pub progress: Option<f64>,
    #[schema(rename = "statusDetails")]
    pub status_details: Option<Value>,
    pub results: Option<Value>,
    /// Log lines (at most 1000 entries per report). Each is stored as stdout lines are: split on
    /// newlines and into 16 KiB pieces; a report stores at most 5,000 lines so split (the
    /// newest, after a `[runyard] N line(s) dropped here` note).
    pub logs: Option<Vec<String>>,
    /// With `ERROR`: why (stored up to 16 KiB).
    #[schema(rename = "errorMessage")]
    pub error_message: Option<String>,
    /// With `ERROR`: retry when attempts are left.
    pub retry: Option<bool>,
}

/// The answer to a report (`hooks::status`).
#[derive(ToSchema)]
pub struct StatusAnswer {
    pub job_id: uuid::Uuid,
    pub status: JobStatus,
    pub progress: Option<f64>,
    /// The outcome the job reported, once it has.
    pub reported: Option<String>,
}

/// `GET /async/job` (`runyard_hooks::wire::JobSelf`).
#[derive(ToSchema)]
pub struct JobSelf {
    pub id: String,
    #[schema(rename = "type")]
    pub job_type: String,
    pub args: Value,
    pub attempt: u32,
}

/// `runyard_hooks::wire::FileMeta`.
#[derive(ToSchema)]
pub struct FileMeta {
    pub hash: String,
    pub size: u64,
    pub mimetype: String,
    pub name: String,
}

/// `runyard_hooks::wire::DownloadResponse`: a signed URL for the bytes.
#[derive(ToSchema)]
pub struct DownloadResponse {
    pub location: String,
    pub map: FileMeta,
}

/// `runyard_hooks::wire::UploadRequest`. Any other field is refused in a v2-signed call (422);
/// a v1-signed one is taken without it, a note in the job's log (docs/hooks.md).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    /// MD5 hex of the content.
    pub hash: String,
    /// MD5 hex of the challenge (docs/hooks.md).
    pub challenge: String,
    /// Free metadata (`name`, `mimetype`; at most 4 KiB).
    pub metadata: Option<Value>,
}

/// `runyard_hooks::wire::UploadResponse`: done (the server had the bytes), or where to PUT them.
#[derive(ToSchema)]
pub struct UploadResponse {
    pub done: bool,
    pub method: Option<String>,
    pub url: Option<String>,
}

/// `PUT /async/blobs/upload`.
#[derive(ToSchema)]
pub struct BlobStored {
    pub done: bool,
    pub hash: String,
    pub size: u64,
}

/// A multipart submit: a `job` part (the JSON body of a submit) and file parts named by property.
#[derive(ToSchema)]
pub struct SubmitMultipart {
    /// The submit's JSON (as for `application/json`).
    pub job: String,
    /// Files: any other part, named by its property.
    #[schema(value_type = Option<String>, format = Binary)]
    pub file: Option<Vec<u8>>,
}
