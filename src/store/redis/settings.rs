//! [`RedisSettings`]: what the Redis backend needs, from the config (`store.*`).

use std::time::Duration;

use crate::store::StoreSettings;

/// What the Redis backend needs.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port/db` (`rediss://` for TLS, `unix://` for a socket).
    pub url: String,
    /// The CA certificates (PEM) a `rediss://` server's certificate is checked against instead
    /// of the system's (`store.redis_ca`).
    pub ca: Option<std::path::PathBuf>,
    /// Prefix of every key.
    pub prefix: String,
    /// The knobs every backend has.
    pub store: StoreSettings,
    /// A channel's events are deleted after this long without an event.
    pub channel_ttl: Duration,
    /// How long a command is retried while Redis cannot be reached.
    pub retry: Duration,
    /// How long one command may take.
    pub command_timeout: Duration,
    /// Channel events go to lists, not streams (`store.channel_events`); both are read anyway.
    pub channel_lists: bool,
    /// Whether this process keeps the channel index up to date and lists one channel's jobs
    /// from it (`chanidx.rs`; off: every listing reads by id, as before it existed).
    pub channel_index: bool,
    /// Job records in the compact form (`store.records = "compact"`); both forms are read
    /// anyway.
    pub compact_records: bool,
    /// Workers of this process park in Redis and its submits hand new jobs to parked workers
    /// (`handover.rs`; `RUNYARD_REDIS_HANDOVER=on`, experimental, off by default).
    pub handover: bool,
}

impl RedisSettings {
    /// Settings with defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca: None,
            prefix: "runyard".into(),
            store: StoreSettings::default(),
            channel_ttl: Duration::from_secs(24 * 3600),
            retry: Duration::from_secs(30),
            command_timeout: Duration::from_secs(5),
            channel_lists: false,
            channel_index: true,
            compact_records: false,
            handover: false,
        }
    }
}
