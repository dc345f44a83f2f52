//! [`ScheduleStore`] for Redis: `P:schedule:{name}` hash (`v` version, `b` the record as JSON),
//! `P:sched:wake` sorted set of names by wake time (µs), `P:sched:names` every name. Every write
//! is `lua/schedule_cas.lua`, a compare-and-set on `v` that keeps both sets in step, but for a
//! record this build cannot read: `lua/schedule_unreadable.lua` deletes it, or moves its wake
//! time, if its `v` and `b` are still the ones read; and `lua/schedule_orphan.lua` takes a name
//! whose hash is gone (a hand `DEL`), or holds no `b` (a hand `HDEL`: then the hash is deleted),
//! out of the two sets.

use std::sync::LazyLock;

use ::redis::Script;
use async_trait::async_trait;

use super::{json_err, RedisStore};
use crate::job::Micros;
use crate::store::schedules::{corrupt, log_unreadable, Schedule, Unreadable};
use crate::store::{Result, ScheduleStore, StoreError};

static CAS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/schedule_cas.lua")));
static UNREADABLE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/schedule_unreadable.lua")));
static ORPHAN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/schedule_orphan.lua")));

impl RedisStore {
    fn schedule_key(&self, name: &str) -> String {
        self.keyed("schedule:", name)
    }

    async fn schedule_script(
        &self,
        name: &str,
        expected: Option<u64>,
        version: u64,
        body: String,
        wake: Option<Micros>,
    ) -> Result<bool> {
        let keys = [
            self.schedule_key(name),
            self.key("sched:wake"),
            self.key("sched:names"),
        ];
        let args = [
            expected.map(|v| v.to_string()).unwrap_or_default(),
            name.to_string(),
            version.to_string(),
            body,
            wake.map(|w| w.to_string()).unwrap_or_default(),
        ];
        let n: i64 = self.run_script(&CAS, &keys, &args).await?;
        Ok(n == 1)
    }
}

fn parse(name: &str, body: &str) -> Result<Schedule> {
    if let Some(e) = body.strip_prefix(super::records::WRONG) {
        return Err(corrupt(name, format!("its key is not a hash ({e})")));
    }
    if let Some(e) = body.strip_prefix(super::records::NOT_UTF8) {
        return Err(corrupt(name, format!("its record is not UTF-8 ({e})")));
    }
    serde_json::from_str(body).map_err(|e| corrupt(name, e))
}

#[async_trait]
impl ScheduleStore for RedisStore {
    async fn schedule(&self, name: &str) -> Result<Option<Schedule>> {
        let key = self.schedule_key(name);
        let body = self.body(&key).await?;
        body.as_deref().map(|b| parse(name, b)).transpose()
    }

    async fn schedules(&self) -> Result<Vec<Schedule>> {
        let names = self.zset_members(&self.key("sched:names")).await?;
        if names.is_empty() {
            return Ok(vec![]);
        }
        let keys: Vec<String> = names.iter().map(|n| self.schedule_key(n)).collect();
        let bodies = self.bodies(&keys).await?;
        // A schedule deleted between the two reads is simply not listed; one that does not
        // read is left out, logged.
        let mut all = Vec::with_capacity(names.len());
        for (name, body) in names.iter().zip(&bodies) {
            match body.as_deref().map(|b| parse(name, b)) {
                Some(Ok(s)) => all.push(s),
                Some(Err(e)) => log_unreadable(name, "the schedule list", &e),
                None => {}
            }
        }
        Ok(all)
    }

    async fn schedules_due(&self, now: Micros, max: usize) -> Result<Vec<String>> {
        self.zrange_by_score(&self.key("sched:wake"), "-inf", now, (0, max))
            .await
    }

    async fn schedules_next_wake(&self) -> Result<Option<Micros>> {
        self.first_score(&self.key("sched:wake")).await
    }

    async fn schedule_cas(&self, s: &Schedule, expected: Option<u64>) -> Result<bool> {
        let body = serde_json::to_string(s).map_err(json_err)?;
        if body.is_empty() {
            return Err(StoreError::Backend("empty schedule record".into()));
        }
        self.schedule_script(&s.spec.name, expected, s.version, body, s.wake_at())
            .await
    }

    async fn schedule_delete(&self, name: &str, expected: u64) -> Result<bool> {
        self.schedule_script(name, Some(expected), 0, String::new(), None)
            .await
    }

    async fn schedule_unreadable(&self, name: &str, what: Unreadable) -> Result<bool> {
        let key = self.schedule_key(name);
        let Some(read) = self.schedule_raw(&key).await? else {
            return Ok(false);
        };
        if let Raw::Hash(_, b) = &read {
            if parse(name, &super::records::text(b.clone())).is_ok() {
                return Ok(false);
            }
        }
        self.unreadable_script(key, name, &read, what).await
    }

    async fn schedule_orphan(&self, name: &str) -> Result<bool> {
        let keys = [
            self.schedule_key(name),
            self.key("sched:wake"),
            self.key("sched:names"),
        ];
        let n: i64 = self.run_script(&ORPHAN, &keys, &[name.to_string()]).await?;
        Ok(n == 1)
    }
}

/// A schedule's key as [`ScheduleStore::schedule_unreadable`] read it.
enum Raw {
    /// A hash: its `v` (empty when none) and its `b`, as bytes (a `v` that is not UTF-8, written
    /// by hand, is passed to the script as it is, not a failed read).
    Hash(Vec<u8>, Vec<u8>),
    /// A key of another type.
    Other,
}

impl RedisStore {
    /// The `v` and `b` of schedule key `key` in one read (`HMGET`); none when it has no `b`.
    async fn schedule_raw(&self, key: &str) -> Result<Option<Raw>> {
        let got = self
            .per_key::<(Option<Vec<u8>>, Option<Vec<u8>>)>(
                std::slice::from_ref(&key.to_string()),
                |k| ::redis::cmd("HMGET").arg(k).arg("v").arg("b").clone(),
            )
            .await?;
        Ok(match got.into_iter().next() {
            Some(Ok((v, Some(b)))) => Some(Raw::Hash(v.unwrap_or_default(), b)),
            Some(Err(_)) => Some(Raw::Other),
            Some(Ok((_, None))) | None => None,
        })
    }

    /// Runs `lua/schedule_unreadable.lua` on what was `read` of schedule `name`.
    async fn unreadable_script(
        &self,
        key: String,
        name: &str,
        read: &Raw,
        what: Unreadable,
    ) -> Result<bool> {
        let (wake, due_by) = match what {
            Unreadable::Delete => (String::new(), String::new()),
            Unreadable::WakeAt { at, due_by } => (at.to_string(), due_by.to_string()),
        };
        let (v, b, hash): (&[u8], &[u8], &str) = match read {
            Raw::Hash(v, b) => (v, b, "1"),
            Raw::Other => (&[], &[], ""),
        };
        let keys = [key, self.key("sched:wake"), self.key("sched:names")];
        let n: i64 = self
            .exec(true, |mut c| {
                let mut inv = UNREADABLE.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                inv.arg(v)
                    .arg(name)
                    .arg(&wake)
                    .arg(b)
                    .arg(hash)
                    .arg(&due_by);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        Ok(n == 1)
    }
}
