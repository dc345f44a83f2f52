//! The channel index: `P:jch:{channel}`, the jobs of each channel that is not the job's own id,
//! so that a listing of one literal channel (`channel=`, or a grant confined to one channel)
//! reads that channel's jobs only instead of every job (`jobs.rs`).
//!
//! It is derived from the global event stream `P:ev`, not written by `commit.lua`: every build
//! appends a submit's event (with the job's id and channel) to `P:ev` in the same script call
//! that stores the job, so jobs written by builds that know nothing of the index (a rolling
//! upgrade) are indexed too. Each node catches up from the stream every [`TICK`], and a listing
//! that reads the index first catches up itself (at most [`LIST_CATCHUP`] batches: further
//! behind, it reads by id as before). When events were trimmed before they were indexed, or the
//! index was never built (a new deployment, an upgrade), it is rebuilt from `P:all` under a lock,
//! paced, while the catch-up goes on and listings read by id. See `lua/chanidx.lua` for the keys
//! and the proof of completeness, docs/redis.md "Channel index".

use std::sync::Weak;

use super::*;
use crate::store::log_quiet::warn_unless_refused;

/// How often each node catches the index up from the event stream.
const TICK: Duration = Duration::from_secs(1);
/// Events indexed per script call.
const BATCH: usize = 1000;
/// Script calls a tick makes at most (a tick indexes up to 100,000 events).
const TICK_BATCHES: usize = 100;
/// Script calls a listing makes at most before it reads the index: further behind, it reads by
/// id (the background catch-up is late). Every event is indexed, not only submits (4-5 a job),
/// at about 20 ms of Redis time per 1,000 events of jobs on shared channels (measured): 4,000
/// events, up to about 80 ms inside the request.
const LIST_CATCHUP: usize = 4;
/// Jobs of `P:all` read per rebuild script call (about 4 ms of Redis time).
const WALK: usize = 250;
/// The rebuild's pause between two script calls, so that it leaves Redis to the other commands.
const WALK_PAUSE: Duration = Duration::from_millis(8);
/// How long no node rebuilds after a rebuild that ended `lost` (the rebuild lock is kept).
const LOST_BACKOFF_MS: u64 = 60_000;
/// The rebuild lock's lifetime, refreshed by each of its script calls: a node that dies while
/// rebuilding holds it this long.
const LOCK_MS: u64 = 30_000;

/// Where a listing reads its ids (`RedisStore::id_source`).
pub(super) struct IdSource {
    /// `P:all`, `P:st:{STATUS}` or `P:jch:{channel}`.
    key: String,
    /// The channel of `P:jch:{channel}`.
    channel: Option<String>,
    /// The job whose id the channel is, its channel its own, until it is listed.
    own: Option<String>,
}

/// The catch-up's answer.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Caught {
    /// Indexed a batch (or nothing new). `done`: every event up to the stream's end is indexed;
    /// `built`: the index is `ok` (not being rebuilt), so listings may read it.
    Indexed { done: bool, built: bool },
    /// The index is not built, or events were lost before they were indexed: listings read by
    /// id until a rebuild ends.
    Off,
}

impl RedisStore {
    fn chanidx_keys(&self) -> [String; 4] {
        ["ev", "jchidx", "all", "jchidx:lock"].map(|k| self.key(k))
    }

    async fn chanidx(&self, op: &str, rest: &[String]) -> Result<Vec<String>> {
        let mut args = vec![op.to_string(), self.key("job:"), self.key("jch:")];
        args.extend_from_slice(rest);
        self.run_script(&self.scripts.chanidx, &self.chanidx_keys(), &args)
            .await
    }

    /// One catch-up batch (see `lua/chanidx.lua`).
    async fn catch_up(&self) -> Result<Caught> {
        let r = self.chanidx("catchup", &[BATCH.to_string()]).await?;
        let done = r.get(2).is_some_and(|d| d == "1");
        Ok(match r.first().map(String::as_str) {
            Some("ok") => Caught::Indexed { done, built: true },
            Some("rebuild") => Caught::Indexed { done, built: false },
            _ => Caught::Off,
        })
    }

    /// Catch-up batches until the stream's end, at most [`TICK_BATCHES`]; the last answer.
    async fn catch_up_to_end(&self) -> Result<Caught> {
        let mut last = Caught::Off;
        for _ in 0..TICK_BATCHES {
            last = self.catch_up().await?;
            if !matches!(last, Caught::Indexed { done: false, .. }) {
                break;
            }
        }
        Ok(last)
    }

    /// Whether a listing may read the channel index: it is built and, after this call's
    /// catch-up, holds every job committed before the call.
    pub(super) async fn chanidx_ready(&self) -> Result<bool> {
        if !self.s.channel_index {
            return Ok(false);
        }
        for _ in 0..LIST_CATCHUP {
            match self.catch_up().await? {
                Caught::Indexed { built: false, .. } | Caught::Off => return Ok(false),
                Caught::Indexed { done: true, .. } => return Ok(true),
                Caught::Indexed { done: false, .. } => {}
            }
        }
        Ok(false)
    }

    /// A node's turn: catch up (also while a rebuild runs), or rebuild when the index is not
    /// usable.
    async fn chanidx_tick(&self) -> Result<()> {
        match self.catch_up_to_end().await? {
            Caught::Off => self.rebuild().await,
            Caught::Indexed { .. } => Ok(()),
        }
    }

    /// Rebuilds the index from `P:all` unless another node is at it: the jobs stored before the
    /// stream's end at the start are read from `P:all` ([`WALK`] a call, [`WALK_PAUSE`] apart),
    /// those after from the stream (this node catches up every [`TICK`] during the walk, as the
    /// others do). A rebuild overtaken by a newer one (its lock expired) does not mark the index
    /// built; one that ends `lost` (events trimmed before the catch-up read them) keeps the lock
    /// for [`LOST_BACKOFF_MS`].
    async fn rebuild(&self) -> Result<()> {
        let token = self.origin.clone();
        let r = self
            .chanidx("begin", &[token.clone(), LOCK_MS.to_string()])
            .await?;
        let (Some("go"), Some(gen)) = (r.first().map(String::as_str), r.get(1)) else {
            return Ok(());
        };
        let gen = gen.clone();
        let started = Instant::now();
        tracing::info!(gen = %gen, "building the redis channel index");
        let mut after = String::new();
        let mut jobs = 0usize;
        let mut caught = Instant::now();
        loop {
            let r = self
                .chanidx(
                    "walk",
                    &[
                        token.clone(),
                        LOCK_MS.to_string(),
                        gen.clone(),
                        after.clone(),
                        WALK.to_string(),
                    ],
                )
                .await?;
            if r.first().map(String::as_str) != Some("ok") {
                tracing::info!(gen = %gen, "channel index rebuild overtaken by another");
                return Ok(());
            }
            let n: usize = r.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
            jobs += n;
            match r.get(1) {
                Some(last) if n >= WALK && !last.is_empty() => after = last.clone(),
                _ => break,
            }
            if caught.elapsed() >= TICK {
                // Lost: stop walking (`finish` answers `lost`).
                if self.catch_up_to_end().await? == Caught::Off {
                    break;
                }
                caught = Instant::now();
            }
            tokio::time::sleep(WALK_PAUSE).await;
        }
        let backoff = LOST_BACKOFF_MS.to_string();
        let r: Vec<String> = self
            .chanidx("finish", &[token, gen.clone(), backoff])
            .await?;
        let state = r.first().map(String::as_str).unwrap_or("");
        let took_ms = started.elapsed().as_millis() as u64;
        if state == "lost" {
            tracing::warn!(gen = %gen, jobs, took_ms, backoff_ms = LOST_BACKOFF_MS,
                "redis channel index rebuild ended lost (events trimmed before they were \
                 indexed); no rebuild before the backoff, listings read by id");
        } else {
            tracing::info!(gen = %gen, jobs, ok = state == "ok", took_ms,
                "redis channel index built");
        }
        Ok(())
    }

    /// Where the listing `q` reads its ids from; `None`: nothing can be listed (a `channel=`
    /// outside the caller's grant). One literal channel is read from its set when the index
    /// holds every job committed before now, with the job whose id the channel is (the status
    /// is then checked record by record); anything else from `P:all` or the status's set.
    pub(super) async fn id_source(&self, q: &ListQuery) -> Result<Option<IdSource>> {
        if let (Some(c), Some(v)) = (&q.channel, &q.visible) {
            if !v.channels.as_ref().is_none_or(|n| n.matches(c)) {
                return Ok(None);
            }
        }
        if let Some(c) = indexed_channel(q) {
            // An error (e.g. Redis at `maxmemory`, the catch-up's writes refused): read by id,
            // which only reads.
            let ready = self.chanidx_ready().await.unwrap_or_else(|e| {
                warn_unless_refused!(e, "redis channel index: catch-up failed; listing by id");
                false
            });
            if ready {
                return Ok(Some(IdSource {
                    key: self.keyed("jch:", c),
                    own: self.own_channel_job(c).await?,
                    channel: Some(c.to_string()),
                }));
            }
        }
        let key = match q.status_read() {
            Some(s) => self.keyed("st:", s.as_str()),
            None => self.key("all"),
        };
        Ok(Some(IdSource {
            key,
            channel: None,
            own: None,
        }))
    }

    /// The next ids of `src` newest first from `max` down to `min` (lex bounds as for `P:all`),
    /// up to `batch` of its set; for a channel also the job whose id the channel is, when it is
    /// in that range and its channel is its own (taken once). Returns the ids and how many came
    /// from the set (fewer than `batch`: the set is read to its end).
    pub(super) async fn next_ids(
        &self,
        src: &mut IdSource,
        max: &str,
        min: &str,
        batch: usize,
    ) -> Result<(Vec<String>, usize)> {
        let mut ids = self.ids_newest_first(&src.key, max, min, batch).await?;
        let read = ids.len();
        let own = &mut src.own;
        if let Some(o) = own.as_deref() {
            let below_max = max == "+" || max.strip_prefix('(').is_some_and(|c| o < c);
            let above_min = min == "-" || min.strip_prefix('[').is_some_and(|l| o >= l);
            let here = read < batch || ids.last().is_some_and(|l| o > l.as_str());
            if below_max && above_min && here {
                let at = ids.partition_point(|i| i.as_str() > o);
                ids.insert(at, o.to_string());
                *own = None;
            }
        }
        Ok((ids, read))
    }

    /// Takes the jobs of `ids`, read from `src`, that no longer exist out of its channel's set
    /// (best effort; nothing for other sources).
    pub(super) async fn forget_gone(&self, src: &IdSource, ids: &[Uuid]) {
        let Some(channel) = src.channel.as_ref().filter(|_| !ids.is_empty()) else {
            return;
        };
        let mut rest = vec![channel.to_string()];
        rest.extend(ids.iter().map(Uuid::to_string));
        if let Err(e) = self.chanidx("prune", &rest).await {
            tracing::debug!(error = %e, "redis channel index: prune failed");
        }
    }

    /// The job whose id `channel` is, when its channel is its own: listed with the channel's
    /// set (which leaves such jobs out).
    pub(super) async fn own_channel_job(&self, channel: &str) -> Result<Option<String>> {
        let Ok(id) = Uuid::parse_str(channel) else {
            return Ok(None);
        };
        if id.to_string() != channel {
            return Ok(None);
        }
        let key = self.keyed("job:", id);
        let c: Option<String> = self
            .exec(true, |mut c| {
                let cmd = ::redis::cmd("HGET").arg(&key).arg("c").clone();
                // A key not a hash is no job's (the listing reads past it).
                async move {
                    match cmd.query_async(&mut c).await {
                        Err(e) if super::records::wrong_type(&e) => Ok(None),
                        r => r,
                    }
                }
            })
            .await?;
        Ok(c.filter(|c| c == channel).map(|_| channel.to_string()))
    }
}

/// The one channel a listing may read from the index: the one asked for, else the grant's when
/// it is one literal channel (a channel JWT, `channels = ["tenant-a"]`).
pub(super) fn indexed_channel(q: &ListQuery) -> Option<&str> {
    if let Some(c) = &q.channel {
        return Some(c.as_str());
    }
    let n = q.visible.as_ref()?.channels.as_ref()?;
    let first = n.list.first()?;
    let literal = |s: &String| n.exact || !s.contains(['*', '?']);
    n.list
        .iter()
        .all(|s| s == first && literal(s))
        .then_some(first.as_str())
}

/// Catches the channel index up on this node every [`TICK`] until the store is dropped.
pub(super) async fn maintain(me: Weak<RedisStore>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.cancelled() => return,
        }
        let Some(s) = me.upgrade() else { return };
        if let Err(e) = s.chanidx_tick().await {
            warn_unless_refused!(e, "redis channel index: catch-up failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(list: &[&str], exact: bool) -> ListQuery {
        ListQuery {
            visible: Some(crate::store::Visibility {
                types: None,
                channels: Some(crate::store::Names {
                    list: list.iter().map(|s| s.to_string()).collect(),
                    exact,
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn one_literal_channel_is_read_from_the_index() {
        // The query's channel first, whatever the grant.
        let q = ListQuery {
            channel: Some("c".into()),
            ..grant(&["a*"], false)
        };
        assert_eq!(indexed_channel(&q), Some("c"));
        assert_eq!(indexed_channel(&grant(&["a"], false)), Some("a"));
        assert_eq!(indexed_channel(&grant(&["a*"], true)), Some("a*"));
        assert_eq!(indexed_channel(&grant(&["a", "a"], false)), Some("a"));
        // Globs, several channels, none, no channel grant: read by id.
        assert_eq!(indexed_channel(&grant(&["a*"], false)), None);
        assert_eq!(indexed_channel(&grant(&["a?"], false)), None);
        assert_eq!(indexed_channel(&grant(&["a", "b"], true)), None);
        assert_eq!(indexed_channel(&grant(&[], true)), None);
        assert_eq!(indexed_channel(&ListQuery::default()), None);
    }
}
