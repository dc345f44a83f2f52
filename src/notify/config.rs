//! `[notify]` in runyard.toml.
//!
//! ```toml
//! [notify]
//! allow_private = false     # loopback/private/link-local receivers refused
//! horizon = "24h"           # a delivery is retried for this long, then given up
//! retry_initial = "1s"      # first retry delay; doubles each attempt (with jitter)...
//! retry_max = "1h"          # ...up to this
//! timeout = "10s"           # one attempt (connect + answer)
//! concurrency = 16          # attempts in flight per process
//! per_endpoint = 4          # ...at most this many to one endpoint (URL without its query)
//!
//! [[notify.defaults]]       # a job without `notify` whose type matches gets this one
//! types = ["report.*"]
//! url = "https://hooks.example.com/runyard"
//! events = ["terminal"]
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::NotifySpec;

/// Webhook settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Let webhooks reach loopback, private, link-local and other non-public addresses.
    pub allow_private: bool,
    /// How long a delivery is retried before it is given up (counted from its event).
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// The delay before the first retry.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// The longest delay between two attempts.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// The time limit of one attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts in flight at once in this process.
    pub concurrency: usize,
    /// Attempts in flight at once in this process to one endpoint (scheme, host, port, path):
    /// one slow receiver cannot take every slot. Unset: [`DEFAULT_PER_ENDPOINT`], at most
    /// `concurrency` ([`NotifyConfig::per_endpoint`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_endpoint: Option<usize>,
    /// Webhooks per job type, for jobs submitted without `notify` (first match wins).
    pub defaults: Vec<NotifyDefault>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            horizon: Duration::from_secs(24 * 3600),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            concurrency: 16,
            per_endpoint: None,
            defaults: Vec::new(),
        }
    }
}

/// `notify.per_endpoint` when unset (lowered to `notify.concurrency` when that is smaller).
pub const DEFAULT_PER_ENDPOINT: usize = 4;

/// A webhook for the jobs whose type matches one of `types`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyDefault {
    /// Type globs (`report.*`).
    pub types: Vec<String>,
    /// The receiver.
    pub url: String,
    /// Event words (`terminal`, `status`, `progress`); default `["terminal"]`.
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

impl NotifyConfig {
    /// Checks the values; the error is `(key, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
        for (k, d, min) in [
            ("notify.horizon", self.horizon, Duration::from_secs(1)),
            (
                "notify.retry_initial",
                self.retry_initial,
                Duration::from_millis(10),
            ),
            (
                "notify.retry_max",
                self.retry_max,
                Duration::from_millis(10),
            ),
            ("notify.timeout", self.timeout, Duration::from_millis(100)),
        ] {
            if d < min || d > Duration::from_secs(30 * 24 * 3600) {
                return bad(k, &format!("must be between {min:?} and 30 days"));
            }
        }
        if self.retry_initial > self.retry_max {
            return bad("notify.retry_initial", "must not exceed notify.retry_max");
        }
        if self.concurrency == 0 || self.concurrency > 1024 {
            return bad("notify.concurrency", "must be between 1 and 1024");
        }
        if let Some(n) = self.per_endpoint {
            if n == 0 || n > self.concurrency {
                return bad(
                    "notify.per_endpoint",
                    &format!(
                        "must be between 1 and notify.concurrency ({}), got {n}",
                        self.concurrency
                    ),
                );
            }
        }
        for (i, d) in self.defaults.iter().enumerate() {
            let field = format!("notify.defaults[{i}]");
            if d.types.is_empty() {
                return bad(
                    &format!("{field}.types"),
                    "must list at least one type glob",
                );
            }
            for g in &d.types {
                if g.is_empty() {
                    return bad(&format!("{field}.types"), "a glob must not be empty");
                }
                if let Some(e) = crate::store::Names::glob_error(g) {
                    return bad(&format!("{field}.types"), &e);
                }
            }
            let spec = NotifySpec::parse(&field, &d.url, d.events.as_deref())
                .map_err(|m| (field.clone(), m))?;
            let u = reqwest::Url::parse(&spec.url).map_err(|e| (field.clone(), e.to_string()))?;
            super::target::check_literal(&u, self.allow_private)
                .map_err(|m| (format!("{field}.url"), m))?;
        }
        Ok(())
    }

    /// The most attempts in flight to one endpoint in this process.
    pub fn per_endpoint(&self) -> usize {
        self.per_endpoint
            .unwrap_or(DEFAULT_PER_ENDPOINT.min(self.concurrency))
            .max(1)
    }

    /// The webhook a job of `job_type` submitted without `notify` gets.
    pub fn default_for(&self, job_type: &str) -> Option<NotifySpec> {
        self.defaults
            .iter()
            .find(|d| {
                d.types
                    .iter()
                    .any(|g| runyard_runners::glob_match(g, job_type))
            })
            .and_then(|d| NotifySpec::parse("notify", &d.url, d.events.as_deref()).ok())
    }

    /// The delay before the retry that follows attempt `attempt` (1-based): `retry_initial`
    /// doubling each attempt up to `retry_max`, with equal jitter (a random point in the upper
    /// half), as job retries ([`crate::job::Backoff`]).
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let b = crate::job::Backoff {
            initial_ms: self.retry_initial.as_millis() as u64,
            max_ms: self.retry_max.as_millis() as u64,
            multiplier: 2.0,
            jitter: true,
        };
        Duration::from_millis(b.delay_ms(attempt, rand::random::<f64>()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_endpoint_is_checked_against_concurrency_and_defaults_below_it() {
        let mut c = NotifyConfig::default();
        assert_eq!(c.per_endpoint(), DEFAULT_PER_ENDPOINT);
        c.concurrency = 2;
        assert_eq!(c.per_endpoint(), 2, "the default never exceeds concurrency");
        assert!(c.validate().is_ok());
        for bad in [0, 3] {
            c.per_endpoint = Some(bad);
            let (k, m) = c.validate().unwrap_err();
            assert_eq!(k, "notify.per_endpoint");
            assert!(m.contains("between 1 and notify.concurrency (2)"), "{m}");
        }
        c.per_endpoint = Some(2);
        assert!(c.validate().is_ok());
        assert_eq!(c.per_endpoint(), 2);
        let parsed: NotifyConfig = toml::from_str("per_endpoint = 1\nconcurrency = 8").unwrap();
        assert_eq!((parsed.per_endpoint(), parsed.concurrency), (1, 8));
    }
}
