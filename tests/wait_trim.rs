//! A waiting job's live `seen` and `signal_ids` (docs/api.md, "Reading and acting") stay one
//! answer when retention trims the key's records between the count and the numbers (two reads,
//! on both stores): `signal_ids_truncated` (`seen` counted more than `signal_ids` shows) is
//! then not claimed for records that are gone.

mod redis_support;
#[macro_use]
mod store_support;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use runyard::job::wait::{Wait, WaitItem};
use runyard::job::Micros;
use runyard::store::signals::{Signal, SignalKey, SignalPage, SignalStore};
use runyard::store::{Result, Store, StoreSettings};

fn settings() -> StoreSettings {
    StoreSettings::default()
}

/// A store whose signal count is followed at once by retention (`signals_trim(before)`), as a
/// sweep running between a waiting job's two reads would.
struct TrimAfterCount {
    inner: Arc<dyn Store>,
    before: Micros,
}

#[async_trait]
impl SignalStore for TrimAfterCount {
    async fn signal_append(
        &self,
        key: &str,
        id: Option<String>,
        payload: Option<Value>,
        at: Micros,
    ) -> Result<(Signal, bool)> {
        self.inner.signal_append(key, id, payload, at).await
    }

    async fn signals_page(
        &self,
        key: &str,
        since: Micros,
        limit: usize,
        bytes: usize,
    ) -> Result<SignalPage> {
        self.inner.signals_page(key, since, limit, bytes).await
    }

    async fn signal_seqs(
        &self,
        key: &str,
        since: Micros,
        until: Micros,
        limit: usize,
    ) -> Result<Vec<u64>> {
        self.inner.signal_seqs(key, since, until, limit).await
    }

    async fn signal_count(
        &self,
        key: &str,
        since: Micros,
        until: Micros,
        limit: u64,
    ) -> Result<u64> {
        let n = self.inner.signal_count(key, since, until, limit).await?;
        self.inner.signals_trim(self.before).await?;
        Ok(n)
    }

    async fn signals_trim(&self, before: Micros) -> Result<u64> {
        self.inner.signals_trim(before).await
    }

    async fn signal_keys(&self, after: Option<&str>, limit: usize) -> Result<Vec<SignalKey>> {
        self.inner.signal_keys(after, limit).await
    }
}

both!(records_trimmed_between_the_count_and_the_numbers_are_not_shown_as_truncated);

async fn records_trimmed_between_the_count_and_the_numbers_are_not_shown_as_truncated(
    s: Arc<dyn Store>,
) {
    let mut seqs = vec![];
    for at in 1..=5 {
        let (r, _) = s
            .signal_append("trim.k", None, None, 1_000 + at)
            .await
            .expect("append");
        seqs.push(r.seq);
    }
    // Retention runs between the count (5) and the numbers: the records before 1_004 go.
    let store = TrimAfterCount {
        inner: s.clone(),
        before: 1_004,
    };
    let items = vec![WaitItem {
        key: "trim.k".into(),
        needed: 5,
        since: None,
        seen: 0,
        signal_ids: vec![],
    }];
    let seen = runyard::waiting::seen_now(&store, &items, Micros::MAX)
        .await
        .expect("seen");
    assert_eq!(seen, vec![(2, seqs[3..].to_vec())], "the records there are");
    // As `GET /async/jobs/{id}` shows a WAITING job's item: nothing counted is hidden.
    let mut item = items[0].clone();
    (item.seen, item.signal_ids) = seen[0].clone();
    let wait = Wait {
        items: vec![item],
        deadline: None,
        on_deadline: Default::default(),
        released_by: None,
        released_at: None,
    };
    let shown = &wait.to_public()["items"][0];
    assert_eq!(shown["seen"], 2, "{shown}");
    assert_eq!(shown["signal_ids_truncated"], false, "{shown}");
}
