//! The Superset-compatible event stream over real HTTP: every status change in order, no gaps,
//! `last_id` exclusive, and a `resync` marker when retention dropped what a client asks for.

mod support;

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};
use support::*;

const BUILTINS: &str = r#"
[[runners]]
kind = "service"
types = ["runyard.*"]
concurrency = 4
"#;

fn id_of(e: &Value) -> u64 {
    e["id"]
        .as_str()
        .unwrap_or_else(|| panic!("event id is not a string: {e}"))
        .parse()
        .unwrap_or_else(|_| panic!("event id is not an integer: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_come_in_order_without_gaps() {
    let ts = TestServer::start(BUILTINS).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            ts.submit_ok(json!({"type": "runyard.noop", "args": {"i": i}}))
                .await,
        );
    }
    for id in &ids {
        let job = ts.wait_terminal(id, WAIT).await;
        assert_eq!(status_of(&job), "SUCCESS", "{job:#}");
    }

    // Page through everything from the start (100 at most per page).
    let first_page = ts.events("0").await;
    assert_eq!(first_page.len(), 100, "a full first page");
    let events = ts.all_events("0").await;
    assert_eq!(
        events.len(),
        30 * 4,
        "QUEUED, STARTING, RUNNING, SUCCESS per job"
    );
    assert_eq!(&events[..100], &first_page[..]);
    let nums: Vec<u64> = events.iter().map(id_of).collect();
    assert!(
        nums.windows(2).all(|w| w[0] < w[1]),
        "event ids must strictly increase: {nums:?}"
    );
    let unique: HashSet<u64> = nums.iter().copied().collect();
    assert_eq!(unique.len(), nums.len());

    // Per job: the status story, with Superset's words.
    let mut per_job: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for e in &events {
        assert_eq!(e["type"], "status", "{e}");
        per_job
            .entry(e["job_id"].as_str().unwrap().to_string())
            .or_default()
            .push(e);
    }
    assert_eq!(per_job.len(), 30);
    for id in &ids {
        let evs = per_job
            .get(id)
            .unwrap_or_else(|| panic!("no events for {id}"));
        let story: Vec<(&str, &str)> = evs
            .iter()
            .map(|e| {
                (
                    e["runyard_status"].as_str().unwrap(),
                    e["status"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            story,
            [
                ("QUEUED", "pending"),
                ("STARTING", "pending"),
                ("RUNNING", "running"),
                ("SUCCESS", "done"),
            ],
            "job {id}"
        );
        for e in evs {
            assert_eq!(
                e["channel_id"],
                id.as_str(),
                "default channel is the job id: {e}"
            );
            assert_eq!(e["result_url"], format!("/async/jobs/{id}/result"));
            assert_eq!(e["errors"], json!([]));
        }
    }

    // `last_id` is exclusive, and paging with a small limit gives the same stream.
    for k in [0usize, 5, 57, 118] {
        let after = ts.events(&nums[k].to_string()).await;
        assert_eq!(id_of(&after[0]), nums[k + 1], "after {}", nums[k]);
    }
    let last = nums.last().unwrap().to_string();
    assert!(ts.events(&last).await.is_empty());
    let mut small = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let page = ts.events_page(&format!("last_id={cursor}&limit=7")).await;
        assert!(page.len() <= 7);
        let Some(l) = page.last() else { break };
        cursor = l["id"].as_str().unwrap().to_string();
        small.extend(page);
    }
    assert_eq!(small, events);
    // Without last_id: from the oldest kept.
    assert_eq!(ts.events_page("").await, first_page);

    // An error carries its message, and the Superset word `error`.
    let failed = ts
        .submit_ok(json!({"type": "runyard.fail", "args": {"message": "nope"}, "max_attempts": 1}))
        .await;
    ts.wait_terminal(&failed, WAIT).await;
    let tail = ts.all_events(&last).await;
    let end = tail
        .iter()
        .find(|e| e["job_id"] == failed.as_str() && e["runyard_status"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR event in {tail:#?}"));
    assert_eq!(end["status"], "error");
    assert_eq!(end["errors"][0]["message"], "nope", "{end}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_retention_gets_a_resync_event_first() {
    let ts = TestServer::builder(BUILTINS)
        .config("[events]\nglobal_limit = 10\n[retention]\ninterval = \"200ms\"")
        .start()
        .await;
    let mut ids = Vec::new();
    ids.push(ts.submit_ok(json!({"type": "runyard.noop"})).await);
    // The client's cursor: the first event (ids start where the database's own first id is).
    let early = ts.events("0").await[0]["id"]
        .as_str()
        .expect("an event id")
        .to_string();
    for _ in 1..30 {
        ids.push(ts.submit_ok(json!({"type": "runyard.noop"})).await);
    }
    for id in &ids {
        assert_eq!(status_of(&ts.wait_terminal(id, WAIT).await), "SUCCESS");
    }
    // 120 events were written; retention keeps the newest 10. Wait until it has run past them.
    let page = eventually("retention trimmed the stream", WAIT, || async {
        let page = ts.events(&early).await;
        let kept = page.iter().filter(|e| e["type"] != "resync").count();
        (page.first().is_some_and(|e| e["type"] == "resync") && kept <= 10).then_some(page)
    })
    .await;
    assert_eq!(page[0]["type"], "resync", "{page:#?}");
    assert!(page[1..].iter().all(|e| e["type"] == "status"), "{page:#?}");
    assert!(!page[1..].is_empty());
    let nums: Vec<u64> = page.iter().map(id_of).collect();
    assert!(nums.windows(2).all(|w| w[0] < w[1]), "{nums:?}");
    let early: u64 = early.parse().unwrap();
    assert!(
        nums[0] > early,
        "the resync event is past the client's last_id: {nums:?}"
    );
    // Exactly the newest `global_limit` events are kept, up to the end of the stream.
    assert_eq!(page.len() - 1, 10, "{page:#?}");
    assert!(ts
        .events(&nums.last().unwrap().to_string())
        .await
        .is_empty());

    // last_id=0 is behind too; a last_id past the trim point gets no resync.
    assert_eq!(ts.events("0").await[0]["type"], "resync");
    let after = ts.events(&nums[1].to_string()).await;
    assert!(after.iter().all(|e| e["type"] == "status"), "{after:#?}");
    assert_eq!(after.len(), page.len() - 2);
}

/// The progress values of `id`'s progress events after `last_id`, in order.
async fn progress_events(ts: &TestServer, last_id: &str, id: &str) -> Vec<f64> {
    ts.all_events(last_id)
        .await
        .iter()
        .filter(|e| e["job_id"] == id && e["type"] == "progress")
        .map(|e| e["progress"].as_f64().expect("progress is a number"))
        .collect()
}

/// A progress report that came sooner than `events.progress_interval` after the job's last
/// progress event is stored at once, and gets its own event once the interval is over: a client
/// following the events (and a `progress` webhook) ends on the last value reported while the job
/// still runs, not on an older one until the job ends. Whether the job reported through its
/// signed hook (a process) or through the worker's reporter (a service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_report_held_back_by_the_interval_is_sent_once_it_is_over() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let held = release.clone();
    let ts = TestServer::builder(
        r#"
[[runners]]
kind = "service"
types = ["svc.*"]

[[runners]]
name = "hold"
kind = "local"
types = ["hold.*"]
command = ["/bin/sh", "-c", "sleep 30"]
"#,
    )
    .config("[events]\nprogress_interval = \"1s\"")
    .service("svc.steps", move |ctx| {
        let held = held.clone();
        async move {
            ctx.progress(0.1, None);
            // Longer than the reporter's batching (100 ms): two reports, the second held back.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            ctx.progress(0.5, None);
            held.notified().await;
            Ok(json!("done"))
        }
    })
    .start()
    .await;
    let start = ts.last_event_id().await;

    // Through the hook: two reports in a row, as the job's own client sends them.
    let proc_id = ts.submit_ok(json!({"type": "hold.steps"})).await;
    let job = ts.wait_status(&proc_id, "RUNNING", WAIT).await;
    let attempt = job["attempt"].as_u64().expect("attempt") as u32;
    let secret = runyard_hooks::derive_job_secret(&ts.running().app.master_key, &proc_id, attempt);
    let client = runyard_hooks::JobClient::new(proc_id.clone(), secret, &ts.at("/async"))
        .expect("job client");
    client.progress(0.1, None).await.expect("first report");
    client.progress(0.7, None).await.expect("second report");
    // Stored at once: a read shows it.
    assert_eq!(ts.get_job(&proc_id).await["progress"], json!(0.7));

    let svc_id = ts.submit_ok(json!({"type": "svc.steps"})).await;
    for (id, last) in [(&proc_id, 0.7), (&svc_id, 0.5)] {
        let seen = eventually("the last value's progress event", WAIT, || async {
            let seen = progress_events(&ts, &start, id).await;
            (seen.last() == Some(&last)).then_some(seen)
        })
        .await;
        assert_eq!(seen.first(), Some(&0.1), "{id}: {seen:?}");
        assert_eq!(seen.len(), 2, "{id}: one event per value: {seen:?}");
        // Sent while the job still runs, not by its end.
        assert_eq!(status_of(&ts.get_job(id).await), "RUNNING", "{id}");
    }
    release.notify_one();
    ts.wait_status(&svc_id, "SUCCESS", WAIT).await;
    // Nothing held: no other progress event follows.
    let (st, _) = ts
        .post(&format!("/async/jobs/{proc_id}/cancel"), None)
        .await;
    assert!(st.is_success(), "cancel: {st}");
    ts.wait_terminal(&proc_id, WAIT).await;
    assert_eq!(progress_events(&ts, &start, &proc_id).await, [0.1, 0.7]);
}
