//! [`DeliveryStore`] for Redis. A delivery is written by `lua/commit.lua` with its event (the
//! 16th value of a write, [`commit_arg`]), in the same script call.
//!
//! Keys: `P:dlv:{n}` hash (`j` job id, `u` url, `e` event id, `b` the event as the
//! streams hold it, JSON or compact: `Delivery::body` posts its JSON either way, `t` created µs,
//! `st` state, `n` attempts, `c` claim token, `a` the claim's attempt started (JSON `Attempt`: the
//! write-ahead record its answer replaces), `due` next due: the end of the hold while claimed),
//! `P:dlvlog:{n}` list of attempts (JSON, bounded), `P:dlv:pend` pending deliveries by due time (a
//! claim moves it to the end of its hold: the count and the next due), `P:dlv:ep:{endpoint id}`
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

use super::{json_err, RedisStore, DLV_IDLE};
use crate::job::{EventKind, Job, Micros};
use crate::store::deliveries::{
    endpoint_part, new_token, plan, push_log, this_node, Attempt, ClaimLimits, Claimed, Delivery,
    DeliveryPage, DeliveryState, DeliveryStore, Outcome, MAX_ATTEMPT_RECORDS,
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

/// A delivery's fields as a listing reads them (`u e b t st n due c a`), and its attempts.
type Row = (
    (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    Vec<String>,
);

fn corrupt(what: &str) -> StoreError {
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

    /// The fields and attempt logs of deliveries (their keys: hash, log), in one transaction;
    /// none when one of the keys is of the wrong type (Redis fails the whole transaction then:
    /// [`Self::dlv_listable`]).
    async fn dlv_rows(&self, keys: &[(String, String)]) -> Result<Option<Vec<Row>>> {
        self.exec(true, |mut c| {
            // One transaction: an attempt recorded between the two reads of a delivery would
            // show twice (recorded, and as the claim's in flight).
            let mut p = ::redis::pipe();
            p.atomic();
            for (k, l) in keys {
                p.cmd("HMGET")
                    .arg(k)
                    .arg(&["u", "e", "b", "t", "st", "n", "due", "c", "a"]);
                p.cmd("LRANGE").arg(l).arg(0).arg(-1);
            }
            async move {
                let flat: Vec<::redis::Value> = match p.query_async(&mut c).await {
                    Err(e) if super::records::wrong_type(&e) => return Ok(None),
                    r => r?,
                };
                let mut out = Vec::new();
                let mut it = flat.into_iter();
                while let (Some(h), Some(l)) = (it.next(), it.next()) {
                    out.push((
                        ::redis::from_redis_value(&h)?,
                        ::redis::from_redis_value(&l)?,
                    ));
                }
                Ok(Some(out))
            }
        })
        .await
    }

    /// Which deliveries (their keys: hash, log) a listing can read: those whose keys are of
    /// their types (or absent); the others logged, naming the key.
    async fn dlv_listable(&self, keys: &[(String, String)]) -> Result<Vec<bool>> {
        let types: Vec<String> = self
            .exec(true, |mut c| {
                let mut p = ::redis::pipe();
                for (k, l) in keys {
                    p.cmd("TYPE").arg(k).cmd("TYPE").arg(l);
                }
                async move { p.query_async(&mut c).await }
            })
            .await?;
        let mut out = Vec::with_capacity(keys.len());
        for ((k, l), t) in keys.iter().zip(types.chunks(2)) {
            let bad = [(k, &t[0], "hash"), (l, &t[1], "list")]
                .into_iter()
                .find(|(_, t, want)| t.as_str() != *want && t.as_str() != "none");
            if let Some((key, t, _)) = bad {
                tracing::warn!(key = %key, "webhook deliveries: a listing leaves out a delivery whose key is a {t}");
            }
            out.push(bad.is_none());
        }
        Ok(out)
    }

    /// The ids of a page of `job`'s deliveries, from its index (each scored by its id).
    async fn delivery_ids(
        &self,
        job: Uuid,
        page: DeliveryPage,
        limit: usize,
    ) -> Result<Vec<String>> {
        let idx = self.keyed("dlv:job:", job);
        let cmd = match page {
            DeliveryPage::After(n) => ::redis::cmd("ZRANGEBYSCORE")
                .arg(&idx)
                .arg(format!("({n}"))
                .arg("+inf")
                .clone(),
            DeliveryPage::Before(n) => ::redis::cmd("ZREVRANGEBYSCORE")
                .arg(&idx)
                .arg(n.map_or("+inf".to_string(), |n| format!("({n}")))
                .arg("-inf")
                .clone(),
        }
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .clone();
        self.exec(true, |mut c| {
            let cmd = cmd.clone();
            async move { cmd.query_async(&mut c).await }
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
        let now = self.now().await;
        let token = new_token();
        let mut args = vec![
            now.to_string(),
            now.saturating_add(hold.as_micros() as i64).to_string(),
            max.to_string(),
            token.to_string(),
            self.key("dlv:"),
            limits.per_endpoint.to_string(),
            self.key("dlv:ep:"),
            self.key("dlvlog:"),
            serde_json::to_string(&Attempt::started(now, this_node())).map_err(json_err)?,
            MAX_ATTEMPT_RECORDS.to_string(),
            MOVE_EARLIER.to_string(),
        ];
        for (endpoint, n) in limits.busy.iter().filter(|(_, n)| **n > 0) {
            args.push(endpoint_id(endpoint));
            args.push(n.to_string());
        }
        let raw: Vec<String> = self
            .run_script(
                &CLAIM,
                &[
                    self.key("dlv:pend"),
                    self.key("dlv:eps"),
                    self.key("dlv:due"),
                ],
                &args,
            )
            .await?;
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
        let now = self.now().await;
        let (state, due) = plan(claimed.delivery.created_at, now, outcome);
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
        let args = [
            n.to_string(),
            claimed.token.to_string(),
            serde_json::to_string(&attempt).map_err(json_err)?,
            state.as_str().to_string(),
            due.map(|d| d.to_string()).unwrap_or_default(),
            if due.is_none() {
                now.to_string()
            } else {
                String::new()
            },
            MAX_ATTEMPT_RECORDS.to_string(),
            endpoint,
            now.to_string(),
        ];
        let ok: i64 = self.run_script(&RECORD, &keys, &args).await?;
        Ok((ok == 1).then_some(state))
    }

    async fn deliveries_page(
        &self,
        job: Uuid,
        page: DeliveryPage,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let ids = self.delivery_ids(job, page, limit).await?;
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let mut ids = ids;
        let mut keys: Vec<(String, String)> = ids
            .iter()
            .map(|n| (self.keyed("dlv:", n), self.keyed("dlvlog:", n)))
            .collect();
        let rows = match self.dlv_rows(&keys).await? {
            Some(rows) => rows,
            None => {
                // A key of the wrong type (`dlv_claim.lua` takes such deliveries out of the
                // pending sets): the job's other deliveries are listed, that one left out.
                let ok = self.dlv_listable(&keys).await?;
                let mut keep = ok.iter().copied();
                ids.retain(|_| keep.next().unwrap_or(false));
                let mut keep = ok.iter().copied();
                keys.retain(|_| keep.next().unwrap_or(false));
                self.dlv_rows(&keys)
                    .await?
                    .ok_or_else(|| corrupt("a key of the wrong type"))?
            }
        };
        // Due times (a claim's: the end of its hold) are the store's clock.
        let now = self.now().await;
        let mut out = Vec::new();
        for (id, ((u, e, b, t, st, n, due, c, a), log)) in ids.iter().zip(rows) {
            let (Some(u), Some(e), Some(b), Some(t)) = (u, e, b, t) else {
                continue; // trimmed meanwhile
            };
            let created: Micros = t.parse().map_err(|_| corrupt("created"))?;
            let state = DeliveryState::parse(st.as_deref().unwrap_or("pending"));
            let mut d = Delivery {
                id: id.parse().map_err(|_| corrupt("id"))?,
                job_id: job,
                url: u,
                event_id: e,
                event: b,
                created_at: created,
                state,
                next_at: (state == DeliveryState::Pending)
                    .then(|| due.and_then(|d| d.parse().ok()).unwrap_or(created)),
                attempts: n.and_then(|n| n.parse().ok()).unwrap_or(0),
                log: log
                    .iter()
                    .map(|a| serde_json::from_str::<Attempt>(a).map_err(json_err))
                    .collect::<Result<_>>()?,
            };
            // A claimed delivery: its claim's attempt last (in flight, or its sender lost).
            if let (Some(_), Some(a), DeliveryState::Pending) = (c, a, state) {
                let a: Attempt = serde_json::from_str(&a).map_err(json_err)?;
                push_log(&mut d.log, a.as_claimed_at(d.next_at, now));
                d.attempts += 1;
            }
            out.push(d);
        }
        Ok(out)
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
            let n: i64 = self
                .run_script(&TRIM, &[self.key("dlv:done")], &args)
                .await?;
            total += n.max(0) as u64;
            if (n as usize) < TRIM_CHUNK {
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
