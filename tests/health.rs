//! Health for orchestrators (src/api/health.rs): liveness asks the process only, readiness the
//! store too, so a Redis outage takes pods out of traffic without restarting them; a worker node
//! serves both on `--health-listen` (the chart's worker probes).

mod redis_support;
mod support;

use std::time::{Duration, Instant};

use redis_support::TestRedis;
use runyard::config::Config;
use runyard::server::ServerBuilder;
use support::TestServer;

async fn get(url: &str) -> Option<u16> {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    c.get(url).send().await.ok().map(|r| r.status().as_u16())
}

/// Polls `url` until it answers `want` (bounded).
async fn until(url: &str, want: u16, bound: Duration) -> Option<u16> {
    let start = Instant::now();
    loop {
        let got = get(url).await;
        if got == Some(want) || start.elapsed() > bound {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn serve_answers_live_and_ready() {
    let server = TestServer::start("").await;
    for path in ["/health", "/health/live", "/health/ready"] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["status"], "ok", "{path}");
    }
    let (_, ready) = server.get("/health/ready").await;
    assert_eq!(ready["store"], "embedded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_node_is_live_but_not_ready_while_redis_is_away() {
    let mut redis = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&format!(
        r#"
public_url = "http://127.0.0.1:9"
data_dir = "{data}"
redis = "{url}"
master_key = "a-master-key-for-the-health-test-0123456789"

[store]
prefix = "{prefix}"
retry = "1s"

[[runners]]
kind = "service"
types = ["runyard.*"]
"#,
        data = dir.path().display(),
        url = redis.url,
        prefix = redis.prefix,
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(ServerBuilder::new(config).health_listener(listener).work(
        async move {
            let _ = stop_rx.await;
        },
    ));
    let (live, ready) = (
        format!("{base}/health/live"),
        format!("{base}/health/ready"),
    );
    assert_eq!(until(&ready, 200, Duration::from_secs(20)).await, Some(200));
    assert_eq!(get(&live).await, Some(200));
    // Nothing but the probes is served there.
    assert_eq!(get(&format!("{base}/async/jobs")).await, Some(404));

    redis.stop();
    assert_eq!(
        until(&ready, 503, Duration::from_secs(20)).await,
        Some(503),
        "readiness follows the store"
    );
    assert_eq!(
        get(&live).await,
        Some(200),
        "liveness does not: no restart in an outage"
    );

    redis.restart();
    assert_eq!(until(&ready, 200, Duration::from_secs(30)).await, Some(200));

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), node)
        .await
        .expect("the worker node stops")
        .unwrap()
        .unwrap();
    assert_eq!(
        get(&live).await,
        None,
        "the probe listener closes with the node"
    );
}

/// Unmounts the test's tmpfs when the test ends, however it ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The embedded store on a full disk (a 6 MiB tmpfs filled with a file): submits fail to
/// commit, and `/health/ready` says so (503, naming the failed commit) instead of "ok" from a
/// read that still works, also after the worker's empty claims (commits that write nothing)
/// went on for a while; once space is freed, the next write commits and it is ready again.
/// Needs root (mount), as CI on this machine has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_the_embedded_store_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("run mount");
    assert!(ok.success(), "mount a tmpfs (the test needs root)");
    let _mounted = Mounted(mnt.clone());
    let config = Config::from_toml(&format!(
        r#"
data_dir = "{data}"
master_key = "a-master-key-for-the-health-test-0123456789"

[worker]
poll_interval = "100ms"

[[runners]]
kind = "service"
types = ["runyard.*"]
"#,
        data = mnt.join("data").display(),
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // With the worker: its claims of an empty queue commit nothing, every poll, even on the
    // full disk; they must not make the store look ready again.
    let server = ServerBuilder::new(config)
        .worker(true)
        .start(listener)
        .await
        .unwrap();
    let base = server.url();
    let ready = format!("{base}/health/ready");
    let c = reqwest::Client::new();
    let submit = || async {
        c.post(format!("{base}/async/jobs"))
            .json(&serde_json::json!({"type": "runyard.noop", "args": {"pad": "x".repeat(2000)}}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(submit().await, 202);
    assert_eq!(get(&ready).await, Some(200));
    // Fill the disk, then write until a commit fails (bounded).
    let fill = mnt.join("fill");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&fill).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
    }
    let mut refused = 0;
    for _ in 0..2000 {
        if submit().await >= 500 {
            refused += 1;
            break;
        }
    }
    assert_eq!(refused, 1, "a write failed on the full disk");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = c.get(&ready).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("failed to commit"),
        "{body}"
    );
    std::fs::remove_file(&fill).unwrap();
    assert_eq!(submit().await, 202, "space again: writes commit");
    assert_eq!(get(&ready).await, Some(200));
    server.stop().await.unwrap();
}

/// A worker node that is stopping says so on its readiness probe (503 `draining`: the chart's
/// probe takes it out of service) while it finishes the job it runs, and stays live; the job
/// ends SUCCESS and the probe listener closes with the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_node_is_draining_until_its_jobs_end() {
    let redis = TestRedis::start();
    let shared = format!(
        "redis = {:?}\nmaster_key = \"a-master-key-for-the-health-test-0123456789\"\n\
         [store]\nprefix = {:?}\n",
        redis.url, redis.prefix
    );
    let runners = "[[runners]]\nkind = \"service\"\ntypes = [\"hold.*\"]\n";
    // The API node: no worker, so the worker node below runs the job.
    let mut api = TestServer::builder(runners)
        .config(&shared)
        .service("hold.job", |_ctx| async { Ok(serde_json::json!("api")) })
        .start()
        .await;
    api.restart(false).await;
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&format!(
        "public_url = {:?}\ndata_dir = {:?}\n{shared}\n[worker]\nshutdown_grace = \"30s\"\n{runners}",
        api.url,
        dir.path().display().to_string(),
    ))
    .unwrap();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(
        ServerBuilder::new(config)
            .service("hold.job", move |_ctx| {
                let g = g.clone();
                async move {
                    g.acquire().await.expect("gate").forget();
                    Ok(serde_json::json!("node"))
                }
            })
            .health_listener(listener)
            .work(async move {
                let _ = stop_rx.await;
            }),
    );
    let (live, ready) = (
        format!("{base}/health/live"),
        format!("{base}/health/ready"),
    );
    assert_eq!(until(&ready, 200, Duration::from_secs(20)).await, Some(200));
    let id = api.submit_ok(serde_json::json!({"type": "hold.job"})).await;
    api.wait_status(&id, "RUNNING", support::WAIT).await;
    stop_tx.send(()).unwrap();
    assert_eq!(
        until(&ready, 503, Duration::from_secs(20)).await,
        Some(503),
        "a stopping node is not ready"
    );
    let body: serde_json::Value = reqwest::get(&ready).await.unwrap().json().await.unwrap();
    assert_eq!(body["status"], "draining", "{body}");
    assert_eq!(get(&live).await, Some(200), "it is still live");
    let job = api.get_job(&id).await;
    assert_eq!(support::status_of(&job), "RUNNING", "{job}");
    gate.add_permits(1);
    tokio::time::timeout(Duration::from_secs(30), node)
        .await
        .expect("the worker node stops")
        .unwrap()
        .unwrap();
    let job = api.wait_terminal(&id, support::WAIT).await;
    assert_eq!(support::status_of(&job), "SUCCESS", "{job}");
    assert_eq!(job["result"], "node", "{job}");
    assert_eq!(
        get(&live).await,
        None,
        "the probe listener closes with the node"
    );
    api.stop().await;
}
