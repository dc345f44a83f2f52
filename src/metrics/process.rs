//! The process's own resources, read at every scrape: the standard Prometheus process metrics
//! (resident memory, CPU seconds, open file descriptors) and the SQLite heap of the embedded
//! store. Memory soaks (`scripts/soak-rss.py`) read them to tell a leak from a cache filling up.

use super::Metrics;

/// Resident set size in bytes (`/proc/self/statm`), 0 where it cannot be read.
fn resident_bytes() -> i64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: i64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as i64
}

/// User + system CPU time of the whole process, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given and nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Open file descriptors (sockets included), 0 where `/proc/self/fd` cannot be read.
fn open_fds() -> i64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as i64)
        .unwrap_or(0)
}

/// Bytes SQLite holds on its heap (page caches, statements, schema) in this process.
fn sqlite_heap_bytes() -> i64 {
    // SAFETY: a read of SQLite's global memory counter; thread-safe in a threadsafe build.
    unsafe { rusqlite::ffi::sqlite3_memory_used() }
}

/// Registers the process metrics on `metrics`.
pub fn register(metrics: &Metrics) {
    metrics.register_gauge_fn(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        resident_bytes,
    );
    metrics.register_gauge_fn(
        "process_open_fds",
        "Open file descriptors (sockets included)",
        open_fds,
    );
    metrics.register_gauge_fn(
        "runyard_sqlite_heap_bytes",
        "Bytes on SQLite's heap in this process: the embedded store's page caches and statements (0 on Redis)",
        sqlite_heap_bytes,
    );
    metrics.register_counter_f64_fn(
        "process_cpu_seconds",
        "User and system CPU time spent in seconds",
        cpu_seconds,
    );
}
