//! A failover that leaves the old primary reachable as a replica (no client killed, as a
//! managed failover behind one address may do): a node whose connection is left on the demoted
//! primary refuses to be ready while it is, saying why, and moves to the new primary behind its
//! address by itself (a READONLY answer makes it connect again).

mod redis_support;
mod support;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use redis_support::TestRedis;
use support::TestServer;

const RUNNERS: &str = "[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n";
const KEY: &str = "failover-test-master-key-0123456789";

/// A TCP proxy on a free port standing in for a VIP or a DNS name: each new connection goes to
/// the port `target` holds when it is made; connections made before stay where they are.
async fn proxy(target: Arc<AtomicU16>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    async fn pump(mut r: tokio::net::tcp::OwnedReadHalf, mut w: tokio::net::tcp::OwnedWriteHalf) {
        let mut buf = vec![0u8; 65536];
        loop {
            let n: usize = r.read(&mut buf).await.unwrap_or_default();
            if n == 0 || w.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let upstream = target.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(u) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let (cr, cw) = c.into_split();
                let (ur, uw) = u.into_split();
                tokio::spawn(pump(cr, uw));
                tokio::spawn(pump(ur, cw));
            });
        }
    });
    port
}

/// Waits (bounded) until `r` replicates its primary (`master_link_status:up`).
fn wait_linked(r: &TestRedis) {
    let start = Instant::now();
    while r.info("master_link_status").as_deref() != Some("up") {
        assert!(
            start.elapsed() < support::WAIT,
            "the replica on {} did not link",
            r.port
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server on the Redis at `url` (`store.retry` 2 s).
async fn node(url: &str, prefix: &str) -> TestServer {
    TestServer::builder(RUNNERS)
        .config(&format!(
            "redis = \"{url}\"\nmaster_key = \"{KEY}\"\n[store]\nprefix = \"{prefix}\"\nretry = \"2s\"\n"
        ))
        .start()
        .await
}

/// `/health/ready`: its status and the error it gives.
async fn ready(ts: &TestServer) -> (StatusCode, String) {
    let (st, v) = ts.get("/health/ready").await;
    (st, v["error"].as_str().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_left_on_a_demoted_primary_says_so_and_moves_to_the_new_one() {
    let old = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let port = old.port.to_string();
    let new = TestRedis::private(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--replicaof",
        "127.0.0.1",
        &port,
    ]);
    let prefix = format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[16..]);
    wait_linked(&new);
    let target = Arc::new(AtomicU16::new(old.port));
    let via = proxy(target.clone()).await;
    // `behind`: through the stable address; `direct`: on the old primary's own address, which
    // after the failover is a replica's (it stays stuck there, and must say so).
    let behind = node(&format!("redis://127.0.0.1:{via}/0"), &prefix).await;
    let direct = node(&format!("{}/0", old.url), &prefix).await;
    let id = behind.submit_ok(json!({"type": "runyard.noop"})).await;
    let job = behind.wait_terminal(&id, support::WAIT).await;
    assert_eq!(support::status_of(&job), "SUCCESS", "{job}");

    // An earlier outage of another kind: Redis refuses writes for lack of memory, which `direct`
    // notes (its readiness says so until a write goes through again).
    old.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    let (st, v) = direct.submit(json!({"type": "runyard.noop"})).await;
    assert!(st.is_server_error(), "{st} {v}");
    old.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    // The replica has every write before the failover.
    assert!(
        old.cli(&["WAIT", "1", "5000"]).trim() == "1",
        "the replica caught up"
    );

    // The failover: the replica promoted, the old primary made its replica, the address moved;
    // no client killed.
    assert!(new.cli(&["REPLICAOF", "NO", "ONE"]).contains("OK"));
    assert!(old
        .cli(&["REPLICAOF", "127.0.0.1", &new.port.to_string()])
        .contains("OK"));
    target.store(new.port, Ordering::SeqCst);
    wait_linked(&old);

    // `direct` stays on a replica: not ready, with that reason (not the earlier lack of memory),
    // and `runyard_store_up` 0.
    let (st, why) = ready(&direct).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{why}");
    assert!(why.contains("read-only replica"), "{why}");
    assert!(!why.contains("out of memory"), "a stale reason: {why}");
    assert_eq!(direct.metric("runyard_store_up").await, Some(0.0));

    // `behind` moves to the new primary within a bounded time: a submit is taken and its job
    // runs, and it is ready.
    let id = support::eventually(
        "a submit is taken after the failover",
        support::WAIT,
        || async {
            let (st, v) = behind.submit(json!({"type": "runyard.noop"})).await;
            (st == StatusCode::ACCEPTED).then(|| v["job_id"].as_str().unwrap_or("").to_string())
        },
    )
    .await;
    let job = behind.wait_terminal(&id, support::WAIT).await;
    assert_eq!(support::status_of(&job), "SUCCESS", "{job}");
    assert_eq!(
        new.cli(&["EXISTS", &format!("{prefix}:job:{id}")]).trim(),
        "1",
        "the job is on the new primary"
    );
    support::eventually("`behind` is ready", support::WAIT, || async {
        (ready(&behind).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(behind.metric("runyard_store_up").await, Some(1.0));
    // `direct` still says why (its address is a replica's).
    let (st, why) = ready(&direct).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{why}");
    assert!(why.contains("read-only replica"), "{why}");
}
