//! [`DeliveryStore`] for Redis. A delivery is written by `lua/commit.lua` with its event (the
//! 16th value of a write, [`commit_arg`]), in the same script call.
//!
//! Keys: `P:dlv:{n}` hash (`j` job id, `u` url, `e` event id, `b` the event as the
//! streams hold it, JSON or compact: `Delivery::body` posts its JSON either way, `t` created µs,
//! `st` state, `n` attempts, `c` claim token, `a` the claim's attempt started (JSON `Attempt`: the
//! write-ahead record its answer replaces), `due` next due: the end of the hold while claimed),
//! `P:dlvlog:{n}` list of attempts (JSON, bounded), `P:dlv:pend` pending deliveries by due time (a
//! claim moves it to the end of its hold: the count; the next due is `P:dlv:eps`'s first, which
//! leaves out an endpoint the claim dropped, `RedisStore::dlv_first_due`),
//! `P:dlv:ep:{endpoint id}`
//! an endpoint's pending deliveries by due time (the same scores; the endpoint is the URL up to
//! its query, [`endpoint_part`], and its id the SHA-1 of that in hex, [`endpoint_id`]),
//! `P:dlv:eps` the ids of the endpoints with pending deliveries, each scored by its first due
//! (the claim walks these, not the deliveries: an endpoint at its cap is passed over in one step
//! however deep its backlog), `P:dlv:job:{id}` a job's deliveries, `P:dlv:done`
//! ended deliveries by end time, `P:dlv:seq` the id counter. `P:dlv:due` is the earlier layout's
//! pending set (every delivery in it alone): each claim moves up to [`MOVE_EARLIER`] of its
//! entries to this layout first, so deliveries stored before an upgrade, or by an older process
//! beside this one, are delivered.

use std::sync::atomic::Ordering;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use ::redis::Script;
use async_trait::async_trait;
use uuid::Uuid;

use super::{RedisStore, DLV_IDLE};
use crate::job::{EventKind, Job, Micros};
use crate::store::deliveries::{
    as_recorded, endpoint_part, new_token, plan, this_node, Attempt, ClaimLimits, Claimed,
    Delivery, DeliveryPage, DeliveryState, DeliveryStore, Outcome, MAX_ATTEMPT_RECORDS,
};
use crate::store::{Result, StoreError};

static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/dlv_claim.lua")));
static RECORD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/dlv_record.lua")));
static TRIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/dlv_trim.lua")));

/// Deliveries deleted per trim call.
const TRIM_CHUNK: usize = 1000;

/// Deliveries of the earlier layout (`P:dlv:due` alone) a claim moves to this one first.
const MOVE_EARLIER: usize = 500;

/// The delivery value of a `commit.lua` write: `"<created µs>\n<url>"` when the job's webhook
/// wants its event of kind `ev`, else empty.
pub(super) fn commit_arg(job: &Job, ev: Option<EventKind>) -> String {
    match (ev, &job.notify) {
        (Some(kind), Some(n)) if crate::job::notify_spec::wants(job, kind) => {
            format!("{}\n{}", job.updated_at, n.url)
        }
        _ => String::new(),
    }
}

/// The id of an endpoint in key names and in `P:dlv:eps`: the SHA-1 of the endpoint (the URL up to
/// its query, [`endpoint_part`]) in lowercase hex, as `redis.sha1hex` makes it in the scripts
/// (`commit.lua`, `dlv_claim.lua`). Never the endpoint itself: a webhook's path may be its secret
/// (a Slack-style URL), and key names reach further than values (`SCAN` and `KEYS` are not bound
/// by ACL key patterns, keyspace notifications, `--bigkeys`, key browsers).
pub(super) fn endpoint_id(endpoint: &str) -> String {
    use sha1::{Digest, Sha1};
    hex::encode(Sha1::digest(endpoint.as_bytes()))
}

/// The [`endpoint_id`] of a [`commit_arg`] value's URL.
pub(super) fn endpoint_id_of_arg(arg: &str) -> String {
    endpoint_id(endpoint_part(
        arg.split_once('\n').map_or("", |(_, url)| url),
    ))
}

/// The claimed deliveries of a `dlv_claim.lua` reply (8 values each), after logging the keys of
/// the wrong type it passed (each once: the claim took it out of the pending sets).
fn claimed_part(raw: &[String]) -> Result<&[String]> {
    let passed: usize = raw
        .first()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| corrupt("claim reply"))?;
    let (keys, claimed) = raw[1..]
        .split_at_checked(passed)
        .ok_or_else(|| corrupt("short claim reply"))?;
    for key in keys {
        tracing::warn!(
            key = %key,
            "webhook deliveries: a key of the wrong type passed and taken out of the pending \
             deliveries (its delivery or endpoint is not attempted)"
        );
    }
    Ok(claimed)
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("corrupt delivery: {what}"))
}

impl RedisStore {
    /// The first due time of a pending delivery, either layout's (the earlier layout's are
    /// moved by the next claim, which this makes due). This layout's is its first endpoint's
    /// (`P:dlv:eps`: what the claim walks), the same as `P:dlv:pend`'s first but for the
    /// deliveries of an endpoint the claim took out of the walk (its pending set of the wrong
    /// type): those no claim takes, so they are never due for the loop (which would claim again
    /// and again, finding nothing).
    async fn dlv_first_due(&self) -> Result<Option<Micros>> {
        let (eps, earlier) = (self.key("dlv:eps"), self.key("dlv:due"));
        type First = Vec<(String, f64)>;
        let (a, b): (First, First) = self
            .exec(true, |mut c| {
                let mut p = ::redis::pipe();
                p.cmd("ZRANGE").arg(&eps).arg(0).arg(0).arg("WITHSCORES");
                p.cmd("ZRANGE")
                    .arg(&earlier)
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES");
                async move { p.query_async(&mut c).await }
            })
            .await?;
        Ok(a.iter().chain(&b).map(|(_, s)| *s as Micros).min())
    }

    /// Runs `script` with the arguments `args` makes for the store's clock at each try: a
    /// command is retried for up to `store.retry`, longer than a claim's hold, so a claim's hold
    /// and a record's check of it are taken at the time of the try that Redis carries out.
    async fn run_script_now<T: ::redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: impl Fn(Micros) -> serde_json::Result<Vec<String>>,
    ) -> Result<T> {
        // The store's clock, run on by this process's monotonic one (as `now` does).
        let (at, since) = (self.now().await, Instant::now());
        self.exec(true, |mut c| {
            let now = at.saturating_add(since.elapsed().as_micros() as i64);
            let mut inv = script.prepare_invoke();
            for k in keys {
                inv.key(k);
            }
            let args = args(now).map_err(|e| {
                ::redis::RedisError::from((::redis::ErrorKind::ClientError, "json", e.to_string()))
            });
            if let Ok(args) = &args {
                for a in args {
                    inv.arg(a);
                }
            }
            async move {
                args?;
                inv.invoke_async(&mut c).await
            }
        })
        .await
    }
}

#[async_trait]
impl DeliveryStore for RedisStore {
    async fn deliveries_claim(
        &self,
        max: usize,
        hold: Duration,
        limits: ClaimLimits,
    ) -> Result<Vec<Claimed>> {
        if max == 0 {
            return Ok(vec![]);
        }
        let token = new_token();
        let busy: Vec<String> = limits
            .busy
            .iter()
            .filter(|(_, n)| **n > 0)
            .flat_map(|(endpoint, n)| [endpoint_id(endpoint), n.to_string()])
            .collect();
        let keys = [
            self.key("dlv:pend"),
            self.key("dlv:eps"),
            self.key("dlv:due"),
            self.key("dlv:done"),
        ];
        let args = |now: Micros| {
            let mut args = vec![
                now.to_string(),
                now.saturating_add(hold.as_micros() as i64).to_string(),
                max.to_string(),
                token.to_string(),
                self.key("dlv:"),
                limits.per_endpoint.to_string(),
                self.key("dlv:ep:"),
                self.key("dlvlog:"),
                serde_json::to_string(&Attempt::started(now, this_node()))?,
                MAX_ATTEMPT_RECORDS.to_string(),
                MOVE_EARLIER.to_string(),
            ];
            args.extend(busy.iter().cloned());
            Ok(args)
        };
        let raw: Vec<String> = self.run_script_now(&CLAIM, &keys, args).await?;
        let mut out = Vec::new();
        for f in claimed_part(&raw)?.chunks(8) {
            let [id, job, url, eid, ev, t, n, due] = f else {
                return Err(corrupt("short claim reply"));
            };
            let created: Micros = t.parse().map_err(|_| corrupt("created"))?;
            out.push(Claimed {
                delivery: Delivery {
                    id: id.parse().map_err(|_| corrupt("id"))?,
                    job_id: Uuid::parse_str(job).map_err(|_| corrupt("job id"))?,
                    url: url.clone(),
                    event_id: eid.clone(),
                    event: ev.clone(),
                    created_at: created,
                    state: DeliveryState::Pending,
                    next_at: Some(due.parse().unwrap_or(created)),
                    attempts: n.parse().unwrap_or(0),
                    log: Vec::new(),
                },
                token,
            });
        }
        Ok(out)
    }

    async fn delivery_record(
        &self,
        claimed: &Claimed,
        attempt: Attempt,
        outcome: Outcome,
    ) -> Result<Option<DeliveryState>> {
        let n = claimed.delivery.id;
        let endpoint = endpoint_id(endpoint_part(&claimed.delivery.url));
        let keys = [
            self.keyed("dlv:", n),
            self.keyed("dlvlog:", n),
            self.key("dlv:pend"),
            self.key("dlv:done"),
            self.keyed("dlv:ep:", &endpoint),
            self.key("dlv:eps"),
        ];
        let created = claimed.delivery.created_at;
        let args = |now: Micros| {
            let (state, due) = plan(created, now, outcome);
            let attempt = serde_json::to_string(&as_recorded(attempt.clone(), outcome, state))?;
            Ok(vec![
                n.to_string(),
                claimed.token.to_string(),
                attempt,
                state.as_str().to_string(),
                due.map(|d| d.to_string()).unwrap_or_default(),
                if due.is_none() {
                    now.to_string()
                } else {
                    String::new()
                },
                MAX_ATTEMPT_RECORDS.to_string(),
                endpoint.clone(),
                now.to_string(),
            ])
        };
        // The state recorded is the one planned at the try Redis carried out: a retry may have
        // planned another (a retry's due time, or given up once its time ran out).
        let state: String = self.run_script_now(&RECORD, &keys, args).await?;
        Ok((!state.is_empty()).then(|| DeliveryState::parse(&state)))
    }

    async fn deliveries_page(
        &self,
        job: Uuid,
        page: DeliveryPage,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        self.dlv_page(job, page, limit).await
    }

    async fn deliveries_next_due(&self) -> Result<Option<Micros>> {
        // None stored a moment ago, and none committed by this process since: still none (the
        // delivery loop asks after every commit; see `RedisStore::dlv_idle`).
        let seen = self.dlv_gen.load(Ordering::Acquire);
        if matches!(*self.dlv_idle.lock(), Some((at, g)) if g == seen && at.elapsed() < DLV_IDLE) {
            return Ok(None);
        }
        // Due times are the store's clock; the loop compares them with its own.
        let first = self.dlv_first_due().await?;
        if first.is_none() {
            *self.dlv_idle.lock() = Some((Instant::now(), seen));
        }
        let skew = self.now().await - crate::job::now_us();
        Ok(first.map(|t| t - skew))
    }

    async fn deliveries_pending(&self) -> Result<u64> {
        // Those of the earlier layout too, until a claim moves them.
        let (pend, earlier) = (self.key("dlv:pend"), self.key("dlv:due"));
        let (a, b): (u64, u64) = self
            .exec(true, |mut c| {
                let mut p = ::redis::pipe();
                p.cmd("ZCARD").arg(&pend).cmd("ZCARD").arg(&earlier);
                async move { p.query_async(&mut c).await }
            })
            .await?;
        Ok(a + b)
    }

    async fn deliveries_trim(&self, before: Micros) -> Result<u64> {
        let mut total = 0u64;
        for _ in 0..100 {
            let args = [
                before.to_string(),
                TRIM_CHUNK.to_string(),
                self.key("dlv:"),
                self.key("dlvlog:"),
                self.key("dlv:job:"),
            ];
            let raw: Vec<String> = self
                .run_script(&TRIM, &[self.key("dlv:done")], &args)
                .await?;
            let n: usize = raw
                .first()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| corrupt("trim reply"))?;
            // Keys of the wrong type, left as they are: each met once (its delivery left
            // `P:dlv:done`).
            for key in &raw[1..] {
                tracing::warn!(
                    key = %key,
                    "webhook deliveries: a key of the wrong type passed by the trim of ended \
                     deliveries (left as it is)"
                );
            }
            total += n as u64;
            if n < TRIM_CHUNK {
                break;
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_ids_are_the_sha1_hex_of_the_endpoint() {
        // FIPS 180 test vector; `redis.sha1hex('abc')` gives the same.
        assert_eq!(
            endpoint_id("abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        let arg = "1700000000000000\nhttps://hooks.example.com/services/T0/B0/XYZ?x=1";
        assert_eq!(
            endpoint_id_of_arg(arg),
            endpoint_id("https://hooks.example.com/services/T0/B0/XYZ")
        );
        assert!(!endpoint_id_of_arg(arg).contains("XYZ"));
    }
}
