//! Signed webhooks out (docs/notifications.md).
//!
//! A job may carry a [`NotifySpec`] (from its submit's `notify`, or from a `[[notify.defaults]]`
//! entry whose `types` match its type). Each of its events that the spec asks for becomes a
//! stored *delivery*, written by the store in the same commit as the event
//! ([`crate::store::deliveries`]), and POSTed by the delivery loop ([`deliver`]) with a
//! `Runyard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, t + "." + body)>` header, retried
//! with exponential backoff up to `notify.horizon`, across restarts.
//!
//! - [`config`]: `[notify]` in runyard.toml.
//! - [`target`]: which addresses a webhook may reach (no loopback, private, link-local... unless
//!   `notify.allow_private`), checked at submit and again at every send.
//! - [`deliver`]: the delivery loop and one attempt; `in_flight`: its attempts per endpoint
//!   (`notify.per_endpoint`: one slow receiver cannot take every slot).
//! - [`answer`]: what a refusing receiver asks (`Retry-After`, `410 Gone`).
//!
//! The signing key of an endpoint is derived from the master key and the endpoint (origin and
//! path, [`endpoint_of`]): it is never stored, and shown through `POST /async/notify/keys`.

pub mod answer;
pub mod config;
pub mod deliver;
mod in_flight;
pub mod lookup;
pub mod target;

use std::sync::atomic::{AtomicU64, Ordering};

use runyard_hooks::hmac_sha256_parts;
use serde::Serialize;

pub use crate::job::notify_spec::{NotifyEvent, NotifySpec};
pub use config::{NotifyConfig, NotifyDefault};

/// The longest webhook URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Runyard-Signature";
/// The header carrying the delivery id (the same on every attempt of one delivery).
pub const DELIVERY_HEADER: &str = "Runyard-Delivery";

impl NotifySpec {
    /// Checks a URL and event words (syntax only: [`target::check_url`] checks the addresses)
    /// and builds the spec. `field` names the input in errors (`notify`, `notify.defaults[0]`).
    /// No events: `["terminal"]`.
    pub fn parse(field: &str, url: &str, events: Option<&[String]>) -> Result<Self, String> {
        let u = parse_url(&format!("{field}.url"), url)?;
        let mut evs = Vec::new();
        match events {
            None => evs.push(NotifyEvent::Terminal),
            Some([]) => {
                return Err(format!(
                "`{field}.events` must name at least one of \"terminal\", \"status\", \"progress\""
            ))
            }
            Some(list) => {
                for (i, w) in list.iter().enumerate() {
                    evs.push(
                        NotifyEvent::parse(w).map_err(|m| format!("`{field}.events[{i}]`: {m}"))?,
                    );
                }
            }
        }
        evs.sort();
        evs.dedup();
        Ok(Self {
            url: u.to_string(),
            events: evs,
        })
    }
}

/// Parses and checks a webhook URL: http or https, a host, not port 0 (nothing answers there),
/// no user name or password (they would show on the job), at most [`MAX_URL_BYTES`]. `field`
/// names the input in errors.
pub fn parse_url(field: &str, url: &str) -> Result<reqwest::Url, String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!("`{field}` is longer than {MAX_URL_BYTES} bytes"));
    }
    let u =
        reqwest::Url::parse(url).map_err(|e| format!("`{field}`: `{url}` is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "`{field}` must be an http:// or https:// URL (got scheme `{}`)",
            u.scheme()
        ));
    }
    match u.host_str() {
        None | Some("") => return Err(format!("`{field}` has no host")),
        Some(_) => {}
    }
    if u.port() == Some(0) {
        return Err(format!(
            "`{field}` has port 0, which no receiver can listen on"
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!(
            "`{field}` must not carry a user name or password (it is shown on the job); \
             authenticate the request with its signature"
        ));
    }
    if u.fragment().is_some() {
        return Err(format!("`{field}` must not have a #fragment"));
    }
    Ok(u)
}

/// The endpoint a key is derived for: `scheme://host[:port]/path` (lowercase scheme and host,
/// no default port, no query). Two URLs that differ only in their query share a key.
pub fn endpoint_of(u: &reqwest::Url) -> String {
    let mut out = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
    if let Some(p) = u.port() {
        out.push_str(&format!(":{p}"));
    }
    out.push_str(u.path());
    out
}

/// The signing key of an endpoint: lowercase hex of
/// `HMAC-SHA256(master_key, "runyard/notify-key/v1\n" + endpoint)`. The receiver uses the hex
/// text's bytes as its HMAC key.
pub fn endpoint_key(master: &[u8], endpoint: &str) -> zeroize::Zeroizing<String> {
    let mac = hmac_sha256_parts(master, &[b"runyard/notify-key/v1\n", endpoint.as_bytes()]);
    zeroize::Zeroizing::new(hex::encode(mac))
}

/// The `Runyard-Signature` value for `body` sent at `t` (unix seconds).
pub fn signature(key: &str, t: i64, body: &[u8]) -> String {
    let mac = hmac_sha256_parts(key.as_bytes(), &[t.to_string().as_bytes(), b".", body]);
    format!("t={t},v1={}", hex::encode(mac))
}

/// Delivery counters of this process (plain atomics; read them with [`counters`]).
#[derive(Debug, Default)]
pub struct NotifyCounters {
    /// Deliveries accepted by their receiver (a 2xx answer).
    pub delivered: AtomicU64,
    /// Attempts that failed (no answer, or not 2xx); the delivery is retried while its horizon
    /// lasts.
    pub failed: AtomicU64,
    /// Deliveries given up: at the end of their horizon, or at a `410 Gone`.
    pub given_up: AtomicU64,
}

/// A reading of [`NotifyCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NotifyCounts {
    /// See [`NotifyCounters::delivered`].
    pub delivered: u64,
    /// See [`NotifyCounters::failed`].
    pub failed: u64,
    /// See [`NotifyCounters::given_up`].
    pub given_up: u64,
}

static COUNTERS: NotifyCounters = NotifyCounters {
    delivered: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    given_up: AtomicU64::new(0),
};

/// The delivery counters of this process (for `/metrics`: `runyard_notify_deliveries_total` by
/// outcome).
pub fn counters() -> NotifyCounts {
    NotifyCounts {
        delivered: COUNTERS.delivered.load(Ordering::Relaxed),
        failed: COUNTERS.failed.load(Ordering::Relaxed),
        given_up: COUNTERS.given_up.load(Ordering::Relaxed),
    }
}

pub(crate) fn count() -> &'static NotifyCounters {
    &COUNTERS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_events_are_checked_with_the_field_named() {
        let ok =
            NotifySpec::parse("notify", "https://Hooks.Example.com:443/a/b?x=1", None).unwrap();
        assert_eq!(ok.url, "https://hooks.example.com/a/b?x=1");
        assert_eq!(ok.events, vec![NotifyEvent::Terminal]);
        let words = ["progress".to_string(), "status".into(), "status".into()];
        let two = NotifySpec::parse("notify", "http://h/x", Some(&words)).unwrap();
        assert_eq!(two.events, vec![NotifyEvent::Status, NotifyEvent::Progress]);
        for (url, want) in [
            ("ftp://h/x", "notify.url"),
            ("http://", "notify.url"),
            ("file:///etc/passwd", "notify.url"),
            ("not a url", "notify.url"),
            ("http://u:p@h/x", "notify.url"),
            ("http://127.0.0.1:0/x", "notify.url"),
            ("https://h:0/x", "notify.url"),
        ] {
            let e = NotifySpec::parse("notify", url, None).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
        let e = NotifySpec::parse("notify", "http://h/x", Some(&["done".into()])).unwrap_err();
        assert!(e.contains("notify.events[0]") && e.contains("done"), "{e}");
        let e = NotifySpec::parse("notify", "http://h/x", Some(&[])).unwrap_err();
        assert!(e.contains("notify.events"), "{e}");
    }

    #[test]
    fn keys_are_per_endpoint_and_signatures_match_the_formula() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(
            endpoint_of(&u("HTTPS://A.example:443/p?q=1")),
            "https://a.example/p"
        );
        assert_eq!(
            endpoint_of(&u("http://a.example:8080/p")),
            "http://a.example:8080/p"
        );
        let k1 = endpoint_key(b"master-key-0123456789", "https://a.example/p");
        let k2 = endpoint_key(b"master-key-0123456789", "https://a.example/q");
        let k3 = endpoint_key(b"master-key-other-0000", "https://a.example/p");
        assert_eq!(k1.len(), 64);
        assert_ne!(*k1, *k2);
        assert_ne!(*k1, *k3);
        // t + "." + body, keyed with the hex text.
        let sig = signature("key", 1700000000, b"{}");
        use hmac::{Hmac, Mac};
        // An independent computation with the `hmac` crate (not the shared helper).
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(b"key").unwrap();
        mac.update(b"1700000000.{}");
        assert_eq!(
            sig,
            format!(
                "t=1700000000,v1={}",
                hex::encode(mac.finalize().into_bytes())
            )
        );
    }
}
