//! The signals that stop runyard's processes: SIGINT (Ctrl-C), SIGTERM, and SIGHUP (the terminal
//! closed) unless it was ignored when the process started (`nohup`). For `serve` and `worker` the
//! first one starts the drain (`worker.shutdown_grace`); a second one stops the process at once
//! (a cold shutdown, as Celery's): its running jobs are then recovered as after a crash
//! (docs/reliability.md).

use std::path::PathBuf;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Listeners for the stop signals, installed together.
pub(crate) struct StopSignals {
    int: Option<Signal>,
    term: Option<Signal>,
    hup: Option<Signal>,
}

impl StopSignals {
    pub(crate) fn new() -> Self {
        Self {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
            // `nohup runyard serve &`: a closed terminal is not a reason to stop.
            hup: (!ignored(libc::SIGHUP))
                .then(|| signal(SignalKind::hangup()).ok())
                .flatten(),
        }
    }

    /// The next stop signal's name and number.
    pub(crate) async fn recv(&mut self) -> (&'static str, i32) {
        tokio::select! {
            () = next(&mut self.int) => ("SIGINT", libc::SIGINT),
            () = next(&mut self.term) => ("SIGTERM", libc::SIGTERM),
            () = next(&mut self.hup) => ("SIGHUP", libc::SIGHUP),
        }
    }
}

/// Completes when `s` delivers a signal; never when there is no listener.
async fn next(s: &mut Option<Signal>) {
    if let Some(s) = s {
        if s.recv().await.is_some() {
            return;
        }
    }
    std::future::pending().await
}

/// Whether `sig` is ignored (`SIG_IGN`) by this process: checked before a listener replaces it.
fn ignored(sig: i32) -> bool {
    // Safety: sigaction with no new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Completes on the first stop signal (SIGINT, SIGTERM or SIGHUP) with its name, and logs
/// nothing: `runyard launch` waits for it, and its stderr is the job's own output (a runner
/// stores it as the job's `stderr` lines), so it notes the stop as runyard's itself.
pub async fn stop_signal() -> &'static str {
    StopSignals::new().recv().await.0
}

/// Completes on the first stop signal (SIGINT, SIGTERM or SIGHUP), logged as the start of a
/// server's drain (a program embedding runyard's server, `examples/demo.rs`).
pub async fn shutdown_signal() {
    let name = stop_signal().await;
    tracing::info!(signal = name, "shutdown requested: draining");
}

/// The stop signal of `serve` and `worker`, whose drain can take `worker.shutdown_grace`:
/// from the first signal on, a second one ends the process at once (exit code 128 + the
/// signal's number), after removing `remove` (the demo's data dir). The listeners are installed
/// by this call, not when the future is first polled.
pub fn drain_signal(remove: Option<PathBuf>) -> impl std::future::Future<Output = ()> + Send {
    let mut signals = StopSignals::new();
    async move {
        let (name, _) = signals.recv().await;
        tracing::info!(
            signal = name,
            "shutdown requested: draining (a second signal stops at once)"
        );
        tokio::spawn(async move {
            let (name, number) = signals.recv().await;
            tracing::warn!(
                signal = name,
                "second stop signal: stopping at once without waiting for the running jobs; \
                 they are recovered as after a crash"
            );
            if let Some(d) = remove {
                let _ = std::fs::remove_dir_all(d);
            }
            std::process::exit(128 + number);
        });
    }
}
