//! Event transport: how committed events reach WebSocket and SSE clients.
//!
//! - [`hub`]: one fan-out per process. A single tail task reads the global event stream
//!   (embedded store: after each commit notice; Redis: `XREAD BLOCK`, so events committed on any
//!   node arrive) and hands each event, serialized once, to the broadcast ring of its channel
//!   (and of the global stream). A ring exists while a stream listens to it (idle channels are
//!   collected); its size is `events.send_buffer`. Connection caps are counted here.
//! - [`follow`]: one cursor, any transport. A stream subscribes to its ring first, then replays
//!   from the store after its `last_id` (exclusive, a `resync` first when events were trimmed),
//!   then goes live, skipping live events at or below its cursor: no gap and no duplicate at the
//!   handoff. A stream behind its ring (a burst) reads on from the store; a WebSocket whose
//!   write waits while it is more than `events.send_buffer` events behind is a slow consumer.
//! - [`types`]: for a caller confined to job types, the events of its types' jobs only (an
//!   event does not say its job's type: read from the job, once per job and process, kept in
//!   the hub's `types::JobTypes`).
//! - [`ws`]: the WebSocket driver: pings, missed pongs, slow consumers, caps, shutdown, each with
//!   its close code.
//!
//! The handlers in `src/api/events.rs` only check the request and hand over.

pub mod follow;
pub mod hub;
pub mod types;
pub mod ws;

use std::cmp::Ordering;
use std::fmt;

use axum::extract::ws::Utf8Bytes;

use crate::job::Event;

pub use hub::{Hub, Refused, StatsSnapshot, Subscription};

/// Events read per page when replaying from the store.
pub const REPLAY_PAGE: usize = 100;

/// An event id, ordered as the backends order them: the embedded store's integers (`42`) and
/// Redis stream ids (`1700000000000-3`) both read as a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EventId(pub u64, pub u64);

impl EventId {
    /// Parses `42` or `1700000000000-3`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = match s.split_once('-') {
            Some((a, b)) => (a, b),
            None => (s, "0"),
        };
        let digits =
            |x: &str| !x.is_empty() && x.len() <= 20 && x.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return None;
        }
        Some(Self(a.parse().ok()?, b.parse().ok()?))
    }
}

impl PartialOrd for EventId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EventId {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.0, self.1).cmp(&(other.0, other.1))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// One event as the transports send it: serialized once, shared by every stream.
#[derive(Debug)]
pub struct Frame {
    /// Its position.
    pub id: EventId,
    /// The id as the backend writes it (what clients send back as `last_id`).
    pub id_text: Box<str>,
    /// Its channel.
    pub channel: Box<str>,
    /// Its job (empty for a `resync` event and a reset marker).
    pub job_id: Box<str>,
    /// The event JSON.
    pub json: Utf8Bytes,
    /// Not an event: the tail may have missed events; every stream re-reads from the store.
    pub reset: bool,
}

impl Frame {
    /// The frame of a stored event (`None` for an id no backend writes).
    pub fn of(ev: &Event) -> Option<Self> {
        let json = serde_json::to_string(ev).ok()?;
        Some(Self {
            id: EventId::parse(&ev.id)?,
            id_text: ev.id.as_str().into(),
            channel: ev.channel_id.as_str().into(),
            job_id: ev.job_id.as_str().into(),
            json: json.into(),
            reset: false,
        })
    }

    /// A reset marker.
    pub fn reset() -> Self {
        Self {
            id: EventId::default(),
            id_text: "".into(),
            channel: "".into(),
            job_id: "".into(),
            json: Utf8Bytes::from_static(""),
            reset: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_both_backends_parse_and_order() {
        assert_eq!(EventId::parse("42"), Some(EventId(42, 0)));
        assert_eq!(
            EventId::parse("1700000000000-3"),
            Some(EventId(1700000000000, 3))
        );
        assert!(EventId::parse("9") < EventId::parse("10"));
        assert!(EventId::parse("5-9") < EventId::parse("5-10"));
        assert!(EventId::parse("5-10") < EventId::parse("6-0"));
        for bad in [
            "",
            "-",
            "abc",
            "1-",
            "-1",
            "1-2-3",
            "1.5",
            " 1",
            "99999999999999999999999",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad:?}");
        }
    }
}
