//! The reaper's drop guard ([`super::Release`]).

use super::{Held, Release, Stopping};

/// A reaper task that panics (a runner's `recover` that panicked) still takes its runner or
/// job out of the reaper's set: the next pass recovers that runner's jobs again.
#[tokio::test]
async fn a_reaper_task_that_panics_releases_its_runner_and_its_job() {
    let set: Stopping = Default::default();
    let id = uuid::Uuid::new_v4();
    set.lock().busy.insert(id);
    set.lock().recovering.insert("kube".into());
    for held in [Held::Job(id), Held::Runner("kube".into())] {
        let held = Release(set.clone(), held);
        let task = tokio::spawn(async move {
            let _held = held;
            tokio::task::yield_now().await;
            panic!("a runner's recover panicked");
        });
        assert!(task.await.unwrap_err().is_panic());
    }
    let st = set.lock();
    assert!(st.busy.is_empty() && st.recovering.is_empty());
}
