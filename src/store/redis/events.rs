//! [`EventLog`] for Redis: `P:ev` the global event stream, `P:evc:{channel}` a channel's stream
//! and `P:evl:{channel}` its list, both read whatever this node writes (`lua/events.lua`), with
//! `P:evcgone`, since when the retention sweep has seen no such stream (retention.rs), and
//! `P:evlsince`, since when lists exist (`lua/commit.lua`).

use super::*;

/// Normalises an event id (`last_id`) of the Redis store to `ms-seq` (`ms` alone is `ms-0`).
pub fn parse_event_id(s: &str) -> Result<String> {
    let bad = || {
        StoreError::BadInput(format!(
            "invalid event id `{s}`: expected a stream id such as 1700000000000-0"
        ))
    };
    let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
    let ms: u64 = ms.parse().map_err(|_| bad())?;
    let seq: u64 = seq.parse().map_err(|_| bad())?;
    if (ms, seq) == (u64::MAX, u64::MAX) {
        // No stream id follows it: Redis refuses a range after it (`XRANGE (id`).
        return Err(StoreError::BadInput(format!(
            "invalid event id `{s}`: the largest stream id, which no event can follow"
        )));
    }
    Ok(format!("{ms}-{seq}"))
}

/// How long `P:evwant` lives after a read of events set it (see [`RedisStore::want_events`]).
const EV_WANT_TTL: Duration = Duration::from_secs(90);
/// A process sets `P:evwant` again when its last setting is older than this: it then lives at
/// least `EV_WANT_TTL - EV_WANT_REFRESH` (60 s) after any read, longer than a long poll waits
/// (30 s at most).
const EV_WANT_REFRESH: Duration = Duration::from_secs(30);

impl RedisStore {
    /// Says that this process reads events: while `P:evwant` exists, `commit.lua` announces
    /// every call that appended events (`E` on the notice channel), which wakes the long polls
    /// of every process; without it, a commit of a job's status announces nothing but new
    /// QUEUED jobs (workers alone have no use for `E`: a notice less to every process per
    /// commit). Set before the read it precedes, so an event committed after that read is
    /// announced: a long poll (read, then wait for `Notice::Events`) misses nothing.
    async fn want_events(&self) -> Result<()> {
        let fresh = matches!(*self.ev_want.lock(), Some(at) if at.elapsed() < EV_WANT_REFRESH);
        if fresh {
            return Ok(());
        }
        let sent = Instant::now();
        let key = self.key("evwant");
        let _: () = self
            .exec(true, |mut c| {
                let cmd = ::redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("PX")
                    .arg(EV_WANT_TTL.as_millis() as u64)
                    .clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        *self.ev_want.lock() = Some(sent);
        Ok(())
    }
}

#[async_trait]
impl EventLog for RedisStore {
    async fn events(
        &self,
        channel: Option<&str>,
        last_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let last = last_id.map(parse_event_id).transpose()?.unwrap_or_default();
        // Before the read: an event committed after it is announced to this process.
        self.want_events().await?;
        let chan = channel.unwrap_or("").to_string();
        let now_ms = self.now().await / 1000;
        let global = self.key("ev");
        // A channel: its stream, its list, since when no stream exists, since when lists do.
        let (stream, list) = match chan.as_str() {
            "" => (global.clone(), None),
            c => (
                self.keyed("evc:", c),
                Some((
                    self.keyed("evl:", c),
                    self.key("evcgone"),
                    self.key("evlsince"),
                )),
            ),
        };
        let raw: Vec<String> = self
            .exec(true, |mut c| {
                let mut inv = self.scripts.events.prepare_invoke();
                inv.key(&stream).key(&global);
                if let Some((l, gone, since)) = &list {
                    inv.key(l).key(gone).key(since);
                }
                inv.arg("chan")
                    .arg(u8::from(!chan.is_empty()))
                    .arg("last")
                    .arg(&last)
                    .arg("limit")
                    .arg(limit.max(1))
                    .arg("now")
                    .arg(now_ms)
                    .arg("ttl")
                    .arg(self.channel_ttl_read().as_millis() as u64);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        let mut out = Vec::with_capacity(raw.len() / 2 + 1);
        let mut it = raw.into_iter();
        if let Some(resync) = it.next().filter(|r| !r.is_empty()) {
            let mut ev = Event::resync(&chan);
            ev.id = resync;
            out.push(ev);
        }
        while let (Some(id), Some(body)) = (it.next(), it.next()) {
            let mut ev = crate::store::event_record::read_inline(&body)?;
            ev.id = id;
            out.push(ev);
        }
        Ok(out)
    }

    async fn last_event_id(&self) -> Result<Option<String>> {
        self.newest_event_id().await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids() {
        assert_eq!(parse_event_id("17").unwrap(), "17-0");
        assert_eq!(
            parse_event_id("1700000000000-3").unwrap(),
            "1700000000000-3"
        );
        assert!(parse_event_id("x-1").is_err());
        assert!(parse_event_id("-1").is_err());
        let max = format!("{}-{}", u64::MAX, u64::MAX);
        assert!(
            parse_event_id(&max).is_err(),
            "a range after it is refused by Redis"
        );
        assert!(parse_event_id(&format!("{}-{}", u64::MAX, u64::MAX - 1)).is_ok());
    }
}
