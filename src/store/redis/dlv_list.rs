//! A job's webhook deliveries listed from Redis (`GET /async/jobs/{id}/deliveries`,
//! [`DeliveryStore::deliveries_page`](crate::store::deliveries::DeliveryStore)): a page of ids
//! from the job's index `P:dlv:job:{id}`, then their hashes and attempt logs in one transaction
//! (keys: `deliveries.rs`). A delivery whose key is of the wrong type is left out (logged, once a
//! minute per key and process), one trimmed meanwhile too; either way the page is topped up from
//! the index after the last id read, so that a page shorter than its `limit` is still the end
//! (docs/api.md).

use uuid::Uuid;

use super::deliveries::corrupt;
use super::{json_err, RedisStore};
use crate::job::Micros;
use crate::store::deliveries::{push_log, Attempt, Delivery, DeliveryPage, DeliveryState};
use crate::store::Result;

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

impl RedisStore {
    /// A page of `job`'s deliveries: up to `limit` from `page`, fewer only at the index's end.
    pub(super) async fn dlv_page(
        &self,
        job: Uuid,
        page: DeliveryPage,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        let mut from = page;
        // Each round reads `limit` ids past the last one read: a round that reads fewer met the
        // index's end. Deliveries read past the page's last one are read again by the next page
        // (its cursor is the page's last delivery).
        loop {
            let ids = self.delivery_ids(job, from, limit).await?;
            let Some(last) = ids.last() else { break };
            let last: u64 = last.parse().map_err(|_| corrupt("id"))?;
            let end = ids.len() < limit;
            let room = limit - out.len();
            out.extend(self.dlv_read(job, ids).await?.into_iter().take(room));
            if end || out.len() >= limit {
                break;
            }
            from = match from {
                DeliveryPage::After(_) => DeliveryPage::After(last),
                DeliveryPage::Before(_) => DeliveryPage::Before(Some(last)),
            };
        }
        Ok(out)
    }

    /// Deliveries `ids` of `job`, in that order, but those with a key of the wrong type and
    /// those trimmed meanwhile.
    async fn dlv_read(&self, job: Uuid, mut ids: Vec<String>) -> Result<Vec<Delivery>> {
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
        for (id, row) in ids.iter().zip(rows) {
            out.extend(delivery(job, id, row, now)?);
        }
        Ok(out)
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
                if crate::store::log_quiet::loud("redis key", key) {
                    tracing::warn!(key = %key, "webhook deliveries: a listing leaves out a \
                        delivery whose key is a {t} (logged again in a minute if still there)");
                } else {
                    tracing::debug!(key = %key, "webhook deliveries: a listing leaves out a \
                        delivery whose key is a {t}");
                }
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

/// Delivery `id` of `job` from its row, none when it was trimmed meanwhile; `now` the store's
/// clock (a claimed delivery shows its claim's attempt last: in flight, or its sender lost).
fn delivery(job: Uuid, id: &str, row: Row, now: Micros) -> Result<Option<Delivery>> {
    let ((u, e, b, t, st, n, due, c, a), log) = row;
    let (Some(u), Some(e), Some(b), Some(t)) = (u, e, b, t) else {
        return Ok(None);
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
    if let (Some(_), Some(a), DeliveryState::Pending) = (c, a, state) {
        let a: Attempt = serde_json::from_str(&a).map_err(json_err)?;
        push_log(&mut d.log, a.as_claimed_at(d.next_at, now));
        d.attempts += 1;
    }
    Ok(Some(d))
}
