//! [`TypeFilter`]: the events of a caller confined to job `types` (docs/auth.md) are those of
//! its types' jobs only. An event names its job, not the job's type; the type is read from the
//! job and kept in the process's [`JobTypes`] (a job's type never changes and ids are unique),
//! so every stream and poll of the process reads a job once: concurrent readers of one job wait
//! for the same read, and a failed read is not kept (the next reader tries again). A job no
//! longer stored (removed by retention) has no type to show: its events are hidden (and it is
//! kept as such: a removed job does not come back). `resync` markers (no job) are shown.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::store::{Store, StoreError};

/// Jobs whose type the process keeps (then it starts over: a few MB at most).
const KNOWN: usize = 16_384;

/// Whether a job type may be shown: the caller's grant's rule ([`Grant::type_rule`]).
///
/// [`Grant::type_rule`]: crate::auth::tokens::Grant::type_rule
pub use crate::auth::tokens::TypeRule as SeesType;

/// A job's type, once read: `None` when the job is not stored (removed).
type Known = Arc<OnceCell<Option<Arc<str>>>>;

/// The process's job id -> type memory (in the event hub), bounded by [`KNOWN`] jobs.
#[derive(Default)]
pub struct JobTypes {
    known: parking_lot::Mutex<HashMap<Box<str>, Known>>,
}

impl JobTypes {
    /// The type of `job_id` when it was read already (`Some(None)`: the job is gone).
    fn known(&self, job_id: &str) -> Option<Option<Arc<str>>> {
        self.known.lock().get(job_id).and_then(|c| c.get().cloned())
    }

    /// The cell of `job_id`, shared by its readers.
    fn cell(&self, job_id: &str) -> Known {
        let mut known = self.known.lock();
        if let Some(c) = known.get(job_id) {
            return c.clone();
        }
        if known.len() >= KNOWN {
            // Readers in flight keep their cell; the next ones read again.
            known.clear();
        }
        let c = Known::default();
        known.insert(job_id.into(), c.clone());
        c
    }

    /// The type of `job_id` (`None`: not stored, or not a job id), read once per process.
    async fn type_of(
        &self,
        store: &dyn Store,
        job_id: &str,
    ) -> Result<Option<Arc<str>>, StoreError> {
        let Ok(id) = uuid::Uuid::parse_str(job_id) else {
            return Ok(None);
        };
        if let Some(t) = self.known(job_id) {
            return Ok(t);
        }
        let cell = self.cell(job_id);
        let t = cell
            .get_or_try_init(|| async {
                Ok::<_, StoreError>(store.get(id).await?.map(|j| Arc::from(j.job_type)))
            })
            .await?;
        Ok(t.clone())
    }
}

/// See the module docs. Cheap to clone (a stream's read runs in a task of its own).
#[derive(Clone)]
pub struct TypeFilter {
    store: Arc<dyn Store>,
    types: Arc<JobTypes>,
    sees: SeesType,
}

impl TypeFilter {
    /// Shows the events of the jobs whose type `sees` accepts, read from `store` once per
    /// process (kept in `types`).
    pub fn new(store: Arc<dyn Store>, types: Arc<JobTypes>, sees: SeesType) -> Self {
        Self { store, types, sees }
    }

    /// Whether the events of `job_id` (empty: a `resync` marker) are shown, when its type was
    /// read already.
    pub fn known(&self, job_id: &str) -> Option<bool> {
        if job_id.is_empty() {
            return Some(true);
        }
        let t = self.types.known(job_id)?;
        Some(t.is_some_and(|t| (self.sees)(&t)))
    }

    /// Whether the events of each of `job_ids` are shown, reading the types not known yet
    /// (concurrently, each job once).
    pub async fn shown<S: AsRef<str>>(&self, job_ids: &[S]) -> Result<Vec<bool>, StoreError> {
        // What is known now answers even if the memory starts over meanwhile.
        let mut out: Vec<Option<bool>> = job_ids.iter().map(|id| self.known(id.as_ref())).collect();
        let mut missing: Vec<&str> = job_ids
            .iter()
            .zip(&out)
            .filter(|(_, k)| k.is_none())
            .map(|(id, _)| id.as_ref())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let read = missing
            .iter()
            .map(|id| self.types.type_of(self.store.as_ref(), id));
        let mut read_now = HashMap::with_capacity(missing.len());
        for (id, t) in missing.iter().zip(futures::future::join_all(read).await) {
            read_now.insert(*id, t?.is_some_and(|t| (self.sees)(&t)));
        }
        for (k, id) in out.iter_mut().zip(job_ids) {
            if k.is_none() {
                *k = read_now.get(id.as_ref()).copied();
            }
        }
        Ok(out.into_iter().map(|k| k == Some(true)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::store::MeteredStore;
    use crate::metrics::Metrics;
    use crate::store::sqlite::SqliteStore;
    use crate::store::StoreSettings;

    fn gets(m: &Metrics) -> u64 {
        let head = "runyard_store_operation_seconds_count{op=\"get\"} ";
        m.render()
            .lines()
            .find_map(|l| l.strip_prefix(head))
            .map_or(0, |v| v.trim().parse::<f64>().expect("a number") as u64)
    }

    /// Readers of one job at once (two streams of two callers given its live event) share one
    /// store read; later readers read nothing; a job that is not stored is hidden to all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_readers_of_a_job_share_one_store_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let inner =
            Arc::new(SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open"));
        let metrics = Arc::new(Metrics::new());
        let store = MeteredStore::wrap(inner, metrics.clone());
        let job = crate::job::Job::new("report.daily", "r", crate::job::now_us());
        let id = job.id.to_string();
        store.submit(job).await.expect("submit");
        let types = Arc::new(JobTypes::default());
        let reports = TypeFilter::new(
            store.clone(),
            types.clone(),
            Arc::new(|t| t == "report.daily"),
        );
        let others = TypeFilter::new(store.clone(), types.clone(), Arc::new(|t| t == "payroll"));
        let before = gets(&metrics);
        let gone = uuid::Uuid::new_v4().to_string();
        let ids = [id.as_str(), gone.as_str(), ""];
        let (a, b) = tokio::join!(reports.shown(&ids), others.shown(&ids));
        assert_eq!(a.expect("read"), [true, false, true]);
        assert_eq!(b.expect("read"), [false, false, true]);
        assert_eq!(reports.known(&id), Some(true));
        assert_eq!(
            reports.known(&gone),
            Some(false),
            "a job not stored stays hidden"
        );
        let again = TypeFilter::new(store.clone(), types, Arc::new(|_| true));
        assert_eq!(again.shown(&[&id]).await.expect("read"), [true]);
        assert_eq!(
            gets(&metrics) - before,
            2,
            "one read per job, not per reader"
        );
    }
}
