//! Redis: the replay memory's write (`SET NX`) is sent again when its reply is lost (the
//! connection dropped after Redis ran it). The write sent again must still accept the request:
//! it found the key it had just set itself and answered "replay", so a hook call the job had
//! sent once was refused (401), and the job failed or lost its result. Real pieces: a server
//! with its worker on a real redis-server reached through a TCP proxy of this test, which drops
//! the reply to the replay memory's write once (and the connection with it).

mod redis_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_support::TestRedis;
use runyard::config::Config;
use runyard::server::{RunningServer, ServerBuilder};
use runyard_hooks::{derive_job_secret, now_ms, signed_headers, SigVersion};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const MASTER_KEY: &str = "0123456789abcdef0123456789abcdef";
const WAIT: Duration = Duration::from_secs(20);

/// A proxy to a Redis that, while `armed`, lets the next command naming a replay memory key
/// through to Redis and then drops that connection's replies (closing it): the client sees its
/// connection lost after Redis ran the command. `dropped` counts the connections so cut.
struct LosingProxy {
    port: u16,
    armed: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
}

async fn to_redis(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, p: Arc<Cut>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = r.read(&mut buf).await.unwrap_or_default();
        if n == 0 {
            return;
        }
        let chunk = &buf[..n];
        if chunk.windows(7).any(|w| w == b"replay:") && p.armed.swap(false, Ordering::SeqCst) {
            p.cut.store(true, Ordering::SeqCst);
        }
        if w.write_all(chunk).await.is_err() {
            return;
        }
    }
}

async fn to_client(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, p: Arc<Cut>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = r.read(&mut buf).await.unwrap_or_default();
        if n == 0 {
            return;
        }
        if p.cut.load(Ordering::SeqCst) {
            // The reply is lost: the client's connection closes without it.
            p.dropped.fetch_add(1, Ordering::SeqCst);
            let _ = w.shutdown().await;
            return;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// One proxied connection's state.
struct Cut {
    armed: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
    cut: AtomicBool,
}

impl LosingProxy {
    async fn start(upstream: u16) -> LosingProxy {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicUsize::new(0));
        let (a, d) = (armed.clone(), dropped.clone());
        tokio::spawn(async move {
            while let Ok((c, _)) = l.accept().await {
                let Ok(u) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let p = Arc::new(Cut {
                    armed: a.clone(),
                    dropped: d.clone(),
                    cut: AtomicBool::new(false),
                });
                let (cr, cw) = c.into_split();
                let (ur, uw) = u.into_split();
                tokio::spawn(to_redis(cr, uw, p.clone()));
                tokio::spawn(to_client(ur, cw, p));
            }
        });
        LosingProxy {
            port,
            armed,
            dropped,
        }
    }
}

async fn node(redis: &TestRedis, port: u16, dir: &tempfile::TempDir) -> RunningServer {
    let cfg = Config::from_toml(&format!(
        r#"
data_dir = "{data}"
redis = "redis://127.0.0.1:{port}"
master_key = "{MASTER_KEY}"
[store]
prefix = "{prefix}"
[worker]
poll_interval = "100ms"
shutdown_grace = "300ms"
kill_grace = "200ms"
exit_grace = "200ms"
[[runners]]
name = "hold"
kind = "local"
types = ["hold.*"]
command = ["/bin/sh", "-c", "sleep 30"]
"#,
        data = dir.path().join("data").display(),
        prefix = redis.prefix,
    ))
    .expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    ServerBuilder::new(cfg)
        .start(listener)
        .await
        .expect("server starts")
}

async fn get_job(http: &reqwest::Client, url: &str, id: &str) -> Value {
    http.get(format!("{url}/async/jobs/{id}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

async fn wait_running(http: &reqwest::Client, url: &str, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let j = get_job(http, url, id).await;
        if j["status"] == "RUNNING" {
            return j;
        }
        assert!(start.elapsed() < WAIT, "not RUNNING within {WAIT:?}: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A hook call whose replay memory write lost its reply is accepted (200) and its report
/// taken; the same signed request sent again is a replay (401), taken nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_call_whose_replay_write_lost_its_reply_is_accepted_once() {
    // Its own redis-server: the proxy reaches it on the loopback.
    let redis = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let proxy = LosingProxy::start(redis.port).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = node(&redis, proxy.port, &dir).await;
    let url = server.url();
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let v: Value = http
        .post(format!("{url}/async/jobs"))
        .json(&json!({"type": "hold.lost_reply"}))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    let id = v["job_id"].as_str().expect("job_id").to_string();
    let j = wait_running(&http, &url, &id).await;
    let attempt = j["attempt"].as_u64().expect("attempt") as u32;
    let secret = derive_job_secret(&server.app.master_key, &id, attempt);

    let target = "/async/status";
    let body = serde_json::to_vec(&json!({"progress": 0.5})).unwrap();
    let headers = signed_headers(
        &id,
        &secret,
        SigVersion::V2,
        "POST",
        target,
        &body,
        now_ms(),
    )
    .expect("sign");
    let send = || {
        http.post(format!("{url}{target}"))
            .headers(headers.clone())
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
    };
    proxy.armed.store(true, Ordering::SeqCst);
    let first = send().await.expect("first send");
    let status = first.status().as_u16();
    let text = first.text().await.unwrap_or_default();
    assert_eq!(
        proxy.dropped.load(Ordering::SeqCst),
        1,
        "the replay write's reply was dropped once"
    );
    assert_eq!(status, 200, "the first call is accepted: {text}");
    let j = get_job(&http, &url, &id).await;
    assert_eq!(j["progress"], json!(0.5), "its report taken: {j}");

    let again = send().await.expect("second send");
    let status = again.status().as_u16();
    let text = again.text().await.unwrap_or_default();
    assert_eq!(status, 401, "the same request again is a replay: {text}");
    assert!(text.contains("replay"), "{text}");
    server.stop().await.expect("stop");
}
