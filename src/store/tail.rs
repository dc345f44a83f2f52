//! The live tail of the global event stream: what this process's event streams (`src/events/`)
//! publish from. A capability of the store, so that the events module never names a backend:
//! Redis reads its global Stream with `XREAD BLOCK` on a connection of its own (every node sees
//! every node's commits); the embedded store's writer hands each commit's events to its tail
//! (`src/store/sqlite/tail.rs`), which reads the event table only to start or catch up.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::Result;
use crate::job::Event;

/// A reader of the global event stream, for one follower (it may hold a connection of its own).
#[async_trait]
pub trait TailReader: Send {
    /// Events of the global stream after `after` (exclusive; from the oldest kept when `None`),
    /// oldest first, at most `max`; waits up to `wait` for the first one (empty when none came).
    /// Starts with a `resync` event when events after `after` were trimmed.
    async fn read(&mut self, after: Option<&str>, wait: Duration, max: usize)
        -> Result<Vec<Event>>;
    /// Whether a follower behind the writer must read on at once even while nobody on this
    /// process listens (`src/events/hub.rs` paces an idle follower otherwise). True where the
    /// reader holds the events it has not read yet (the embedded store's writer hands them over
    /// in memory); a backend whose log keeps them for the reader (Redis) says false: an idle
    /// node then reads every event of a burst at its pace, not as fast as they come.
    fn read_on_when_behind(&self) -> bool {
        true
    }
    /// The id of the newest event of the global stream now, when the reader can tell it
    /// cheaply; `None` otherwise (the default). While no stream is open on this process the
    /// follower moves its cursor there instead of reading and parsing events nobody here
    /// listens to (`src/events/hub.rs`): a stream that opens later replays from the store.
    async fn newest(&mut self) -> Result<Option<String>> {
        Ok(None)
    }
    /// [`TailReader::read`] keeping only the events `keep` accepts (and every `resync`), with
    /// the id of the last event read, kept or not (the next cursor), and how many were read. A
    /// reader that holds the writer's events in memory (the embedded store) copies only those
    /// kept; this default reads them all and drops the rest.
    async fn read_kept(
        &mut self,
        after: Option<&str>,
        wait: Duration,
        max: usize,
        keep: Keep<'_>,
    ) -> Result<Kept> {
        Ok(Kept::of(self.read(after, wait, max).await?, keep))
    }
}

/// Which events a follower keeps ([`TailReader::read_kept`]).
pub type Keep<'a> = &'a (dyn Fn(&Event) -> bool + Send + Sync);

/// A page of [`TailReader::read_kept`].
#[derive(Debug, Default)]
pub struct Kept {
    /// The events kept, oldest first.
    pub events: Vec<Event>,
    /// The id of the last event read, kept or not: where the next read starts.
    pub last: Option<String>,
    /// How many events were read, kept or not.
    pub read: usize,
}

impl Kept {
    /// The events of `page` that `keep` accepts, and every `resync`.
    pub fn of(page: Vec<Event>, keep: Keep<'_>) -> Self {
        let read = page.len();
        let last = page.last().map(|e| e.id.clone());
        let events = page
            .into_iter()
            .filter(|e| e.kind == "resync" || keep(e))
            .collect();
        Self { events, last, read }
    }
}

/// Following everything committed, for live delivery.
pub trait EventTail: Send + Sync {
    /// A reader that sees every event committed from now on (on every node sharing the store).
    /// Open it before reading where to start ([`super::EventLog::last_event_id`]), so that no
    /// commit in between is missed.
    fn event_tail(self: Arc<Self>) -> Result<Box<dyn TailReader>>;
}
