//! The handlers of routes that name a job or a schedule check the record they act on against
//! the caller's grant (docs/auth.md, "In the code"), not only the guard before them.
//!
//! The hole this closes was a race: the guard looks the schedule up, finds nothing and lets the
//! request through (the handler is to answer 404); an admin creates it in between; the handler
//! then finds it and reads, fires, pauses, replaces or deletes it for a caller confined to
//! other channels. A race is no test, so the test makes the two lookups disagree for certain:
//! a real server (embedded store, `[auth]`) holds the records, and a second real HTTP listener
//! on port 0 serves the same handlers over the same `App` with the caller's grant handed over
//! as the guard hands it (`Caller`) and no guard in front: exactly what a handler gets when the
//! guard's own lookup found nothing. Each answer must be the guarded server's own (403 with the
//! same body; 404 for a name that does not exist), and nothing may change.

use std::time::Duration;

use axum::routing::{get, post, put};
use reqwest::Method;
use runyard::api::{files, jobs, notify, schedule_fires, schedules, AppState};
use runyard::auth::access::Caller;
use runyard::auth::tokens::{token_sha256, Authenticator};
use runyard::config::Config;
use runyard::server::{RunningServer, ServerBuilder};
use serde_json::{json, Value};

const TYPE: &str = "runyard.noop";
const OURS: &str = "ch-a";
const THEIRS: &str = "ch-b";
const ADMIN: &str = "ry_recheck_admin";
const CONFINED: &str = "ry_recheck_confined";

fn config_text(dir: &std::path::Path) -> String {
    format!(
        "data_dir = \"{}\"\n[auth]\njwt_secret = \"recheck-secret-0123456789abcdef-0123456\"\n\
         [[auth.tokens]]\nname = \"admin\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n\
         [[auth.tokens]]\nname = \"tenant-a\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n\
         channels = [\"{OURS}\"]\n\
         [[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n",
        dir.join("data").display(),
        token_sha256(ADMIN),
        token_sha256(CONFINED),
    )
}

fn schedule_body(name: &str, channel: &str) -> Value {
    json!({"name": name, "cron": "0 3 * * *", "paused": false,
           "job": {"type": TYPE, "channel": channel}})
}

/// The handlers of the job and schedule routes over `server`'s `App`, on their own port, with
/// `grant`'s `Caller` put on every request and no guard: what a handler gets after the guard
/// found nothing under the path's name.
async fn unguarded(server: &RunningServer, token: &str) -> (String, tokio::task::JoinHandle<()>) {
    let auth = Authenticator::new(&server.app.config.auth).expect("[auth] compiles");
    let grant = auth.authenticate(token).expect("token accepted");
    let router = axum::Router::new()
        .route("/async/jobs/{id}", get(jobs::get_job))
        .route("/async/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/async/jobs/{id}/retry", post(jobs::retry_job))
        .route("/async/jobs/{id}/logs", get(jobs::job_logs))
        .route("/async/jobs/{id}/result", get(jobs::job_result))
        .route("/async/jobs/{id}/files/{property}", put(files::attach))
        .route(
            "/async/jobs/{id}/files/{property}/{index}",
            get(files::fetch),
        )
        .merge(notify::routes())
        .merge(schedules::routes())
        .merge(schedule_fires::routes())
        .layer(axum::Extension(Caller(grant)))
        .with_state(AppState {
            app: server.app.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    (url, task)
}

struct Client {
    http: reqwest::Client,
}

impl Client {
    /// `method url path [body]` with `bearer`: status and JSON body (null when not JSON).
    async fn send(
        &self,
        (method, url, path): (&Method, &str, &str),
        body: Option<&Value>,
        bearer: &str,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{url}{path}"))
            .bearer_auth(bearer);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// The schedules and jobs as they are: name, version, paused, template; id, status, version.
async fn snapshot(server: &RunningServer) -> Value {
    let store = &server.app.store;
    let schedules: Vec<Value> = store
        .schedules()
        .await
        .expect("schedules")
        .iter()
        .map(|s| {
            json!([
                s.spec.name,
                s.version,
                s.paused,
                s.spec.job,
                s.pending.len()
            ])
        })
        .collect();
    let page = store
        .list(runyard::store::ListQuery {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .expect("list");
    let jobs: Vec<Value> = page
        .jobs
        .iter()
        .map(|j| json!([j.id, j.status, j.version, j.files.len()]))
        .collect();
    json!({"schedules": schedules, "jobs": jobs})
}

#[tokio::test]
async fn a_handler_refuses_a_record_its_guard_did_not_see() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(dir.path());
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = ServerBuilder::new(config)
        .worker(false)
        .start(listener)
        .await
        .expect("start");
    let guarded = server.url();
    let c = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
    };
    // Channel B's schedule and job, made by the admin; one schedule of channel A.
    for (name, channel) in [("race2", THEIRS), ("ours", OURS)] {
        let body = schedule_body(name, channel);
        let (s, v) = c
            .send(
                (&Method::POST, &guarded, "/async/schedules"),
                Some(&body),
                ADMIN,
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = c
        .send(
            (&Method::POST, &guarded, "/async/jobs"),
            Some(&json!({"type": TYPE, "channel": THEIRS})),
            ADMIN,
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let job = v["job_id"].as_str().expect("job_id").to_string();
    let (bare, task) = unguarded(&server, CONFINED).await;
    let before = snapshot(&server).await;

    let backfill = json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T04:00:00Z"});
    let replace = schedule_body("race2", OURS);
    let calls: Vec<(Method, String, Option<&Value>)> = vec![
        (Method::GET, "/async/schedules/race2".into(), None),
        (Method::POST, "/async/schedules/race2/pause".into(), None),
        (Method::POST, "/async/schedules/race2/resume".into(), None),
        (Method::POST, "/async/schedules/race2/trigger".into(), None),
        (
            Method::POST,
            "/async/schedules/race2/backfill".into(),
            Some(&backfill),
        ),
        (Method::PUT, "/async/schedules/race2".into(), Some(&replace)),
        (Method::DELETE, "/async/schedules/race2".into(), None),
        (Method::GET, format!("/async/jobs/{job}"), None),
        (Method::GET, format!("/async/jobs/{job}/result"), None),
        (Method::GET, format!("/async/jobs/{job}/logs"), None),
        (Method::GET, format!("/async/jobs/{job}/deliveries"), None),
        (
            Method::GET,
            format!("/async/jobs/{job}/files/inputs/0"),
            None,
        ),
        (Method::POST, format!("/async/jobs/{job}/retry"), None),
        (Method::POST, format!("/async/jobs/{job}/cancel"), None),
    ];
    // The guard's own answers first (each refused, nothing changed)...
    let mut guarded_answers = Vec::new();
    for (method, path, body) in &calls {
        let (s, v) = c.send((method, &guarded, path), *body, CONFINED).await;
        assert_eq!(s, 403, "{method} {path} through the guard: {v}");
        assert_eq!(v["error"]["code"], "forbidden", "{v}");
        guarded_answers.push((s, v));
    }
    assert_eq!(snapshot(&server).await, before);
    // ... then the handlers' past a guard that saw nothing: the same answers, word for word.
    // Every answer first, then one assertion: all that were let through are named.
    let mut through = Vec::new();
    for ((method, path, body), guard) in calls.iter().zip(&guarded_answers) {
        let (s, v) = c.send((method, &bare, path), *body, CONFINED).await;
        if (s, &v) != (guard.0, &guard.1) {
            through.push(format!("{method} {path}: {s} {v}"));
        }
    }
    assert!(
        through.is_empty(),
        "records outside the caller's channels, found by the handler, answered otherwise than \
         the guard's 403:\n{}",
        through.join("\n")
    );
    assert_eq!(
        snapshot(&server).await,
        before,
        "a refused request changed something"
    );

    // A name that does not exist is the handler's 404, as before; one within the grant is
    // served.
    let (s, v) = c
        .send(
            (&Method::GET, &bare, "/async/schedules/nope"),
            None,
            CONFINED,
        )
        .await;
    assert_eq!((s, &v["error"]["code"]), (404, &json!("not_found")), "{v}");
    let (s, v) = c
        .send(
            (&Method::POST, &bare, "/async/schedules/ours/pause"),
            None,
            CONFINED,
        )
        .await;
    assert_eq!((s, &v["paused"]), (200, &json!(true)), "{v}");
    // PUT still creates a schedule under a free name.
    let body = schedule_body("fresh", OURS);
    let (s, v) = c
        .send(
            (&Method::PUT, &bare, "/async/schedules/fresh"),
            Some(&body),
            CONFINED,
        )
        .await;
    assert_eq!(s, 201, "{v}");
    task.abort();
    server.stop().await.expect("stop");
}
