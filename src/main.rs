/// The binary's allocator is jemalloc (feature `jemalloc`, on by default): each thread allocates
/// from a cache of its own, where glibc's malloc took an arena lock for most blocks and
/// consolidated its free lists on the request and writer threads (malloc and free were about 30%
/// of the server's samples at 32 in flight). Against glibc, in interleaved runs: 0.66-0.74x the
/// server's CPU per job in the batch shape, 0.87-0.88x at 32 in flight, RSS flat in the 1,000,000
/// job soak at 8-20 MiB more (docs/benchmarks.md "Session 13: the allocator"). C code (SQLite)
/// keeps glibc's malloc, tuned below. jemalloc reads its own settings from `_RJEM_MALLOC_CONF`.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    fix_malloc_thresholds();
    runyard::cli::main()
}

/// Blocks at or above this size are mapped on their own and unmapped when freed, and a heap
/// returns its free top to the system past it (glibc's defaults, held fixed).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_THRESHOLD: i32 = 128 * 1024;

/// glibc raises its mmap threshold (up to 32 MiB) each time a mapped block is freed, and the
/// trim threshold with it: after the first large request body or response, such blocks came from
/// the heaps and stayed there, and the server's RSS followed the load's peaks
/// (docs/benchmarks.md "Memory with short retention", session 10). Held at 128 KiB, large
/// blocks go back to the system when freed. `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_`
/// in the environment (or either tunable in `GLIBC_TUNABLES`), read by glibc itself, win. Called
/// before any thread starts.
fn fix_malloc_thresholds() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none()
        && std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none()
        && !tuned("glibc.malloc.mmap_threshold")
        && !tuned("glibc.malloc.trim_threshold")
    {
        // SAFETY: mallopt only sets malloc parameters; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_THRESHOLD);
        }
    }
}

/// glibc's malloc gives each thread that contends for it an arena of its own, up to 8 per core,
/// and keeps what each arena freed: the server's request, SQLite and blocking-pool threads each
/// grew one and its RSS rose with the load's peaks (docs/benchmarks.md "Memory with short
/// retention", session 9: 67-75 MiB with the default, 47-57 MiB with the limit, the same rate).
/// One arena per core (at least two); `MALLOC_ARENA_MAX` in the environment (or
/// `glibc.malloc.arena_max` in `GLIBC_TUNABLES`), read by glibc itself, wins. Called first,
/// before any thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() && !tuned("glibc.malloc.arena_max") {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = i32::try_from(cores.max(2)).unwrap_or(i32::MAX);
        // SAFETY: mallopt only sets a malloc parameter; it is called before any other thread
        // exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// Whether `GLIBC_TUNABLES` sets this tunable (`name=value`, entries separated by `:`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tuned(name: &str) -> bool {
    std::env::var("GLIBC_TUNABLES").is_ok_and(|t| {
        t.split(':')
            .any(|e| e.split_once('=').is_some_and(|(k, _)| k == name))
    })
}
