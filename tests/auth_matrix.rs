//! The auth matrix (docs/auth.md): a real server on port 0 (embedded store, no worker so nothing
//! moves on its own) with `[auth]`, and every route of the access table x every kind of caller:
//! no token, a bad token, a JWT signed with another secret, a token in the query string, one
//! token per scope, an admin token confined to another type glob, one confined to another
//! channel, JWTs with a `scope` claim (with and without a `channel`), a channel-only JWT. Each
//! gets the code docs/auth.md documents, and nothing in the store changes on a refusal.
//!
//! The route list is the access table itself (`ROUTES`), checked three ways against the server:
//! every path the router serves is in the table (the router's own path list), every line of the
//! table is routed and guarded (no token: 401), and docs/auth.md lists exactly the table.

use std::collections::BTreeSet;
use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::Method;
use runyard::api::jobs::{build_job, SubmitBody};
use runyard::api::AppState;
use runyard::auth::access::{Need, On, ROUTES};
use runyard::auth::tokens::{token_sha256, Authenticator, Scope};
use runyard::config::Config;
use runyard::server::{RunningServer, ServerBuilder};
use runyard::store::ListQuery;
use serde_json::{json, Value};

const SECRET: &str = "auth-matrix-secret-0123456789abcdef-0123";
const TYPE: &str = "runyard.noop";
const CHANNEL: &str = "ch-a";
const SCHEDULE: &str = "nightly";
const SIGNAL: &str = "src.loaded";

fn scope_token(s: Scope) -> String {
    format!("ry_matrix_{}", s.as_str().replace(':', "_"))
}
const WRONG_TYPE: &str = "ry_matrix_wrong_type";
const WRONG_CHANNEL: &str = "ry_matrix_wrong_channel";
const CONFINED_OK: &str = "ry_matrix_confined_ok";
const ADMIN: &str = "ry_matrix_admin";

fn config_text(dir: &std::path::Path) -> String {
    let mut t = format!(
        "data_dir = \"{}\"\n[worker]\nlease_ttl = \"1s\"\n[events]\nprogress_interval = \"0s\"\n\
         [auth]\njwt_secret = \"{SECRET}\"\n",
        dir.join("data").display()
    );
    let mut token = |name: &str, tok: &str, extra: &str| {
        t.push_str(&format!(
            "[[auth.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\n{extra}\n",
            token_sha256(tok)
        ));
    };
    for s in Scope::ALL {
        token(
            &format!("only-{}", s.as_str().replace(':', "-")),
            &scope_token(s),
            &format!("scopes = [\"{s}\"]"),
        );
    }
    token(
        "wrong-type",
        WRONG_TYPE,
        "scopes = [\"admin\"]\ntypes = [\"other.*\"]",
    );
    token(
        "wrong-channel",
        WRONG_CHANNEL,
        "scopes = [\"admin\"]\nchannels = [\"elsewhere\"]",
    );
    token(
        "confined-ok",
        CONFINED_OK,
        &format!("scopes = [\"admin\"]\ntypes = [\"runyard.*\"]\nchannels = [\"{CHANNEL}\"]"),
    );
    t.push_str("[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n");
    t.push_str("[[runners]]\nkind = \"local\"\ntypes = [\"other.*\"]\ncommand = [\"true\"]\n");
    t
}

/// A server (API only, no worker) of configuration `text`, on a free loopback port.
async fn serve(text: &str) -> RunningServer {
    let config = Config::from_toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    ServerBuilder::new(config)
        .worker(false)
        .start(listener)
        .await
        .expect("start")
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn jwt(claims: Value, secret: &str) -> String {
    let mut c = claims;
    c["exp"] = json!(now() + 600);
    encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

struct Harness {
    server: Option<RunningServer>,
    url: String,
    http: reqwest::Client,
    job: String,
    _dir: tempfile::TempDir,
}

/// One request of the matrix.
struct Call {
    method: Method,
    path: String,
    query: String,
    body: Option<Value>,
    bytes: Option<Vec<u8>>,
}

impl Harness {
    /// Stops the server (its errors fail the test).
    async fn stop(mut self) {
        self.server
            .take()
            .expect("running")
            .stop()
            .await
            .expect("stop");
    }

    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = serve(&config_text(dir.path())).await;
        let url = server.url();
        let mut h = Harness {
            server: Some(server),
            url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
            job: String::new(),
            _dir: dir,
        };
        let (s, v) = h
            .send(
                &h.call(Method::POST, "/async/jobs", Some(submit_body())),
                Some(ADMIN),
            )
            .await;
        assert_eq!(s, 202, "{v}");
        h.job = v["job_id"].as_str().expect("job_id").to_string();
        h
    }

    fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("running")
    }

    fn call(&self, method: Method, path: &str, body: Option<Value>) -> Call {
        Call {
            method,
            path: path.to_string(),
            query: String::new(),
            body,
            bytes: None,
        }
    }

    /// The request the matrix sends to a route: its path filled with the fixtures, a valid body.
    fn call_for(&self, method: &str, pattern: &str) -> Call {
        let path = pattern
            .replace("{id}", &self.job)
            .replace("{uuid}", &self.job)
            .replace("{name}", SCHEDULE)
            .replace("{key}", SIGNAL)
            .replace("{property}", "inputs")
            .replace("{index}", "0")
            .replace("{store}", "jobs")
            .replace("{hash}", &"0".repeat(64));
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let mut c = self.call(method.clone(), &path, None);
        match (method.as_str(), pattern) {
            ("POST", "/async/jobs") => c.body = Some(submit_body()),
            ("POST", "/async/schedules") => {
                c.body = Some(schedule_body("other-schedule"));
            }
            ("PUT", "/async/schedules/{name}") => c.body = Some(schedule_body(SCHEDULE)),
            ("POST", "/async/schedules/{name}/backfill") => {
                c.body = Some(json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T02:00:00Z"}))
            }
            ("POST", "/async/signals/{key}") => c.body = Some(json!({"payload": {"n": 1}})),
            ("PUT", "/async/jobs/{id}/files/{property}") => c.bytes = Some(b"input".to_vec()),
            (_, p) if p.starts_with("/async/events") || p.starts_with("/api/v1/async_event") => {
                c.query = format!("channel={CHANNEL}&last_id=0");
            }
            _ => {}
        }
        c
    }

    /// Sends `c` with `bearer` (when given): status and JSON body (null when not JSON).
    async fn send(&self, c: &Call, bearer: Option<&str>) -> (u16, Value) {
        let mut url = format!("{}{}", self.url, c.path);
        if !c.query.is_empty() {
            url = format!("{url}?{}", c.query);
        }
        let mut req = self.http.request(c.method.clone(), &url);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(b) = &c.body {
            req = req.json(b);
        } else if let Some(b) = &c.bytes {
            req = req
                .header("content-type", "application/octet-stream")
                .body(b.clone());
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {url}: {e}", c.method));
        let status = res.status().as_u16();
        let streaming = res
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if streaming {
            return (status, Value::Null);
        }
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `method path [body]` as `bearer`, which must answer `status`: the answer's JSON.
    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        bearer: &str,
        status: u16,
    ) -> Value {
        let (s, v) = self
            .send(&self.call(method.clone(), path, body), Some(bearer))
            .await;
        assert_eq!(s, status, "{method} {path}: {v}");
        v
    }

    /// The schedule fixture exists (a route before may have deleted it).
    async fn ensure_schedule(&self) {
        let c = self.call(
            Method::PUT,
            &format!("/async/schedules/{SCHEDULE}"),
            Some(schedule_body(SCHEDULE)),
        );
        let (s, v) = self.send(&c, Some(ADMIN)).await;
        assert!(s == 200 || s == 201, "schedule fixture: {s} {v}");
    }

    /// Everything a refused request must leave alone: jobs (status, version, files), schedules,
    /// the signal records, the event streams.
    async fn snapshot(&self) -> Value {
        let store = &self.running().app.store;
        let page = store
            .list(ListQuery {
                status: None,
                job_type: None,
                limit: 10_000,
                cursor: None,
                ..Default::default()
            })
            .await
            .expect("list");
        let jobs: Vec<Value> = page
            .jobs
            .iter()
            .map(|j| json!([j.id, j.status, j.version, j.attempt, j.files.len()]))
            .collect();
        let schedules: Vec<Value> = store
            .schedules()
            .await
            .expect("schedules")
            .iter()
            .map(|s| json!([s.spec.name, s.version, s.paused]))
            .collect();
        let signals = store
            .signal_seqs(SIGNAL, 0, i64::MAX, 10_000)
            .await
            .expect("signals")
            .len();
        let events: Vec<String> = store
            .events(None, None, 10_000)
            .await
            .expect("events")
            .into_iter()
            .map(|e| e.id)
            .collect();
        json!({"jobs": jobs, "schedules": schedules, "signals": signals, "events": events})
    }
}

fn submit_body() -> Value {
    json!({"type": TYPE, "channel": CHANNEL})
}

fn schedule_body(name: &str) -> Value {
    json!({"name": name, "cron": "0 3 * * *", "paused": true,
           "job": {"type": TYPE, "channel": CHANNEL}})
}

/// What a caller should get on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Past the guard: the handler's own answer (never 401/403, never 5xx).
    Allowed,
    /// 401 `unauthorized`.
    Unauthorized,
    /// 403 `forbidden`.
    Forbidden,
    /// 400 `token_in_query`.
    TokenInQuery,
}

/// The routes that create a job from their body (checked against types and channels there).
fn creates_job(method: &str, path: &str) -> bool {
    matches!(
        (method, path),
        ("POST", "/async/jobs") | ("POST", "/async/schedules") | ("PUT", "/async/schedules/{name}")
    )
}

/// The callers of the matrix: (label, bearer, expectation on a client route needing `scope` on
/// `on`, expectation on an event route).
fn callers(method: &str, path: &str, scope: Option<(Scope, On)>) -> Vec<(String, String, Expect)> {
    let other = "another-secret-another-secret-another-secret";
    let mut out = Vec::new();
    let confined_target = |on: On| on != On::Any || creates_job(method, path);
    match scope {
        Some((need, on)) => {
            for s in Scope::ALL {
                let ok = s == need || s == Scope::Admin;
                out.push((
                    format!("token with {s}"),
                    scope_token(s),
                    if ok {
                        Expect::Allowed
                    } else {
                        Expect::Forbidden
                    },
                ));
                out.push((
                    format!("JWT with scope {s}"),
                    jwt(json!({"scope": s.as_str(), "sub": "svc"}), SECRET),
                    if ok {
                        Expect::Allowed
                    } else {
                        Expect::Forbidden
                    },
                ));
            }
            let confined = if confined_target(on) {
                Expect::Forbidden
            } else {
                Expect::Allowed
            };
            // Counts over every channel (GET /async/stats, /async/activity, /async/dead_letters:
            // `Need::EveryChannel`) are refused to any credential confined to channels, even its
            // own: they would tell it about the other channels' jobs.
            // Answers over every job that cannot be narrowed (`/metrics` when protected, an
            // endpoint's signing key: `Need::Unconfined`) are refused to any confined
            // credential, by types or by channels.
            let looked = runyard::auth::access::lookup(
                &Method::from_bytes(method.as_bytes()).expect("method"),
                path,
            );
            let every_job = matches!(looked, Some(Need::Unconfined(_) | Need::Metrics));
            let counts_all = every_job || matches!(looked, Some(Need::EveryChannel(_)));
            let own_channel = if counts_all {
                Expect::Forbidden
            } else {
                Expect::Allowed
            };
            let other_channel = if counts_all {
                Expect::Forbidden
            } else {
                confined
            };
            let other_type = if every_job {
                Expect::Forbidden
            } else {
                confined
            };
            out.push((
                "admin, other type glob".into(),
                WRONG_TYPE.into(),
                other_type,
            ));
            out.push((
                "admin, other channel".into(),
                WRONG_CHANNEL.into(),
                other_channel,
            ));
            out.push((
                "admin, its own type and channel".into(),
                CONFINED_OK.into(),
                own_channel,
            ));
            out.push((
                "JWT with scope and its channel".into(),
                jwt(json!({"scope": need.as_str(), "channel": CHANNEL}), SECRET),
                own_channel,
            ));
            out.push((
                "JWT with scope and another channel".into(),
                jwt(
                    json!({"scope": need.as_str(), "channel": "elsewhere"}),
                    SECRET,
                ),
                other_channel,
            ));
            // A job's result (its events' `result_url`) is read by the channel JWT that
            // receives them, for its channel's jobs (another's: 404, tests/result_url_auth.rs).
            let channel_jwt = if matches!(looked, Some(Need::JobResult)) {
                Expect::Allowed
            } else {
                Expect::Forbidden
            };
            out.push((
                "channel JWT (no scope)".into(),
                jwt(json!({"channel": CHANNEL, "sub": 1}), SECRET),
                channel_jwt,
            ));
        }
        None => {
            // Event routes (asked for `channel=ch-a`): `jobs:read` or a channel JWT.
            for s in Scope::ALL {
                let ok = s == Scope::JobsRead || s == Scope::Admin;
                out.push((
                    format!("token with {s}"),
                    scope_token(s),
                    if ok {
                        Expect::Allowed
                    } else {
                        Expect::Forbidden
                    },
                ));
            }
            out.push((
                "admin, other type glob".into(),
                WRONG_TYPE.into(),
                Expect::Forbidden,
            ));
            out.push((
                "admin, other channel".into(),
                WRONG_CHANNEL.into(),
                Expect::Forbidden,
            ));
            out.push((
                "admin, its own type and channel".into(),
                CONFINED_OK.into(),
                Expect::Allowed,
            ));
            out.push((
                "channel JWT".into(),
                jwt(json!({"channel": CHANNEL, "sub": 1}), SECRET),
                Expect::Allowed,
            ));
            out.push((
                "channel JWT of another channel".into(),
                jwt(json!({"channel": "elsewhere", "sub": 1}), SECRET),
                Expect::Forbidden,
            ));
            out.push((
                "JWT with scope jobs:read".into(),
                jwt(json!({"scope": "jobs:read"}), SECRET),
                Expect::Allowed,
            ));
            out.push((
                "JWT with scope jobs:submit".into(),
                jwt(json!({"scope": "jobs:submit"}), SECRET),
                Expect::Forbidden,
            ));
            // A `scope` makes the channel a confinement, not a grant: without `jobs:read` the
            // token's own channel's events are refused too (an empty scope grants nothing).
            for scope in ["jobs:submit", ""] {
                out.push((
                    format!("JWT with scope `{scope}` and the channel"),
                    jwt(json!({"scope": scope, "channel": CHANNEL}), SECRET),
                    Expect::Forbidden,
                ));
            }
            out.push((
                "JWT with scope jobs:read and the channel".into(),
                jwt(json!({"scope": "jobs:read", "channel": CHANNEL}), SECRET),
                Expect::Allowed,
            ));
        }
    }
    out.push(("no token".into(), String::new(), Expect::Unauthorized));
    out.push((
        "bad token".into(),
        "ry_not_a_configured_token".into(),
        Expect::Unauthorized,
    ));
    out.push((
        "JWT signed with another secret".into(),
        jwt(json!({"scope": "admin", "channel": CHANNEL}), other),
        Expect::Unauthorized,
    ));
    out
}

fn check(label: &str, route: &str, expect: Expect, status: u16, body: &Value) {
    let code = body["error"]["code"].as_str().unwrap_or("");
    let ok = match expect {
        Expect::Allowed => {
            status != 401
                && status != 403
                && status < 500
                && code != "token_in_query"
                && !(status == 404 && body["error"]["message"] == "no such route")
        }
        Expect::Unauthorized => status == 401 && code == "unauthorized",
        Expect::Forbidden => status == 403 && code == "forbidden",
        Expect::TokenInQuery => status == 400 && code == "token_in_query",
    };
    assert!(
        ok,
        "{route} as {label}: expected {expect:?}, got {status} {body}"
    );
}

#[tokio::test]
async fn every_route_times_every_caller_gets_its_documented_code() {
    let h = Harness::start().await;
    let mut client_routes = 0;
    for r in ROUTES {
        let need = match r.need {
            Need::Client(s, on) => Some((s, on)),
            // For API tokens as a job route (the channel JWT's way: tests/event_auth.rs).
            Need::JobResult => Some((Scope::JobsRead, On::Job)),
            Need::EveryChannel(s) | Need::Unconfined(s) => Some((s, On::Any)),
            Need::Metrics => Some((Scope::JobsRead, On::Any)),
            Need::Events => None,
            Need::Hook | Need::Open => continue,
        };
        client_routes += 1;
        let route = format!("{} {}", r.method, r.path);
        h.ensure_schedule().await;
        let call = h.call_for(r.method, r.path);
        let cases = callers(r.method, r.path, need);
        let before = h.snapshot().await;
        // Refusals first: nothing may change.
        for (label, bearer, expect) in cases.iter().filter(|c| c.2 != Expect::Allowed) {
            let b = (!bearer.is_empty()).then_some(bearer.as_str());
            let (s, v) = h.send(&call, b).await;
            check(label, &route, *expect, s, &v);
            if *expect == Expect::Unauthorized {
                let m = v["error"]["message"].as_str().unwrap_or("");
                assert!(!m.contains(bearer.as_str()) || bearer.is_empty(), "{m}");
            }
        }
        // A token in the query string, even next to a valid header.
        for key in ["token", "access_token"] {
            let mut c = h.call_for(r.method, r.path);
            c.query = if c.query.is_empty() {
                format!("{key}={ADMIN}")
            } else {
                format!("{}&{key}={ADMIN}", c.query)
            };
            let (s, v) = h.send(&c, Some(ADMIN)).await;
            check(key, &route, Expect::TokenInQuery, s, &v);
            assert!(!v.to_string().contains(ADMIN), "{v}");
        }
        assert_eq!(
            h.snapshot().await,
            before,
            "{route}: a refused request changed the store"
        );
        for (label, bearer, _) in cases.iter().filter(|c| c.2 == Expect::Allowed) {
            let (s, v) = h.send(&call, Some(bearer)).await;
            check(label, &route, Expect::Allowed, s, &v);
        }
    }
    assert!(client_routes >= 25, "{client_routes} client routes");
    h.stop().await;
}

#[tokio::test]
async fn listings_show_only_what_the_caller_covers() {
    let h = Harness::start().await;
    h.ensure_schedule().await;
    let other = h
        .send(
            &h.call(
                Method::POST,
                "/async/jobs",
                Some(json!({"type": "other.kind", "channel": "elsewhere"})),
            ),
            Some(ADMIN),
        )
        .await;
    assert_eq!(other.0, 202, "{}", other.1);
    let other_id = other.1["job_id"].as_str().expect("id").to_string();
    let list = |v: &Value, key: &str, field: &str| -> BTreeSet<String> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|j| j[field].as_str().unwrap_or("").to_string())
            .collect()
    };
    let res = h
        .http
        .get(format!("{}/async/jobs", h.url))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status().as_u16(), 401);
    assert_eq!(
        res.headers().get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    let jobs = h.call(Method::GET, "/async/jobs", None);
    let (s, all) = h.send(&jobs, Some(ADMIN)).await;
    assert_eq!(s, 200);
    assert!(list(&all, "jobs", "id").contains(&other_id));
    for t in [CONFINED_OK, WRONG_TYPE, WRONG_CHANNEL] {
        let (s, v) = h.send(&jobs, Some(t)).await;
        assert_eq!(s, 200, "{v}");
        let seen = list(&v, "jobs", "id");
        // ch-a / runyard.noop for the confined token; other.kind on `elsewhere` for the others.
        assert_eq!(seen.contains(&h.job), t == CONFINED_OK, "{t}: {v}");
        assert_eq!(seen.contains(&other_id), t != CONFINED_OK, "{t}: {v}");
    }
    let schedules = h.call(Method::GET, "/async/schedules", None);
    for (t, sees) in [
        (ADMIN, true),
        (CONFINED_OK, true),
        (WRONG_TYPE, false),
        (WRONG_CHANNEL, false),
    ] {
        let (s, v) = h.send(&schedules, Some(t)).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            list(&v, "schedules", "name").contains(SCHEDULE),
            sees,
            "{t}: {v}"
        );
    }
    // Runner slots in use hold every tenant's jobs: counted for an unconfined grant only.
    let runners = h.call(Method::GET, "/async/runners", None);
    for (t, counted) in [
        (ADMIN, true),
        (CONFINED_OK, false),
        (WRONG_TYPE, false),
        (WRONG_CHANNEL, false),
    ] {
        let (s, v) = h.send(&runners, Some(t)).await;
        assert_eq!(s, 200, "{v}");
        let slots = v["runners"].as_array().expect("runners");
        assert!(!slots.is_empty(), "{v}");
        for r in slots {
            assert_eq!(r["in_use"].is_u64(), counted, "{t}: {v}");
            assert_eq!(r["in_use"].is_null(), !counted, "{t}: {v}");
        }
    }
    // Acting on a job is not reading it: without `jobs:read` the answer is its id, status and
    // attempt only, not its args or result.
    let cancel = h.call(
        Method::POST,
        &format!("/async/jobs/{other_id}/cancel"),
        None,
    );
    let (s, v) = h.send(&cancel, Some(&scope_token(Scope::JobsCancel))).await;
    assert_eq!(s, 200, "{v}");
    let keys = |v: &Value| -> BTreeSet<String> {
        v.as_object().expect("object").keys().cloned().collect()
    };
    assert_eq!(
        keys(&v),
        ["attempt", "id", "status"].map(String::from).into(),
        "{v}"
    );
    assert_eq!(v["status"], "CANCELLED");
    let retry = h.call(Method::POST, &format!("/async/jobs/{other_id}/retry"), None);
    let (s, v) = h.send(&retry, Some(&scope_token(Scope::JobsSubmit))).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(
        keys(&v),
        ["attempt", "id", "status"].map(String::from).into(),
        "{v}"
    );
    let (s, v) = h.send(&cancel, Some(ADMIN)).await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("args").is_some() && v["type"] == "other.kind", "{v}");
    h.stop().await;
}

/// A new job is checked against its caller's grant wherever it is built (docs/auth.md, "In the
/// code"): `build_job` takes the grant, so a job built on another thread than its request's (as
/// a batch on the blocking pool builds its items) is refused outside the caller's types and
/// channels, and a grant that covers it builds it. When the grant was a task-local of the
/// request, a job built where it did not follow was checked against nothing and passed.
#[tokio::test]
async fn a_job_built_off_the_requests_task_is_checked_against_its_callers_grant() {
    let h = Harness::start().await;
    let app = h.server.as_ref().expect("running").app.clone();
    let auth = Authenticator::new(&app.config.auth).expect("[auth] compiles");
    let grant = |t: &str| auth.authenticate(t).expect("token accepted");
    let grants = [grant(WRONG_TYPE), grant(WRONG_CHANNEL), grant(CONFINED_OK)];
    let st = AppState { app };
    // A plain thread: no runtime, no request, nothing of the request's task in sight.
    let built = std::thread::spawn(move || {
        grants.map(|g| {
            let body: SubmitBody =
                serde_json::from_value(json!({"type": TYPE, "channel": CHANNEL})).expect("body");
            build_job(&st, &g, body, None, runyard::job::now_us())
                .map(|job| (job.job_type, job.channel_id))
                .map_err(|e| (e.status.as_u16(), e.code, e.message))
        })
    })
    .join()
    .expect("the thread ends");
    let [wrong_type, wrong_channel, ok] = built;
    let (status, code, message) = wrong_type.expect_err("outside the token's types");
    assert_eq!((status, code), (403, "forbidden"), "{message}");
    assert!(
        message.contains("other.*") && message.contains(TYPE),
        "{message}"
    );
    let (status, code, message) = wrong_channel.expect_err("outside the token's channels");
    assert_eq!((status, code), (403, "forbidden"), "{message}");
    assert!(
        message.contains("elsewhere") && message.contains(CHANNEL),
        "{message}"
    );
    assert_eq!(ok, Ok((TYPE.to_string(), CHANNEL.to_string())));
    h.stop().await;
}

/// The router's own path list (from its `Debug` form): every path it serves.
fn routed_paths(router: &axum::Router) -> BTreeSet<String> {
    let text = format!("{router:?}");
    // The served routes, not the fallback router's.
    let served = text.split("fallback_router").next().unwrap_or("");
    let mut out = BTreeSet::new();
    let mut rest = served;
    while let Some(i) = rest.find(": \"/") {
        let tail = &rest[i + 3..];
        let end = tail.find('"').unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[tokio::test]
async fn the_access_table_is_the_router_and_the_docs() {
    let h = Harness::start().await;
    // Every path the router serves has its line(s) in the table...
    let router = runyard::api::router(h.running().app.clone());
    let routed = routed_paths(&router);
    assert!(routed.len() >= 25, "router paths: {routed:?}");
    let table: BTreeSet<String> = ROUTES.iter().map(|r| r.path.to_string()).collect();
    let missing: Vec<_> = routed.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "routes without a line in src/auth/access.rs ROUTES: {missing:?}"
    );
    let stale: Vec<_> = table.difference(&routed).collect();
    assert!(
        stale.is_empty(),
        "table lines the router does not serve: {stale:?}"
    );
    // ... and a method the table does not list on a path is not served (405), so each served
    // (method, path) has its own line.
    for path in &table {
        for m in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if ROUTES.iter().any(|r| r.path == path && r.method == m) {
                continue;
            }
            let c = h.call_for(m, path);
            let (s, v) = h.send(&c, Some(ADMIN)).await;
            assert_eq!(
                s, 405,
                "{m} {path} is served without a line in the table: {v}"
            );
        }
    }
    // docs/auth.md's route table is the access table.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/auth.md"))
        .expect("docs/auth.md");
    let documented: BTreeSet<String> = doc
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(|c| c.trim().trim_matches('`')).collect();
            (cells.len() >= 4 && cells[1].chars().all(|c| c.is_ascii_uppercase()))
                .then(|| format!("{} {} {}", cells[1], cells[2], cells[3]))
        })
        .collect();
    let expected: BTreeSet<String> = ROUTES
        .iter()
        .map(|r| {
            let need = match r.need {
                Need::Client(s, _) | Need::EveryChannel(s) | Need::Unconfined(s) => {
                    s.as_str().to_string()
                }
                Need::Events => "events".into(),
                Need::JobResult => "result".into(),
                Need::Hook => "hook".into(),
                Need::Open => "open".into(),
                Need::Metrics => "metrics".into(),
            };
            format!("{} {} {need}", r.method, r.path)
        })
        .collect();
    assert_eq!(documented, expected, "docs/auth.md's route table");
    h.stop().await;
}

#[tokio::test]
async fn open_and_hook_routes_need_no_token() {
    let h = Harness::start().await;
    let (s, v) = h.send(&h.call(Method::GET, "/health", None), None).await;
    assert_eq!(s, 200, "{v}");
    for r in ROUTES.iter().filter(|r| r.need == Need::Hook) {
        let (s, v) = h.send(&h.call_for(r.method, r.path), None).await;
        let m = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            !m.contains("Authorization: Bearer"),
            "{} {}: the hook answered with the bearer guard: {s} {v}",
            r.method,
            r.path
        );
        assert!(
            s == 401 || s == 400 || s == 403 || s == 404,
            "{} {}: {s} {v}",
            r.method,
            r.path
        );
    }
    h.stop().await;
}

/// Runs the binary with `args` to its end (bounded): exit success, stdout, stderr.
fn run_bin(args: &[&str], dir: &std::path::Path) -> (bool, String, String) {
    run_bin_env(args, dir, &[])
}

fn run_bin_env(
    args: &[&str],
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_runyard"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .env_remove("RUNYARD_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn runyard");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("runyard {args:?} did not exit within 30s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `auth.metrics_require_token = false` opens `/metrics` to a scrape without a credential (by
/// default it needs one: the matrix); every client route still needs one.
#[tokio::test]
async fn metrics_can_be_opened_on_purpose() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "data_dir = \"{}\"\n[auth]\njwt_secret = \"{SECRET}\"\nmetrics_require_token = false\n\
         [[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n",
        dir.path().join("data").display()
    );
    let server = serve(&text).await;
    let http = reqwest::Client::new();
    let url = server.url();
    let res = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status().as_u16(), 200, "/metrics opened");
    assert!(res.text().await.expect("text").contains("runyard_"));
    let res = http
        .get(format!("{url}/async/jobs"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        res.status().as_u16(),
        401,
        "the API still needs a credential"
    );
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn token_new_prints_a_token_once_and_lines_that_serve_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, out, err) = run_bin(
        &[
            "token",
            "new",
            "ci",
            "--scopes",
            "jobs:read,jobs:submit",
            "--types",
            "runyard.*",
        ],
        dir.path(),
    );
    assert!(ok, "{err}");
    let token = out.lines().next().expect("token line").trim().to_string();
    assert!(token.starts_with("ry_") && token.len() > 40, "{out}");
    assert_eq!(
        out.matches(&token).count(),
        1,
        "the token is printed once: {out}"
    );
    let lines = &out[out.find("[[auth.tokens]]").expect("config lines")..];
    assert!(lines.contains(&token_sha256(&token)), "{out}");
    // The pasted lines configure a server that accepts the token with exactly those scopes.
    let text = format!(
        "data_dir = \"{}\"\n{lines}\n[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n",
        dir.path().join("data").display()
    );
    let server = serve(&text).await;
    let http = reqwest::Client::new();
    let url = server.url();
    let res = http
        .post(format!("{url}/async/jobs"))
        .bearer_auth(&token)
        .json(&json!({"type": TYPE}))
        .send()
        .await
        .expect("submit");
    assert_eq!(res.status().as_u16(), 202);
    let id = res.json::<Value>().await.expect("json")["job_id"]
        .as_str()
        .expect("id")
        .to_string();
    let res = http
        .post(format!("{url}/async/jobs/{id}/cancel"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("cancel");
    assert_eq!(res.status().as_u16(), 403, "no jobs:cancel");
    // `/health` is open; `/metrics` needs a credential by default (`auth.metrics_require_token`)
    // and one confined to no types: this token's covers `runyard.*` only.
    let res = http.get(format!("{url}/health")).send().await.expect("get");
    assert_eq!(res.status().as_u16(), 200, "/health");
    let res = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status().as_u16(), 401, "/metrics without a credential");
    let res = http
        .get(format!("{url}/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(res.status().as_u16(), 403, "/metrics with a confined token");
    server.stop().await.expect("stop");

    // Bad input: an unknown scope, to `token new` and to `serve` (named, and the hash is not
    // repeated); a token pasted where its hash goes.
    let (ok, _, err) = run_bin(
        &["token", "new", "ci", "--scopes", "jobs:write"],
        dir.path(),
    );
    assert!(!ok && err.contains("jobs:write"), "{err}");
    let h = token_sha256("x");
    for (entry, key, secret) in [
        (
            format!("sha256 = \"{h}\"\nscopes = [\"jobs:write\"]"),
            "auth.tokens[0].scopes",
            h.as_str(),
        ),
        (
            "sha256 = \"ry_pasted_token\"\nscopes = [\"admin\"]".to_string(),
            "auth.tokens[0].sha256",
            "ry_pasted_token",
        ),
    ] {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, format!("[[auth.tokens]]\nname = \"ci\"\n{entry}\n")).expect("write");
        for cmd in ["serve", "worker"] {
            let (ok, _, err) = run_bin(&[cmd, "--config", cfg.to_str().expect("utf8")], dir.path());
            assert!(!ok, "{cmd} started with {entry}");
            assert!(err.contains(key) && err.contains("`ci`"), "{cmd}: {err}");
            assert!(!err.contains(secret), "{cmd} repeated the secret: {err}");
        }
    }

    // Tokens from the environment are read and checked the same way.
    let (ok, _, err) = run_bin_env(
        &[
            "serve",
            "--data-dir",
            dir.path().join("d3").to_str().expect("utf8"),
        ],
        dir.path(),
        &[(
            "RUNYARD_AUTH__TOKENS",
            &format!("[{{name=\"env-ci\", sha256=\"{h}\", scopes=[\"jobs:write\"]}}]"),
        )],
    );
    assert!(!ok);
    assert!(
        err.contains("auth.tokens[0].scopes")
            && err.contains("env-ci")
            && err.contains("jobs:write"),
        "{err}"
    );

    // Without auth, a public address is refused (before binding) with what to do.
    let (ok, _, err) = run_bin(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            dir.path().join("d2").to_str().expect("utf8"),
        ],
        dir.path(),
    );
    assert!(!ok);
    assert!(
        err.contains("0.0.0.0:0") && err.contains("[auth]") && err.contains("--insecure-no-auth"),
        "{err}"
    );
}

/// Idempotency keys are one space for every job, whoever stored it: a caller reusing a key
/// taken by a job outside its grant gets `409 idempotency_conflict`, single submit and batch
/// item alike, and the answer names nothing of that job (not its id, not its channel). A job
/// without a body hash (a schedule fire's, a job stored by an older version: here one stored
/// through the store) was replayed to anyone with its key: its id and channel. A
/// caller whose grant covers the job still gets its replay (the same id).
#[tokio::test]
async fn a_key_taken_outside_the_callers_grant_is_409_naming_nothing_of_that_job() {
    let h = Harness::start().await;
    let app = h.server.as_ref().expect("running").app.clone();
    let submit = |body: Value| h.call(Method::POST, "/async/jobs", Some(body));
    let keyed = json!({"type": TYPE, "channel": CHANNEL, "idempotency_key": "shared-key"});
    let (s, v) = h.send(&submit(keyed.clone()), Some(ADMIN)).await;
    assert_eq!(s, 202, "{v}");
    let hashed = v["job_id"].as_str().expect("id").to_string();
    // A job with a key and no body hash, on ch-a.
    let auth = Authenticator::new(&app.config.auth).expect("[auth] compiles");
    let admin = auth.authenticate(ADMIN).expect("token accepted");
    let body: SubmitBody = serde_json::from_value(
        json!({"type": TYPE, "channel": CHANNEL, "idempotency_key": "hashless-key"}),
    )
    .expect("body");
    let now = runyard::job::now_us();
    let job = build_job(&AppState { app: app.clone() }, &admin, body, None, now).expect("built");
    assert_eq!(job.submit_hash, None);
    let hashless = app
        .store
        .submit(job)
        .await
        .expect("stored")
        .job
        .id
        .to_string();
    let before = h.snapshot().await;
    let theirs = |key: &str| json!({"type": TYPE, "channel": "elsewhere", "idempotency_key": key});
    let leaks = |v: &Value| {
        let text = v.to_string();
        [hashed.as_str(), hashless.as_str(), CHANNEL]
            .into_iter()
            .find(|x| text.contains(x))
            .map(str::to_string)
    };
    for key in ["shared-key", "hashless-key"] {
        let (s, v) = h.send(&submit(theirs(key)), Some(WRONG_CHANNEL)).await;
        assert_eq!(
            (s, &v["error"]["code"]),
            (409, &json!("idempotency_conflict")),
            "{key}: {v}"
        );
        assert_eq!(leaks(&v), None, "{key}: {v}");
    }
    let batch = h.call(
        Method::POST,
        "/async/jobs/batch",
        Some(json!({"jobs": [theirs("shared-key"), theirs("hashless-key")]})),
    );
    let (s, v) = h.send(&batch, Some(WRONG_CHANNEL)).await;
    assert_eq!(s, 200, "{v}");
    for r in v["results"].as_array().expect("results") {
        assert_eq!(r["status_code"], 409, "{v}");
        assert_eq!(r["error"]["code"], "idempotency_conflict", "{v}");
    }
    assert_eq!(leaks(&v), None, "{v}");
    assert_eq!(h.snapshot().await, before, "nothing stored or changed");
    // A grant that covers the jobs replays them, as before (the single submit: 202 with the
    // earlier job, batch items: 200).
    let (s, v) = h.send(&submit(keyed.clone()), Some(CONFINED_OK)).await;
    assert_eq!(
        (s, v["job_id"].as_str()),
        (202, Some(hashed.as_str())),
        "{v}"
    );
    let mine = json!({"type": TYPE, "channel": CHANNEL, "idempotency_key": "hashless-key"});
    let (s, v) = h.send(&submit(mine.clone()), Some(CONFINED_OK)).await;
    assert_eq!(
        (s, v["job_id"].as_str()),
        (202, Some(hashless.as_str())),
        "{v}"
    );
    let batch = h.call(
        Method::POST,
        "/async/jobs/batch",
        Some(json!({"jobs": [keyed, mine]})),
    );
    let (s, v) = h.send(&batch, Some(CONFINED_OK)).await;
    assert_eq!(s, 200, "{v}");
    let ids: Vec<_> = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| (r["status_code"].clone(), r["job_id"].clone()))
        .collect();
    assert_eq!(
        ids,
        [(json!(200), json!(hashed)), (json!(200), json!(hashless))]
    );
    assert_eq!(h.snapshot().await, before, "replays store nothing");
    h.stop().await;
}

/// A token confined elsewhere asking for another tenant's job or schedule by its path gets a
/// 403 that names only the token's own confinement: not the job's channel or type, which are
/// the other tenant's.
#[tokio::test]
async fn a_refusal_of_another_tenants_job_names_nothing_of_it() {
    let h = Harness::start().await;
    let (s, v) = h
        .send(
            &h.call(
                Method::PUT,
                &format!("/async/schedules/{SCHEDULE}"),
                Some(schedule_body(SCHEDULE)),
            ),
            Some(ADMIN),
        )
        .await;
    assert!(s == 200 || s == 201, "{v}");
    let job = h.job.clone();
    let paths = [
        (Method::GET, format!("/async/jobs/{job}")),
        (Method::GET, format!("/async/jobs/{job}/logs")),
        (Method::GET, format!("/async/jobs/{job}/result")),
        (Method::POST, format!("/async/jobs/{job}/cancel")),
        (Method::GET, format!("/async/schedules/{SCHEDULE}")),
        (Method::POST, format!("/async/schedules/{SCHEDULE}/pause")),
    ];
    for token in [WRONG_TYPE, WRONG_CHANNEL] {
        for (method, path) in &paths {
            let (s, v) = h
                .send(&h.call(method.clone(), path, None), Some(token))
                .await;
            assert_eq!(s, 403, "{method} {path}: {v}");
            let text = v.to_string();
            for theirs in [CHANNEL, TYPE] {
                assert!(
                    !text.contains(theirs),
                    "{method} {path} names `{theirs}`: {v}"
                );
            }
            assert!(text.contains("confined to"), "{v}");
        }
    }
    h.stop().await;
}

/// A fire's idempotency key (`schedule:{name}:{fire_time}`, predictable) is the schedules'
/// own: a submit giving a key that starts with `schedule:` is `422 invalid_request` (single and
/// batch item), nothing is stored, and the fire of that time still makes its own job. When a
/// caller could take the key first, the fire found the caller's job under it and recorded it
/// as the schedule's run.
#[tokio::test]
async fn a_key_starting_with_schedule_is_refused_and_the_fire_keeps_its_key() {
    let h = Harness::start().await;
    h.ensure_schedule().await;
    let key = format!("schedule:{SCHEDULE}:2026-01-01T03:00:00Z");
    let body = json!({"type": TYPE, "channel": CHANNEL, "idempotency_key": key});
    let before = h.snapshot().await;
    let (s, v) = h
        .send(
            &h.call(Method::POST, "/async/jobs", Some(body.clone())),
            Some(ADMIN),
        )
        .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (422, &json!("invalid_request")),
        "{v}"
    );
    let message = v["error"]["message"].as_str().expect("message");
    assert!(message.contains("`schedule:`"), "{message}");
    let batch = json!({"jobs": [body, {"type": TYPE, "channel": CHANNEL, "idempotency_key": "schedule:x"}]});
    let (s, v) = h
        .send(
            &h.call(Method::POST, "/async/jobs/batch", Some(batch)),
            Some(ADMIN),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    for r in v["results"].as_array().expect("results") {
        assert_eq!(r["status_code"], 422, "{v}");
        assert_eq!(r["error"]["code"], "invalid_request", "{v}");
    }
    assert_eq!(h.snapshot().await, before, "nothing stored");
    let backfill = h.call(
        Method::POST,
        &format!("/async/schedules/{SCHEDULE}/backfill"),
        Some(json!({"from": "2026-01-01T02:00:00Z", "to": "2026-01-01T04:00:00Z"})),
    );
    let (s, v) = h.send(&backfill, Some(ADMIN)).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(
        v["fires"][0]["created"], true,
        "the fire made its own job: {v}"
    );
    let job = h
        .send(
            &h.call(
                Method::GET,
                &format!(
                    "/async/jobs/{}",
                    v["fires"][0]["job_id"].as_str().expect("id")
                ),
                None,
            ),
            Some(ADMIN),
        )
        .await
        .1;
    assert_eq!(job["idempotency_key"], json!(key), "{job}");
    assert_eq!(job["schedule"], SCHEDULE, "{job}");
    h.stop().await;
}

/// A multipart submit whose `job` part comes first is checked before any file part is read: a
/// job the caller may not submit (another channel, another type) or an invalid one answers its
/// error and stores none of its files; an accepted one stores them.
#[tokio::test]
async fn a_refused_multipart_submit_stores_none_of_its_files() {
    use md5::{Digest, Md5};
    let h = Harness::start().await;
    let files = h._dir.path().join("data").join("files");
    let blob = |content: &str| {
        let hash = hex::encode(Md5::digest(content.as_bytes()));
        files.join(&hash[..2]).join(hash)
    };
    let send = |job: Value, content: String, bearer: &'static str| {
        let form = reqwest::multipart::Form::new()
            .text("job", job.to_string())
            .part(
                "inputs",
                reqwest::multipart::Part::bytes(content.into_bytes()).file_name("in.txt"),
            );
        h.http
            .post(format!("{}/async/jobs", h.url))
            .bearer_auth(bearer)
            .multipart(form)
            .send()
    };
    let refused = [
        (submit_body(), WRONG_CHANNEL, 403, "forbidden"),
        (submit_body(), WRONG_TYPE, 403, "forbidden"),
        (
            json!({"type": TYPE, "channel": CHANNEL, "max_attempts": 0}),
            ADMIN,
            422,
            "invalid_request",
        ),
        (
            json!({"type": "no.such.type", "channel": CHANNEL}),
            ADMIN,
            422,
            "unknown_type",
        ),
    ];
    let before = h.snapshot().await;
    for (i, (job, bearer, code, error)) in refused.into_iter().enumerate() {
        let content = format!("refused upload {i} {}", uuid::Uuid::now_v7());
        let r = send(job.clone(), content.clone(), bearer)
            .await
            .expect("send");
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("json");
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (code, Some(error)),
            "{job} by {bearer}: {body}"
        );
        assert!(
            !blob(&content).exists(),
            "{job} by {bearer} was refused ({status}) but its file was stored"
        );
    }
    assert_eq!(
        h.snapshot().await,
        before,
        "a refused submit changed the store"
    );
    // The same upload by a caller who may submit that job: its file is stored where looked for.
    let content = format!("accepted upload {}", uuid::Uuid::now_v7());
    let r = send(submit_body(), content.clone(), CONFINED_OK)
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
    assert!(
        blob(&content).exists(),
        "the accepted submit's file is not stored"
    );
    h.stop().await;
}

/// A 403 that names `signals:write` (a job with `emits`, by a caller without it).
fn refused_without_signals_write((s, v): (u16, Value)) {
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("signals:write"), "{v}");
}

/// A submit's `emits` writes signals when the job succeeds: it needs `signals:write` besides
/// `jobs:submit` (403, nothing stored), single and in a schedule's job template, and a caller
/// with both scopes is served.
#[tokio::test]
async fn emits_needs_signals_write() {
    let h = Harness::start().await;
    let submitter = jwt(json!({"scope": "jobs:submit", "sub": "svc"}), SECRET);
    let scheduler = jwt(
        json!({"scope": "schedules:write jobs:submit", "sub": "svc"}),
        SECRET,
    );
    let both = jwt(
        json!({"scope": "jobs:submit signals:write", "sub": "svc"}),
        SECRET,
    );
    let body = json!({"type": TYPE, "channel": CHANNEL, "emits": ["b.ready"]});
    let before = h.snapshot().await;
    let (s, v) = h
        .send(
            &h.call(Method::POST, "/async/jobs", Some(body.clone())),
            Some(&submitter),
        )
        .await;
    refused_without_signals_write((s, v));
    let mut sched = schedule_body("emitter");
    sched["job"]["emits"] = json!(["b.ready"]);
    let (s, v) = h
        .send(
            &h.call(Method::POST, "/async/schedules", Some(sched)),
            Some(&scheduler),
        )
        .await;
    refused_without_signals_write((s, v));
    assert_eq!(
        h.snapshot().await,
        before,
        "a refused submit changed the store"
    );
    let (s, v) = h
        .send(
            &h.call(Method::POST, "/async/jobs", Some(body)),
            Some(&both),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    h.stop().await;
}

/// A schedule created again under the name of a deleted one (by a caller confined to another
/// channel) has the same fire keys: its backfill of a time the earlier one fired must not
/// adopt that job (return it, record it as its run, so later cancel it with `cancel_other`);
/// the fire is recorded as an error naming no job, and the earlier job is left alone.
#[tokio::test]
async fn a_schedule_made_again_under_a_deleted_ones_name_does_not_adopt_its_jobs() {
    let h = Harness::start().await;
    let name = "reused";
    let range = json!({"from": "2026-01-01T02:30:00Z", "to": "2026-01-01T03:30:00Z"});
    let backfill = format!("/async/schedules/{name}/backfill");
    let mut theirs = schedule_body(name);
    theirs["job"]["channel"] = json!("elsewhere");
    let (s, v) = h
        .send(
            &h.call(Method::POST, "/async/schedules", Some(theirs)),
            Some(ADMIN),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = h
        .send(
            &h.call(Method::POST, &backfill, Some(range.clone())),
            Some(ADMIN),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let old = v["fires"][0]["job_id"].as_str().expect("a job").to_string();
    let fire_time = v["fires"][0]["fire_time"].clone();
    assert_eq!(v["refused"], json!([]), "{v}");
    let (s, v) = h
        .send(
            &h.call(Method::DELETE, &format!("/async/schedules/{name}"), None),
            Some(ADMIN),
        )
        .await;
    assert!(s == 200 || s == 204, "{s} {v}");
    // The same name, by a token confined to CHANNEL, with `cancel_other`.
    let mut ours = schedule_body(name);
    ours["overlap"] = json!("cancel_other");
    let (s, v) = h
        .send(
            &h.call(Method::POST, "/async/schedules", Some(ours)),
            Some(CONFINED_OK),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = h
        .send(
            &h.call(Method::POST, &backfill, Some(range)),
            Some(CONFINED_OK),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert!(
        !v.to_string().contains(&old),
        "the backfill answered the deleted schedule's job: {v}"
    );
    // The answer says that time made no job, and why (not a silent `fires: []`).
    assert_eq!(v["fires"], json!([]), "{v}");
    assert_eq!(v["refused"][0]["fire_time"], fire_time, "{v}");
    let why = v["refused"][0]["error"].as_str().unwrap_or_default();
    assert!(why.contains("did not make"), "{v}");
    let (s, v) = h
        .send(
            &h.call(Method::GET, &format!("/async/schedules/{name}"), None),
            Some(CONFINED_OK),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(!v.to_string().contains(&old), "its runs name that job: {v}");
    let run = &v["last_runs"][0];
    assert_eq!(
        (run["outcome"].as_str(), run["job_id"].is_null()),
        (Some("error"), true),
        "{v}"
    );
    // The earlier job is as it was: still queued (no worker runs here), on its own channel.
    let (s, v) = h
        .send(
            &h.call(Method::GET, &format!("/async/jobs/{old}"), None),
            Some(ADMIN),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["channel_id"].as_str()),
        (Some("QUEUED"), Some("elsewhere")),
        "{v}"
    );
    h.stop().await;
}

/// A job's file is served as a download whatever type its uploader gave it: a `text/html`
/// file never renders on the API's origin.
#[tokio::test]
async fn a_jobs_file_is_always_a_download_never_rendered() {
    let h = Harness::start().await;
    for file_name in ["", "page.html"] {
        let form = reqwest::multipart::Form::new()
            .text("job", submit_body().to_string())
            .part(
                "page",
                reqwest::multipart::Part::bytes(b"<script>alert(1)</script>".to_vec())
                    .file_name(file_name)
                    .mime_str("text/html")
                    .expect("mime"),
            );
        let r = h
            .http
            .post(format!("{}/async/jobs", h.url))
            .bearer_auth(ADMIN)
            .multipart(form)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 202);
        let id = r.json::<Value>().await.expect("json")["job_id"]
            .as_str()
            .expect("id")
            .to_string();
        let r = h
            .http
            .get(format!("{}/async/jobs/{id}/files/page/0", h.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status().as_u16(), 200);
        let header = |n: &str| {
            r.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        assert!(
            header("content-disposition").starts_with("attachment"),
            "{file_name:?}: {:?}",
            r.headers()
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert!(header("content-security-policy").contains("sandbox"));
    }
    h.stop().await;
}

/// `GET /async/jobs?type=` is a glob matched against every listed job: over 256 characters
/// (or empty) it is refused, as `/async/activity` refuses it.
#[tokio::test]
async fn a_listing_type_glob_is_bounded() {
    let h = Harness::start().await;
    for (glob, want) in [
        ("*".repeat(257), 400),
        (String::new(), 400),
        ("*".repeat(256), 200),
    ] {
        let r = h
            .http
            .get(format!("{}/async/jobs", h.url))
            .query(&[("type", glob.as_str())])
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("get");
        assert_eq!(
            r.status().as_u16(),
            want,
            "type of {} characters",
            glob.len()
        );
    }
    h.stop().await;
}

/// A job with `emits` made to run again (a retry; a schedule's trigger and backfill) needs
/// `signals:write` too, whoever submitted the job or made the schedule: 403 and nothing changes
/// without it, served with it.
#[tokio::test]
async fn running_a_job_with_emits_again_needs_signals_write() {
    let h = Harness::start().await;
    let submitter = jwt(json!({"scope": "jobs:submit", "sub": "svc"}), SECRET);
    let scheduler = jwt(json!({"scope": "schedules:write", "sub": "svc"}), SECRET);
    let body = json!({"type": TYPE, "channel": CHANNEL, "emits": ["b.ready"]});
    let (s, v) = h
        .send(
            &h.call(Method::POST, "/async/jobs", Some(body)),
            Some(ADMIN),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let id = v["job_id"].as_str().expect("id").to_string();
    let (s, v) = h
        .send(
            &h.call(Method::POST, &format!("/async/jobs/{id}/cancel"), None),
            Some(ADMIN),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut sched = schedule_body("emits-admin");
    sched["job"]["emits"] = json!(["b.ready"]);
    let (s, v) = h
        .send(
            &h.call(Method::POST, "/async/schedules", Some(sched)),
            Some(ADMIN),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let retry = h.call(Method::POST, &format!("/async/jobs/{id}/retry"), None);
    let trigger = h.call(Method::POST, "/async/schedules/emits-admin/trigger", None);
    let backfill = h.call(
        Method::POST,
        "/async/schedules/emits-admin/backfill",
        Some(json!({"from": "2026-01-01T02:30:00Z", "to": "2026-01-01T03:30:00Z"})),
    );
    let before = h.snapshot().await;
    refused_without_signals_write(h.send(&retry, Some(&submitter)).await);
    refused_without_signals_write(h.send(&trigger, Some(&scheduler)).await);
    refused_without_signals_write(h.send(&backfill, Some(&scheduler)).await);
    assert_eq!(
        h.snapshot().await,
        before,
        "a refused request changed the store"
    );
    let submit_both = jwt(
        json!({"scope": "jobs:submit signals:write", "sub": "svc"}),
        SECRET,
    );
    let schedule_both = jwt(
        json!({"scope": "schedules:write signals:write", "sub": "svc"}),
        SECRET,
    );
    assert_eq!(h.send(&retry, Some(&submit_both)).await.0, 202);
    assert_eq!(h.send(&trigger, Some(&schedule_both)).await.0, 202);
    assert_eq!(h.send(&backfill, Some(&schedule_both)).await.0, 202);
    h.stop().await;
}

/// `/metrics` (protected here) and `POST /async/notify/keys` answer about every job and every
/// receiver and cannot be narrowed: any token confined to types or channels gets 403, even an
/// admin one on its own type and channel; an unconfined admin is served. (Named here, not read
/// from the access table, which the matrix takes its expectations from.)
#[tokio::test]
async fn answers_over_every_job_are_refused_to_any_confined_token() {
    let h = Harness::start().await;
    let keys = h.call(
        Method::POST,
        "/async/notify/keys",
        Some(json!({"url": "https://receiver.example.com/hook"})),
    );
    let metrics = h.call(Method::GET, "/metrics", None);
    for c in [&keys, &metrics] {
        for who in [WRONG_TYPE, WRONG_CHANNEL, CONFINED_OK] {
            let (s, v) = h.send(c, Some(who)).await;
            assert_eq!(s, 403, "{} {} by {who}: {v}", c.method, c.path);
        }
        let (s, v) = h.send(c, Some(ADMIN)).await;
        assert_eq!(s, 200, "{} {} by the admin: {v}", c.method, c.path);
    }
    // A scrape without a token (set up before the token was the default) is told the setting.
    let (s, v) = h.send(&metrics, None).await;
    assert_eq!(s, 401, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("auth.metrics_require_token"), "{v}");
    h.stop().await;
}

#[tokio::test]
async fn two_authorization_headers_are_refused_not_guessed_between() {
    // Which of two credentials the caller meant is a guess: the API and the event stream refuse
    // a request with several Authorization headers (even two good ones), and it changes nothing.
    let h = Harness::start().await;
    let channel_jwt = jwt(json!({"channel": CHANNEL, "exp": now() + 300}), SECRET);
    let v = h
        .expect(Method::POST, "/async/jobs", Some(submit_body()), ADMIN, 202)
        .await;
    let kept = v["job_id"].as_str().expect("job_id").to_string();
    // A two-header cancel of `kept` first: it must not take.
    let r = h
        .http
        .post(format!("{}/async/jobs/{kept}/cancel", h.url))
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("authorization", format!("Bearer {ADMIN}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 401);
    let urls = [
        (
            Method::GET,
            format!("{}/async/jobs", h.url),
            ADMIN.to_string(),
        ),
        (
            Method::POST,
            format!("{}/async/jobs/{}/cancel", h.url, h.job),
            ADMIN.to_string(),
        ),
        (
            Method::GET,
            format!("{}/async/events/sse?channel={CHANNEL}", h.url),
            channel_jwt.clone(),
        ),
    ];
    for (method, url, good) in &urls {
        for other in [good.as_str(), "not-a-token"] {
            let r = h
                .http
                .request(method.clone(), url)
                .header("authorization", format!("Bearer {good}"))
                .header("authorization", format!("Bearer {other}"))
                .send()
                .await
                .expect("answer");
            let s = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            assert_eq!(s, 401, "{method} {url} ({other}): {v}");
            let m = v["error"]["message"].as_str().unwrap_or_default();
            assert!(
                m.contains("one Authorization header"),
                "{method} {url}: {v}"
            );
        }
        // One of them alone is fine (the SSE answer is a stream: its status only).
        let r = h
            .http
            .request(method.clone(), url)
            .bearer_auth(good)
            .send()
            .await
            .expect("answer");
        assert!(r.status().is_success(), "{method} {url}: {}", r.status());
    }
    let v = h
        .expect(
            Method::GET,
            &format!("/async/jobs/{}", h.job),
            None,
            ADMIN,
            200,
        )
        .await;
    assert_eq!(
        v["status"], "CANCELLED",
        "the single-header cancel took: {v}"
    );
    let v = h
        .expect(
            Method::GET,
            &format!("/async/jobs/{kept}"),
            None,
            ADMIN,
            200,
        )
        .await;
    assert_ne!(
        v["status"], "CANCELLED",
        "the two-header cancel did not: {v}"
    );
    h.stop().await;
}

/// A schedule whose job was pointed at a confined caller's channel (by an admin, with `PUT`)
/// keeps the runs of its old template: that caller is not shown their job ids (`last_runs`,
/// a backfill of their times), and sees the jobs of its own channel as before.
#[tokio::test]
async fn runs_of_an_old_template_are_not_named_to_a_caller_confined_to_the_new_one() {
    let h = Harness::start().await;
    let name = "repointed";
    let path = format!("/async/schedules/{name}");
    let backfill = format!("{path}/backfill");
    let night = json!({"from": "2026-01-01T02:30:00Z", "to": "2026-01-01T03:30:00Z"});
    let mut old = schedule_body(name);
    old["job"]["channel"] = json!("elsewhere");
    h.expect(Method::POST, "/async/schedules", Some(old), ADMIN, 201)
        .await;
    let v = h
        .expect(Method::POST, &backfill, Some(night.clone()), ADMIN, 202)
        .await;
    let theirs = v["fires"][0]["job_id"].as_str().expect("a job").to_string();
    // The admin points the job at CHANNEL: the confined caller now covers the schedule.
    h.expect(Method::PUT, &path, Some(schedule_body(name)), ADMIN, 200)
        .await;
    let v = h.expect(Method::GET, &path, None, CONFINED_OK, 200).await;
    assert_eq!(v["last_runs"][0]["outcome"], "submitted", "{v}");
    assert!(v["last_runs"][0]["job_id"].is_null(), "{v}");
    let v = h
        .expect(Method::GET, "/async/schedules", None, CONFINED_OK, 200)
        .await;
    assert!(
        !v.to_string().contains(&theirs),
        "the listing names it: {v}"
    );
    // The admin still sees it.
    let v = h.expect(Method::GET, &path, None, ADMIN, 200).await;
    assert_eq!(v["last_runs"][0]["job_id"], theirs.as_str(), "{v}");
    // A backfill of that night by the confined caller: refused for that time, not named.
    let v = h
        .expect(Method::POST, &backfill, Some(night), CONFINED_OK, 202)
        .await;
    assert!(!v.to_string().contains(&theirs), "{v}");
    assert_eq!(v["fires"], json!([]), "{v}");
    let why = v["refused"][0]["error"].as_str().unwrap_or_default();
    assert!(why.contains("outside this token's"), "{v}");
    // Another night: a job on CHANNEL, which it is shown.
    let next = json!({"from": "2026-01-02T02:30:00Z", "to": "2026-01-02T03:30:00Z"});
    let v = h
        .expect(Method::POST, &backfill, Some(next), CONFINED_OK, 202)
        .await;
    let ours = v["fires"][0]["job_id"].as_str().expect("a job").to_string();
    let v = h.expect(Method::GET, &path, None, CONFINED_OK, 200).await;
    assert_eq!(v["last_runs"][0]["job_id"], ours.as_str(), "{v}");
    assert!(!v.to_string().contains(&theirs), "{v}");
    h.stop().await;
}
