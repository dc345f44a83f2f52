//! `rediss://`: runyard speaks TLS to Redis (rustls), trusting the system's certificate
//! authorities, or only those of `store.redis_ca`. A real redis-server serves TLS with
//! certificates made here (rcgen: a private CA, and a certificate for 127.0.0.1 signed by it);
//! real `runyard serve` and `runyard worker` processes.
//!
//! - `jobs_run_over_tls_with_a_private_ca`: serve (no worker of its own) and a worker (its URL
//!   given as `--redis`) on `rediss://127.0.0.1:P` with `store.redis_ca`: a job runs to SUCCESS;
//!   Redis then drops every client connection, and a second job runs to SUCCESS too (the
//!   reconnects speak TLS).
//! - `a_server_certificate_not_trusted_stops_the_start`: with another CA as `store.redis_ca`,
//!   and without `store.redis_ca` (the system's trust store, which does not hold the test CA),
//!   `serve` stops at start saying the TLS handshake failed, well before `store.retry`.
//!
//! Skipped, saying so, when this redis-server cannot serve TLS.

mod redis_support;
mod support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{json, Value};

use redis_support::TestRedis;
use support::child::{ChildServer, Client};

const MASTER_KEY: &str = "redis-tls-test-master-key-0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// The files of one test: a CA, a server certificate for 127.0.0.1 signed by it, and another CA
/// that signed nothing of the server's.
struct Certs {
    dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other_ca: PathBuf,
}

fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.pem(), Issuer::new(params, key))
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca_pem, ca) = new_ca("runyard test CA");
    let (other_pem, _) = new_ca("runyard other CA");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &ca).expect("server certificate");
    let c = Certs {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("redis.pem"),
        key: dir.path().join("redis.key"),
        other_ca: dir.path().join("other-ca.pem"),
        dir,
    };
    std::fs::write(&c.ca, ca_pem).expect("write");
    std::fs::write(&c.cert, cert.pem()).expect("write");
    std::fs::write(&c.key, key.serialize_pem()).expect("write");
    std::fs::write(&c.other_ca, other_pem).expect("write");
    c
}

/// A redis-server serving TLS with `c`'s certificate, or `None` (the test skipped, saying why)
/// when this build of redis-server cannot.
fn tls_redis(c: &Certs) -> Option<TestRedis> {
    match TestRedis::private_tls(&c.cert, &c.key, &c.ca) {
        Ok(r) => Some(r),
        // Skipped only when redis-server says it has no TLS (a build without it refuses the
        // `tls-*` directives); any other failure to start fails the test.
        Err(log)
            if log.contains("Bad directive") || log.to_lowercase().contains("not supported") =>
        {
            eprintln!("SKIPPED: this redis-server does not serve TLS; its log:\n{log}");
            None
        }
        Err(log) => panic!("the TLS redis-server did not start; its log:\n{log}"),
    }
}

/// A configuration in `c`'s directory: `r`'s URL and prefix, `ca` as `store.redis_ca` (none:
/// the key left out), the API's URL (a worker node's), the server's own worker on or off, one
/// local runner.
fn config(c: &Certs, name: &str, r: &TestRedis, ca: Option<&Path>, api: Option<&str>) -> PathBuf {
    let ca = ca
        .map(|p| {
            format!(
                "redis_ca = {}\n",
                toml::Value::String(p.display().to_string())
            )
        })
        .unwrap_or_default();
    let (public_url, worker) = match api {
        Some(url) => (format!("public_url = \"{url}\"\n"), true),
        None => (String::new(), false),
    };
    let text = format!(
        r#"{public_url}data_dir = {data}
redis = "{url}"
master_key = "{MASTER_KEY}"

[store]
prefix = "{prefix}"
{ca}
[worker]
enabled = {worker}
poll_interval = "200ms"

[[runners]]
kind = "local"
types = ["tls.*"]
command = ["/bin/sh", "-c", "echo over tls"]
max_attempts = 1
"#,
        data = toml::Value::String(c.dir.path().join(name).display().to_string()),
        url = r.url,
        prefix = r.prefix,
    );
    let path = c.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write config");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600");
    path
}

/// A `runyard` child process, killed and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `runyard worker --config CFG --redis URL`, its output to `log`.
fn worker(cfg: &Path, url: &str, log: &Path) -> Proc {
    let out = std::fs::File::create(log).expect("worker log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runyard"));
    cmd.arg("worker")
        .arg("--config")
        .arg(cfg)
        .arg("--redis")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log handle"))
        .stderr(out);
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNYARD_") {
            cmd.env_remove(k);
        }
    }
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    Proc(cmd.spawn().expect("runyard worker starts"))
}

/// Submits a `tls.echo` job and waits until it ends; its last state.
async fn run_job(api: &Client, logs: &dyn Fn() -> String) -> Value {
    let (st, v) = api
        .call(
            reqwest::Method::POST,
            "/async/jobs",
            Some(json!({"type": "tls.echo"})),
        )
        .await;
    assert_eq!(st, 202, "{v}\n{}", logs());
    let id = v["job_id"].as_str().expect("job_id").to_string();
    let until = Instant::now() + WAIT;
    loop {
        let (_, job) = api
            .call(reqwest::Method::GET, &format!("/async/jobs/{id}"), None)
            .await;
        if support::is_terminal(&job["status"]) {
            return job;
        }
        assert!(
            Instant::now() < until,
            "job {id} not ended within {WAIT:?}: {job}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[tokio::test]
async fn jobs_run_over_tls_with_a_private_ca() {
    let c = certs();
    let Some(r) = tls_redis(&c) else { return };
    let serve_log = c.dir.path().join("serve.log");
    let worker_log = c.dir.path().join("worker.log");
    let mut serve = ChildServer::start(&config(&c, "serve", &r, Some(&c.ca), None), &serve_log);
    serve.wait_healthy(WAIT).await;
    let _worker = worker(
        &config(&c, "worker", &r, Some(&c.ca), Some(&serve.url)),
        &r.url,
        &worker_log,
    );
    let logs = || {
        format!(
            "--- serve ---\n{}\n--- worker ---\n{}",
            tail(&serve_log),
            tail(&worker_log)
        )
    };
    let api = Client::new(&serve.url);
    let job = run_job(&api, &logs).await;
    assert_eq!(job["status"], "SUCCESS", "{job}\n{}", logs());

    // Every client connection dropped by Redis: the store's, the notice subscriber's, the
    // event tail's, the worker's. They come back over TLS (a plain one is refused on the port).
    let killed = r.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    let killed_pubsub = r.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(
        killed.trim().parse::<u32>().is_ok_and(|n| n > 0),
        "clients killed: {killed:?} (pubsub: {killed_pubsub:?})"
    );
    let job = run_job(&api, &logs).await;
    assert_eq!(job["status"], "SUCCESS", "{job}\n{}", logs());
}

#[tokio::test]
async fn a_server_certificate_not_trusted_stops_the_start() {
    let c = certs();
    let Some(r) = tls_redis(&c) else { return };
    for (name, ca) in [
        ("other-ca", Some(c.other_ca.as_path())),
        ("system-roots", None),
    ] {
        let cfg = config(&c, name, &r, ca, None);
        let log = c.dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log");
        let started = Instant::now();
        let mut child = support::child::serve_command(&cfg, support::child::free_port(), out)
            .spawn()
            .expect("runyard serve starts");
        // `store.retry` is 30 s: a start that waits it out is not "at start".
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name}: serve still running after 20 s:\n{}", tail(&log));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!status.success(), "{name}: {status}\n{said}");
        for w in [
            "TLS handshake failed",
            "certificate",
            "store.redis_ca",
            &r.url,
        ] {
            assert!(said.contains(w), "{name}: the error says {w:?}:\n{said}");
        }
    }
}

/// A plain `redis://` URL to the TLS port: Redis resets each connection, retried for
/// `store.retry` as any lost connection may come back, but the warnings and the start's error
/// say that the port may be a TLS one and to use `rediss://`. Before, 30 s of "Connection reset
/// by peer" with no hint (probe s48, finding 10).
#[tokio::test]
async fn a_plain_url_to_a_tls_port_hints_at_rediss() {
    let c = certs();
    let Some(r) = tls_redis(&c) else { return };
    let cfg = config(&c, "plain", &r, None, None);
    let text = std::fs::read_to_string(&cfg).expect("read config");
    let text = text
        .replace("rediss://", "redis://")
        .replace("[store]\n", "[store]\nretry = \"10s\"\n");
    std::fs::write(&cfg, text).expect("write config");
    let log = c.dir.path().join("plain.log");
    let out = std::fs::File::create(&log).expect("log");
    let mut child = support::child::serve_command(&cfg, support::child::free_port(), out)
        .spawn()
        .expect("runyard serve starts");
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve still running after 30 s:\n{}", tail(&log));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "{status}\n{said}");
    let last = said.lines().last().unwrap_or_default();
    for w in ["TLS", "rediss://"] {
        assert!(last.contains(w), "the error says {w:?}:\n{said}");
    }
    assert!(
        said.lines()
            .any(|l| l.contains("not reachable yet") && l.contains("rediss://")),
        "the retries say it too:\n{said}"
    );
}
