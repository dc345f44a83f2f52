//! The `runyard serve` child the benchmark starts (unless `--server`), its health and memory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use super::*;

/// Peak resident set of a process (VmHWM), in KiB.
pub(super) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Waits for `GET /health`; returns the backend name.
pub(super) async fn wait_healthy(
    ctx: &Ctx,
    mut child: Option<&mut ChildServer>,
) -> anyhow::Result<String> {
    let url = format!("{}/health", ctx.base);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(c) = child.as_deref_mut() {
            if let Some(st) = c.child.try_wait()? {
                bail!(
                    "the server exited ({st}) before it was healthy; its log:\n{}",
                    c.log_tail()
                );
            }
        }
        if let Ok(r) = ctx.http.get(&url).send().await {
            if r.status().is_redirection() {
                bail!("{}", crate::cli::answer::redirect_of_plain(&r, "/health"));
            }
            if r.status().is_success() {
                // Bounded; a body that cannot be read names no store, as before.
                let body = super::body_of(r, "/health").await.unwrap_or_default();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                return Ok(v["store"].as_str().unwrap_or("unknown").to_string());
            }
        }
        if Instant::now() >= until || Instant::now() >= ctx.deadline {
            bail!("{url} did not answer in time");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `runyard serve` started by bench.
pub(super) struct ChildServer {
    pub(super) child: tokio::process::Child,
    pub(super) pid: u32,
    pub(super) url: String,
    pub(super) dir: PathBuf,
}

impl ChildServer {
    pub(super) async fn start(a: &BenchArgs) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "runyard-bench-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let port = free_port()?;
        let config = dir.join("runyard.toml");
        std::fs::write(&config, child_config(a, &dir.join("data")))?;
        let log = std::fs::File::create(dir.join("server.log"))?;
        let mut cmd = this_binary()?;
        // Its store and settings are its config's alone: a `RUNYARD_*` of the shell (a
        // `RUNYARD_REDIS`, `RUNYARD_DATA_DIR`, `RUNYARD_AUTH__TOKENS` of the user's own server)
        // overrode them, and the bench's jobs went to the user's real store (probe s53b).
        for (key, _) in std::env::vars_os() {
            // In any case, as the configuration reads them (`runyard_redis` too).
            let key_text = key.to_string_lossy();
            if key_text
                .get(..8)
                .is_some_and(|p| p.eq_ignore_ascii_case("RUNYARD_"))
            {
                cmd.env_remove(&key);
            }
        }
        let child = cmd
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env(
                "RUNYARD_LOG",
                std::env::var("RUNYARD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Any early return (error, panic) must not leave a server behind.
            .kill_on_drop(true)
            .spawn()
            .context("cannot start `runyard serve`")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the server exited at once"))?;
        Ok(Self {
            child,
            pid,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        })
    }

    pub(super) fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then waits (bounded); SIGKILL when it does not stop.
    pub(super) async fn stop(mut self, keep: bool, failed: bool) {
        // Safety: a plain syscall on our own child's pid (not yet reaped, so not reused).
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(Ok(st)) if !st.success() => {
                eprintln!("warning: the server exited with {st}");
            }
            Ok(_) => {}
            Err(_) => {
                eprintln!("warning: the server did not stop within 15s of SIGTERM: killing it");
                let _ = self.child.kill().await;
            }
        }
        if keep || failed {
            eprintln!(
                "server data and log kept in {}{}",
                self.dir.display(),
                if failed { "" } else { " (--keep)" }
            );
            if failed {
                eprintln!("last lines of the server log:\n{}", self.log_tail());
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A command running this very binary that goes when bench goes (SIGTERM on bench's death).
pub(super) fn this_binary() -> anyhow::Result<tokio::process::Command> {
    let exe = std::env::current_exe().context("cannot find the runyard binary")?;
    let mut cmd = tokio::process::Command::new(exe);
    #[cfg(target_os = "linux")]
    {
        let bench = std::process::id();
        // Safety: only async-signal-safe syscalls between fork and exec. A bench that died
        // before the `prctl` sends no signal: then the child is not started at all.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
                if libc::getppid() as u32 != bench {
                    return Err(std::io::Error::other("bench is gone"));
                }
                Ok(())
            });
        }
    }
    Ok(cmd)
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

pub(super) fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

pub(super) fn child_config(a: &BenchArgs, data: &Path) -> String {
    format!(
        r#"# Written by `runyard bench`.
data_dir = {data}

[worker]
shutdown_grace = "5s"

[store]
synchronous = {sync}

[[runners]]
name = "bench-service"
kind = "service"
types = ["bench.noop"]
operation = "runyard.noop"
concurrency = {sc}
max_attempts = 1

[[runners]]
name = "bench-local"
kind = "local"
types = ["bench.true"]
command = ["/bin/true"]
concurrency = {lc}
max_attempts = 1
"#,
        data = toml_str(&data.to_string_lossy()),
        sync = toml_str(&a.synchronous),
        sc = a.service_concurrency.max(1),
        lc = a.local_concurrency.max(1),
    )
}
