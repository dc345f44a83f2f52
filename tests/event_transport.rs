//! The event transports with real clients against a real server (embedded store): one cursor
//! on polling, WebSocket and SSE; slow consumers, caps, pings and shutdown, each with its close
//! code. (Many nodes on one Redis: tests/event_nodes.rs.)

mod support;
mod ws_support;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use support::{TestServer, WAIT};
use ws_support::*;

const BUILTINS: &str = r#"
[[runners]]
kind = "service"
types = ["runyard.*"]
"#;

fn addr(ts: &TestServer) -> String {
    ts.url.trim_start_matches("http://").to_string()
}

async fn submit_on(ts: &TestServer, channel: &str) -> String {
    ts.submit_ok(json!({"type": "runyard.noop", "channel": channel}))
        .await
}

fn stats(ts: &TestServer) -> runyard::events::StatsSnapshot {
    ts.running().app.events.stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_channels_three_sockets_get_exactly_what_polling_shows() {
    let ts = TestServer::start(BUILTINS).await;
    let a = addr(&ts);
    // Events before the sockets connect are replayed; the rest arrive live.
    let mut jobs_a = vec![submit_on(&ts, "chan-a").await];
    let mut jobs_b = vec![submit_on(&ts, "chan-b").await];
    for j in jobs_a.iter().chain(&jobs_b) {
        ts.wait_terminal(j, WAIT).await;
    }
    let mut a1 = connect(&a, "channel=chan-a").await;
    let mut a2 = connect(&a, "channel=chan-a&last_id=0").await;
    let mut b1 = connect(&a, "channel=chan-b").await;
    for _ in 0..6 {
        jobs_a.push(submit_on(&ts, "chan-a").await);
        jobs_b.push(submit_on(&ts, "chan-b").await);
    }
    let ra1 = read_until(&mut a1, WAIT, |e| all_terminal(e, &jobs_a)).await;
    let ra2 = read_until(&mut a2, WAIT, |e| all_terminal(e, &jobs_a)).await;
    let rb1 = read_until(&mut b1, WAIT, |e| all_terminal(e, &jobs_b)).await;
    let pa = poll_all(&ts.url, "chan-a", "0").await;
    let pb = poll_all(&ts.url, "chan-b", "0").await;
    assert_eq!(pa.len(), 7 * 4, "four status events per job");
    assert_eq!(ra1.events, pa, "socket 1 of chan-a = polling");
    assert_eq!(ra2.events, pa, "socket 2 of chan-a = polling");
    assert_eq!(rb1.events, pb, "socket of chan-b = polling");
    assert!(ra1.events.iter().all(|e| e["channel_id"] == "chan-a"));
    // Nothing more is pending on any socket (no duplicate after the last event).
    for ws in [&mut a1, &mut a2, &mut b1] {
        let more = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
        assert!(
            !matches!(
                more,
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_))))
            ),
            "{more:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_last_id_during_a_burst_has_no_gap_and_no_duplicate() {
    let ts = TestServer::start(BUILTINS).await;
    let a = addr(&ts);
    let burst = {
        let (url, http) = (ts.url.clone(), ts.client.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..80 {
                let v: Value = http
                    .post(format!("{url}/async/jobs"))
                    .json(&json!({"type": "runyard.noop", "channel": "burst"}))
                    .send()
                    .await
                    .expect("submit")
                    .json()
                    .await
                    .expect("json");
                ids.push(v["job_id"].as_str().expect("job_id").to_string());
            }
            ids
        })
    };
    let mut seen: Vec<Value> = Vec::new();
    let mut reconnects = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let jobs = loop {
        assert!(tokio::time::Instant::now() < deadline, "burst ends in time");
        let q = match seen.last() {
            Some(e) => format!("channel=burst&last_id={}", e["id"].as_str().unwrap()),
            None => "channel=burst".to_string(),
        };
        let mut ws = connect(&a, &q).await;
        reconnects += 1;
        // Up to 7 events a connection: fewer when the reader caught up with the burst (its
        // last events may number fewer than 7); the end compares everything read with polling.
        let r = read_up_to(&mut ws, 7, Duration::from_secs(2)).await;
        assert!(r.closed.is_none() && !r.eof, "{r:?}");
        seen.extend(r.events);
        // Half the time a polite close, else the connection just drops.
        if reconnects % 2 == 0 {
            close(ws).await;
        } else {
            drop(ws);
        }
        if burst.is_finished() {
            break burst.await.expect("burst");
        }
    };
    // Catch up to the end on one last socket.
    let q = match seen.last() {
        Some(e) => format!("channel=burst&last_id={}", e["id"].as_str().unwrap()),
        None => "channel=burst".to_string(),
    };
    let mut ws = connect(&a, &q).await;
    let mut all_seen = seen.clone();
    let r = read_until(&mut ws, Duration::from_secs(60), |e| {
        let mut v = all_seen.clone();
        v.extend_from_slice(e);
        all_terminal(&v, &jobs)
    })
    .await;
    all_seen.extend(r.events);
    let polled = poll_all(&ts.url, "burst", "0").await;
    assert!(
        reconnects >= 3,
        "reconnected during the burst: {reconnects}"
    );
    assert_eq!(ids(&all_seen), ids(&polled), "no gap, no duplicate");
    assert_eq!(all_seen, polled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_1008_and_others_keep_receiving() {
    // The server waits up to a ping interval for the stuck client to take its close frame; on
    // a loaded CI machine the steps below before it reads took longer than 60 s (the socket was
    // dropped unclosed), so give it 300 s.
    let ts = TestServer::builder(BUILTINS)
        .config("[events]\nsend_buffer = 16\nping_interval = \"300s\"\nchannel_limit = 100000")
        .start()
        .await;
    let a = addr(&ts);
    let mut stuck = connect_small(&a, "channel=slow").await;
    let mut reader = connect(&a, "channel=slow").await;
    // The reader keeps reading in the background while the stuck client never reads.
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let reader_task = tokio::spawn(async move {
        let r = read_until(&mut reader, Duration::from_secs(900), |e| {
            if let Some(l) = e.last() {
                let _ = tx.send(l.clone());
            }
            false
        })
        .await;
        panic!("the reading socket ended: {:?}", r.closed);
    });
    // Commit events on the channel until the server gives up on the stuck client.
    let mut jobs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    while stats(&ts).slow_closed == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never closed; {} jobs",
            jobs.len()
        );
        let mut batch = Vec::new();
        for _ in 0..10 {
            batch.push(ts.submit_ok(json!({"type": "runyard.noop", "channel": "slow"})));
        }
        for id in futures::future::join_all(batch).await {
            jobs.push(id);
        }
    }
    eprintln!(
        "the stuck client was closed after {} jobs, {:?}",
        jobs.len(),
        stats(&ts)
    );
    // The other socket still gets every event, also the ones after the close.
    for _ in 0..5 {
        jobs.push(submit_on(&ts, "slow").await);
    }
    let mut got: Vec<Value> = Vec::new();
    // The jobs whose end the reader has not seen yet, kept as events arrive: checking the whole
    // list against every event at each one (`all_terminal`) is cubic, and with the 1,000-2,000
    // jobs it takes to fill the stuck socket that alone ran for minutes in a debug build.
    let mut open_jobs: std::collections::HashSet<&str> = jobs.iter().map(|j| j.as_str()).collect();
    let wait = tokio::time::Instant::now() + Duration::from_secs(60);
    while !open_jobs.is_empty() {
        let e = match tokio::time::timeout_at(wait, seen.recv()).await {
            Ok(e) => e.expect("reader alive"),
            Err(_) => {
                let polled = poll_all(&ts.url, "slow", "0").await;
                let missing: Vec<&Value> = polled
                    .iter()
                    .filter(|p| !got.iter().any(|g| g["id"] == p["id"]))
                    .collect();
                panic!(
                    "the reading socket stopped receiving: {} of {} events, {} jobs; missing {:?}; stats {:?}",
                    got.len(),
                    polled.len(),
                    jobs.len(),
                    missing.iter().take(5).collect::<Vec<_>>(),
                    stats(&ts)
                );
            }
        };
        if matches!(
            e["runyard_status"].as_str(),
            Some("SUCCESS" | "ERROR" | "CANCELLED" | "TIMEOUT")
        ) {
            if let Some(j) = e["job_id"].as_str() {
                open_jobs.remove(j);
            }
        }
        got.push(e);
    }
    let polled = poll_all(&ts.url, "slow", "0").await;
    assert_eq!(ids(&got), ids(&polled), "the reader missed nothing");
    reader_task.abort();
    // The stuck client, reading at last: what was in flight, then close 1008 with its cursor.
    let r = read_to_close(&mut stuck, Duration::from_secs(60)).await;
    let (code, reason) = r.closed.clone().expect("a close frame");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("slow consumer"), "{reason}");
    assert!(!r.events.is_empty());
    assert!(r.events.len() < polled.len(), "it was cut short");
    let last = r.events.last().unwrap()["id"].as_str().unwrap().to_string();
    assert!(
        reason.ends_with(&format!("last_id={last}")),
        "{reason} vs {last}"
    );
    // It resumes from its cursor: together exactly the channel's events.
    let mut again = connect(&a, &format!("channel=slow&last_id={last}")).await;
    let rest = read_until(&mut again, WAIT, |e| {
        e.last().map(|l| &l["id"]) == polled.last().map(|l| &l["id"])
    })
    .await;
    let mut all = r.events;
    all.extend(rest.events);
    assert_eq!(all, polled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_close_1013_and_a_thousand_cycles_leave_nothing_behind() {
    let ts = TestServer::builder(BUILTINS)
        .config("[events]\nmax_connections = 3\nmax_per_channel = 2")
        .start()
        .await;
    let a = addr(&ts);
    let c1 = connect(&a, "channel=x").await;
    let c2 = connect(&a, "channel=x").await;
    // A socket counts once its stream is registered, just after the upgrade: wait for it, or
    // a loaded machine lets the third connect race the first two.
    support::eventually("two streams open", WAIT, || async {
        (stats(&ts).open == 2).then_some(())
    })
    .await;
    let mut c3 = connect(&a, "channel=x").await;
    let r = read_to_close(&mut c3, WAIT).await;
    let (code, reason) = r.closed.expect("close frame");
    assert_eq!(code, 1013);
    assert!(reason.contains("events.max_per_channel"), "{reason}");
    let other = connect(&a, "channel=y").await;
    support::eventually("three streams open", WAIT, || async {
        (stats(&ts).open == 3).then_some(())
    })
    .await;
    let mut c4 = connect(&a, "channel=z").await;
    let (code, reason) = read_to_close(&mut c4, WAIT).await.closed.expect("close");
    assert_eq!(code, 1013);
    assert!(reason.contains("events.max_connections"), "{reason}");
    let sse = ts
        .client
        .get(ts.at("/async/events/sse?channel=z"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 503);
    let body: Value = sse.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams");
    let s = stats(&ts);
    assert_eq!((s.open, s.refused_channel, s.refused_node), (3, 1, 2));
    // A freed slot is usable again, and the sockets admitted work.
    close(c1).await;
    support::eventually("slot freed", WAIT, || async {
        (stats(&ts).open == 2).then_some(())
    })
    .await;
    let mut c5 = connect(&a, "channel=x").await;
    let job = submit_on(&ts, "x").await;
    let r = read_until(&mut c5, WAIT, |e| {
        all_terminal(e, std::slice::from_ref(&job))
    })
    .await;
    assert!(r.closed.is_none());
    drop((c2, other, c5));
    support::eventually("all closed", WAIT, || async {
        let s = stats(&ts);
        (s.open == 0 && s.channels == 0).then_some(())
    })
    .await;

    // 1,000 connect/close cycles (some polite, some dropped): nothing stays behind.
    let rss = || -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    };
    let mut before = 0;
    for i in 0..1100u32 {
        if i == 100 {
            before = rss();
        }
        let ws = connect(&a, &format!("channel=cyc-{}", i % 7)).await;
        if i % 2 == 0 {
            close(ws).await;
        } else {
            drop(ws);
        }
    }
    support::eventually("every cycle's stream gone", WAIT, || async {
        let s = stats(&ts);
        (s.open == 0 && s.channels == 0).then_some(())
    })
    .await;
    let grown = rss().saturating_sub(before);
    assert!(grown < 16 * 1024, "RSS grew {grown} KiB over 1,000 cycles");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_answer_pings_is_closed() {
    let ts = TestServer::builder(BUILTINS)
        .config("[events]\nping_interval = \"300ms\"")
        .start()
        .await;
    let a = addr(&ts);
    let mut deaf = connect(&a, "channel=p").await;
    let mut alive = connect(&a, "channel=p").await;
    // `alive` reads (and so answers pings) the whole time, on its own task: a pause in its
    // reading longer than a ping interval would close it too. `deaf` reads nothing.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Read>();
    let alive_task = tokio::spawn(async move {
        loop {
            let r = read_up_to(&mut alive, 1, Duration::from_secs(60)).await;
            let ended = r.closed.is_some() || r.eof;
            if tx.send(r).is_err() || ended {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(stats(&ts).ping_timeouts >= 1);
    let r = read_to_close(&mut deaf, WAIT).await;
    let (code, reason) = r.closed.expect("a close frame");
    assert_eq!(code, 1001, "{reason}");
    assert!(reason.contains("pong"), "{reason}");
    // The answering one is still open and gets the events of a new job.
    let job = submit_on(&ts, "p").await;
    let mut events = Vec::new();
    while !all_terminal(&events, std::slice::from_ref(&job)) {
        let r = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("the answering socket gets the job's events")
            .expect("the answering socket's reader");
        assert!(
            r.closed.is_none() && !r.eof,
            "the answering socket closed: {r:?}"
        );
        events.extend(r.events);
    }
    alive_task.abort();
    assert_eq!(stats(&ts).ping_timeouts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_1012_and_ends_sse() {
    let mut ts = TestServer::start(BUILTINS).await;
    let a = addr(&ts);
    let mut s1 = connect(&a, "channel=q").await;
    let mut s2 = connect(&a, "").await;
    let sse = ts
        .client
        .get(ts.at("/async/events/sse?channel=q"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let job = submit_on(&ts, "q").await;
    let r = read_until(&mut s1, WAIT, |e| {
        all_terminal(e, std::slice::from_ref(&job))
    })
    .await;
    let last = r.events.last().unwrap()["id"].as_str().unwrap().to_string();
    let stop = async { ts.stop().await };
    let read = async {
        let r1 = read_to_close(&mut s1, WAIT).await;
        let r2 = read_to_close(&mut s2, WAIT).await;
        let body = tokio::time::timeout(WAIT, sse.text()).await;
        (r1, r2, body)
    };
    let ((), (r1, r2, body)) = tokio::join!(stop, read);
    let (code, reason) = r1.closed.expect("close frame");
    assert_eq!(code, 1012, "{reason}");
    assert!(reason.contains(&format!("last_id={last}")), "{reason}");
    assert_eq!(r2.closed.expect("close frame").0, 1012);
    let body = body.expect("SSE ends with the server").expect("body");
    assert!(body.contains("data:"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_with_last_event_id_resumes_exactly_and_bad_cursors_are_named() {
    let ts = TestServer::start(BUILTINS).await;
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(submit_on(&ts, "s").await);
    }
    for j in &jobs {
        ts.wait_terminal(j, WAIT).await;
    }
    let before = poll_all(&ts.url, "s", "0").await;
    let k = 5;
    let from = before[k]["id"].as_str().unwrap().to_string();
    let resp = ts
        .client
        .get(ts.at("/async/events/sse?channel=s"))
        .header("Last-Event-ID", &from)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for _ in 0..2 {
        jobs.push(submit_on(&ts, "s").await);
    }
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut got: Vec<(String, Value)> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !all_terminal(
        &got.iter().map(|g| g.1.clone()).collect::<Vec<_>>(),
        &jobs[3..],
    ) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("sse in time")
            .expect("open")
            .expect("chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let id = block.lines().find_map(|l| l.strip_prefix("id:"));
            let data = block.lines().find_map(|l| l.strip_prefix("data:"));
            if let (Some(id), Some(data)) = (id, data) {
                got.push((
                    id.trim().to_string(),
                    serde_json::from_str(data.trim()).unwrap(),
                ));
            }
        }
    }
    let all = poll_all(&ts.url, "s", "0").await;
    assert!(got.iter().all(|(id, ev)| ev["id"] == id.as_str()));
    let evs: Vec<Value> = got.into_iter().map(|g| g.1).collect();
    assert_eq!(
        evs,
        all[k + 1..].to_vec(),
        "exactly the events after Last-Event-ID"
    );

    // A cursor that is not an id: 400 naming where it came from, on every transport.
    let bad = ts
        .client
        .get(ts.at("/async/events/sse"))
        .header("Last-Event-ID", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let v: Value = bad.json().await.unwrap();
    assert_eq!(v["error"]["code"], "bad_last_id");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Last-Event-ID"),
        "{v}"
    );
    let r = ts
        .client
        .get(ts.at("/api/v1/async_event/?last_id=12x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "bad_last_id");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`last_id`"),
        "{v}"
    );
    let ws =
        tokio_tungstenite::connect_async(format!("ws://{}/async/events/ws?last_id=-1", addr(&ts)))
            .await;
    match ws {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(
                body.contains("bad_last_id") && body.contains("`last_id`"),
                "{body}"
            );
        }
        other => panic!("no upgrade for a bad last_id: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_behind_retention_gets_resync_first_then_the_kept_events() {
    let ts = TestServer::builder(BUILTINS)
        .config("[events]\nchannel_limit = 8\n[retention]\ninterval = \"200ms\"")
        .start()
        .await;
    let mut jobs = Vec::new();
    for _ in 0..6 {
        jobs.push(submit_on(&ts, "old").await);
    }
    for j in &jobs {
        ts.wait_terminal(j, WAIT).await;
    }
    let kept = support::eventually("channel trimmed", WAIT, || async {
        let p = poll_all(&ts.url, "old", "0").await;
        // Retention runs every 200 ms: wait for a pass after the last event.
        (p.first().is_some_and(|e| e["type"] == "resync") && p.len() == 9).then_some(p)
    })
    .await;
    let mut ws = connect(&addr(&ts), "channel=old&last_id=0").await;
    let r = read_until(&mut ws, WAIT, |e| e.len() >= kept.len()).await;
    assert_eq!(r.events[0]["type"], "resync", "{:?}", r.events);
    assert_eq!(ids(&r.events), ids(&kept));
    assert_eq!(r.events.len(), 9, "resync + the 8 kept");
}

/// A client message over the size the server reads (64 KiB) gets a close frame 1009 saying so,
/// not a dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_big_is_closed_with_1009() {
    use futures::SinkExt;
    let ts = TestServer::builder(BUILTINS).start().await;
    let mut ws = connect(&addr(&ts), "channel=big").await;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        "x".repeat(70_000),
    ))
    .await
    .expect("send");
    let r = read_to_close(&mut ws, WAIT).await;
    let (code, reason) = r
        .closed
        .clone()
        .unwrap_or_else(|| panic!("no close frame: {r:?}"));
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("64 KiB"), "{reason}");
}
