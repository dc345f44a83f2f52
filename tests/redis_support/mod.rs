//! A Redis for the tests: `RUNYARD_TEST_REDIS` when set (each test then uses its own key
//! prefix), else a private `redis-server` on a free loopback port, killed (by its pid) when the
//! guard drops, and by the kernel if the test process dies first (PR_SET_PDEATHSIG).

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether the tests' stores write channel events to lists (`store.channel_events = "list"`):
/// `RUNYARD_TEST_CHANNEL_EVENTS=list`, else streams (the default), for the suites that run
/// either way (conformance).
pub fn channel_lists() -> bool {
    std::env::var("RUNYARD_TEST_CHANNEL_EVENTS").is_ok_and(|v| v == "list")
}

/// Whether the tests' stores that follow it write compact records (`store.records =
/// "compact"`): `RUNYARD_TEST_RECORDS=compact` (scripts/test.sh runs the channel index and
/// channel event suites so too), else the job's JSON (the default).
pub fn compact_records() -> bool {
    std::env::var("RUNYARD_TEST_RECORDS").is_ok_and(|v| v == "compact")
}

/// Calls of the commands `names` (lower case) Redis has run so far, scripts' own included
/// (`INFO commandstats`).
pub async fn calls(url: &str, names: &[&str]) -> u64 {
    let client = ::redis::Client::open(url).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await
        .expect("info");
    info.lines()
        .filter(|l| {
            names
                .iter()
                .any(|n| l.starts_with(&format!("cmdstat_{n}:")))
        })
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// A Redis server for one test.
pub struct TestRedis {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    /// A key prefix unique to this test.
    pub prefix: String,
    /// The port.
    pub port: u16,
    /// The TLS port of a server started by [`TestRedis::private_tls`].
    pub tls_port: Option<u16>,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    args: Vec<String>,
}

/// A free port for a test's own `redis-server`, from below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`, 32768-60999 by default): a port the kernel handed
/// a test for its runyard node (bound to port 0, released, then passed to `--listen`) or to an
/// outgoing connection is never one of these, so a Redis cannot take a node's port between its
/// pick and its bind (CI, stop 64: "cannot listen on ... Address already in use"). Each call in
/// this process tries the next port of a span started at a place of the process id's choosing,
/// so two tests' Redis servers never get the same one.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let ephemeral_start: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    // Ports 1024 up to the ephemeral range (a range widened to start lower than 2024 leaves
    // none: then any port above 1024, as before).
    let first = 1024;
    let span = ephemeral_start.saturating_sub(first).max(1000);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(2_654_435_761) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = first + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port from {first} below {}", first + span)
}

fn unique_prefix() -> String {
    format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[16..])
}

impl TestRedis {
    /// The configuration of a server on this Redis (its URL and key prefix) with `master_key`.
    pub fn server_config(&self, master_key: &str) -> String {
        format!(
            "redis = \"{}\"\nmaster_key = \"{master_key}\"\n[store]\nprefix = \"{}\"\n",
            self.url, self.prefix
        )
    }

    /// The shared test Redis when `RUNYARD_TEST_REDIS` is set, else a private one without
    /// persistence.
    pub fn start() -> Self {
        if let Ok(url) = std::env::var("RUNYARD_TEST_REDIS") {
            if !url.is_empty() {
                let port = url
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.trim_end_matches('/').parse().ok())
                    .unwrap_or(6379);
                return Self {
                    url,
                    prefix: unique_prefix(),
                    port,
                    tls_port: None,
                    child: None,
                    dir: None,
                    args: vec![],
                };
            }
        }
        Self::private(&["--save", "", "--appendonly", "no"])
    }

    /// A private server with these extra arguments (e.g. `--appendonly yes`), its files in a
    /// temporary directory.
    pub fn private(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut r = Self {
            url: String::new(),
            prefix: unique_prefix(),
            port: 0,
            tls_port: None,
            child: None,
            dir: Some(dir),
            args: extra.iter().map(|s| s.to_string()).collect(),
        };
        // A port found free may be taken by another test's server before redis binds it: then
        // redis exits at once, and another port is tried.
        for _ in 0..5 {
            r.port = free_port();
            r.url = format!("redis://127.0.0.1:{}", r.port);
            if r.try_spawn() {
                return r;
            }
        }
        panic!("redis-server exited at start five times (its ports taken?)");
    }

    /// A private server that serves TLS too, on [`Self::tls_port`] (`url` is
    /// `rediss://127.0.0.1:TLS_PORT`), with this certificate and key, clients not asked for one
    /// (`--tls-auth-clients no`); its plain port stays for [`Self::ping`] and redis-cli. `Err`
    /// with its log when redis-server exits at start for another reason than a port taken (a
    /// build without TLS).
    pub fn private_tls(cert: &Path, key: &Path, ca: &Path) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("redis.log");
        let mut r = Self {
            url: String::new(),
            prefix: unique_prefix(),
            port: 0,
            tls_port: None,
            child: None,
            dir: Some(dir),
            args: vec![],
        };
        for _ in 0..5 {
            r.port = free_port();
            let tls_port = free_port();
            r.tls_port = Some(tls_port);
            r.url = format!("rediss://127.0.0.1:{tls_port}");
            let path = |p: &Path| p.to_string_lossy().into_owned();
            r.args = vec![
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
                "--logfile".into(),
                path(&log),
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cert-file".into(),
                path(cert),
                "--tls-key-file".into(),
                path(key),
                "--tls-ca-cert-file".into(),
                path(ca),
                "--tls-auth-clients".into(),
                "no".into(),
            ];
            if r.try_spawn() {
                return Ok(r);
            }
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            if !said.contains("Address already in use") {
                return Err(said);
            }
        }
        panic!("redis-server exited at start five times (its ports taken?)");
    }

    /// The server's directory (private servers).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("a private redis").path()
    }

    fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "redis-server on port {} exited at start",
            self.port
        );
    }

    /// Starts redis-server on `self.port` and waits until it answers; false when it exited
    /// first (its port taken).
    fn try_spawn(&mut self) -> bool {
        let dir: PathBuf = self.dir().to_path_buf();
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .expect("redis-server starts (apt-get install redis-server)");
        self.child = Some(child);
        let start = Instant::now();
        while !self.ping() {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis on port {} did not come up",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Waits until the server answers PING.
    pub fn wait_up(&self, bound: Duration) {
        let start = Instant::now();
        loop {
            if self.ping() {
                return;
            }
            assert!(
                start.elapsed() < bound,
                "redis on port {} did not come up",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when the server answers.
    pub fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(200),
        ) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(n) if n > 0 && buf[..n].starts_with(b"+PONG"))
    }

    /// The server's pid (private servers).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops a private server gracefully (SIGTERM: with appendonly it flushes the AOF first).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let start = Instant::now();
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts a stopped private server again on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// One value of `INFO` (e.g. `used_memory`), through redis-cli.
    pub fn info(&self, field: &str) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "INFO"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
    }

    /// Keeps the server busy running a script (an endless loop that only reads: `SCRIPT KILL`
    /// may stop it, [`Self::unbusy`]) from a `redis-cli` of its own: once it has run past
    /// `busy-reply-threshold` (set here to 100 ms), every other client is answered `BUSY` until
    /// it is killed. Returns once a `PING` is.
    pub fn busy(&self) -> Child {
        assert!(self
            .cli(&["CONFIG", "SET", "busy-reply-threshold", "100"])
            .contains("OK"));
        let child = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(["EVAL", "while true do redis.call('TIME') end", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli runs");
        let start = Instant::now();
        while !self.cli(&["PING"]).contains("BUSY") {
            assert!(start.elapsed() < Duration::from_secs(10), "never BUSY");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// Ends the script [`Self::busy`] started (`SCRIPT KILL`) and reaps its `redis-cli`.
    pub fn unbusy(&self, mut script: Child) {
        assert!(self.cli(&["SCRIPT", "KILL"]).contains("OK"), "SCRIPT KILL");
        let _ = script.wait();
    }

    /// Runs redis-cli with these arguments and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A new QUEUED job of `runner` (type `t`, channel `c`, one attempt), as a submit stores it.
pub fn queued_job(runner: &str) -> runyard::job::Job {
    let now = runyard::job::now_us();
    serde_json::from_value(serde_json::json!({
        "id": uuid::Uuid::now_v7(), "type": "t", "args": {}, "runner": runner, "status": "QUEUED",
        "channel_id": "c", "user_id": null, "attempt": 0, "max_attempts": 1,
        "backoff": {"initial_ms": 1, "max_ms": 1, "multiplier": 1.0, "jitter": false},
        "timeout_ms": null, "run_at": null, "idempotency_key": null, "progress": 0.0,
        "status_details": null, "result": null, "error": null, "exit_code": null, "lease": null,
        "handle": null, "files": {}, "runs": [], "created_at": now, "updated_at": now,
        "queued_at": now, "started_at": null, "finished_at": null, "progress_event_at": 0,
        "version": 0
    }))
    .expect("a job")
}

/// A store on `r` (its key prefix; `store.retry` 5 s).
pub async fn open_store(r: &TestRedis) -> std::sync::Arc<dyn runyard::store::Store> {
    runyard::store::redis::RedisStore::connect(runyard::store::redis::RedisSettings {
        prefix: r.prefix.clone(),
        retry: Duration::from_secs(5),
        ..runyard::store::redis::RedisSettings::new(r.url.clone())
    })
    .await
    .expect("connect")
}

/// A connection of the test's own to its redis-server.
pub async fn raw_conn(r: &TestRedis) -> ::redis::aio::MultiplexedConnection {
    let client = ::redis::Client::open(r.url.as_str()).expect("client");
    client
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}
