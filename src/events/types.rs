//! [`TypeFilter`]: the events of a caller confined to job `types` (docs/auth.md) are those of
//! its types' jobs only. An event names its job, not the job's type; the type is read from the
//! job (its type never changes), once per job and stream: a stream keeps what it learnt of up
//! to [`KNOWN`] jobs. A job no longer stored (removed by retention) has no type to show: its
//! events are hidden. `resync` markers (no job) are shown.

use std::collections::HashMap;
use std::sync::Arc;

use crate::store::{Store, StoreError};

/// Jobs whose visibility one stream remembers (then it starts over).
const KNOWN: usize = 4096;

/// Whether a job type may be shown (the caller's grant: `Grant::sees_type`).
pub type SeesType = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// See the module docs.
pub struct TypeFilter {
    store: Arc<dyn Store>,
    sees: SeesType,
    known: HashMap<Box<str>, bool>,
}

impl TypeFilter {
    /// Shows the events of the jobs whose type `sees` accepts, read from `store`.
    pub fn new(store: Arc<dyn Store>, sees: SeesType) -> Self {
        Self {
            store,
            sees,
            known: HashMap::new(),
        }
    }

    /// Whether the events of `job_id` (empty: a `resync` marker) are shown, when it is known
    /// already ([`TypeFilter::learn`]).
    pub fn known(&self, job_id: &str) -> Option<bool> {
        if job_id.is_empty() {
            return Some(true);
        }
        self.known.get(job_id).copied()
    }

    /// Reads the type of each job of `job_ids` not known yet (concurrently). Cancel-safe: it
    /// only adds to what is known; what it knew of `job_ids` before stays known after.
    pub async fn learn<'a>(
        &mut self,
        job_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = job_ids.into_iter().collect();
        if self.known.len() + ids.len() > KNOWN {
            self.known.clear();
        }
        let mut missing: Vec<&str> = ids
            .into_iter()
            .filter(|id| self.known(id).is_none())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let store = &self.store;
        let read = missing.iter().map(|job_id| async move {
            match uuid::Uuid::parse_str(job_id) {
                Ok(id) => store.get(id).await.map(|j| j.map(|j| j.job_type)),
                Err(_) => Ok(None),
            }
        });
        let types = futures::future::join_all(read).await;
        for (job_id, ty) in missing.into_iter().zip(types) {
            let shown = ty?.is_some_and(|t| (self.sees)(&t));
            self.known.insert(job_id.into(), shown);
        }
        Ok(())
    }

    /// Whether the events of `job_id` are shown, learning its type if need be.
    pub async fn shows(&mut self, job_id: &str) -> Result<bool, StoreError> {
        if let Some(v) = self.known(job_id) {
            return Ok(v);
        }
        self.learn([job_id]).await?;
        Ok(self.known(job_id) == Some(true))
    }
}
