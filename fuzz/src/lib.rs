//! Shared harness of the fuzz targets: one in-memory runyard per fuzzing process (embedded store in
//! a temporary directory, no worker, one `service` runner claiming every type), driven through
//! `runyard::api::router` with tower's `oneshot`, with no socket in between.
//!
//! Everything is built once, on first use, and lives until the process exits (libFuzzer ends the
//! process with `exit`). The data directory is under `$TMPDIR`: `scripts/fuzz.sh` points `TMPDIR` at
//! a directory it removes afterwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use runyard::config::Config;
use runyard::server::{RunningServer, ServerBuilder};
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

/// The in-memory server of this fuzzing process.
pub struct Harness {
    /// The runtime everything runs on (driven only while a target calls [`Harness::block_on`]).
    pub rt: tokio::runtime::Runtime,
    /// The server (its listener is bound but never used by the targets).
    pub server: RunningServer,
    /// The API router over the server's state.
    pub router: Router,
    /// The job the hook target reports on, with its secret: replaced when it is no longer active.
    hook_job: parking_lot_free::Slot,
    counter: AtomicU64,
}

/// The master key of the harness (job secrets derive from it).
pub const MASTER_KEY: &str = "fuzz-master-key-0123456789abcdef";

/// The body limit of the harness's API (`api.max_body_bytes`): small, so that the limit is hit.
pub const MAX_BODY: usize = 64 * 1024;

static HARNESS: OnceLock<Harness> = OnceLock::new();

/// The harness, built on first use.
pub fn harness() -> &'static Harness {
    HARNESS.get_or_init(Harness::new)
}

impl Harness {
    fn new() -> Harness {
        let dir = std::env::temp_dir().join(format!("runyard-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fuzz data dir");
        let toml = format!(
            r#"
data_dir = "{dir}"
master_key = "{MASTER_KEY}"
[api]
max_body_bytes = {MAX_BODY}
[hooks]
max_file_bytes = 65536
[events]
progress_interval = "0s"
[[runners]]
name = "svc"
kind = "service"
types = ["*"]
operation = "runyard.noop"
"#,
            dir = dir.display()
        );
        let config = Config::from_toml(&toml).expect("fuzz config");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let server = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            ServerBuilder::new(config)
                .worker(false)
                .start(listener)
                .await
                .expect("server starts")
        });
        let router = runyard::api::router(server.app.clone());
        Harness {
            rt,
            server,
            router,
            hook_job: Default::default(),
            counter: AtomicU64::new(0),
        }
    }

    /// Runs `f` on the harness's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Sends one request through the router; returns the status and the body as JSON (`Null`
    /// when the body is not JSON).
    pub fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        self.block_on(async {
            let res: Response<Body> = self
                .router
                .clone()
                .oneshot(req)
                .await
                .expect("the router is infallible");
            let status = res.status();
            let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .expect("response body");
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }

    /// A number unique in this process.
    pub fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// A STARTING or RUNNING job (a new one, submitted and claimed, when the last one is no
    /// longer active) and the secret of its current attempt.
    pub fn active_job(&self) -> (Uuid, runyard_hooks::Secret) {
        let store = &self.server.app.store;
        let current = self.hook_job.get();
        if let Some((id, attempt)) = current {
            let job = self.block_on(store.get(id)).expect("store").expect("job");
            if job.status.is_active() && job.attempt == attempt {
                return (id, self.secret(id, attempt));
            }
        }
        let (status, body) = self.send(
            Request::post("/async/jobs")
                .header("content-type", "application/json")
                .body(Body::from(r#"{"type":"fuzz.hook","max_attempts":100}"#))
                .expect("request"),
        );
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let claimed = self
            .block_on(store.claim("svc", "fuzz-worker", 1, Duration::from_secs(24 * 3600)))
            .expect("claim");
        let job = claimed.into_iter().next().expect("a queued job to claim");
        self.hook_job.set((job.id, job.attempt));
        (job.id, self.secret(job.id, job.attempt))
    }

    fn secret(&self, id: Uuid, attempt: u32) -> runyard_hooks::Secret {
        runyard_hooks::derive_job_secret(&self.server.app.master_key, &id.to_string(), attempt)
    }
}

/// A tiny `Mutex<Option<T>>` for a `Copy` value (std only).
mod parking_lot_free {
    use std::sync::Mutex;
    use uuid::Uuid;

    #[derive(Default)]
    pub struct Slot(Mutex<Option<(Uuid, u32)>>);

    impl Slot {
        pub fn get(&self) -> Option<(Uuid, u32)> {
            *self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
        pub fn set(&self, v: (Uuid, u32)) {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        }
    }
}

/// Checks an error answer has the API's shape, `{"error": {"code", "message"}}`, with a 4xx.
pub fn check_error_shape(status: StatusCode, body: &Value) {
    assert!(status.is_client_error(), "{status}: {body}");
    let code = body["error"]["code"].as_str();
    let message = body["error"]["message"].as_str();
    assert!(
        code.is_some_and(|c| !c.is_empty()) && message.is_some(),
        "{status}: not an API error body: {body}"
    );
}

/// Checks the answer of a submit, and when it was accepted, takes the job through a life
/// (claim, start, a failed attempt, promotion, a timed-out attempt, a retry, a cancel) reading it
/// back through the API after each step: whatever a client could submit, the job can be stored,
/// run, retried and shown, and never poisons a listing.
pub fn check_submit(status: StatusCode, body: &Value) {
    assert!(!status.is_server_error(), "{status}: {body}");
    if status != StatusCode::ACCEPTED {
        check_error_shape(status, body);
        return;
    }
    let h = harness();
    let id: Uuid = body["job_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("202 without a job id: {body}"));
    let store = h.server.app.store.clone();
    let show = |step: &str| {
        let (status, job) = h.send(
            Request::get(format!("/async/jobs/{id}"))
                .body(Body::empty())
                .expect("request"),
        );
        assert_eq!(status, StatusCode::OK, "GET after {step}: {job}");
        let (status, list) = h.send(
            Request::get("/async/jobs?limit=3")
                .body(Body::empty())
                .expect("request"),
        );
        assert_eq!(status, StatusCode::OK, "list after {step}: {list}");
        job
    };
    let job = show("submit");
    assert_eq!(job["id"], serde_json::json!(id.to_string()));
    // An idempotent replay answers the earlier job, which an earlier input already ran.
    if !(job["status"] == "QUEUED" || job["status"] == "SCHEDULED") {
        return;
    }
    use runyard::job::{Command, FinishOutcome};
    let apply = |cmd: Command| h.block_on(store.apply(id, cmd));
    let far = runyard::job::now_us().saturating_add(3_600_000_000);
    let mut token = 1_000_000 + h.next();
    if job["status"] == "SCHEDULED" {
        apply(Command::Promote).expect("promote a scheduled job");
    }
    apply(Command::Claim {
        worker: "fuzz".into(),
        token,
        lease_until: far,
    })
    .expect("claim a queued job");
    show("claim");
    apply(Command::Started {
        token,
        handle: None,
    })
    .expect("start");
    let failed = apply(Command::Finish {
        token,
        outcome: FinishOutcome::Failed {
            message: "fuzz failure".into(),
            exit_code: Some(1),
        },
    })
    .expect("finish");
    let job = show("a failed attempt");
    if failed.status == runyard::job::JobStatus::Scheduled {
        apply(Command::Promote).expect("promote a retry");
        token += 1;
        apply(Command::Claim {
            worker: "fuzz".into(),
            token,
            lease_until: far,
        })
        .expect("claim again");
        apply(Command::Finish {
            token,
            outcome: FinishOutcome::Timeout("fuzz timeout".into()),
        })
        .expect("time out");
        show("a timeout");
    } else {
        assert_eq!(job["status"], "ERROR", "{job}");
    }
    apply(Command::Retry { runner: None }).expect("retry");
    show("a retry");
    apply(Command::Cancel).expect("cancel");
    show("a cancel");
}
