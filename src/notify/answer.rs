//! What a receiver's answer to a failed attempt asks of the next one: a `Retry-After` on a 429
//! or 503 (the next attempt no sooner than it says), and a `410 Gone` (no next attempt).

use std::time::{Duration, SystemTime};

/// How a receiver's answer ends an attempt that was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Try again: no sooner than the `Retry-After` it gave, when it gave one.
    Later(Option<Duration>),
    /// `410 Gone`: the receiver will never take it; given up now.
    Gone,
}

/// What a non-2xx answer `status` with the `Retry-After` value `retry_after` (if any) asks, at
/// `now`. `Retry-After` counts on a 429 or a 503 only; a value that is neither whole seconds nor
/// an HTTP date is ignored (the usual backoff applies), a date in the past is "now".
pub fn refusal(status: u16, retry_after: Option<&str>, now: SystemTime) -> Refusal {
    if status == 410 {
        return Refusal::Gone;
    }
    if !matches!(status, 429 | 503) {
        return Refusal::Later(None);
    }
    Refusal::Later(retry_after.and_then(|v| parse_retry_after(v, now)))
}

/// A `Retry-After` value: delay-seconds (huge ones saturate) or an HTTP date (RFC 9110, its
/// three forms), as a delay from `now`.
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(v.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The text recorded as a refused attempt's error.
pub fn describe(status: u16, r: Refusal) -> String {
    match r {
        Refusal::Gone => format!("the receiver answered {status} (Gone): given up"),
        Refusal::Later(Some(d)) => format!(
            "the receiver answered {status} (Retry-After: {} s)",
            d.as_secs()
        ),
        Refusal::Later(None) => format!("the receiver answered {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date_on_429_and_503_only() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let secs = |n| Refusal::Later(Some(Duration::from_secs(n)));
        assert_eq!(refusal(503, Some("120"), now), secs(120));
        assert_eq!(refusal(429, Some(" 7 "), now), secs(7));
        // The three date forms of RFC 9110.
        for d in [
            "Sun, 06 Nov 1994 08:50:37 GMT",
            "Sunday, 06-Nov-94 08:50:37 GMT",
            "Sun Nov  6 08:50:37 1994",
        ] {
            assert_eq!(refusal(503, Some(d), now), secs(60), "{d}");
        }
        // A date already past: now.
        assert_eq!(
            refusal(503, Some("Sat, 05 Nov 1994 08:49:37 GMT"), now),
            secs(0)
        );
        // Huge: saturates (the horizon then gives the delivery up).
        assert_eq!(
            refusal(429, Some("99999999999999999999999"), now),
            Refusal::Later(Some(Duration::from_secs(u64::MAX)))
        );
        for junk in ["", "-5", "1.5", "soon", "12 s"] {
            assert_eq!(
                refusal(503, Some(junk), now),
                Refusal::Later(None),
                "{junk}"
            );
        }
        // Not on other statuses.
        assert_eq!(refusal(500, Some("60"), now), Refusal::Later(None));
        assert_eq!(refusal(404, None, now), Refusal::Later(None));
        assert_eq!(refusal(410, Some("60"), now), Refusal::Gone);
    }
}
