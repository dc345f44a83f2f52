//! Process limits: the open-file limit is raised to its hard maximum at start, so that client
//! connections and jobs both fit; [`crate::connections`] keeps `api.fd_reserve` of it for everything but
//! clients.

/// The open-file limit as `(soft, hard)`, when it can be read.
pub fn nofile() -> Option<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Safety: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    Some((r.rlim_cur, r.rlim_max))
}

static ORIGINAL_SOFT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// The soft open-file limit the process started with, once [`raise_nofile`] has run: what a job
/// launcher may restore for its children (programs using `select()` expect at most 1024).
pub fn original_nofile() -> Option<u64> {
    ORIGINAL_SOFT.get().copied()
}

/// Raises the soft open-file limit to the hard limit; returns the soft limit now in force.
/// Logged at debug level (a failure at warn: the server still runs with the lower limit).
/// `runyard serve` and `runyard worker` call it at start; an embedding program may call it before
/// [`crate::server::ServerBuilder::start`], which sizes the connection cap from the limit.
pub fn raise_nofile() -> Option<u64> {
    let (soft, hard) = nofile()?;
    let _ = ORIGINAL_SOFT.set(soft);
    if soft >= hard {
        tracing::debug!(soft, hard, "open-file limit already at its maximum");
        return Some(soft);
    }
    let r = libc::rlimit {
        rlim_cur: hard as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // Safety: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
        return Some(soft);
    }
    tracing::debug!(from = soft, to = hard, "open-file limit raised");
    Some(hard)
}
