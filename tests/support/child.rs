//! A real `runyard serve` child process, for the tests that kill it (SIGKILL) or run it as
//! another user: the command line, and a handle that kills and reaps it when dropped, so a
//! failing test never leaves a server behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `runyard serve --config <config> --listen 127.0.0.1:<port>`, stdout and stderr to `out`,
/// without the developer's own `RUNYARD_*` settings (they must not leak into the server under
/// test).
pub fn serve_command(config: &Path, port: u16, out: File) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runyard"));
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log handle"))
        .stderr(out);
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNYARD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A `runyard serve` child process; killed (SIGKILL) and reaped when dropped.
pub struct ChildServer {
    child: Option<Child>,
    pub url: String,
    log: PathBuf,
}

impl ChildServer {
    /// Starts `runyard serve` on `config`, appending its output to `log`.
    pub fn start(config: &Path, log: &Path) -> ChildServer {
        Self::start_with_env(config, log, &[])
    }

    /// [`ChildServer::start`], with these environment variables set for the process (e.g. an
    /// `LD_PRELOAD` of libfaketime that moves its wall clock).
    pub fn start_with_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> ChildServer {
        let port = free_port();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("server log");
        let child = serve_command(config, port, out)
            .envs(env.iter().copied())
            .spawn()
            .expect("cannot start runyard serve");
        ChildServer {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, and wait until the process is reaped.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last 40 lines of the server's log.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until `/health` answers 2xx, at most `within`; fails the test (with the log's tail)
    /// if the process exits first or the time runs out.
    pub async fn wait_healthy(&mut self, within: Duration) {
        let http = reqwest::Client::new();
        let until = Instant::now() + within;
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("server exited early ({st}):\n{}", self.log_tail());
            }
            if let Ok(r) = http.get(format!("{}/health", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < until,
                "server not healthy within {within:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An HTTP client of one child server: each call bounded to 30 s, its answer as
/// `(status, JSON body)` (`(0, {"transport": ...})` when nothing came back).
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
}

impl Client {
    /// A client of the server at `url`.
    pub fn new(url: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: url.to_string(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .timeout(std::time::Duration::from_secs(30));
        if let Some(b) = body {
            r = r.json(&b);
        }
        match r.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or_default())
            }
            Err(e) => (0, serde_json::json!({ "transport": e.to_string() })),
        }
    }

    /// `GET /async/jobs/{id}`'s body.
    pub async fn job(&self, id: &str) -> serde_json::Value {
        self.call(reqwest::Method::GET, &format!("/async/jobs/{id}"), None)
            .await
            .1
    }
}
