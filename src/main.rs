fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    runyard::cli::main()
}

/// glibc's malloc gives each thread that contends for it an arena of its own, up to 8 per core,
/// and keeps what each arena freed: the server's request, SQLite and blocking-pool threads each
/// grew one and its RSS rose with the load's peaks (docs/benchmarks.md "Memory with short
/// retention", session 9: 67-75 MiB with the default, 47-57 MiB with the limit, the same rate).
/// One arena per core (at least two); `MALLOC_ARENA_MAX` in the environment, read by glibc
/// itself, wins. Called first, before any thread starts.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = i32::try_from(cores.max(2)).unwrap_or(i32::MAX);
        // SAFETY: mallopt only sets a malloc parameter; it is called before any other thread
        // exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}
