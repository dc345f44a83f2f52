//! The embedded store on a full disk: a real `runyard serve` whose data dir is a small tmpfs,
//! filled while a local job runs. The job's outcome, which the store cannot write when the
//! process ends, is written once there is room again (it was dropped: the reaper then took the
//! job back and ran a finished job again, or ended it ERROR), and its log lines are all stored,
//! or a note says how many were lost and where.
//!
//! Needs root (to mount the tmpfs); elsewhere it says so and passes without running.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::child::{ChildServer, Client};
use support::tmpfs::{self, fill};

const LINES: usize = 80;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_no_outcome_and_no_log_line_without_a_note() {
    let Some(mounted) = tmpfs::mount("16m") else {
        return;
    };
    let (dir, mnt) = (&mounted.dir, mounted.path.clone());
    let runs = dir.path().join("runs");
    let done = dir.path().join("done");
    let config = format!(
        r#"
data_dir = "{data}"
[worker]
lease_ttl = "20s"

[[runners]]
kind = "local"
types = ["talk.*"]
command = ["/bin/sh", "-c", "i=0; while [ $i -lt {LINES} ]; do echo line-$i; i=$((i+1)); sleep 0.05; done; echo ran >> {runs}; touch {done}"]
max_attempts = 2

[[runners]]
kind = "service"
types = ["runyard.*"]
"#,
        data = mnt.join("data").display(),
        runs = runs.display(),
        done = done.display(),
    );
    let cfg = dir.path().join("runyard.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut server = ChildServer::start(&cfg, &dir.path().join("server.log"));
    server.wait_healthy(Duration::from_secs(20)).await;
    let c = Client::new(&server.url);
    let (s, v) = c
        .call(
            reqwest::Method::POST,
            "/async/jobs",
            Some(json!({"type": "talk.x"})),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let id = v["job_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.job(&id).await["status"] != "RUNNING" {
        assert!(Instant::now() < deadline, "never RUNNING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // No room left: the filler takes what the filesystem has, then submits fill what the
    // database had free until the store refuses one.
    let filler = fill(&mnt);
    let pad = "x".repeat(20_000);
    let mut refused = None;
    for _ in 0..500 {
        let (s, v) = c
            .call(
                reqwest::Method::POST,
                "/async/jobs",
                Some(json!({"type": "runyard.noop", "args": {"pad": pad}})),
            )
            .await;
        if s >= 500 {
            refused = Some(v);
            break;
        }
        assert_eq!(s, 202, "{v}");
    }
    let refused = refused.expect("the store never ran out of room");
    assert!(
        refused.to_string().contains("full"),
        "refused for another reason: {refused}"
    );
    // The job ends while the disk is full, and stays so past the time its log lines are tried
    // again (10 s): its last lines and its outcome cannot be written then.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done.exists() {
        assert!(Instant::now() < deadline, "the job's process never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    drop(filler);
    std::fs::remove_file(mnt.join("filler")).unwrap();

    let deadline = Instant::now() + Duration::from_secs(40);
    let end = loop {
        let j = c.job(&id).await;
        if ["SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"]
            .contains(&j["status"].as_str().unwrap_or(""))
        {
            break j;
        }
        assert!(Instant::now() < deadline, "never ended: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(end["status"], "SUCCESS", "{end}");
    assert_eq!(end["attempt"], 1, "run once: {end}");
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap().lines().count(),
        1,
        "the finished job ran again"
    );
    let (s, logs) = c
        .call(
            reqwest::Method::GET,
            &format!("/async/jobs/{id}/logs?limit=1000"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{logs}");
    let lines: Vec<String> = logs["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("{logs}"))
        .iter()
        .map(|l| l["line"].as_str().unwrap_or("").to_string())
        .collect();
    let kept = lines.iter().filter(|l| l.starts_with("line-")).count();
    let lost: usize = lines
        .iter()
        .filter_map(|l| l.strip_prefix("[runyard] "))
        .filter_map(|l| l.split(" line(s) lost").next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(
        kept + lost,
        LINES,
        "every line stored or counted by a note: {lines:?}"
    );
}

/// Probe: after a full disk was freed, an idle node stayed not ready (`/health/ready` 503 "the
/// last write failed") until some write committed: one the readiness probe had taken out of
/// service got none, and never came back. The health check now tries a small write of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_is_ready_again_once_a_full_disk_has_room() {
    let Some(mounted) = tmpfs::mount("8m") else {
        return;
    };
    let (dir, mnt) = (&mounted.dir, mounted.path.clone());
    let config = format!(
        "data_dir = \"{}\"\n[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n",
        mnt.join("data").display()
    );
    let cfg = dir.path().join("runyard.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut server = ChildServer::start(&cfg, &dir.path().join("server.log"));
    server.wait_healthy(Duration::from_secs(20)).await;
    let c = Client::new(&server.url);
    let (url, http) = (&c.url, &c.http);
    let ready = || async {
        http.get(format!("{url}/health/ready"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(ready().await, 200);
    // Full: submits of jobs that never run (due in 2100) until one is refused.
    let filler = fill(&mnt);
    let pad = "x".repeat(20_000);
    let refused = 'fill: {
        for _ in 0..500 {
            let body = json!({"type": "runyard.noop", "run_at": "2100-01-01T00:00:00Z",
                              "args": {"pad": pad}});
            let (s, v) = c
                .call(reqwest::Method::POST, "/async/jobs", Some(body))
                .await;
            if s >= 500 {
                break 'fill v;
            }
            assert_eq!(s, 202, "{v}");
        }
        panic!("the store never ran out of room");
    };
    assert!(refused.to_string().contains("full"), "{refused}");
    assert_eq!(ready().await, 503, "not ready while the disk is full");
    // Room again; no client writes: the probe alone must see it.
    drop(filler);
    std::fs::remove_file(mnt.join("filler")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while ready().await != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready again after the disk was freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
