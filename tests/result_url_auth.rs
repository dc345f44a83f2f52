//! The `result_url` of a job's events (`/async/jobs/{id}/result`) read with the credential that
//! receives the events: a browser's channel JWT, as cookie or Bearer, reads the results of its
//! channel's jobs (and no other job route); another channel's job answers 404 as no job does.

mod support;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::{TestServer, WAIT};

const SECRET: &str = "result-url-test-secret-0123456789abcdef";

fn mint(claims: Value) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let mut claims = claims;
    claims["exp"] = json!(exp);
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode")
}

/// How a browser sends its channel JWT.
#[derive(Debug, Clone, Copy)]
enum Via {
    Cookie,
    Bearer,
}

async fn get(ts: &TestServer, path: &str, jwt: &str, via: Via) -> (u16, Value) {
    let req = ts.client.get(ts.at(path));
    let req = match via {
        Via::Cookie => req.header("cookie", format!("session=x; async-token={jwt}")),
        Via::Bearer => req.bearer_auth(jwt),
    };
    let res = req.send().await.expect("get");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_jwt_reads_the_result_url_of_its_own_channels_jobs_only() {
    let ts = TestServer::builder("[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n")
        // `/metrics` open: the test reads the store calls there.
        .config(&format!(
            "[auth]\njwt_secret = \"{SECRET}\"\nmetrics_require_token = false\n"
        ))
        .start()
        .await;
    let service = mint(json!({"scope": "jobs:submit jobs:read", "sub": "svc"}));
    let mut ids = Vec::new();
    for channel in ["c1", "c2"] {
        let res = ts
            .client
            .post(ts.at("/async/jobs"))
            .bearer_auth(&service)
            .json(&json!({"type": "runyard.noop", "channel": channel}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 202);
        let v: Value = res.json().await.unwrap();
        ids.push(v["job_id"].as_str().unwrap().to_string());
    }
    let browser = mint(json!({"channel": "c1", "sub": "alice"}));
    // The done event of c1's job, as the browser reads it.
    let url = support::eventually("c1's job is done", WAIT, || async {
        let (s, v) = get(&ts, "/api/v1/async_event/?last_id=0", &browser, Via::Cookie).await;
        assert_eq!(s, 200, "{v}");
        v["result"].as_array().unwrap().iter().find_map(|e| {
            (e["job_id"] == ids[0].as_str() && e["status"] == "done")
                .then(|| e["result_url"].as_str().unwrap().to_string())
        })
    })
    .await;
    assert_eq!(url, format!("/async/jobs/{}/result", ids[0]));
    // c2's job done too (read with the service token).
    support::eventually("c2's job is done", WAIT, || async {
        let (s, _) = get(
            &ts,
            &format!("/async/jobs/{}/result", ids[1]),
            &service,
            Via::Bearer,
        )
        .await;
        (s == 200).then_some(())
    })
    .await;
    let unknown = format!("/async/jobs/{}/result", uuid::Uuid::now_v7());
    for via in [Via::Cookie, Via::Bearer] {
        let (s, v) = get(&ts, &url, &browser, via).await;
        assert_eq!(s, 200, "{via:?}: own channel: {v}");
        assert_eq!(v["job_id"], ids[0].as_str(), "{via:?}: {v}");
        assert_eq!(v["status"], "SUCCESS", "{via:?}: {v}");
        let other = format!("/async/jobs/{}/result", ids[1]);
        let reads = ts.store_calls("get").await;
        let (s, other_v) = get(&ts, &other, &browser, via).await;
        let other_reads = ts.store_calls("get").await - reads;
        assert_eq!(s, 404, "{via:?}: another channel's job: {other_v}");
        assert_eq!(other_v["error"]["code"], "not_found", "{via:?}: {other_v}");
        // The same answer as no job, after as many reads of the store (a second read for an
        // unknown id only would tell the two apart by the time taken): the id is not confirmed.
        let reads = ts.store_calls("get").await;
        let (s, none) = get(&ts, &unknown, &browser, via).await;
        let none_reads = ts.store_calls("get").await - reads;
        assert_eq!((s, &none), (404, &other_v), "{via:?}: no such job");
        assert_eq!(none_reads, other_reads, "{via:?}: store reads");
    }
    // Only the result: the job itself, its logs stay `jobs:read`.
    for path in [
        format!("/async/jobs/{}", ids[0]),
        format!("/async/jobs/{}/logs", ids[0]),
    ] {
        let (s, v) = get(&ts, &path, &browser, Via::Bearer).await;
        assert_eq!(s, 403, "{path}: {v}");
        let (s, v) = get(&ts, &path, &browser, Via::Cookie).await;
        assert_eq!(s, 401, "{path}: a client route takes no cookie: {v}");
    }
}

/// A token signed with the right secret whose claims name a member twice. `payload` is the JSON
/// text as it is sent: serde_json's `Value` cannot hold a repeated member.
fn mint_raw(payload: &str) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let message = format!("{}.{}", b64(r#"{"alg":"HS256","typ":"JWT"}"#), b64(payload));
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("sign");
    format!("{message}.{sig}")
}

/// A correctly signed channel token that names a claim twice (two `channel`s: the library kept
/// the last one, another reader may keep the first) is ambiguous: refused (401, `unauthorized`,
/// saying which claim) on every route a channel token reads, as cookie and as Bearer: the events
/// (polling, SSE) and a job's result. The same token with each claim once reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_naming_a_claim_twice_is_refused_on_every_route_it_reads() {
    let ts = TestServer::builder("[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n")
        .config(&format!("[auth]\njwt_secret = \"{SECRET}\"\n"))
        .start()
        .await;
    let service = mint(json!({"scope": "jobs:submit jobs:read", "sub": "svc"}));
    let res = ts
        .client
        .post(ts.at("/async/jobs"))
        .bearer_auth(&service)
        .json(&json!({"type": "runyard.noop", "channel": "c1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let id = res.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let result = format!("/async/jobs/{id}/result");
    support::eventually("the job is done", WAIT, || async {
        let (s, _) = get(&ts, &result, &service, Via::Bearer).await;
        (s == 200).then_some(())
    })
    .await;
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let once = mint_raw(&format!(r#"{{"channel":"c1","sub":"alice","exp":{exp}}}"#));
    let poll = "/api/v1/async_event/?last_id=0";
    for via in [Via::Cookie, Via::Bearer] {
        for path in [poll, result.as_str()] {
            let (s, v) = get(&ts, path, &once, via).await;
            assert_eq!(s, 200, "{via:?} {path}: each claim once: {v}");
        }
    }
    let twice = [
        (
            "channel",
            mint_raw(&format!(
                r#"{{"channel":"c2","sub":"alice","exp":{exp},"channel":"c1"}}"#
            )),
        ),
        (
            "sub",
            mint_raw(&format!(
                r#"{{"channel":"c1","sub":"alice","sub":"bob","exp":{exp}}}"#
            )),
        ),
        (
            "exp",
            mint_raw(&format!(
                r#"{{"channel":"c1","exp":{},"exp":{exp}}}"#,
                exp - 1200
            )),
        ),
    ];
    for (claim, token) in &twice {
        for via in [Via::Cookie, Via::Bearer] {
            for path in [poll, "/async/events/sse?last_id=0", result.as_str()] {
                let (s, v) = get(&ts, path, token, via).await;
                let what = format!("{via:?} {path}: `{claim}` twice");
                assert_eq!(s, 401, "{what}: {v}");
                assert_eq!(v["error"]["code"], "unauthorized", "{what}: {v}");
                let msg = v["error"]["message"].as_str().unwrap_or("");
                assert!(msg.contains("twice") && msg.contains(claim), "{what}: {v}");
            }
        }
    }
}
