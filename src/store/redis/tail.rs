//! Following the global event stream for this process's live streams (`src/events/`):
//! `XREAD BLOCK` on `P:ev`, on a connection of its own (a blocking read would hold up every
//! command pipelined behind it on the shared one). Every API node reads every committed event
//! this way, whichever node committed it: the Stream is the path, not pub/sub.

use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::streams::{StreamReadOptions, StreamReadReply};
use ::redis::{AsyncCommands, AsyncConnectionConfig};
use async_trait::async_trait;

use super::RedisStore;
use crate::job::Event;
use crate::store::tail::TailReader;
use crate::store::{Result, StoreError};

/// Stream entries as `XRANGE`/`XREVRANGE` answer them: ids and their fields.
type Entries = Vec<(String, Vec<(String, String)>)>;

/// A reader of the global event stream (see the module docs).
pub struct EventTail {
    client: ::redis::Client,
    conn: Option<MultiplexedConnection>,
    key: String,
}

impl RedisStore {
    /// A reader of the global event stream on a connection of its own.
    pub fn stream_tail(&self) -> Result<EventTail> {
        Ok(EventTail {
            client: self.client.clone(),
            conn: None,
            key: self.key("ev"),
        })
    }

    /// The id of the newest event of the global stream (`0-0` when there is none).
    pub(super) async fn newest_event_id(&self) -> Result<String> {
        let key = self.key("ev");
        let last: Entries = self
            .exec(true, |mut c| {
                let cmd = newest_cmd(&key);
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        Ok(newest_of(last))
    }
}

/// `XREVRANGE key + - COUNT 1`: the newest entry of the stream `key`.
fn newest_cmd(key: &str) -> ::redis::Cmd {
    let mut cmd = ::redis::cmd("XREVRANGE");
    cmd.arg(key).arg("+").arg("-").arg("COUNT").arg(1);
    cmd
}

/// The id [`newest_cmd`] answered, `0-0` for an empty stream.
fn newest_of(last: Entries) -> String {
    last.into_iter()
        .next()
        .map(|(id, _)| id)
        .unwrap_or_else(|| "0-0".into())
}

impl EventTail {
    /// The tail's own connection, made on first use (`block`: the longest read it serves).
    async fn conn(&mut self, block: Duration) -> Result<&mut MultiplexedConnection> {
        if self.conn.is_none() {
            let cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Duration::from_secs(2))
                .set_response_timeout(block + Duration::from_secs(5));
            let c = self
                .client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("just made"))
    }

    /// The id of the newest event of the global stream (`0-0` when there is none), on the
    /// tail's connection. An error drops the connection.
    pub async fn newest_id(&mut self) -> Result<String> {
        let key = self.key.clone();
        let conn = self.conn(Duration::from_secs(1)).await?;
        let last: std::result::Result<Entries, _> = newest_cmd(&key).query_async(conn).await;
        match last {
            Ok(l) => Ok(newest_of(l)),
            Err(e) => {
                self.conn = None;
                Err(StoreError::Unavailable(format!("redis XREVRANGE: {e}")))
            }
        }
    }

    /// Events of the global stream after `after` (exclusive), oldest first, at most `count`;
    /// waits up to `block` for the first one (empty when none came). An error drops the
    /// connection; the next call connects again.
    pub async fn xread(
        &mut self,
        after: &str,
        block: Duration,
        count: usize,
    ) -> Result<Vec<Event>> {
        let key = self.key.clone();
        let conn = self.conn(block).await?;
        let opts = StreamReadOptions::default()
            .block(block.as_millis() as usize)
            .count(count);
        let reply: std::result::Result<Option<StreamReadReply>, _> =
            conn.xread_options(&[&key], &[after], &opts).await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(StoreError::Unavailable(format!("redis XREAD: {e}")));
            }
        };
        let mut out = Vec::new();
        for k in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in k.ids {
                let Some(body) = entry.get::<String>("e") else {
                    continue;
                };
                let mut ev = crate::store::event_record::read_inline(&body)?;
                ev.id = entry.id;
                out.push(ev);
            }
        }
        Ok(out)
    }
}

impl crate::store::tail::EventTail for RedisStore {
    fn event_tail(self: Arc<Self>) -> Result<Box<dyn TailReader>> {
        Ok(Box::new(self.stream_tail()?))
    }
}

#[async_trait]
impl TailReader for EventTail {
    async fn read(
        &mut self,
        after: Option<&str>,
        wait: Duration,
        max: usize,
    ) -> Result<Vec<Event>> {
        self.xread(after.unwrap_or("0-0"), wait, max).await
    }

    /// One `XREVRANGE ... COUNT 1`: an idle API node skips what nobody on it listens to instead
    /// of reading and parsing every event (about 4 µs of redis-server's and as much of the
    /// API's CPU per job at 32 in flight, docs/benchmarks.md "Session 14: redis").
    async fn newest(&mut self) -> Result<Option<String>> {
        self.newest_id().await.map(Some)
    }

    /// The global stream keeps the events (up to `events.global_limit`): an idle node keeps
    /// its pace while behind, as it did before issue 14's change to the embedded tail.
    fn read_on_when_behind(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_redis_tail_keeps_its_pace_when_behind() {
        // No connection is made until the first read.
        let tail = EventTail {
            client: ::redis::Client::open("redis://127.0.0.1:1").unwrap(),
            conn: None,
            key: "P:ev".into(),
        };
        assert!(
            !tail.read_on_when_behind(),
            "the global stream keeps the events: an idle API node need not read a burst as it runs"
        );
    }
}
