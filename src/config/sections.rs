//! The plain sections of the configuration: `[api]`, `[worker]`, `[events]`, `[retention]`,
//! `[hooks]` and `[store]`, each with its defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// HTTP API limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Largest accepted JSON body, in bytes.
    pub max_body_bytes: usize,
    /// Largest page of `GET /async/jobs`.
    pub max_page: usize,
    /// Most client connections open at once (WebSockets included). Further clients wait in the
    /// listen backlog. Clamped to the open-file limit minus `fd_reserve`.
    pub max_connections: usize,
    /// File descriptors kept for everything but client connections (jobs' pipes, the store,
    /// Redis, runner clients, logs).
    pub fd_reserve: u64,
    /// How long a client may take to send a request's line and headers (from the connection's
    /// start, or from the first byte of a later request); slower clients are disconnected.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a kept-alive connection may sit between two requests.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long an ordinary request may take in all (not event streams, long polls, WebSocket
    /// upgrades or file transfers); answered 503 `request_timeout` after it.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest pause between two pieces of a request body (uploads included).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Browser origins (`https://app.example.com`) allowed to call the API cross-origin (CORS,
    /// and the cross-origin check of unsafe methods). Empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Without `[auth]`, listening on loopback: the host names (the `Host` header, without its port) requests may name
    /// besides IP addresses, `localhost`, `*.localhost` and `public_url`'s host; any other is
    /// refused (403 `host_not_allowed`), a guard against DNS rebinding. `["*"]`: any. Unused
    /// with `[auth]` (every request needs a credential a rebinding page does not have).
    pub allowed_hosts: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_page: 1000,
            max_connections: 4096,
            fd_reserve: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// Worker settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Run a worker in this process (`serve --no-worker` turns it off).
    pub enabled: bool,
    /// How long a claim lasts without a heartbeat.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How long running jobs may take to finish at shutdown before they are stopped and requeued.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How long a stopped job gets between SIGTERM and SIGKILL (cancel, timeout).
    #[serde(with = "humantime_serde")]
    pub kill_grace: Duration,
    /// How often the queue is checked when nothing wakes the worker.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// After a job reported SUCCESS or ERROR through its hook, how long its process may take to
    /// end by itself before it is stopped; the reported outcome is committed once it has ended.
    #[serde(with = "humantime_serde")]
    pub exit_grace: Duration,
    /// How long, after starting a local job's process, the worker waits for it to end before it
    /// records the start: a process that ends within it has its start and outcome written in one
    /// store change instead of two. `0s` records the start at once.
    #[serde(with = "humantime_serde")]
    pub quick_exit_wait: Duration,
    /// Spawner processes that start local jobs (runners/src/spawn.rs); 0: one per CPU, at most 4.
    pub spawners: usize,
    /// After a claim that took one job, or found none after a new job was announced, the shortest
    /// time before the worker's next claim: a job QUEUED sooner waits for the rest of it, and the
    /// jobs QUEUED meanwhile are claimed together (one store round trip for several jobs: fewer
    /// Redis calls and wake-ups per job under a steady stream of submits). A claim that took
    /// several jobs, or in a round where a slot was or became full, is followed at once, and so
    /// is a job QUEUED after a quiet spell (a poll or a job's end that finds nothing starts no
    /// wait). Unset: `2ms` on Redis, `0s` (every claim at once) on the embedded store, whose
    /// submits hand most jobs straight to a waiting worker. At most 1s.
    #[serde(default, with = "humantime_serde::option")]
    pub claim_interval: Option<Duration>,
    /// How often the worker looks for containers and Kubernetes Jobs left behind by jobs that
    /// are done with them (their removal failed) and removes them (`src/worker/orphans.rs`).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            lease_ttl: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            kill_grace: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            exit_grace: Duration::from_secs(10),
            quick_exit_wait: Duration::from_millis(5),
            spawners: 0,
            claim_interval: None,
            sweep_interval: Duration::from_secs(60),
        }
    }
}

/// Event stream settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events kept per channel.
    pub channel_limit: usize,
    /// Events kept in the global stream.
    pub global_limit: usize,
    /// Minimum time between two progress events of one job.
    #[serde(with = "humantime_serde")]
    pub progress_interval: Duration,
    /// How often a WebSocket is pinged; one without a pong by the next ping is closed.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Most WebSocket and SSE streams open at once on this node (more: close 1013 / 503).
    pub max_connections: usize,
    /// Most streams open at once on one channel (or on the global stream) on this node.
    pub max_per_channel: usize,
    /// Events a stream may fall behind its channel before it is closed as a slow consumer
    /// (WebSocket close 1008; the client resumes from its last id).
    pub send_buffer: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            channel_limit: 1000,
            global_limit: 100_000,
            progress_interval: Duration::from_millis(200),
            ping_interval: Duration::from_secs(20),
            max_connections: 20_000,
            max_per_channel: 1_000,
            send_buffer: 256,
        }
    }
}

/// Retention settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Finished jobs (and their logs and files) are deleted this long after they finished.
    #[serde(with = "humantime_serde")]
    pub finished: Duration,
    /// Log lines kept per job.
    pub log_lines_per_job: usize,
    /// How often retention runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A channel's events are deleted this long after its last event (Redis; the embedded store
    /// bounds channels by count only). Both backends also bound them by `events.channel_limit`.
    #[serde(with = "humantime_serde")]
    pub events: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            finished: Duration::from_secs(7 * 24 * 3600),
            log_lines_per_job: 10_000,
            interval: Duration::from_secs(10),
            events: Duration::from_secs(24 * 3600),
        }
    }
}

/// Job hook settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// Refuse v1 (timestamp-only) signatures.
    pub require_v2: bool,
    /// Largest file a job or client may upload, in bytes.
    pub max_file_bytes: u64,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            require_v2: false,
            max_file_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Store settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Embedded: `normal` (survives a process crash) or `full` (fsync every commit: survives
    /// power loss).
    pub synchronous: Synchronous,
    /// Redis: the prefix of every key, so several deployments can share one Redis.
    pub prefix: String,
    /// Redis: how long a command is retried (with backoff) while Redis cannot be reached.
    #[serde(with = "humantime_serde")]
    pub retry: Duration,
    /// Redis: what this node writes a channel's events to (every node reads both).
    pub channel_events: ChannelEvents,
    /// Redis: the form this node writes job records and events in (every node of this build
    /// reads both).
    pub records: RecordForm,
    /// Redis over TLS (`rediss://`): a PEM file of the CA certificates the server's certificate
    /// is checked against instead of the system's (a private CA).
    pub redis_ca: Option<std::path::PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::default(),
            prefix: "runyard".into(),
            retry: Duration::from_secs(30),
            channel_events: ChannelEvents::default(),
            records: RecordForm::default(),
            redis_ca: None,
        }
    }
}

/// Redis: what a node writes a channel's events to (`store.channel_events`). Every node reads
/// both, whatever this says (docs/redis.md, "Channel events: stream or list").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelEvents {
    /// The channel's stream `P:evc:{channel}`, as builds before the list did: a rolling update
    /// from such a build, and a rollback to one, lose nothing.
    #[default]
    Stream,
    /// The channel's list `P:evl:{channel}`: a third of a stream's memory for a small channel.
    /// Only once every node reads lists (runs this build or later).
    List,
}

/// Redis: the form a node writes job records (the job hash's `b`) and events in
/// (`store.records`). Every node of this build reads both (docs/redis.md, "Records: json or
/// compact").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordForm {
    /// The job's and the event's whole JSON, as builds before the compact form: a rolling
    /// update from such a build, and a rollback to one, lose nothing.
    #[default]
    Json,
    /// The compact forms (`store/job_record.rs`, `store/event_record.rs`): about a third of the
    /// JSON's bytes. Only once every node reads them (runs this build or later).
    Compact,
}

/// SQLite synchronous mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Survives a process crash.
    #[default]
    Normal,
    /// Survives a power loss.
    Full,
}
