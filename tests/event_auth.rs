//! `[auth]` on the event transports: a real server on port 0, a real WebSocket client
//! (tokio-tungstenite), a real SSE reader and the polling endpoint. Every bad token is refused with
//! its code on all three transports (before any upgrade); a valid token reads exactly its own
//! channel, the same event ids everywhere; without `[auth]` nothing changes.

mod support;

use std::time::Duration;

use futures::StreamExt;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::{TestServer, WAIT};
use tokio_tungstenite::tungstenite;
use tungstenite::client::IntoClientRequest;

const SECRET: &str = "event-auth-test-secret-0123456789abcdef";
const ORIGIN: &str = "https://superset.example.com";

const RUNNERS: &str = r#"
[[runners]]
kind = "service"
types = ["runyard.*"]
"#;

async fn server_with_auth() -> TestServer {
    TestServer::builder(RUNNERS)
        .config(&format!(
            "[auth]\njwt_secret = \"{SECRET}\"\nallowed_origins = [\"{ORIGIN}\"]\n"
        ))
        .start()
        .await
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn mint_with(alg: Algorithm, claims: Value, secret: &str) -> String {
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

/// A token as Superset's AsyncQueryManager mints it.
fn token(channel: &str, sub: Value) -> String {
    mint_with(
        Algorithm::HS256,
        json!({"channel": channel, "sub": sub, "exp": now() + 600}),
        SECRET,
    )
}

/// A service's JWT: `scope` claim, no channel (submits and reads every job).
fn service_token() -> String {
    mint_with(
        Algorithm::HS256,
        json!({"scope": "jobs:submit jobs:read", "sub": "svc", "exp": now() + 600}),
        SECRET,
    )
}

/// With `[auth]` the client API needs a bearer too: submit with the service JWT.
async fn submit_as_service(ts: &TestServer, body: Value) -> String {
    let res = ts
        .client
        .post(ts.at("/async/jobs"))
        .bearer_auth(service_token())
        .json(&body)
        .send()
        .await
        .expect("submit");
    assert_eq!(res.status().as_u16(), 202, "submit {body}");
    let v: Value = res.json().await.expect("json");
    v["job_id"].as_str().expect("job_id").to_string()
}

/// Waits (bounded) for a job to finish, reading it with the service JWT.
async fn wait_done_as_service(ts: &TestServer, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let res = ts
            .client
            .get(ts.at(&format!("/async/jobs/{id}")))
            .bearer_auth(service_token())
            .send()
            .await
            .expect("get");
        assert_eq!(res.status().as_u16(), 200);
        let j: Value = res.json().await.expect("json");
        if ["SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"]
            .contains(&j["status"].as_str().unwrap_or(""))
        {
            return j;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} did not finish: {j}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

type Headers = Vec<(&'static str, String)>;

fn cookie(t: &str) -> Headers {
    vec![("cookie", format!("session=abc; async-token={t}; other=1"))]
}

/// Polling: status and body.
async fn poll(ts: &TestServer, query: &str, headers: &Headers) -> (u16, Value) {
    let mut req = ts
        .client
        .get(ts.at(&format!("/api/v1/async_event/?{query}")));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.expect("poll");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// SSE: status, and the body when it is not a stream.
async fn sse_status(ts: &TestServer, query: &str, headers: &Headers) -> (u16, Value) {
    let mut req = ts.client.get(ts.at(&format!("/async/events/sse?{query}")));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.expect("sse");
    let status = res.status().as_u16();
    if status == 200 {
        return (status, Value::Null);
    }
    (status, res.json().await.unwrap_or(Value::Null))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// WebSocket: the open socket, or the HTTP status and body of the refused upgrade.
async fn ws_connect(ts: &TestServer, query: &str, headers: &Headers) -> Result<Ws, (u16, Value)> {
    let url = format!(
        "{}/async/events/ws?{query}",
        ts.url.replacen("http://", "ws://", 1)
    );
    let mut req = url.into_client_request().expect("ws request");
    for (k, v) in headers {
        req.headers_mut()
            .append(*k, v.parse().expect("header value"));
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("ws answer in time")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(res)) => {
            let body = res
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((res.status().as_u16(), body))
        }
        Err(e) => panic!("ws connect failed without an HTTP answer: {e}"),
    }
}

/// The same refusal on all three transports.
async fn refused_everywhere(
    ts: &TestServer,
    query: &str,
    headers: &Headers,
    code: u16,
    what: &str,
) {
    let (s, body) = poll(ts, query, headers).await;
    assert_eq!(s, code, "poll {what}: {body}");
    assert_error_body(&body, code, what);
    let (s, body) = sse_status(ts, query, headers).await;
    assert_eq!(s, code, "sse {what}: {body}");
    assert_error_body(&body, code, what);
    match ws_connect(ts, query, headers).await {
        Ok(_) => panic!("ws {what}: upgraded, expected {code}"),
        Err((s, body)) => {
            assert_eq!(s, code, "ws {what}: {body}");
            assert_error_body(&body, code, what);
        }
    }
}

fn assert_error_body(body: &Value, code: u16, what: &str) {
    let want = match code {
        401 => "unauthorized",
        403 => "forbidden",
        431 => "header_too_large",
        _ => return,
    };
    assert_eq!(body["error"]["code"], want, "{what}: {body}");
    let msg = body["error"]["message"].as_str().unwrap_or("");
    assert!(!msg.is_empty(), "{what}: {body}");
    assert!(!msg.contains(SECRET), "{what}: {body}");
}

#[tokio::test]
async fn bad_tokens_get_401_and_other_channels_403_on_every_transport() {
    let mut ts = server_with_auth().await;
    let good = token("chan-a", json!(1));
    let exp = now() + 600;
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"channel": "chan-a", "exp": exp}))
    );
    let cases: Vec<(&str, Headers, &str)> = vec![
        ("no token", vec![], "required"),
        ("malformed cookie", cookie("garbage.not.jwt"), "malformed"),
        ("alg none", cookie(&none), "none"),
        (
            "HS512",
            cookie(&mint_with(
                Algorithm::HS512,
                json!({"channel": "chan-a", "exp": exp}),
                SECRET,
            )),
            "HS256",
        ),
        (
            "wrong secret",
            cookie(&mint_with(
                Algorithm::HS256,
                json!({"channel": "chan-a", "exp": exp}),
                "another-secret-another-secret-another-secret",
            )),
            "signature",
        ),
        (
            "expired",
            cookie(&mint_with(
                Algorithm::HS256,
                json!({"channel": "chan-a", "exp": now() - 600}),
                SECRET,
            )),
            "expired",
        ),
        (
            "future nbf",
            cookie(&mint_with(
                Algorithm::HS256,
                json!({"channel": "chan-a", "exp": exp, "nbf": now() + 600}),
                SECRET,
            )),
            "nbf",
        ),
        (
            "no channel",
            cookie(&mint_with(
                Algorithm::HS256,
                json!({"sub": 1, "exp": exp}),
                SECRET,
            )),
            "channel",
        ),
        (
            "no exp",
            cookie(&mint_with(
                Algorithm::HS256,
                json!({"channel": "chan-a"}),
                SECRET,
            )),
            "exp",
        ),
        (
            "bearer garbage",
            vec![("authorization", "Bearer nope".into())],
            "malformed",
        ),
        (
            "basic auth",
            vec![("authorization", "Basic dXNlcjpwYXNz".into())],
            "Bearer",
        ),
        (
            "cookie under another name",
            vec![("cookie", format!("session-token={good}"))],
            "required",
        ),
    ];
    for (what, headers, needle) in &cases {
        refused_everywhere(&ts, "last_id=0", headers, 401, what).await;
        let (_, body) = poll(&ts, "last_id=0", headers).await;
        let msg = body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(needle), "{what}: `{needle}` in {body}");
    }

    // A valid token asking for another channel.
    refused_everywhere(
        &ts,
        "last_id=0&channel=chan-b",
        &cookie(&good),
        403,
        "other channel",
    )
    .await;
    refused_everywhere(
        &ts,
        "channel=chan-b",
        &vec![("authorization", format!("Bearer {good}"))],
        403,
        "other channel by bearer",
    )
    .await;
    // Another channel beside its own, in either order: the same refusal.
    for query in [
        "last_id=0&channel=chan-a&channel=chan-b",
        "last_id=0&channel=chan-b&channel=chan-a",
    ] {
        refused_everywhere(&ts, query, &cookie(&good), 403, query).await;
    }

    // A browser on a foreign origin: 403 on WS and SSE before the upgrade, even with a good token.
    let mut foreign = cookie(&good);
    foreign.push(("origin", "https://evil.example.net".into()));
    // The code is `cross_origin` (as without `[auth]`, and as the OpenAPI says), naming the
    // setting to list the origin in.
    let (s, body) = sse_status(&ts, "last_id=0", &foreign).await;
    assert_eq!(s, 403, "sse foreign origin: {body}");
    assert_cross_origin_with(&body, "auth.allowed_origins", "sse foreign origin");
    match ws_connect(&ts, "last_id=0", &foreign).await {
        Ok(_) => panic!("ws with a foreign origin upgraded"),
        Err((s, body)) => {
            assert_eq!(s, 403, "ws foreign origin: {body}");
            assert_cross_origin_with(&body, "auth.allowed_origins", "ws foreign origin");
        }
    }
    // The allowed origin, and no origin at all (not a browser), are served.
    let mut allowed = cookie(&good);
    allowed.push(("origin", ORIGIN.into()));
    ws_connect(&ts, "last_id=0", &allowed)
        .await
        .expect("allowed origin upgrades");
    ws_connect(&ts, "last_id=0", &cookie(&good))
        .await
        .expect("no origin upgrades");
    assert_eq!(sse_status(&ts, "last_id=0", &allowed).await.0, 200);

    // A cookie over the bound: a clean 431 from runyard; 10 MB: a clean 4xx from the HTTP layer.
    let big = vec![(
        "cookie",
        format!("pad={}; async-token={good}", "x".repeat(9 * 1024)),
    )];
    refused_everywhere(&ts, "last_id=0", &big, 431, "9 KiB cookie").await;
    // The answer says what the bound is and what to do: the token as a bearer, which is read
    // without looking at the cookies (a shared domain's large cookies do not matter then).
    let (_, body) = poll(&ts, "last_id=0", &big).await;
    let msg = body["error"]["message"].as_str().unwrap_or("");
    for needle in ["8 KiB", "Authorization: Bearer", "cookies"] {
        assert!(msg.contains(needle), "`{needle}` in {body}");
    }
    let mut big_and_bearer = big.clone();
    big_and_bearer.push(("authorization", format!("Bearer {good}")));
    let (s, body) = poll(&ts, "last_id=0", &big_and_bearer).await;
    assert_eq!(s, 200, "a bearer with 9 KiB of cookies: {body}");
    // 10 MB: hyper refuses the header block with 431 long before it is all read (the client may
    // see its write fail first); read the answer over a raw socket.
    let addr = ts.url.trim_start_matches("http://").to_string();
    let answer = tokio::time::timeout(WAIT, async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut req = b"GET /api/v1/async_event/ HTTP/1.1\r\nHost: x\r\nCookie: pad=".to_vec();
        req.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
        req.extend(b"\r\n\r\n");
        let _ = sock.write_all(&req).await;
        let mut buf = vec![0u8; 512];
        let n = sock.read(&mut buf).await.unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).to_string()
    })
    .await
    .expect("an answer to 10 MB of cookie in time");
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "10 MB cookie answered: {answer:?}"
    );
    // The server is still up and serves the good token.
    let (s, body) = poll(&ts, "last_id=0", &cookie(&good)).await;
    assert_eq!(s, 200, "{body}");
    ts.stop().await;
}

/// Events of one SSE response until `n` events were read (bounded).
async fn sse_events(ts: &TestServer, headers: &Headers, n: usize) -> Vec<Value> {
    let mut req = ts.client.get(ts.at("/async/events/sse?last_id=0"));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.expect("sse");
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while out.len() < n {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("sse: {} of {n} events in time: {out:?}", out.len()))
            .expect("sse open")
            .expect("sse chunk");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    out.push(serde_json::from_str(data.trim()).expect("sse json"));
                }
            }
        }
    }
    out
}

/// Events of a WebSocket until `n` were read (bounded).
async fn ws_events(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while out.len() < n {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("ws: {} of {n} events in time: {out:?}", out.len()))
            .expect("ws open")
            .expect("ws message");
        if let tungstenite::Message::Text(t) = msg {
            out.push(serde_json::from_str(t.as_str()).expect("ws json"));
        }
    }
    out
}

/// Every event of the poll after 0 for these headers (following pages).
async fn poll_all(ts: &TestServer, headers: &Headers) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut last = "0".to_string();
    for _ in 0..1000 {
        let (s, body) = poll(ts, &format!("last_id={last}"), headers).await;
        assert_eq!(s, 200, "{body}");
        let page = body["result"].as_array().expect("result").clone();
        let Some(l) = page.last() else { return out };
        last = l["id"].as_str().expect("id").to_string();
        out.extend(page);
    }
    panic!("poll did not end");
}

fn ids(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| e["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn a_token_reads_exactly_its_channel_with_the_same_ids_on_all_transports() {
    let mut ts = server_with_auth().await;
    let ta = token("chan-a", json!(1));
    let tb = token("chan-b", Value::Null);
    let a_cookie = cookie(&ta);
    let a_bearer: Headers = vec![("authorization", format!("Bearer {ta}"))];
    // The socket is open before any job: it sees the events live.
    let mut ws = ws_connect(&ts, "last_id=0", &a_cookie)
        .await
        .expect("ws upgrades with a valid token");
    let mut a_jobs = Vec::new();
    let mut b_jobs = Vec::new();
    for _ in 0..2 {
        a_jobs.push(
            submit_as_service(&ts, json!({"type": "runyard.noop", "channel": "chan-a"})).await,
        );
        b_jobs.push(
            submit_as_service(&ts, json!({"type": "runyard.noop", "channel": "chan-b"})).await,
        );
    }
    for id in a_jobs.iter().chain(&b_jobs) {
        let j = wait_done_as_service(&ts, id).await;
        assert_eq!(j["status"], "SUCCESS", "{j}");
    }
    let polled = poll_all(&ts, &a_cookie).await;
    assert!(!polled.is_empty());
    for e in &polled {
        assert_eq!(e["channel_id"], "chan-a", "{e}");
        assert!(a_jobs.iter().any(|j| e["job_id"] == j.as_str()), "{e}");
    }
    for j in &a_jobs {
        assert!(
            polled
                .iter()
                .any(|e| e["job_id"] == j.as_str() && e["runyard_status"] == "SUCCESS"),
            "job {j} finished in the poll: {polled:?}"
        );
    }
    // Bearer and cookie, with or without its own `?channel=`, read the same.
    assert_eq!(ids(&poll_all(&ts, &a_bearer).await), ids(&polled));
    let (s, own) = poll(&ts, "last_id=0&channel=chan-a", &a_cookie).await;
    assert_eq!(s, 200, "{own}");
    assert_eq!(ids(own["result"].as_array().unwrap()), ids(&polled));

    let via_ws = ws_events(&mut ws, polled.len()).await;
    assert_eq!(ids(&via_ws), ids(&polled), "ws: {via_ws:?}");
    let via_sse = sse_events(&ts, &a_bearer, polled.len()).await;
    assert_eq!(ids(&via_sse), ids(&polled), "sse: {via_sse:?}");
    // Nothing else (no chan-b event) arrives on the socket.
    let more = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
    if let Ok(Some(Ok(tungstenite::Message::Text(t)))) = more {
        panic!("unexpected extra event on the socket: {t}");
    }

    // The other token reads the other channel only, never chan-a.
    let polled_b = poll_all(&ts, &cookie(&tb)).await;
    assert!(!polled_b.is_empty());
    for e in &polled_b {
        assert_eq!(e["channel_id"], "chan-b", "{e}");
    }
    let a_ids = ids(&polled);
    assert!(ids(&polled_b).iter().all(|i| !a_ids.contains(i)));
    ts.stop().await;
}

/// A browser behind HTTP authentication sends its own `Authorization` (Basic, Negotiate) on
/// every request, the event routes' included: that header is not runyard's and must not hide
/// the JWT cookie. The client API keeps refusing it (401): it takes only `Bearer`.
#[tokio::test]
async fn a_browsers_basic_authorization_does_not_hide_the_cookie_on_event_routes() {
    let mut ts = server_with_auth().await;
    let ta = token("chan-a", json!(1));
    let id = submit_as_service(&ts, json!({"type": "runyard.noop", "channel": "chan-a"})).await;
    wait_done_as_service(&ts, &id).await;
    for scheme in ["Basic dXNlcjpwYXNz", "Negotiate YIIGhgYGKwYBBQUCoIIGejCC"] {
        let mut headers = cookie(&ta);
        headers.push(("authorization", scheme.to_string()));
        let polled = poll_all(&ts, &headers).await;
        assert!(
            polled.iter().any(|e| e["job_id"] == id.as_str()),
            "{scheme}: the cookie's channel read: {polled:?}"
        );
        assert!(
            polled.iter().all(|e| e["channel_id"] == "chan-a"),
            "{polled:?}"
        );
        assert_eq!(sse_events(&ts, &headers, 1).await.len(), 1, "{scheme}: sse");
        let mut ws = ws_connect(&ts, "last_id=0", &headers)
            .await
            .unwrap_or_else(|e| panic!("{scheme}: ws upgrades with the cookie: {e:?}"));
        assert_eq!(ws_events(&mut ws, 1).await.len(), 1, "{scheme}: ws");
        // Without a cookie it is still 401, saying what it got; a bad cookie is the cookie's
        // own refusal.
        let only: Headers = vec![("authorization", scheme.to_string())];
        refused_everywhere(&ts, "last_id=0", &only, 401, scheme).await;
        let (_, body) = poll(&ts, "last_id=0", &only).await;
        let msg = body["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains("async-token") && msg.contains("not `Bearer`"),
            "{body}"
        );
        let mut bad = cookie("garbage.not.jwt");
        bad.push(("authorization", scheme.to_string()));
        refused_everywhere(&ts, "last_id=0", &bad, 401, "bad cookie").await;
        // The client API: only Bearer, the cookie is not looked at.
        let res = ts
            .client
            .get(ts.at(&format!("/async/jobs/{id}")))
            .header("authorization", scheme)
            .header("cookie", format!("async-token={}", service_token()))
            .send()
            .await
            .expect("get");
        assert_eq!(res.status().as_u16(), 401);
        let body: Value = res.json().await.expect("json");
        let msg = body["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains("must be `Bearer <token>`"), "{body}");
    }
    ts.stop().await;
}

/// A token confined to types and channels reads, on every transport, the events of its types'
/// jobs on its channels only: not those of another type's job on its channel (its id, statuses,
/// error messages and result URL are no more its to read there than through
/// `GET /async/jobs/{id}`, 403). Live (the socket is open first) and replayed (poll, SSE); a
/// poll reads on past the hidden events rather than answering an empty page.
#[tokio::test]
async fn a_token_confined_to_types_reads_the_events_of_its_types_only() {
    const REPORTS: &str = "ry_events_reports_only";
    let mut ts = TestServer::builder(RUNNERS)
        .config(&format!(
            "[auth]\njwt_secret = \"{SECRET}\"\nallowed_origins = [\"{ORIGIN}\"]\n\
             [[auth.tokens]]\nname = \"reports\"\nsha256 = \"{}\"\nscopes = [\"jobs:read\"]\n\
             types = [\"runyard.echo\"]\nchannels = [\"chan-a\"]\n",
            runyard::auth::tokens::token_sha256(REPORTS)
        ))
        .start()
        .await;
    let reports: Headers = vec![("authorization", format!("Bearer {REPORTS}"))];
    let mut ws = ws_connect(&ts, "last_id=0", &reports)
        .await
        .expect("ws upgrades");
    // Another type's job on the token's channel first, then one of its type.
    let payroll = submit_as_service(
        &ts,
        json!({"type": "runyard.fail", "channel": "chan-a",
               "args": {"message": "payroll secret", "retry": false}}),
    )
    .await;
    assert_eq!(wait_done_as_service(&ts, &payroll).await["status"], "ERROR");
    let report = submit_as_service(&ts, json!({"type": "runyard.echo", "channel": "chan-a"})).await;
    assert_eq!(
        wait_done_as_service(&ts, &report).await["status"],
        "SUCCESS"
    );

    // The payroll job's events are there, for a reader of the whole channel.
    let all = poll_all(&ts, &cookie(&token("chan-a", json!(1)))).await;
    assert!(
        all.iter().any(|e| e["job_id"] == payroll.as_str()),
        "{all:?}"
    );

    let polled = poll_all(&ts, &reports).await;
    assert!(
        polled
            .iter()
            .any(|e| e["job_id"] == report.as_str() && e["runyard_status"] == "SUCCESS"),
        "{polled:?}"
    );
    for e in &polled {
        assert_eq!(e["job_id"], report.as_str(), "another type's event: {e}");
    }
    // One at a time from the start: the first answer is the report's first event, not an empty
    // page stuck before the payroll job's events.
    let (s, first) = poll(&ts, "last_id=0&limit=1", &reports).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(
        ids(first["result"].as_array().expect("result")),
        ids(&polled[..1])
    );
    let via_sse = sse_events(&ts, &reports, polled.len()).await;
    assert_eq!(ids(&via_sse), ids(&polled), "sse: {via_sse:?}");
    let via_ws = ws_events(&mut ws, polled.len()).await;
    assert_eq!(ids(&via_ws), ids(&polled), "ws: {via_ws:?}");
    let more = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
    if let Ok(Some(Ok(tungstenite::Message::Text(t)))) = more {
        panic!("unexpected extra event on the socket: {t}");
    }
    // As the job route answers.
    let res = ts
        .client
        .get(ts.at(&format!("/async/jobs/{payroll}")))
        .bearer_auth(REPORTS)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status().as_u16(), 403);
    ts.stop().await;
}

#[tokio::test]
async fn without_auth_everything_is_open_as_before() {
    let mut ts = TestServer::start(RUNNERS).await;
    let id = ts
        .submit_ok(json!({"type": "runyard.noop", "channel": "chan-x"}))
        .await;
    let other = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    ts.wait_terminal(&id, WAIT).await;
    ts.wait_terminal(&other, WAIT).await;
    // No token, the global stream, any channel, any origin: served.
    let all = poll_all(&ts, &vec![]).await;
    assert!(all.iter().any(|e| e["job_id"] == id.as_str()));
    assert!(all.iter().any(|e| e["job_id"] == other.as_str()));
    let (s, body) = poll(&ts, "last_id=0&channel=chan-x", &vec![]).await;
    assert_eq!(s, 200, "{body}");
    assert!(body["result"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["job_id"] == id.as_str()));
    // A token that would be refused with [auth] is simply ignored.
    let ignored = cookie("garbage");
    assert_eq!(poll(&ts, "last_id=0", &ignored).await.0, 200);
    // A browser on the server's own origin (and a program, with no `Origin`) reads the streams.
    let own: Headers = vec![("origin", ts.url.clone())];
    for headers in [&own, &vec![]] {
        let mut ws = ws_connect(&ts, "last_id=0", headers)
            .await
            .expect("open without [auth]");
        let via_ws = ws_events(&mut ws, all.len()).await;
        assert_eq!(ids(&via_ws), ids(&all));
        let via_sse = sse_events(&ts, headers, all.len()).await;
        assert_eq!(ids(&via_sse), ids(&all));
    }
    ts.stop().await;
}

/// The 403 `cross_origin` of a stream opened by a page of another origin, naming the setting.
fn assert_cross_origin(body: &Value, what: &str) {
    assert_cross_origin_with(body, "api.cors_origins", what);
}

/// The 403 `cross_origin` of a stream opened by a page of another origin, naming `setting`.
fn assert_cross_origin_with(body: &Value, setting: &str, what: &str) {
    assert_eq!(body["error"]["code"], "cross_origin", "{what}: {body}");
    let msg = body["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains(setting), "{what}: {body}");
}

/// Without `[auth]`, a page on any website could open the WebSocket (CORS does not cover it) and
/// read every job's events: a browser `Origin` other than the server's own, and not listed in
/// `api.cors_origins`, is refused on the WebSocket and SSE before any upgrade. Polling stays a
/// plain GET (its answer is readable cross-origin only with CORS headers).
#[tokio::test]
async fn without_auth_a_foreign_page_cannot_open_a_stream() {
    const LISTED: &str = "https://dash.example.org";
    let mut ts = TestServer::builder(RUNNERS)
        .config(&format!("[api]\ncors_origins = [\"{LISTED}\"]\n"))
        .start()
        .await;
    let id = ts.submit_ok(json!({"type": "runyard.noop"})).await;
    ts.wait_terminal(&id, WAIT).await;
    let all = poll_all(&ts, &vec![]).await;
    for foreign in [
        vec![("origin", "https://attacker.example".to_string())],
        // The browser's own word wins: a cross-site page naming this server's origin.
        vec![
            ("origin", ts.url.clone()),
            ("sec-fetch-site", "cross-site".to_string()),
        ],
    ] {
        match ws_connect(&ts, "last_id=0", &foreign).await {
            Ok(_) => panic!("ws from {foreign:?} upgraded"),
            Err((s, body)) => {
                assert_eq!(s, 403, "ws {foreign:?}: {body}");
                assert_cross_origin(&body, "ws");
            }
        }
        let (s, body) = sse_status(&ts, "last_id=0", &foreign).await;
        assert_eq!(s, 403, "sse {foreign:?}: {body}");
        assert_cross_origin(&body, "sse");
        assert_eq!(poll(&ts, "last_id=0", &foreign).await.0, 200);
    }
    // An origin listed in `api.cors_origins` is served.
    let listed: Headers = vec![("origin", LISTED.into())];
    let mut ws = ws_connect(&ts, "last_id=0", &listed)
        .await
        .expect("listed origin upgrades");
    assert_eq!(ids(&ws_events(&mut ws, all.len()).await), ids(&all));
    let same_site: Headers = vec![
        ("origin", LISTED.into()),
        ("sec-fetch-site", "same-site".into()),
    ];
    assert_eq!(sse_status(&ts, "last_id=0", &same_site).await.0, 200);
    ts.stop().await;
}

/// A client may name the default port in `Host` (`localhost:80`) while the browser's `Origin`
/// leaves it out (`http://localhost`, RFC 6454): that is the server's own origin. Without
/// `Sec-Fetch-Site` the stream check and the cross-origin check of writes compare the two.
#[tokio::test]
async fn a_host_naming_the_default_port_is_the_same_origin() {
    let mut ts = TestServer::builder(RUNNERS).start().await;
    for (host, origin) in [
        ("localhost:80", "http://localhost"),
        ("localhost:443", "https://localhost"),
        ("localhost", "http://localhost:80"),
    ] {
        let own: Headers = vec![("host", host.into()), ("origin", origin.into())];
        let (s, body) = sse_status(&ts, "last_id=0", &own).await;
        assert_eq!(s, 200, "sse, Host {host}, Origin {origin}: {body}");
        let res = ts
            .client
            .post(ts.at("/async/jobs"))
            .header("host", host)
            .header("origin", origin)
            .json(&json!({"type": "runyard.noop"}))
            .send()
            .await
            .expect("submit");
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 202, "submit, Host {host}, Origin {origin}: {body}");
    }
    // Another port is another origin, as before.
    let other: Headers = vec![
        ("host", "localhost:80".into()),
        ("origin", "http://localhost:8080".into()),
    ];
    let (s, body) = sse_status(&ts, "last_id=0", &other).await;
    assert_eq!(s, 403, "{body}");
    assert_cross_origin(&body, "sse, another port");
    ts.stop().await;
}

/// A stream does not outlive the JWT it was opened with: at the token's `exp` (plus
/// `auth.jwt_leeway`, 0 here) the WebSocket closes with 1008 and a reason saying where to resume,
/// the SSE stream ends and a long poll answers, while a stream opened with a longer-lived token
/// stays open and keeps delivering.
#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let mut ts = TestServer::builder(RUNNERS)
        .config(&format!(
            "[auth]\njwt_secret = \"{SECRET}\"\njwt_leeway = \"0s\"\n"
        ))
        .start()
        .await;
    let channel = "chan-exp";
    // Valid for 8-9 s (through `exp` + 1, as jsonwebtoken checks it): time for the steps below
    // on a loaded machine.
    let exp = now() + 8;
    let short = mint_with(
        Algorithm::HS256,
        json!({"channel": channel, "sub": 1, "exp": exp}),
        SECRET,
    );
    let long = token(channel, json!(2));
    let opened = tokio::time::Instant::now();
    let mut ws_short = ws_connect(&ts, "", &cookie(&short))
        .await
        .expect("ws short");
    let mut ws_long = ws_connect(&ts, "", &cookie(&long)).await.expect("ws long");
    let res = ts
        .client
        .get(ts.at("/async/events/sse"))
        .header("cookie", format!("async-token={short}"))
        .send()
        .await
        .expect("sse");
    assert_eq!(res.status(), 200);
    let mut sse = res.bytes_stream();
    // Both sockets deliver while the short token is valid.
    let first = submit_as_service(&ts, json!({"type": "runyard.noop", "channel": channel})).await;
    assert!(ws_events(&mut ws_short, 1).await[0]["job_id"] == first.as_str());
    assert!(ws_events(&mut ws_long, 1).await[0]["job_id"] == first.as_str());
    wait_done_as_service(&ts, &first).await;
    let poll_headers = cookie(&short);
    let seen = poll_all(&ts, &poll_headers).await;
    let newest = seen.last().expect("events")["id"]
        .as_str()
        .expect("id")
        .to_string();
    // A long poll waiting for the next event, sent now with a token of its own valid 4-5 s,
    // side by side with the rest: it answers at that token's expiry, not after its 30 s.
    let poll_token = mint_with(
        Algorithm::HS256,
        json!({"channel": channel, "sub": 3, "exp": now() + 4}),
        SECRET,
    );
    let poll = tokio::spawn({
        let req = ts
            .client
            .get(ts.at(&format!(
                "/api/v1/async_event/?last_id={newest}&wait_ms=30000"
            )))
            .header("cookie", format!("async-token={poll_token}"));
        async move {
            let sent = tokio::time::Instant::now();
            let res = req.send().await.expect("poll");
            (res.status().as_u16(), sent.elapsed())
        }
    });
    // The expired socket: a close frame with 1008 (not before about the token's `exp`).
    let bound = Duration::from_secs(20);
    let close = tokio::time::timeout(bound, async {
        loop {
            match ws_short.next().await {
                Some(Ok(tungstenite::Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("ws short ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("the expired socket closed in time")
    .expect("a close frame with a code");
    let closed_after = opened.elapsed();
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    assert!(close.reason.contains("expired"), "{close:?}");
    assert!(
        closed_after >= Duration::from_secs(6),
        "closed after {closed_after:?}"
    );
    // SSE: the stream ends (skipping what it delivered).
    tokio::time::timeout(bound, async {
        while let Some(chunk) = sse.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await
    .expect("the expired SSE stream ended in time");
    // The long poll waited, and answered at the expiry, not after its 30 s.
    let (s, waited) = tokio::time::timeout(bound, poll)
        .await
        .expect("the long poll answered at the token's expiry")
        .expect("poll task");
    assert_eq!(s, 200);
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(15),
        "answered after {waited:?}"
    );
    // Both expiries counted where an operator looks.
    let metrics = ts
        .client
        .get(ts.at("/metrics"))
        .bearer_auth(service_token())
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let expired: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("runyard_event_streams_closed_total{"))
        .filter(|l| l.contains("reason=\"credential_expired\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(expired, 2.0, "the WebSocket and the SSE stream: {metrics}");
    // The long-lived socket is still open and delivers the next event.
    let second = submit_as_service(&ts, json!({"type": "runyard.noop", "channel": channel})).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while ws_events(&mut ws_long, 1).await[0]["job_id"] != second.as_str() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the long-lived socket did not deliver the second job's event"
        );
    }
    ts.stop().await;
}

const REPORTS: &str = "ry_events_reports_only";

/// A server with the `reports` token: `jobs:read`, confined to `runyard.echo` on `chan-a`.
async fn server_with_reports_token() -> (TestServer, Headers) {
    let ts = TestServer::builder(RUNNERS)
        .config(&format!(
            "[auth]\njwt_secret = \"{SECRET}\"\nallowed_origins = [\"{ORIGIN}\"]\n\
             metrics_require_token = false\n\
             [[auth.tokens]]\nname = \"reports\"\nsha256 = \"{}\"\nscopes = [\"jobs:read\"]\n\
             types = [\"runyard.echo\"]\nchannels = [\"chan-a\"]\n",
            runyard::auth::tokens::token_sha256(REPORTS)
        ))
        .start()
        .await;
    (ts, vec![("authorization", format!("Bearer {REPORTS}"))])
}

/// A confined poll after more hidden events than one poll reads (`TYPED_POLL_PAGES` pages of
/// 100) answers at once, before its wait, with an empty `result` and a `last_id` past the hidden
/// events it read; polled again from that `last_id`, the client reaches its type's event. (Before,
/// a poll read every page up to the first shown event, whatever its wait: on a busy channel of
/// others' jobs past `api.request_timeout` every poll was a 503 and the client never advanced.)
#[tokio::test]
async fn a_confined_poll_reads_a_bounded_number_of_pages_and_the_client_advances() {
    let (mut ts, reports) = server_with_reports_token().await;
    let hidden_jobs = 200;
    let batch: Vec<Value> = (0..hidden_jobs)
        .map(|_| json!({"type": "runyard.noop", "channel": "chan-a"}))
        .collect();
    let res = ts
        .client
        .post(ts.at("/async/jobs/batch"))
        .bearer_auth(service_token())
        .json(&json!({ "jobs": batch }))
        .send()
        .await
        .expect("batch");
    assert_eq!(res.status().as_u16(), 200, "{:?}", res.text().await);
    // Every hidden job is done (its events all written) before the shown one is submitted.
    let channel = cookie(&token("chan-a", json!(1)));
    let deadline = tokio::time::Instant::now() + WAIT;
    let hidden = loop {
        let all = poll_all(&ts, &channel).await;
        let done = all
            .iter()
            .filter(|e| e["runyard_status"] == "SUCCESS")
            .count();
        if done == hidden_jobs {
            break all.len();
        }
        assert!(tokio::time::Instant::now() < deadline, "{done} jobs done");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let bound = runyard::api::events::TYPED_POLL_PAGES * runyard::api::events::EVENT_PAGE;
    assert!(hidden > bound, "{hidden} hidden events, more than {bound}");
    let report = submit_as_service(&ts, json!({"type": "runyard.echo", "channel": "chan-a"})).await;
    assert_eq!(
        wait_done_as_service(&ts, &report).await["status"],
        "SUCCESS"
    );

    let order = ids(&poll_all(&ts, &channel).await);
    let at = |id: &str| -> usize {
        order.iter().position(|o| o == id).map_or_else(
            || {
                assert_eq!(id, "0", "not an event id of the channel");
                0
            },
            |p| p + 1,
        )
    };
    let mut last = "0".to_string();
    let mut empty_answers = 0;
    let first = loop {
        // A long wait: an answer that read its pages comes at once, not at the end of the wait.
        let answer = tokio::time::timeout(
            Duration::from_secs(20),
            poll(
                &ts,
                &format!("last_id={last}&limit=1&wait_ms=30000"),
                &reports,
            ),
        )
        .await
        .expect("the poll answers before its wait is over");
        let (s, body) = answer;
        assert_eq!(s, 200, "{body}");
        let result = body["result"].as_array().expect("result");
        let next = body["last_id"].as_str().expect("last_id").to_string();
        let (before, after) = (at(&last), at(&next));
        if let Some(e) = result.first() {
            assert_eq!(result.len(), 1, "limit 1: {body}");
            assert_eq!(e["id"].as_str(), Some(next.as_str()), "{body}");
            break e.clone();
        }
        empty_answers += 1;
        assert!(after > before, "an empty answer moves last_id on: {body}");
        assert!(
            after - before <= bound,
            "one poll read at most {bound} events: {before} -> {after}"
        );
        assert!(empty_answers <= hidden / bound + 1, "{body}");
        last = next;
    };
    assert!(
        empty_answers >= 1,
        "the first poll stopped before the shown event"
    );
    assert_eq!(first["job_id"], report.as_str(), "{first}");
    // A poll from the start without a wait (stock Superset's shape) still answers `result`.
    let (s, body) = poll(&ts, "last_id=0&limit=1", &reports).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["result"], json!([]), "{body}");
    ts.stop().await;
}

/// A job's type is read once per process, not once per stream: two SSE streams, a WebSocket
/// and polls of a confined token read two jobs' types with two store reads in all.
#[tokio::test]
async fn confined_streams_share_the_job_types_they_read() {
    let (mut ts, reports) = server_with_reports_token().await;
    let payroll =
        submit_as_service(&ts, json!({"type": "runyard.noop", "channel": "chan-a"})).await;
    assert_eq!(
        wait_done_as_service(&ts, &payroll).await["status"],
        "SUCCESS"
    );
    let report = submit_as_service(&ts, json!({"type": "runyard.echo", "channel": "chan-a"})).await;
    assert_eq!(
        wait_done_as_service(&ts, &report).await["status"],
        "SUCCESS"
    );
    let all = poll_all(&ts, &cookie(&token("chan-a", json!(1)))).await;
    let shown = all
        .iter()
        .filter(|e| e["job_id"] == report.as_str())
        .count();
    let gets = ts.store_calls("get").await;

    let first = sse_events(&ts, &reports, shown).await;
    let second = sse_events(&ts, &reports, shown).await;
    assert_eq!(ids(&first), ids(&second));
    let mut ws = ws_connect(&ts, "last_id=0", &reports)
        .await
        .expect("ws upgrades");
    assert_eq!(ids(&ws_events(&mut ws, shown).await), ids(&first));
    assert_eq!(ids(&poll_all(&ts, &reports).await), ids(&first));
    assert_eq!(
        ts.store_calls("get").await - gets,
        2,
        "one store read per job, whatever the streams"
    );
    ts.stop().await;
}
