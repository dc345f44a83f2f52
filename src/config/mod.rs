//! Configuration: one typed struct with defaults, loaded from `runyard.toml`, then `RUNYARD_*`
//! environment variables, then command-line flags. Unknown keys and bad values stop the server
//! with a message naming the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::job::Backoff;

/// The longest duration any key takes (100 years).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// The URL jobs use to reach the server (JOB_HOOK is built from it). Defaults to
    /// `http://{listen}`.
    pub public_url: Option<String>,
    /// Where the embedded store and files live.
    pub data_dir: PathBuf,
    /// Redis URL: use Redis for store, queue and events instead of the embedded store.
    pub redis: Option<String>,
    /// Master key that job secrets are derived from; generated into data_dir when absent.
    pub master_key: Option<String>,
    /// HTTP API limits.
    pub api: ApiConfig,
    /// The worker.
    pub worker: WorkerConfig,
    /// Event streams.
    pub events: EventsConfig,
    /// How long things are kept.
    pub retention: RetentionConfig,
    /// Job hook settings.
    pub hooks: HooksConfig,
    /// Embedded store settings.
    pub store: StoreConfig,
    /// Authentication: API tokens, JWTs (channels and scopes), `/metrics` and loopback rules.
    pub auth: AuthConfig,
    /// Signed webhooks out (`[notify]`, docs/notifications.md).
    pub notify: crate::notify::NotifyConfig,
    /// Runners, first match wins.
    pub runners: Vec<RunnerConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7070".parse().expect("static address"),
            public_url: None,
            data_dir: PathBuf::from("./runyard-data"),
            redis: None,
            master_key: None,
            api: ApiConfig::default(),
            worker: WorkerConfig::default(),
            events: EventsConfig::default(),
            retention: RetentionConfig::default(),
            hooks: HooksConfig::default(),
            store: StoreConfig::default(),
            auth: AuthConfig::default(),
            notify: Default::default(),
            runners: Vec::new(),
        }
    }
}

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
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::default(),
            prefix: "runyard".into(),
            retry: Duration::from_secs(30),
        }
    }
}

/// The smallest accepted `auth.jwt_secret`, in bytes (HS256 wants a key as long as its hash).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// `[auth]`: JWTs for the event transports (polling, WebSocket, SSE).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 secret (32+ bytes). Set: the event endpoints need a JWT naming its `channel`.
    pub jwt_secret: Option<String>,
    /// The cookie a browser sends the JWT in (Superset's default name).
    pub jwt_cookie: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub jwt_leeway: Duration,
    /// Refuse tokens without an `exp` claim. Stock Superset mints its `async-token` without
    /// `exp` (the cookie lives as long as the session): set `false` to accept those; an `exp`
    /// that is present is always checked.
    pub require_exp: bool,
    /// Browser origins allowed to open a WebSocket or SSE stream. A request without an
    /// `Origin` header (not a browser) is not checked.
    pub allowed_origins: Vec<String>,
    /// API tokens (`[[auth.tokens]]`): each the SHA-256 of a bearer token and what it grants.
    pub tokens: Vec<TokenConfig>,
    /// `/metrics` needs a token (or JWT) with `jobs:read` when auth is in force.
    pub metrics_require_token: bool,
    /// Serve without auth on a non-loopback address (`serve --insecure-no-auth`).
    pub insecure_no_auth: bool,
}

/// One `[[auth.tokens]]` entry (docs/auth.md). The token itself is never in the file.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in messages and logs instead of the token.
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// `jobs:submit`, `jobs:read`, `jobs:cancel`, `schedules:write`, `signals:write`, `admin`.
    pub scopes: Vec<String>,
    /// Job type globs the token is confined to (absent: every type).
    #[serde(default)]
    pub types: Option<Vec<String>>,
    /// Channel globs the token is confined to (absent: every channel).
    #[serde(default)]
    pub channels: Option<Vec<String>>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("sha256", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("types", &self.types)
            .field("channels", &self.channels)
            .finish()
    }
}

impl AuthConfig {
    /// Auth is in force: a JWT secret or API tokens are configured.
    pub fn enabled(&self) -> bool {
        self.jwt_secret.is_some() || !self.tokens.is_empty()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_cookie: "async-token".into(),
            jwt_leeway: Duration::from_secs(30),
            require_exp: true,
            allowed_origins: Vec::new(),
            tokens: Vec::new(),
            metrics_require_token: false,
            insecure_no_auth: false,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_cookie", &self.jwt_cookie)
            .field("jwt_leeway", &self.jwt_leeway)
            .field("require_exp", &self.require_exp)
            .field("allowed_origins", &self.allowed_origins)
            .field("tokens", &self.tokens)
            .field("metrics_require_token", &self.metrics_require_token)
            .field("insecure_no_auth", &self.insecure_no_auth)
            .finish()
    }
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

/// The runner kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerKind {
    /// A child process.
    Local,
    /// An in-process async Rust function.
    Service,
    /// A container (Docker Engine API).
    Docker,
    /// A Kubernetes batch/v1 Job.
    Kube,
}

/// One `[[runners]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// Name shown on jobs and usable as `runner` at submit; defaults to `{kind}-{index}`.
    #[serde(default)]
    pub name: Option<String>,
    /// Which runner.
    pub kind: RunnerKind,
    /// Job type globs it claims (`report.*`).
    pub types: Vec<String>,
    /// How many jobs it runs at once in this process.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Default per-attempt time limit.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Default attempts per job.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Default retry backoff.
    #[serde(default)]
    pub backoff: Option<Backoff>,
    /// local: program and arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// local: extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// local: the server's environment variables passed through (default: PATH, HOME, LANG, ...).
    #[serde(default)]
    pub env_allow: Option<Vec<String>>,
    /// local: working directory.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// local: run jobs as this user (name or uid). Needs a server running as root.
    #[serde(default)]
    pub user: Option<runyard_runners::isolation::Principal>,
    /// local: run jobs with this group (name or gid).
    #[serde(default)]
    pub group: Option<runyard_runners::isolation::Principal>,
    /// local: resource limits of the jobs' processes (`cpu`, `memory`, `nofile`, `nproc`,
    /// `fsize`).
    #[serde(default)]
    pub rlimits: runyard_runners::isolation::Rlimits,
    /// service: the registered operation to call (default: the job type).
    #[serde(default)]
    pub operation: Option<String>,
    /// docker, kube: the image to run.
    #[serde(default)]
    pub image: Option<String>,
    /// docker: images a job may pick with `args.image` (globs); the runner's `image` is always
    /// allowed.
    #[serde(default)]
    pub allowed_images: Vec<String>,
    /// docker: network mode (`host` to reach a hook on 127.0.0.1).
    #[serde(default)]
    pub network: Option<String>,
    /// docker: memory limit, e.g. `512m`, `2g`.
    #[serde(default)]
    pub memory: Option<String>,
    /// docker: CPU limit, e.g. 1.5.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// docker: extra container labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// docker: the engine (`unix:///var/run/docker.sock`, `tcp://...`); `DOCKER_HOST` when absent.
    #[serde(default)]
    pub docker_host: Option<String>,
    /// kube: the namespace Jobs are created in.
    #[serde(default)]
    pub namespace: Option<String>,
    /// kube: the service account of the Job's pods.
    #[serde(default)]
    pub service_account: Option<String>,
    /// kube: `ttlSecondsAfterFinished` of the Jobs.
    #[serde(default, with = "humantime_serde")]
    pub ttl_after_finished: Option<Duration>,
    /// kube: a kubeconfig file; absent: in-cluster config, then the default kubeconfig.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// kube: pod settings (resources, scheduling, security) and lifecycle bounds, the
    /// `[runners.kube]` table (see docs/kubernetes.md).
    #[serde(default)]
    pub kube: Option<runyard_runners::kube::KubeOptions>,
}

fn default_concurrency() -> usize {
    4
}

fn default_attempts() -> u32 {
    3
}

impl RunnerConfig {
    /// The runner's name.
    pub fn name_at(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| {
            let kind = match self.kind {
                RunnerKind::Local => "local",
                RunnerKind::Service => "service",
                RunnerKind::Docker => "docker",
                RunnerKind::Kube => "kube",
            };
            format!("{kind}-{index}")
        })
    }
}

/// Command-line overrides (highest precedence).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--redis`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// `--public-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// The top-level keys `RUNYARD_*` variables may set (`RUNYARD_WORKER__LEASE_TTL` sets
/// `worker.lease_ttl`). Other `RUNYARD_*` variables are not configuration: client settings
/// (`RUNYARD_SERVER`, `RUNYARD_LOG`) and the ones Kubernetes injects for a Service named
/// `runyard` (`RUNYARD_SERVICE_HOST`, `RUNYARD_PORT_7070_TCP`, ...).
const ENV_KEYS: &[&str] = &[
    "listen",
    "public_url",
    "data_dir",
    "redis",
    "master_key",
    "api",
    "worker",
    "events",
    "retention",
    "hooks",
    "store",
    "auth",
    "notify",
];

fn is_env_key(k: &str) -> bool {
    let top = k.split("__").next().unwrap_or("");
    ENV_KEYS.iter().any(|n| top.eq_ignore_ascii_case(n))
}

impl Config {
    /// Loads `path` (when it exists, or must exist when `required`), then the environment, then
    /// `overrides`; validates the result.
    pub fn load(path: &Path, required: bool, overrides: &Overrides) -> Result<Self, ConfigError> {
        if required && !path.exists() {
            return Err(ConfigError(format!(
                "config file {} not found",
                path.display()
            )));
        }
        let fig = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(path))
            .merge(
                Env::prefixed("RUNYARD_")
                    .filter(|k| is_env_key(k.as_str()))
                    .split("__"),
            )
            .merge(Serialized::defaults(overrides.clone()));
        let cfg: Config = fig.extract().map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            ConfigError(msgs.join("; "))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML string (tests, embedding).
    pub fn from_toml(s: &str) -> Result<Self, ConfigError> {
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(s))
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The URL jobs reach the server at.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_string()
    }

    /// Checks values that types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |k: String, m: &str| Err(ConfigError(format!("`{k}`: {m}")));
        // Durations are added to clocks (`Instant`, µs since the epoch): a bound keeps every such
        // sum in range (found by the `durations` fuzz target: "5222222222222222s" was accepted).
        for (i, r) in self.runners.iter().enumerate() {
            if r.ttl_after_finished.is_some_and(|d| d > MAX_DURATION) {
                return err(
                    format!("runners[{i}].ttl_after_finished"),
                    "must be at most 100 years",
                );
            }
        }
        for (k, d) in [
            ("worker.lease_ttl", self.worker.lease_ttl),
            ("worker.shutdown_grace", self.worker.shutdown_grace),
            ("worker.kill_grace", self.worker.kill_grace),
            ("worker.poll_interval", self.worker.poll_interval),
            ("worker.exit_grace", self.worker.exit_grace),
            ("events.progress_interval", self.events.progress_interval),
            ("events.ping_interval", self.events.ping_interval),
            ("retention.finished", self.retention.finished),
            ("retention.interval", self.retention.interval),
            ("retention.events", self.retention.events),
            ("store.retry", self.store.retry),
        ] {
            if d > MAX_DURATION {
                return err(k.into(), "must be at most 100 years");
            }
        }
        if let Some(u) = &self.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return err("public_url".into(), "must start with http:// or https://");
            }
        }
        if let Some(r) = &self.redis {
            if !(r.starts_with("redis://")
                || r.starts_with("rediss://")
                || r.starts_with("unix://"))
            {
                return err("redis".into(), "must be a redis:// URL");
            }
            if self.master_key.is_none() {
                return err(
                    "master_key".into(),
                    "required with `redis`: every runyard process sharing the Redis must derive \
                     the same job secrets, so set the same `master_key` (or RUNYARD_MASTER_KEY, \
                     16+ characters) on all of them",
                );
            }
            if self.store.prefix.is_empty()
                || !self
                    .store
                    .prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
            {
                return err(
                    "store.prefix".into(),
                    "must be letters, digits, '.', '_', '-' or ':'",
                );
            }
        }
        if self.worker.lease_ttl < Duration::from_millis(300) {
            return err("worker.lease_ttl".into(), "must be at least 300ms");
        }
        if self.api.max_body_bytes < 1024 {
            return err("api.max_body_bytes".into(), "must be at least 1024");
        }
        if self.api.max_connections == 0 {
            return err("api.max_connections".into(), "must be at least 1");
        }
        for (key, d) in [
            ("api.header_timeout", self.api.header_timeout),
            ("api.idle_timeout", self.api.idle_timeout),
            ("api.request_timeout", self.api.request_timeout),
            ("api.body_timeout", self.api.body_timeout),
        ] {
            if d < Duration::from_millis(10) || d > Duration::from_secs(24 * 3600) {
                return err(key.into(), "must be between 10ms and 24h");
            }
        }
        for (i, o) in self.api.cors_origins.iter().enumerate() {
            if !crate::api::edge::valid_origin(o) {
                return err(
                    format!("api.cors_origins[{i}]"),
                    "must be an origin: scheme://host[:port], no path or trailing slash",
                );
            }
        }
        if let Some(secret) = &self.auth.jwt_secret {
            if secret.len() < MIN_JWT_SECRET_BYTES {
                return err(
                    "auth.jwt_secret".into(),
                    &format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
                );
            }
        }
        let cookie = &self.auth.jwt_cookie;
        if cookie.is_empty()
            || !cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return err(
                "auth.jwt_cookie".into(),
                "must be a cookie name (letters, digits, and !#$%&'*+-.^_`|~)",
            );
        }
        if self.auth.jwt_leeway > Duration::from_secs(3600) {
            return err("auth.jwt_leeway".into(), "must be at most 1h");
        }
        for (i, o) in self.auth.allowed_origins.iter().enumerate() {
            if !crate::api::edge::valid_origin(o) {
                return err(
                    format!("auth.allowed_origins[{i}]"),
                    "must be an origin: scheme://host[:port], no path or trailing slash",
                );
            }
        }
        if let Err((k, m)) = self.notify.validate() {
            return err(k, &m);
        }
        if let Err((key, message)) = crate::auth::tokens::Authenticator::new(&self.auth) {
            return err(key, &message);
        }
        if self.events.global_limit == 0 || self.events.channel_limit == 0 {
            return err("events".into(), "limits must be positive");
        }
        for (k, v) in [
            ("events.max_connections", self.events.max_connections),
            ("events.max_per_channel", self.events.max_per_channel),
            ("events.send_buffer", self.events.send_buffer),
        ] {
            if v == 0 {
                return err(k.into(), "must be positive");
            }
        }
        if self.events.send_buffer > 1 << 20 {
            return err("events.send_buffer".into(), "must be at most 1048576");
        }
        if self.events.ping_interval < Duration::from_millis(100) {
            return err("events.ping_interval".into(), "must be at least 100ms");
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.runners.iter().enumerate() {
            let k = |f: &str| format!("runners[{i}].{f}");
            if r.types.is_empty() {
                return err(k("types"), "must list at least one type glob");
            }
            for t in &r.types {
                if t.is_empty()
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-:*?".contains(c))
                {
                    return err(k("types"), &format!("`{t}` is not a valid type glob"));
                }
            }
            if r.concurrency == 0 {
                return err(k("concurrency"), "must be at least 1");
            }
            if r.max_attempts == 0 || r.max_attempts > 100 {
                return err(k("max_attempts"), "must be between 1 and 100");
            }
            if let Some(b) = &r.backoff {
                if let Err(m) = b.validate() {
                    return err(k("backoff"), &m);
                }
            }
            if r.timeout
                .is_some_and(|t| t.is_zero() || t > Duration::from_secs(365 * 24 * 3600))
            {
                return err(k("timeout"), "must be between 1ms and 365 days");
            }
            // kube: the `[runners.kube]` table.
            if r.kind != RunnerKind::Kube && r.kube.is_some() {
                return err(k("kube"), "only kube runners take it");
            }
            if r.kind != RunnerKind::Local {
                for (set, key) in [
                    (r.user.is_some(), "user"),
                    (r.group.is_some(), "group"),
                    (!r.rlimits.is_empty(), "rlimits"),
                ] {
                    if set {
                        return err(k(key), "only local runners take it");
                    }
                }
            }
            match r.kind {
                RunnerKind::Local => {
                    if r.command.is_empty() {
                        return err(k("command"), "a local runner needs a command");
                    }
                    if let Err(e) = runyard_runners::isolation::Isolation::resolve(
                        r.user.as_ref(),
                        r.group.as_ref(),
                        &r.rlimits,
                    ) {
                        return err(k(&e.key), &e.message);
                    }
                }
                RunnerKind::Service => {
                    if !r.command.is_empty() {
                        return err(k("command"), "a service runner has no command");
                    }
                }
                RunnerKind::Kube => {
                    if r.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
                        return err(k("image"), "a kube runner needs an image");
                    }
                    if let Some(ns) = &r.namespace {
                        if !runyard_runners::kube::is_dns_label(ns) {
                            return err(k("namespace"), "must be a valid namespace name");
                        }
                    }
                    if r.ttl_after_finished
                        .is_some_and(|t| t.as_secs() > i32::MAX as u64)
                    {
                        return err(k("ttl_after_finished"), "is too long");
                    }
                    // kube: env names by Kubernetes' C_IDENTIFIER rule; the pod options.
                    if let Some(bad) = r
                        .env
                        .keys()
                        .find(|n| !runyard_runners::kube::is_env_name(n))
                    {
                        return err(
                            format!("{}.{bad}", k("env")),
                            "is not a valid environment variable name (letters, digits and `_`, \
                             not starting with a digit)",
                        );
                    }
                    if let Some(Err(e)) = r.kube.as_ref().map(|o| o.validate()) {
                        return err(format!("{}.{}", k("kube"), e.key), &e.message);
                    }
                }
                RunnerKind::Docker => {
                    if r.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
                        return err(k("image"), "a docker runner needs an image");
                    }
                    if let Some(m) = &r.memory {
                        if let Err(e) = runyard_runners::docker::parse_memory(m) {
                            return err(k("memory"), &e);
                        }
                    }
                    if let Some(c) = r.cpus {
                        if let Err(e) = runyard_runners::docker::nano_cpus(c) {
                            return err(k("cpus"), &e);
                        }
                    }
                    if r.network.as_deref().is_some_and(str::is_empty) {
                        return err(k("network"), "must not be empty");
                    }
                }
            }
            if !names.insert(r.name_at(i)) {
                return err(k("name"), "duplicate runner name");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn durations_are_bounded() {
        for key in [
            "[worker]\nkill_grace",
            "[retention]\nevents",
            "[retention]\nfinished",
        ] {
            let e = Config::from_toml(&format!("{key} = \"5222222222222222s\"")).unwrap_err();
            assert!(e.0.contains("at most 100 years"), "{key}: {e}");
            Config::from_toml(&format!("{key} = \"99years\"")).expect("99 years");
        }
    }
    use super::*;

    #[test]
    fn parses_the_contract_example() {
        let c = Config::from_toml(
            r#"
listen = "127.0.0.1:7071"
[[runners]]
kind = "local"
types = ["report.*"]
command = ["python3", "jobs/report.py"]
concurrency = 4
timeout = "10m"
[[runners]]
kind = "service"
types = ["thumbnail"]
"#,
        )
        .unwrap();
        assert_eq!(c.runners.len(), 2);
        assert_eq!(c.runners[0].timeout, Some(Duration::from_secs(600)));
        assert_eq!(c.runners[1].name_at(1), "service-1");
        assert_eq!(c.public_url(), "http://127.0.0.1:7071");
    }

    #[test]
    fn only_config_keys_are_read_from_the_environment() {
        assert!(is_env_key("worker__lease_ttl"));
        assert!(is_env_key("DATA_DIR"));
        assert!(!is_env_key("service_host"));
        assert!(!is_env_key("port_7070_tcp_addr"));
        assert!(!is_env_key("server"));
        assert!(!is_env_key("workers"));
    }

    #[test]
    fn docker_runners_need_an_image_and_valid_limits() {
        let docker = |extra: &str| {
            Config::from_toml(&format!(
                "[[runners]]\nkind = \"docker\"\ntypes = [\"a\"]\n{extra}"
            ))
        };
        let e = docker("").unwrap_err().to_string();
        assert!(e.contains("runners[0].image"), "{e}");
        let e = docker("image = \"x\"\nmemory = \"lots\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("runners[0].memory"), "{e}");
        let e = docker("image = \"x\"\ncpus = 0").unwrap_err().to_string();
        assert!(e.contains("runners[0].cpus"), "{e}");
        let c = docker(
            "image = \"x\"\nmemory = \"512m\"\ncpus = 1.5\nnetwork = \"host\"\n\
             allowed_images = [\"y:*\"]\nlabels = { team = \"t\" }",
        )
        .unwrap();
        assert_eq!(c.runners[0].name_at(0), "docker-0");
    }

    #[test]
    fn local_isolation_keys_are_checked_at_load() {
        let local = |extra: &str| {
            Config::from_toml(&format!(
                "[[runners]]\nkind = \"local\"\ntypes = [\"a\"]\ncommand = [\"true\"]\n{extra}"
            ))
        };
        let e = local("user = \"no-such-user-xyz\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("runners[0].user") && e.contains("no-such-user-xyz"),
            "{e}"
        );
        let e = local("group = \"no-such-group-xyz\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("runners[0].group"), "{e}");
        let e = local("rlimits = { memory = \"lots\" }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("runners[0].rlimits.memory"), "{e}");
        let e = local("rlimits = { stack = 1 }").unwrap_err().to_string();
        assert!(e.contains("stack"), "{e}");
        let c = local(
            "user = \"root\"\ngroup = 0\nrlimits = { cpu = \"10m\", as = \"512MiB\", nofile = 1024, nproc = 256, fsize = \"1GiB\" }",
        )
        .unwrap();
        assert_eq!(c.runners[0].rlimits.nofile, Some(1024));
        let e =
            Config::from_toml("[[runners]]\nkind = \"service\"\ntypes = [\"a\"]\nuser = \"root\"")
                .unwrap_err()
                .to_string();
        assert!(e.contains("runners[0].user"), "{e}");
    }

    #[test]
    fn auth_section_is_checked_and_its_secret_never_shown() {
        let c = Config::from_toml("").unwrap();
        assert!(c.auth.jwt_secret.is_none());
        assert_eq!(c.auth.jwt_cookie, "async-token");
        assert_eq!(c.auth.jwt_leeway, Duration::from_secs(30));
        let e = Config::from_toml("[auth]\njwt_secret = \"short\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.jwt_secret") && e.contains("32"), "{e}");
        assert!(!e.contains("short"), "{e}");
        let e = Config::from_toml("[auth]\nallowed_origins = [\"https://a.example/\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.allowed_origins[0]"), "{e}");
        let e = Config::from_toml("[auth]\njwt_cookie = \"a b\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.jwt_cookie"), "{e}");
        let secret = "0123456789abcdef0123456789abcdef-secret";
        let c = Config::from_toml(&format!(
            "[auth]\njwt_secret = \"{secret}\"\njwt_leeway = \"5s\"\n\
             allowed_origins = [\"https://superset.example.com\"]"
        ))
        .unwrap();
        assert_eq!(c.auth.jwt_leeway, Duration::from_secs(5));
        let shown = format!("{c:?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(is_env_key("AUTH__JWT_SECRET"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml("lisen = \"x\"").unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        let e = Config::from_toml("[worker]\nlease_ttl = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lease_ttl"), "{e}");
        let e = Config::from_toml("[[runners]]\nkind = \"local\"\ntypes = [\"a\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("runners[0].command"), "{e}");
        let e = Config::from_toml("[[runners]]\nkind = \"lokal\"\ntypes = [\"a\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("kind"), "{e}");
    }
}
