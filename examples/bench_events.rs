//! Event delivery benchmark (see docs/benchmarks.md "Event streams"): N WebSocket (or SSE)
//! clients across C channels of a running server, jobs submitted at a fixed event rate; prints
//! commit -> client latency (the event's `ts`, server clock, to its arrival, same machine) and
//! the server's RSS per idle connection.
//!
//! `cargo run --release --example bench_events -- URL SERVER_PID [clients] [channels]
//! [events_per_s] [seconds] [ws|sse]`

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn ts_us(ev: &serde_json::Value) -> Option<i64> {
    let t = ev["ts"].as_str()?;
    let dt = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    Some((dt.unix_timestamp_nanos() / 1000) as i64)
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let url = a.get(1).cloned().expect("URL");
    let pid: u32 = a.get(2).and_then(|p| p.parse().ok()).expect("SERVER_PID");
    let clients: usize = a.get(3).and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let channels: usize = a.get(4).and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let rate: u64 = a.get(5).and_then(|v| v.parse().ok()).unwrap_or(500);
    let secs: u64 = a.get(6).and_then(|v| v.parse().ok()).unwrap_or(20);
    let sse = a.get(7).map(|m| m == "sse").unwrap_or(false);
    let host = url.trim_start_matches("http://").to_string();
    let hist = Arc::new(parking_lot::Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let got = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let before = rss_kib(pid);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    let sem = Arc::new(tokio::sync::Semaphore::new(200));
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..clients {
        let ch = format!("bench-{}", i % channels);
        let (hist, got, measuring, connected) = (
            hist.clone(),
            got.clone(),
            measuring.clone(),
            connected.clone(),
        );
        let permit = sem.clone().acquire_owned().await.unwrap();
        let host = host.clone();
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let record = move |text: &str| {
                let Ok(ev) = serde_json::from_str::<serde_json::Value>(text) else {
                    return;
                };
                if let Some(t) = ts_us(&ev) {
                    got.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if measuring.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = hist.lock().record((now_us() - t).max(1) as u64);
                    }
                }
            };
            if sse {
                let Ok(resp) = http
                    .get(format!("http://{host}/async/events/sse?channel={ch}"))
                    .send()
                    .await
                else {
                    return;
                };
                connected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                drop(permit);
                let mut body = resp.bytes_stream();
                let mut buf = String::new();
                while let Some(Ok(c)) = body.next().await {
                    buf.push_str(&String::from_utf8_lossy(&c));
                    while let Some(end) = buf.find("\n\n") {
                        let block: String = buf.drain(..end + 2).collect();
                        if let Some(d) = block.lines().find_map(|l| l.strip_prefix("data:")) {
                            record(d.trim());
                        }
                    }
                }
            } else {
                let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!(
                    "ws://{host}/async/events/ws?channel={ch}"
                ))
                .await
                else {
                    return;
                };
                connected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                drop(permit);
                while let Some(Ok(m)) = ws.next().await {
                    if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                        record(t.as_str());
                    }
                }
            }
        }));
    }
    // Wait for the connections (bounded), then let the server settle.
    let deadline = Instant::now() + Duration::from_secs(300);
    while connected.load(std::sync::atomic::Ordering::Relaxed) < clients
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let n = connected.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_kib(pid);
    println!(
        "mode {} clients {n}/{clients} channels {channels} connect {:.1}s | server RSS before {} KiB, idle with clients {} KiB: {:.2} KiB per connection",
        if sse { "sse" } else { "ws" },
        start.elapsed().as_secs_f64(),
        before,
        idle,
        (idle.saturating_sub(before)) as f64 / n.max(1) as f64
    );
    // Load: each job makes four events (QUEUED, STARTING, RUNNING, SUCCESS).
    measuring.store(true, std::sync::atomic::Ordering::Relaxed);
    let jobs_per_s = (rate / 4).max(1);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / jobs_per_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let load_end = Instant::now() + Duration::from_secs(secs);
    let mut k = 0usize;
    while Instant::now() < load_end {
        tick.tick().await;
        let ch = format!("bench-{}", (k * 7919) % channels);
        k += 1;
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let _ = http
                .post(format!("{url}/async/jobs"))
                .json(&serde_json::json!({"type": "bench.noop", "channel": ch}))
                .send()
                .await;
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let h = hist.lock();
    let peak = rss_kib(pid);
    println!(
        "jobs {k} ({} events/s) over {secs}s: deliveries {} | latency commit->client p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms max {:.2} ms | server RSS under load {} KiB",
        jobs_per_s * 4,
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.9) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        peak
    );
    std::process::exit(0);
}
