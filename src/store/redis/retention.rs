//! [`Maintenance`] for Redis: retention of finished jobs (`lua/retention.lua`) and of the global
//! event stream, the sweep of old channel streams (`lua/evc_sweep.lua`), the referenced file
//! hashes, health.

use std::sync::LazyLock;

use ::redis::Script;

use super::*;

/// The least and the most `SCAN` calls per sweep in [`RedisStore::sweep_old_streams`] (see
/// [`sweep_calls`]).
const SWEEP_CALLS_MIN: u64 = 10;
const SWEEP_CALLS_MAX: u64 = 100;
/// Keys per `SCAN` call (`COUNT`): about 1.5 ms of Redis time on a keyspace of a million keys.
const SCAN_COUNT: u64 = 1000;
/// The least time between two sweeps of one process (the default `retention.interval`): a round
/// of retention, up to 200 passes in a backlog, sweeps about once (every 10 s in a long one).
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How far the nodes' clocks (Redis's, carried by each node, see `RedisStore::now`) may
/// disagree: the sweep's times are moved by it towards more resyncs.
const SWEEP_CLOCK_MARGIN: Duration = Duration::from_secs(1);

/// The sweep's steps (`lua/evc_sweep.lua`).
static SWEEP: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/evc_sweep.lua")));

/// Jobs deleted per retention script call.
const RETENTION_CHUNK: usize = 500;
/// Retention script calls per [`Maintenance::retention`] (bounds one pass).
const RETENTION_CHUNKS: usize = 40;

/// `SCAN` calls per sweep for a keyspace of `keys` keys (`DBSIZE`) and the channel TTL reads
/// use, `ttl`: enough that one node's sweeps (one per [`SWEEP_EVERY`]) go through the keyspace
/// in about a quarter of the TTL (a cycle counts only if it took at most half of it, see
/// `lua/evc_sweep.lua`), from [`SWEEP_CALLS_MIN`] to [`SWEEP_CALLS_MAX`], with a quarter more
/// (a `SCAN` call may return fewer new keys than `COUNT`: duplicates while Redis rehashes).
/// Several nodes share the cycle, so it then goes faster; a keyspace over `SWEEP_CALLS_MAX` *
/// 800 keys per sweep takes longer (docs/redis.md).
fn sweep_calls(keys: u64, ttl: Duration) -> u64 {
    let sweeps = (ttl.as_millis() as u64 / 4 / SWEEP_EVERY.as_millis() as u64).max(1);
    (keys + keys / 4)
        .div_ceil(sweeps * SCAN_COUNT)
        .clamp(SWEEP_CALLS_MIN, SWEEP_CALLS_MAX)
}

#[async_trait]
impl Maintenance for RedisStore {
    async fn retention(&self, finished_before: Micros) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        let keys = ["fin", "all", "jc", "fhashes"].map(|k| self.key(k));
        // The key families of each job, named by what the script reads (see retention.lua).
        let prefixes =
            ["job:", "st:", "idem:", "fref:", "log:", "logn:", "jch:"].map(|k| self.key(k));
        let args: Vec<String> = [finished_before.to_string(), RETENTION_CHUNK.to_string()]
            .into_iter()
            .chain(prefixes)
            .collect();
        for _ in 0..RETENTION_CHUNKS {
            let n: u64 = self
                .run_script(&self.scripts.retention, &keys, &args)
                .await?;
            report.jobs += n;
            if (n as usize) < RETENTION_CHUNK {
                break;
            }
        }
        // `MAXLEN ~` at append keeps the global stream near its limit; trim it exactly here.
        let key = self.key("ev");
        let limit = self.s.store.global_limit;
        report.events = self
            .exec(true, |mut c| {
                let key = key.clone();
                async move {
                    ::redis::cmd("XTRIM")
                        .arg(key)
                        .arg("MAXLEN")
                        .arg(limit)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        // At most every SWEEP_EVERY, and never failing the pass: a sweep refused for good (an
        // ACL without SCAN) only leaves `P:evcgone` unset (docs/redis.md).
        // Only once a list was ever written (`P:evlsince`): a stream without a TTL appears only
        // beside list writers, and `P:evcgone` matters only to channels with a list.
        if self.sweep_due() && self.lists_ever_written().await.unwrap_or(true) {
            if let Err(e) = self.sweep_old_streams().await {
                tracing::warn!(error = %e, "retention: the sweep of old channel streams failed");
            }
        }
        Ok(report)
    }

    async fn file_hashes(&self) -> Result<HashSet<String>> {
        let key = self.key("fhashes");
        let mut out = HashSet::new();
        let mut cursor: u64 = 0;
        // Bounded: a set of a million hashes takes a thousand calls.
        for _ in 0..1_000_000 {
            let (next, batch): (u64, Vec<String>) = self
                .exec(true, |mut c| {
                    let key = key.clone();
                    async move {
                        ::redis::cmd("SSCAN")
                            .arg(key)
                            .arg(cursor)
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            out.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(out)
    }

    async fn time(&self) -> Micros {
        RedisStore::now(self).await
    }

    async fn health(&self) -> Result<()> {
        // A node whose master key is not the one the store keeps now is not ready (`keycheck.rs`).
        if let Some(why) = self.key_watch.refused() {
            return Err(StoreError::node_refuses(&why));
        }
        // `INFO replication` rather than `PING`: a replica answers a `PING` too, while it
        // refuses every write. Found on one, a new connection is tried (the address may name
        // the primary now, after a failover) and asked once more.
        let mut renewed = false;
        loop {
            let mut c = self.conn.get();
            let info = tokio::time::timeout(
                Duration::from_secs(1),
                ::redis::cmd("INFO")
                    .arg("replication")
                    .query_async::<String>(&mut c),
            )
            .await;
            match info {
                Ok(Ok(info)) => match super::server_info::replica_of(&info) {
                    Some(_) if !renewed && self.conn.renew().await => renewed = true,
                    Some(primary) => {
                        // A write refusal: said at ERROR once a minute, not by every probe.
                        return Err(self.writes_refused(&super::conn::replica_said(&primary)));
                    }
                    None => {
                        self.mark(true, "");
                        return self.takes_writes().await;
                    }
                },
                Ok(Err(e)) => {
                    self.mark(false, &e.to_string());
                    // A probe of an idle node must heal it too (`conn.rs`).
                    self.conn.heal(&e).await;
                    return Err(StoreError::Unavailable(format!("redis: {e}")));
                }
                Err(_) => {
                    self.mark(false, "no answer to INFO within 1s");
                    return Err(StoreError::Unavailable(
                        "redis: no answer to INFO within 1s".into(),
                    ));
                }
            }
        }
    }
}

/// How long the answer of a write probe stands for the next ones (`takes_writes`).
const WRITE_PROBE_FOR: Duration = Duration::from_secs(5);

impl RedisStore {
    /// Whether Redis takes writes (one small write with a TTL tells): `Ok` when it does; the
    /// refusal when it does not (`conn::write_refusal`:
    /// out of memory, unable to persist, too few replicas), said as it is now, never a reason
    /// that is over. Tried by every probe, not only after a refusal was met: a node whose
    /// loops and requests wrote nothing yet must not say it is ready while Redis refuses
    /// writes (probe s50: `MISCONF` met by every submit, `/health/ready` 200 for 50 s).
    async fn takes_writes(&self) -> Result<()> {
        // One write per WRITE_PROBE_FOR at most, whatever asks (readiness probes, scrapes,
        // anonymous `/health/ready` calls): its answer, Ok or the refusal, kept that long.
        let kept = *self.write_probe.lock();
        if let Some((_, refused)) = kept.filter(|(at, _)| at.elapsed() < WRITE_PROBE_FOR) {
            return match refused {
                None => Ok(()),
                Some(said) => Err(self.writes_refused(said)),
            };
        }
        // Its refusal is kept by `write_probe_now`; another failure (no answer) is not.
        let r = self.write_probe_now().await;
        if r.is_ok() {
            *self.write_probe.lock() = Some((Instant::now(), None));
        }
        r
    }

    /// The write of [`Self::takes_writes`], made now.
    async fn write_probe_now(&self) -> Result<()> {
        let mut c = self.conn.get();
        let key = self.key(&format!("health:{}", self.origin));
        let r = tokio::time::timeout(
            Duration::from_secs(1),
            ::redis::cmd("SET")
                .arg(key)
                .arg(1)
                .arg("PX")
                .arg(10_000)
                .query_async::<()>(&mut c),
        )
        .await;
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if super::conn::write_refusal(&e).is_some() => {
                let said = super::conn::write_refusal(&e).unwrap_or_default();
                self.conn.heal(&e).await;
                *self.write_probe.lock() = Some((Instant::now(), Some(said)));
                Err(self.writes_refused(said))
            }
            // Failed for another reason (a lost connection, a loading Redis): said as it is.
            Ok(Err(e)) => {
                self.conn.heal(&e).await;
                Err(StoreError::Unavailable(format!("redis: {e}")))
            }
            Err(_) => Err(StoreError::Unavailable(
                "redis: no answer to a write within 1s".into(),
            )),
        }
    }

    /// A write Redis refused (`said`: why, and that nothing was stored, `conn::write_refusal`),
    /// said at ERROR once a minute per reason (every loop and request meets it: they say it at
    /// DEBUG, `log_quiet::warn_unless_refused`). `health` tries a write of its own, so
    /// `/health/ready` is not ok meanwhile.
    pub(super) fn writes_refused(&self, said: &str) -> StoreError {
        if crate::store::log_quiet::loud("redis refuses writes", said) {
            tracing::error!(error = %said, "redis refuses writes");
        } else {
            tracing::debug!(error = %said, "redis refuses writes");
        }
        StoreError::writes_refused(said)
    }

    /// Whether this process should sweep now (at most every [`SWEEP_EVERY`]; a failed sweep
    /// counts, so a refused one is not tried again in every pass).
    fn sweep_due(&self) -> bool {
        let mut at = self.sweep_at.lock();
        let due = !matches!(*at, Some(t) if t.elapsed() < SWEEP_EVERY);
        if due {
            *at = Some(Instant::now());
        }
        due
    }

    /// Whether any node ever wrote a channel list (`P:evlsince` exists).
    async fn lists_ever_written(&self) -> Result<bool> {
        let key = self.key("evlsince");
        self.exec(true, |mut c| {
            let cmd = ::redis::cmd("EXISTS").arg(&key).clone();
            async move { cmd.query_async(&mut c).await }
        })
        .await
    }

    /// One segment of the sweep of channel streams `P:evc:{channel}` (written by nodes with
    /// `store.channel_events = "stream"` and older builds; `lua/evc_sweep.lua` says what each
    /// step does and why; it runs whatever this node writes): up to
    /// [`sweep_calls`] `SCAN ... TYPE stream` calls, going on from where the last segment of any
    /// node stopped. Each stream without a TTL that is idle for longer than the TTL reads allow
    /// for ([`Self::channel_ttl_read`]) is deleted: a stream writer, beside list writers,
    /// creates one for a job a list writer submitted, as it skips the TTL refresh for a young
    /// job whose submit "set it". Any other stream is left as it is (a younger one may still be
    /// written by a stream writer that does not refresh its TTL). A full cycle through
    /// the keyspace that saw no stream sets `P:evcgone`, which bounds `events.lua`'s resyncs
    /// for absent streams. Returns how many streams it deleted.
    async fn sweep_old_streams(&self) -> Result<u64> {
        let pattern = format!("{}:evc:*", self.s.prefix);
        let ttl = self.channel_ttl_read().as_millis() as u64;
        let margin = SWEEP_CLOCK_MARGIN.as_millis() as u64;
        let state = [self.key("evcsweep"), self.key("evcgone")];
        let t0 = (self.now().await / 1000).max(0) as u64;
        let (from, gen): (String, String) = self
            .run_script(&SWEEP, &state, &["begin".into(), t0.to_string()])
            .await?;
        let idle_before = t0.saturating_sub(ttl + margin).to_string();
        let keys: u64 = self
            .exec(true, |mut c| async move {
                ::redis::cmd("DBSIZE").query_async(&mut c).await
            })
            .await?;
        let mut cursor = from.clone();
        let mut deleted = 0;
        for _ in 0..sweep_calls(keys, Duration::from_millis(ttl)) {
            let (next, keys): (String, Vec<String>) = self
                .exec(true, |mut c| {
                    let cmd = ::redis::cmd("SCAN")
                        .arg(&cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .arg("TYPE")
                        .arg("stream")
                        .clone();
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
            if !keys.is_empty() {
                let keys: Vec<String> = state.iter().cloned().chain(keys).collect();
                let args = ["batch".to_string(), idle_before.clone()];
                deleted += self.run_script::<u64>(&SWEEP, &keys, &args).await?;
            }
            cursor = next;
            if cursor == "0" {
                break;
            }
        }
        let t1 = (self.now().await / 1000).max(0) as u64;
        let args = ["end".into(), from, gen, cursor, t1.to_string()]
            .into_iter()
            .chain([ttl, margin].map(|v| v.to_string()))
            .collect::<Vec<String>>();
        let ended: u64 = self.run_script(&SWEEP, &state, &args).await?;
        if ended >= 2 {
            tracing::debug!(
                clean = ended == 2,
                "retention: a sweep cycle through the channel streams ended"
            );
        }
        if deleted > 0 {
            tracing::info!(
                streams = deleted,
                "retention: deleted idle channel streams without a TTL (left beside list writers)"
            );
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_cycle_takes_about_a_quarter_of_the_ttl() {
        let hour = Duration::from_secs(3600);
        // An hour: 90 sweeps of 10 s in a quarter of it (1.25 million keys' worth of calls).
        assert_eq!(sweep_calls(1_000_000, hour), 14);
        assert_eq!(sweep_calls(5_000_000, hour), 70);
        // Small keyspaces: the least; huge ones: the most (the cycle then takes longer).
        assert_eq!(sweep_calls(1000, hour), SWEEP_CALLS_MIN);
        assert_eq!(sweep_calls(50_000_000, hour), SWEEP_CALLS_MAX);
        // A day: 2,160 sweeps.
        assert_eq!(sweep_calls(30_000_000, hour * 24), 18);
        // Shorter than 40 s: the whole keyspace in each sweep (up to the most).
        assert_eq!(sweep_calls(25_000, Duration::from_secs(20)), 32);
    }
}
