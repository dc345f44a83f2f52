//! A submit the store did not confirm (Redis hung: connections open, no answer) may still be
//! carried out once Redis answers again: its 503 says so, before `api.request_timeout` whatever
//! `store.retry` is, with the job's id when it has no idempotency key; a retry with the key
//! makes no second job.

mod redis_support;
mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};

use redis_support::TestRedis;
use support::TestServer;

/// `body` submitted while Redis is stopped (SIGSTOP); Redis resumed after the answer.
async fn submit_while_hung(ts: &TestServer, r: &TestRedis, body: &Value) -> (StatusCode, Value) {
    let pid = r.pid().expect("a private redis") as i32;
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let answer = ts.submit(body.clone()).await;
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_unconfirmed_in_an_outage_says_so_and_a_keyed_retry_makes_no_second_job() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    // `store.retry` stays 30 s: the submit must answer before the request's own 3 s limit,
    // whose 503 (`request_timeout`) could not say the job may exist.
    let ts = TestServer::builder("[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n")
        .config(&format!(
            "{}\n[api]\nrequest_timeout = \"3s\"\n",
            r.server_config("outage-test-master-key-0123456789")
        ))
        .start()
        .await;

    // Without a key: the id the job has if it was stored.
    let (st, v) = submit_while_hung(&ts, &r, &json!({"type": "runyard.noop"})).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    let maybe = v["error"]["job_id"]
        .as_str()
        .expect("the job's id")
        .to_string();
    let said = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        said.contains("may have been stored") && said.contains(&maybe),
        "{said}"
    );
    // Once Redis has caught up (the write may land after a read on another connection: the same
    // answer twice, 250 ms apart), the id tells: the job is there, or no job is.
    let mut last = None;
    let mut stored = None;
    for _ in 0..80 {
        let (st, _) = ts.get(&format!("/async/jobs/{maybe}")).await;
        let now = (st, ts.count_jobs(None).await);
        if last == Some(now) && (now.0 == StatusCode::OK || now.0 == StatusCode::NOT_FOUND) {
            stored = Some(now);
            break;
        }
        last = Some(now);
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let (looked, count) = stored.expect("Redis answers again");
    let stored = usize::from(looked == StatusCode::OK);
    assert_eq!(count, stored, "the job under its id, or none");

    // With a key: the retry with it returns the job if the first submit was carried out after
    // all, else makes it; one job with the key either way.
    let body = json!({"type": "runyard.noop", "idempotency_key": "outage-1"});
    let (st, v) = submit_while_hung(&ts, &r, &body).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["error"]["job_id"].is_null(), "{v}");
    let said = v["error"]["message"].as_str().unwrap_or("");
    assert!(said.contains("idempotency_key"), "{said}");
    let first = support::eventually("a retry is accepted", support::WAIT, || async {
        let (st, v) = ts.submit(body.clone()).await;
        (st == StatusCode::ACCEPTED).then_some(v)
    })
    .await;
    let (st, again) = ts.submit(body.clone()).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["job_id"], first["job_id"], "a replay of the key");
    assert_eq!(ts.count_jobs(None).await, stored + 1);
}

/// The sum of the series of `name` whose labels include each of `labels` (`op="finish"`).
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A worker's finish sent while Redis is hung gives up after `store.retry`, and Redis carries it
/// out once it answers again: the worker reads the job to tell, and the outcome is counted (and
/// logged) once, as an answered one is; the job is not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_committed_after_its_write_gave_up_is_counted_once() {
    use std::sync::Arc;
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (g, n) = (gate.clone(), runs.clone());
    // The lease outlives the outage: the job is not taken back meanwhile.
    let ts = TestServer::builder("[[runners]]\nkind = \"service\"\ntypes = [\"gated\"]\n")
        .config(&format!(
            "{}retry = \"1s\"\n[worker]\nlease_ttl = \"30s\"\n",
            r.server_config("outage-test-master-key-0123456789")
        ))
        .service("gated", move |_ctx| {
            let g = g.clone();
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                g.acquire().await.expect("gate").forget();
                Ok(json!({"done": true}))
            }
        })
        .start()
        .await;
    let id = ts.submit_ok(json!({"type": "gated"})).await;
    ts.wait_status(&id, "RUNNING", support::WAIT).await;
    let pid = r.pid().expect("a private redis") as i32;
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    gate.add_permits(1);
    // The finish gives up (`store.retry`, 1 s): counted as a failed store call.
    support::eventually("the worker's finish gave up", support::WAIT, || async {
        let text = ts.metrics_text().await;
        (metric(&text, "runyard_store_errors_total", &["op=\"finish\""]) >= 1.0).then_some(())
    })
    .await;
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    let job = ts.wait_terminal(&id, support::WAIT).await;
    assert_eq!(job["status"], "SUCCESS", "{job:#}");
    assert_eq!(job["result"], json!({"done": true}), "{job:#}");
    let outcome = ["type=\"gated\"", "outcome=\"success\""];
    let counted = support::eventually("the late outcome is counted", support::WAIT, || async {
        let c = metric(
            &ts.metrics_text().await,
            "runyard_job_outcomes_total",
            &outcome,
        );
        (c > 0.0).then_some(c)
    })
    .await;
    assert_eq!(counted, 1.0);
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "run once"
    );
    assert_eq!(ts.get_job(&id).await["attempt"], 1);
}

/// Credentials refused for a few seconds (a password rotated, then put back; an ACL reload) and
/// working again: the server connects again and serves, without a restart. Before, redis-rs's
/// connection manager kept answering "authentication failed" for good once a reconnect had
/// failed on it: `/health` stayed 503 and every submit failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_connects_again_once_its_redis_credentials_work_again() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let acl = |args: &[&str]| {
        let out = r.cli(args);
        assert!(
            out.contains("OK") || out.trim().parse::<i64>().is_ok(),
            "{args:?}: {out}"
        );
    };
    acl(&[
        "ACL",
        "SETUSER",
        "ryuser",
        "on",
        ">pw-first",
        "~*",
        "&*",
        "+@all",
    ]);
    let url = r.url.replacen("redis://", "redis://ryuser:pw-first@", 1);
    let config = r
        .server_config("auth-outage-master-key-0123456789")
        .replace(&r.url, &url);
    let ts = TestServer::builder("[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n")
        // `store.retry` short: a refused request answers soon.
        .config(&format!("{config}retry = \"1s\"\n"))
        .start()
        .await;
    let (st, v) = ts.submit(json!({"type": "runyard.noop"})).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");

    // The password changes and every connection of the user is cut: reconnects are refused.
    acl(&["ACL", "SETUSER", "ryuser", "resetpass", ">pw-other"]);
    acl(&["CLIENT", "KILL", "USER", "ryuser"]);
    let refused_until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < refused_until {
        let _ = ts.submit(json!({"type": "runyard.noop"})).await;
        let _ = ts.get("/health").await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (st, _) = ts.get("/health").await;
    assert_ne!(st, StatusCode::OK, "refused credentials are not healthy");

    // The old password works again: within a few seconds the server is healthy and serves.
    acl(&["ACL", "SETUSER", "ryuser", "resetpass", ">pw-first"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (st, v) = ts.submit(json!({"type": "runyard.noop"})).await;
        let (h, _) = ts.get("/health").await;
        if st == StatusCode::ACCEPTED && h == StatusCode::OK {
            let id = v["job_id"].as_str().expect("job_id").to_string();
            let job = ts.wait_terminal(&id, support::WAIT).await;
            assert_eq!(job["status"], "SUCCESS", "{job}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still failing after the credentials work again: {st} {v}, health {h}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// A Redis user whose ACL refuses a command runyard needs is refused at start, naming the
/// command (before: without `PUBLISH` every submit was stored and answered 500; without
/// `EVALSHA` the server started healthy and every write failed); the check leaves no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_user_without_a_command_runyard_needs_is_refused_at_start() {
    use runyard::store::redis::{RedisSettings, RedisStore};
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let connect = |user: &str| {
        let settings = RedisSettings {
            prefix: r.prefix.clone(),
            retry: std::time::Duration::from_secs(2),
            ..RedisSettings::new(r.url.replacen(
                "redis://",
                &format!("redis://{user}:pw-s3cret@"),
                1,
            ))
        };
        async move { RedisStore::connect(settings).await.map(|_| ()) }
    };
    for (user, refused) in [
        ("nopub", "publish"),
        ("noevalsha", "evalsha"),
        ("noblmpop", "blmpop"),
    ] {
        let out = r.cli(&[
            "ACL",
            "SETUSER",
            user,
            "on",
            ">pw-s3cret",
            "~*",
            "&*",
            "+@all",
            &format!("-{refused}"),
        ]);
        assert!(out.contains("OK"), "{out}");
        let e = connect(user)
            .await
            .expect_err("refused at start")
            .to_string();
        assert!(e.to_lowercase().contains(refused), "{user}: {e}");
        assert!(
            e.contains("Redis user") && !e.contains("s3cret"),
            "{user}: {e}"
        );
    }
    let out = r.cli(&[
        "ACL",
        "SETUSER",
        "all",
        "on",
        ">pw-s3cret",
        "~*",
        "&*",
        "+@all",
    ]);
    assert!(out.contains("OK"), "{out}");
    connect("all")
        .await
        .expect("a user with every command starts");
    let keys = r.cli(&["--scan", "--pattern", &format!("{}:permcheck*", r.prefix)]);
    assert!(
        keys.trim().is_empty(),
        "the check's keys are deleted: {keys}"
    );
}

/// A Redis out of memory (`maxmemory`, `noeviction`): a submit is refused saying so (not
/// Redis's script hash and line), nothing stored, `/health/ready` not ok until Redis takes
/// writes again; then both serve again. Before, `/health` stayed 200 while every write failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_out_of_memory_is_said_and_not_ready_until_it_takes_writes_again() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let ts = TestServer::builder("[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n")
        .config(&r.server_config("oom-test-master-key-0123456789ab"))
        .start()
        .await;
    let before = ts.count_jobs(None).await;
    assert!(r.cli(&["CONFIG", "SET", "maxmemory", "1"]).contains("OK"));
    let (st, v) = ts.submit(json!({"type": "runyard.noop"})).await;
    assert!(st.is_server_error(), "{st} {v}");
    let said = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        said.contains("out of memory") && !said.contains("user_script"),
        "{v}"
    );
    let (st, v) = ts.get("/health/ready").await;
    assert_eq!(
        st,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready while Redis refuses writes: {v}"
    );
    assert!(r.cli(&["CONFIG", "SET", "maxmemory", "0"]).contains("OK"));
    assert_eq!(
        ts.count_jobs(None).await,
        before,
        "nothing of the refused submit stored"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ts.get("/health/ready").await.0 != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "ready again once Redis takes writes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let id = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    assert_eq!(
        ts.wait_terminal(&id, support::WAIT).await["status"],
        "SUCCESS"
    );
}

/// More submits at once than the Redis store's committer holds (the batch it is sending, up to
/// 128, and a queue of 1,024), sent while Redis answers nothing (SIGSTOP): the ones past the
/// queue wait for room (the path a submit takes only when the queue is full), none is answered
/// while Redis is stopped, and once it answers again every one is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_past_the_committers_queue_wait_for_room_and_all_are_stored() {
    use runyard::job::{now_us, Job};
    use runyard::store::redis::{RedisSettings, RedisStore};
    use runyard::store::{JobStore, StoreSettings};
    use std::time::Duration;

    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let s = RedisStore::connect(RedisSettings {
        prefix: r.prefix.clone(),
        store: StoreSettings::default(),
        retry: Duration::from_secs(30),
        ..RedisSettings::new(r.url.clone())
    })
    .await
    .expect("connect");
    const N: usize = 2_000;
    let pid = r.pid().expect("a private redis") as i32;
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let submits: Vec<_> = (0..N)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.submit(Job::new("t.full", "service", now_us())).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answered = submits.iter().filter(|t| t.is_finished()).count();
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    assert_eq!(answered, 0, "answered while Redis was stopped");
    let mut ids = std::collections::HashSet::new();
    for t in submits {
        let done = t.await.expect("the submit task").expect("stored");
        assert!(done.created);
        ids.insert(done.job.id);
    }
    assert_eq!(ids.len(), N);
    let mut stored = 0;
    for id in &ids {
        stored += usize::from(s.get(*id).await.expect("get").is_some());
    }
    assert_eq!(stored, N, "jobs stored");
}
