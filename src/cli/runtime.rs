//! The async runtime of the binary. A `runyard serve` on the embedded store leaves one core to
//! its SQLite writer thread: its async worker threads are one fewer than the cores (at least
//! one). With as many workers as cores, each request woke a sibling worker to steal work that
//! the first one then did itself: on a 2-core machine about 14 context switches per job on
//! one-connection submits instead of about 5 (docs/benchmarks.md, "Session 7: one-connection
//! submits"). `TOKIO_WORKER_THREADS` still sets the number when given.

use std::num::NonZeroUsize;

/// Async worker threads for the server: `None` keeps tokio's default (`TOKIO_WORKER_THREADS`,
/// else one per core).
pub(super) fn worker_threads(cores: usize, embedded_server: bool, env_set: bool) -> Option<usize> {
    (embedded_server && !env_set).then(|| cores.saturating_sub(1).max(1))
}

/// The runtime; `embedded_server` when this process is a `runyard serve` on the embedded store.
pub(super) fn build(embedded_server: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let env_set = std::env::var_os("TOKIO_WORKER_THREADS").is_some();
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    if let Some(n) = worker_threads(cores, embedded_server, env_set) {
        b.worker_threads(n);
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::worker_threads;

    #[test]
    fn an_embedded_server_leaves_a_core_to_the_writer() {
        assert_eq!(worker_threads(2, true, false), Some(1));
        assert_eq!(worker_threads(8, true, false), Some(7));
        assert_eq!(worker_threads(1, true, false), Some(1), "at least one");
    }

    #[test]
    fn other_processes_and_the_environment_keep_tokios_default() {
        assert_eq!(
            worker_threads(2, false, false),
            None,
            "Redis server, client"
        );
        assert_eq!(
            worker_threads(2, true, true),
            None,
            "TOKIO_WORKER_THREADS given"
        );
    }
}
