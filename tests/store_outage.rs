//! A submit the store did not confirm (Redis hung: connections open, no answer) may still be
//! carried out once Redis answers again: its 503 says so and names the job's id, and a retry
//! with the same idempotency key makes no second job.

mod redis_support;
mod support;

use reqwest::StatusCode;
use serde_json::json;

use redis_support::TestRedis;
use support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_unconfirmed_in_an_outage_names_its_job_and_a_keyed_retry_makes_no_second() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let ts = TestServer::builder("[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n")
        .config(
            &r.server_config("outage-test-master-key-0123456789")
                .replace("[store]\n", "[store]\nretry = \"2s\"\n"),
        )
        .start()
        .await;
    let pid = r.pid().expect("a private redis") as i32;
    let body = json!({"type": "runyard.noop", "idempotency_key": "outage-1"});
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let (st, v) = ts.submit(body.clone()).await;
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
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
    // Redis answers again: the retry with the key returns the job if the first submit was
    // carried out after all, else makes it; one job either way, and GET of the id says which.
    let retried = support::eventually("a retry is accepted", support::WAIT, || async {
        let (st, v) = ts.submit(body.clone()).await;
        (st == StatusCode::ACCEPTED || st == StatusCode::OK).then_some(v)
    })
    .await;
    let id = retried["job_id"].as_str().expect("job_id").to_string();
    assert_eq!(ts.count_jobs(None).await, 1);
    let (st, _) = ts.get(&format!("/async/jobs/{maybe}")).await;
    assert_eq!(st == StatusCode::OK, id == maybe, "{maybe} vs {id}");
}
