//! A job's `user_id` (in its events and its record) is its submitter: a JWT's `sub`, an API
//! token's `name`; `null` without auth. Superset fills it from the requester.

mod support;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use runyard::auth::tokens::token_sha256;
use serde_json::{json, Value};
use support::{TestServer, WAIT};

const SECRET: &str = "event-user-test-secret-0123456789abcdef";
const RUNNERS: &str = "[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n";
const CI_TOKEN: &str = "ci-token-0123456789abcdef0123456789";

/// The `user_id` of every event of `job`, once it finished (read with `bearer`, if any).
async fn users_of(ts: &TestServer, bearer: Option<&str>, job: &str) -> Vec<Value> {
    support::eventually("the job's events", WAIT, || async {
        let mut req = ts.client.get(ts.at("/api/v1/async_event/?last_id=0"));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        let evs: Vec<&Value> = v["result"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["job_id"] == job)
            .collect();
        evs.iter()
            .any(|e| e["status"] == "done")
            .then(|| evs.iter().map(|e| e["user_id"].clone()).collect())
    })
    .await
}

async fn post(ts: &TestServer, path: &str, bearer: &str, body: Value) -> Value {
    let res = ts
        .client
        .post(ts.at(path))
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .unwrap();
    // A submit is 202, a batch 200 (each item answers in its slot).
    assert!([200, 202].contains(&res.status().as_u16()), "{path}");
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_user_id_is_its_submitter() {
    let ts = TestServer::builder(RUNNERS)
        .config(&format!(
            "[auth]\njwt_secret = \"{SECRET}\"\n[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{}\"\n\
             scopes = [\"jobs:submit\", \"jobs:read\"]\n",
            token_sha256(CI_TOKEN)
        ))
        .start()
        .await;
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let alice = encode(
        &Header::new(Algorithm::HS256),
        &json!({"scope": "jobs:submit jobs:read", "sub": "alice", "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let v = post(&ts, "/async/jobs", &alice, json!({"type": "runyard.noop"})).await;
    let a = v["job_id"].as_str().unwrap().to_string();
    let users = users_of(&ts, Some(&alice), &a).await;
    assert!(
        users.len() >= 2 && users.iter().all(|u| u == "alice"),
        "{users:?}"
    );
    // A batch item, with the API token named `ci`.
    let v = post(
        &ts,
        "/async/jobs/batch",
        CI_TOKEN,
        json!({"jobs": [{"type": "runyard.noop"}]}),
    )
    .await;
    let b = v["results"][0]["job_id"]
        .as_str()
        .or_else(|| v["jobs"][0]["job_id"].as_str())
        .unwrap_or_else(|| panic!("no job id in {v}"))
        .to_string();
    let users = users_of(&ts, Some(CI_TOKEN), &b).await;
    assert!(
        users.len() >= 2 && users.iter().all(|u| u == "ci"),
        "{users:?}"
    );
    let res = ts
        .client
        .get(ts.at(&format!("/async/jobs/{b}")))
        .bearer_auth(CI_TOKEN)
        .send()
        .await
        .unwrap();
    let job: Value = res.json().await.unwrap();
    assert_eq!(job["user_id"], "ci", "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_a_jobs_user_id_is_null() {
    let ts = TestServer::start(RUNNERS).await;
    let id = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    let users = users_of(&ts, None, &id).await;
    assert!(users.iter().all(Value::is_null), "{users:?}");
}
