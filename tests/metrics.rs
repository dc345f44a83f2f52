//! `/metrics` after a known workload, on a real server with each store: the store gauges (jobs by
//! type and status, queue depth, oldest QUEUED job) match what the API lists, and the counters
//! and histograms of this process match the workload (submits, outcomes, retries, attempts, HTTP
//! requests by route template, store operations). Also the job counts of each backend on their
//! own, including Redis counts built for a database written before they existed.

mod redis_support;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use redis_support::TestRedis;
use support::{TestServer, WAIT};

const MASTER_KEY: &str = "metrics-test-master-key-0123456789";

/// `m.ok` succeeds, `m.fail` always fails, `m.hold` runs until cancelled; `q.*` runs one job at a
/// time (`q.hold` holds the slot, so `q.wait` stays QUEUED).
const RUNNERS: &str = r#"
[[runners]]
kind = "service"
types = ["m.*"]

[[runners]]
kind = "service"
name = "serial"
types = ["q.*"]
concurrency = 1
operation = "m.hold"
"#;

/// Successes, failing jobs, and attempts of each failing job.
const N_OK: u64 = 5;
const M_FAIL: u64 = 2;
const ATTEMPTS: u64 = 3;

enum Backend {
    Embedded,
    Redis(TestRedis),
}

impl Backend {
    fn config(&self) -> String {
        match self {
            Backend::Embedded => String::new(),
            Backend::Redis(r) => format!(
                "redis = {:?}\nmaster_key = {MASTER_KEY:?}\n[store]\nprefix = {:?}\nretry = \"5s\"\n",
                r.url, r.prefix
            ),
        }
    }
}

/// One sample of the text exposition: metric name and labels.
type Key = (String, BTreeMap<String, String>);

/// Parses the Prometheus text format (the subset runyard writes: no escapes in label values
/// other than `\"`, `\\` and `\n`).
fn parse(text: &str) -> HashMap<Key, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = line.rsplit_once(' ').expect("`name value`");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match head.split_once('{') {
            None => (head.to_string(), BTreeMap::new()),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "quoted value in {line}");
                    let mut v = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => match chars.next() {
                                Some('n') => v.push('\n'),
                                Some(o) => v.push(o),
                                None => break,
                            },
                            '"' => break,
                            o => v.push(o),
                        }
                    }
                    labels.insert(key.trim_start_matches(',').to_string(), v);
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (n.to_string(), labels)
            }
        };
        assert!(
            out.insert((name, labels), value).is_none(),
            "duplicate sample: {line}"
        );
    }
    out
}

struct Page(HashMap<Key, f64>, String);

impl Page {
    /// The value of the sample `name` with exactly these labels (0 when absent: a family shows
    /// only the series it has).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = (
            name.to_string(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self.0.get(&key).copied().unwrap_or(0.0)
    }

    /// Whether a sample named `name` exists at all.
    fn has(&self, name: &str) -> bool {
        self.0.keys().any(|(n, _)| n == name)
    }

    /// The sum of every sample `name` whose labels include these.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|((n, l), _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| *v)
            .sum()
    }
}

async fn scrape(ts: &TestServer) -> Page {
    let res = ts
        .client
        .get(ts.at("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(res.status(), StatusCode::OK);
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = res.text().await.expect("body");
    Page(parse(&text), text)
}

async fn workload_metrics(backend: Backend) {
    let ts = TestServer::builder(RUNNERS)
        .config(&backend.config())
        .service("m.ok", |_ctx| async { Ok(json!("ok")) })
        .service("m.fail", |_ctx| async {
            Err::<Value, _>("this job always fails".into())
        })
        .service("m.hold", |ctx| async move {
            for _ in 0..400 {
                if ctx.is_cancelled() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(json!("held"))
        })
        .start()
        .await;
    // Before any job: no job series (and, on Redis, the counts are set up on an empty database,
    // so what follows is counted by the writes themselves).
    let m0 = scrape(&ts).await;
    assert!(!m0.has("runyard_jobs"), "{}", m0.1);
    assert_eq!(m0.get("runyard_store_up", &[]), 1.0, "{}", m0.1);
    let fast = json!({"initial_ms": 10, "max_ms": 10, "multiplier": 1.0, "jitter": false});
    let mut ids = Vec::new();
    for _ in 0..N_OK {
        ids.push(ts.submit_ok(json!({"type": "m.ok"})).await);
    }
    for _ in 0..M_FAIL {
        ids.push(
            ts.submit_ok(json!({"type": "m.fail", "max_attempts": ATTEMPTS, "backoff": fast}))
                .await,
        );
    }
    let hold = ts.submit_ok(json!({"type": "m.hold"})).await;
    let q_hold = ts.submit_ok(json!({"type": "q.hold"})).await;
    ts.wait_status(&q_hold, "RUNNING", WAIT).await;
    let q_wait = ts.submit_ok(json!({"type": "q.wait"})).await;
    let waiting_since = std::time::Instant::now();
    for id in &ids {
        ts.wait_terminal(id, WAIT).await;
    }
    ts.wait_status(&hold, "RUNNING", WAIT).await;
    let (st, v) = ts.post(&format!("/async/jobs/{hold}/cancel"), None).await;
    assert_eq!(st, StatusCode::OK, "cancel: {v}");
    ts.wait_status(&hold, "CANCELLED", WAIT).await;
    // The queued one is still QUEUED behind q.hold.
    assert_eq!(ts.get_job(&q_wait).await["status"], "QUEUED");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let m = scrape(&ts).await;
    let age_bound = waiting_since.elapsed().as_secs_f64();
    let ctx = &m.1;

    // Store gauges: every (type, status) the API lists, and nothing else.
    let listed = ts.list_all(&[], 100).await;
    let mut by_api: HashMap<(String, String), f64> = HashMap::new();
    for j in &listed {
        *by_api
            .entry((
                j["type"].as_str().unwrap_or("").to_string(),
                j["status"].as_str().unwrap_or("").to_string(),
            ))
            .or_default() += 1.0;
    }
    for ((t, s), n) in &by_api {
        assert_eq!(
            m.get("runyard_jobs", &[("type", t), ("status", s)]),
            *n,
            "runyard_jobs{{type={t},status={s}}}\n{ctx}"
        );
    }
    assert_eq!(m.sum("runyard_jobs", &[]), listed.len() as f64, "{ctx}");
    assert_eq!(
        m.get("runyard_jobs", &[("type", "m.ok"), ("status", "SUCCESS")]),
        N_OK as f64
    );
    assert_eq!(
        m.get("runyard_jobs", &[("type", "m.fail"), ("status", "ERROR")]),
        M_FAIL as f64
    );
    assert_eq!(
        m.get("runyard_jobs", &[("type", "q.wait"), ("status", "QUEUED")]),
        1.0
    );
    assert_eq!(
        m.get("runyard_queue_depth", &[("type", "q.wait")]),
        1.0,
        "{ctx}"
    );
    assert_eq!(m.sum("runyard_queue_depth", &[]), 1.0, "{ctx}");
    let age = m.get("runyard_queue_oldest_age_seconds", &[("type", "q.wait")]);
    assert!(
        age > 0.2 && age <= age_bound + 1.0,
        "oldest QUEUED q.wait is {age}s old, waited {age_bound}s\n{ctx}"
    );
    assert_eq!(m.get("runyard_store_up", &[]), 1.0);

    // Counters of this process.
    let t = |ty: &'static str| [("type", ty)];
    assert_eq!(
        m.get("runyard_jobs_submitted_total", &t("m.ok")),
        N_OK as f64,
        "{ctx}"
    );
    assert_eq!(
        m.get("runyard_jobs_submitted_total", &t("m.fail")),
        M_FAIL as f64
    );
    assert_eq!(
        m.sum("runyard_jobs_submitted_total", &[]),
        (N_OK + M_FAIL + 3) as f64
    );
    let outcome = |ty, o| {
        m.get(
            "runyard_job_outcomes_total",
            &[("type", ty), ("outcome", o)],
        )
    };
    assert_eq!(outcome("m.ok", "success"), N_OK as f64, "{ctx}");
    assert_eq!(outcome("m.fail", "error"), M_FAIL as f64, "{ctx}");
    assert_eq!(outcome("m.hold", "cancelled"), 1.0, "{ctx}");
    assert_eq!(
        m.sum("runyard_job_outcomes_total", &[]),
        (N_OK + M_FAIL + 1) as f64
    );
    assert_eq!(
        m.get("runyard_job_retries_total", &t("m.fail")),
        (M_FAIL * (ATTEMPTS - 1)) as f64,
        "{ctx}"
    );
    assert_eq!(
        m.sum("runyard_job_retries_total", &[]),
        (M_FAIL * (ATTEMPTS - 1)) as f64
    );
    // Every attempt was claimed (waited in the queue) and every finished one has a run time.
    assert_eq!(
        m.get("runyard_job_queue_wait_seconds_count", &t("m.ok")),
        N_OK as f64
    );
    assert_eq!(
        m.get("runyard_job_queue_wait_seconds_count", &t("m.fail")),
        (M_FAIL * ATTEMPTS) as f64
    );
    assert_eq!(
        m.get("runyard_job_queue_wait_seconds_count", &t("q.wait")),
        0.0
    );
    assert_eq!(
        m.get("runyard_job_run_seconds_count", &t("m.ok")),
        N_OK as f64
    );
    assert_eq!(
        m.get("runyard_job_run_seconds_count", &t("m.fail")),
        (M_FAIL * ATTEMPTS) as f64
    );
    assert_eq!(
        m.get(
            "runyard_job_run_seconds_bucket",
            &[("type", "m.ok"), ("le", "+Inf")]
        ),
        N_OK as f64
    );
    assert_eq!(m.sum("runyard_lease_expirations_total", &[]), 0.0);
    assert_eq!(
        m.get("runyard_job_transitions_total", &[("status", "SUCCESS")]),
        N_OK as f64
    );
    // Queued at submit (all but none delayed) and again after each retry's backoff.
    assert_eq!(
        m.get("runyard_job_transitions_total", &[("status", "QUEUED")]),
        (N_OK + M_FAIL + 3 + M_FAIL * (ATTEMPTS - 1)) as f64,
        "{ctx}"
    );

    // HTTP requests by route template, never by path.
    let http = |method, route, status| {
        m.get(
            "runyard_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(
        http("POST", "/async/jobs", "202"),
        (N_OK + M_FAIL + 3) as f64,
        "{ctx}"
    );
    assert_eq!(http("POST", "/async/jobs/{id}/cancel", "200"), 1.0, "{ctx}");
    assert!(http("GET", "/async/jobs/{id}", "200") >= (N_OK + M_FAIL) as f64);
    assert!(!ctx.contains(&hold), "a job id in a label\n{ctx}");
    let (st, _) = ts.get("/no/such/route").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = ts.get("/async/jobs/not-a-uuid").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // A hook call without a job signature.
    let (st, _) = ts
        .post("/async/status", Some(&json!({"status": "RUNNING"})))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Store operations: timed, none failed.
    assert!(
        m.get("runyard_store_operation_seconds_count", &[("op", "submit")])
            >= (N_OK + M_FAIL + 3) as f64,
        "{ctx}"
    );
    assert!(m.get("runyard_store_operation_seconds_count", &[("op", "claim")]) > 0.0);
    assert_eq!(m.sum("runyard_store_errors_total", &[]), 0.0, "{ctx}");
    assert!(m.has("runyard_http_panics_total"), "{ctx}");
    assert!(m.has("runyard_schedule_fires_total"), "{ctx}");

    let m2 = scrape(&ts).await;
    assert_eq!(
        m2.get(
            "runyard_hook_calls_total",
            &[("route", "/async/status"), ("result", "unauthorized")]
        ),
        1.0,
        "{}",
        m2.1
    );
    assert_eq!(m2.sum("runyard_hook_calls_total", &[]), 1.0);
    assert_eq!(
        m2.get(
            "runyard_http_requests_total",
            &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
        ),
        1.0,
        "{}",
        m2.1
    );
    assert_eq!(
        m2.get(
            "runyard_http_requests_total",
            &[
                ("method", "GET"),
                ("route", "/async/jobs/{id}"),
                ("status", "400")
            ]
        ),
        1.0
    );
    assert_eq!(
        m2.get(
            "runyard_http_requests_total",
            &[("method", "GET"), ("route", "/metrics"), ("status", "200")]
        ),
        2.0,
        "the scrapes before are counted once answered"
    );

    // The queue moves on: q.hold cancelled, q.wait claimed.
    let (st, _) = ts.post(&format!("/async/jobs/{q_hold}/cancel"), None).await;
    assert_eq!(st, StatusCode::OK);
    ts.wait_status(&q_wait, "RUNNING", WAIT).await;
    let m3 = scrape(&ts).await;
    assert_eq!(m3.sum("runyard_queue_depth", &[]), 0.0, "{}", m3.1);
    // An empty queue reads 0, not as a gap (a probe: dashboards showed "No data").
    assert!(
        m3.0.contains_key(&(
            "runyard_queue_depth".to_string(),
            [("type".to_string(), "q.wait".to_string())]
                .into_iter()
                .collect()
        )),
        "no 0 sample for an empty queue: {}",
        m3.1
    );
    assert_eq!(
        m3.sum("runyard_queue_oldest_age_seconds", &[]),
        0.0,
        "{}",
        m3.1
    );
    assert_eq!(
        m3.get(
            "runyard_jobs",
            &[("type", "q.hold"), ("status", "CANCELLED")]
        ),
        1.0
    );
    assert_eq!(
        m3.get("runyard_job_queue_wait_seconds_count", &t("q.wait")),
        1.0
    );
    let (st, _) = ts.post(&format!("/async/jobs/{q_wait}/cancel"), None).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_metrics_match_a_known_workload() {
    workload_metrics(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_metrics_match_a_known_workload() {
    workload_metrics(Backend::Redis(TestRedis::start())).await;
}

/// Redis keeps its counts in step with every write; a database written before the counts existed
/// (no `jc`, no `t` on the jobs) is counted once at the first read; retention takes deleted jobs
/// off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_counts_are_built_for_an_older_database_and_follow_retention() {
    let r = TestRedis::start();
    let ts = TestServer::builder(RUNNERS)
        .config(&format!(
            "redis = {:?}\nmaster_key = {MASTER_KEY:?}\n[store]\nprefix = {:?}\nretry = \"5s\"\n",
            r.url, r.prefix
        ))
        .config("[retention]\nfinished = \"1h\"\ninterval = \"1h\"\n")
        .service("m.ok", |_ctx| async { Ok(json!("ok")) })
        .service("m.hold", |_ctx| async { Ok(json!("ok")) })
        .start()
        .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(ts.submit_ok(json!({"type": "m.ok"})).await);
    }
    for id in &ids {
        ts.wait_status(id, "SUCCESS", WAIT).await;
    }
    let m = scrape(&ts).await;
    assert_eq!(
        m.get("runyard_jobs", &[("type", "m.ok"), ("status", "SUCCESS")]),
        3.0,
        "{}",
        m.1
    );
    // As an older version left it: no counts, no `t` on the jobs.
    r.cli(&[
        "DEL",
        &format!("{}:jc", r.prefix),
        &format!("{}:jc:ready", r.prefix),
    ]);
    for id in &ids {
        r.cli(&["HDEL", &format!("{}:job:{id}", r.prefix), "t"]);
    }
    let store = runyard::store::redis::RedisStore::connect(runyard::store::redis::RedisSettings {
        prefix: r.prefix.clone(),
        retry: Duration::from_secs(5),
        ..runyard::store::redis::RedisSettings::new(r.url.clone())
    })
    .await
    .expect("connect");
    use runyard::store::{JobCountStore, Maintenance};
    // A new store handle (as a new process has) builds them at its first read.
    let c = store.job_counts().await.expect("counts");
    assert_eq!(
        c.count("m.ok", runyard::job::JobStatus::Success),
        3,
        "{c:?}"
    );
    // Retention deletes the finished jobs: their counts go.
    let n = store
        .retention(runyard::job::now_us() + 1_000_000)
        .await
        .expect("retention");
    assert_eq!(n.jobs, 3);
    let c = store.job_counts().await.expect("counts");
    assert_eq!(
        c.count("m.ok", runyard::job::JobStatus::Success),
        0,
        "{c:?}"
    );
    assert!(c.by_type_status.is_empty(), "{c:?}");
}

/// Every metric the Grafana dashboard queries is one runyard exposes (a renamed metric would
/// leave a panel empty).
#[test]
fn the_dashboard_queries_only_metrics_runyard_exposes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/runyard/dashboards/runyard.json"
    );
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(exprs.len() > 10, "{exprs:?}");
    // Families show on /metrics once they have a series; the registry knows them all.
    let names = runyard::metrics::Metrics::new().metric_names();
    let mut checked = 0;
    for e in &exprs {
        for (i, _) in e.match_indices("runyard_") {
            let name: String = e[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = name.strip_suffix("_bucket").unwrap_or(&name);
            assert!(
                names.iter().any(|n| n == base),
                "the dashboard queries {name}, which runyard does not expose: {names:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 18, "{checked}");
}

/// Every response carries a request id (the client's, or a new one); JSON responses and
/// `/metrics` of 1 KiB or more are gzip-compressed for a client that accepts gzip (Prometheus
/// does), and nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_carry_an_id_and_large_json_is_gzipped() {
    let ts = TestServer::builder(RUNNERS)
        .service("m.hold", |_ctx| async { Ok(json!("ok")) })
        .start()
        .await;
    for _ in 0..20 {
        ts.submit_ok(json!({"type": "m.hold", "args": {"pad": "x".repeat(40)}}))
            .await;
    }
    let get = |path: &str, gzip: bool, id: Option<&str>| {
        let mut r = ts.client.get(ts.at(path));
        if gzip {
            r = r.header("accept-encoding", "gzip");
        }
        if let Some(id) = id {
            r = r.header("x-request-id", id);
        }
        r.send()
    };
    let header = |r: &reqwest::Response, h: &str| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // A large JSON list, gzip accepted: compressed.
    let r = get("/async/jobs?limit=100", true, None)
        .await
        .expect("list");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-encoding").as_deref(), Some("gzip"));
    let id = header(&r, "x-request-id").expect("a request id");
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let body = r.bytes().await.expect("body");
    assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip magic");
    // Not accepted: plain JSON.
    let r = get("/async/jobs?limit=100", false, Some("client-id-42"))
        .await
        .expect("list");
    assert_eq!(header(&r, "content-encoding"), None);
    assert_eq!(header(&r, "x-request-id").as_deref(), Some("client-id-42"));
    let v: Value = r.json().await.expect("JSON");
    assert_eq!(v["jobs"].as_array().map(Vec::len), Some(20));
    // A job's file is sent as it is, JSON or not: its ETag is the md5 of those bytes.
    let later = ts
        .submit_ok(json!({"type": "m.hold", "run_at": "2099-01-01T00:00:00Z"}))
        .await;
    let file = serde_json::to_vec(&json!({"rows": vec!["a row of the report"; 200]})).unwrap();
    let r = ts
        .client
        .put(ts.at(&format!("/async/jobs/{later}/files/data?name=report.json")))
        .header("content-type", "application/json")
        .body(file.clone())
        .send()
        .await
        .expect("attach");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = get(&format!("/async/jobs/{later}/files/data/0"), true, None)
        .await
        .expect("file");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-encoding"), None);
    let md5 = {
        use md5::Digest;
        hex::encode(md5::Md5::digest(&file))
    };
    assert_eq!(header(&r, "etag"), Some(format!("\"{md5}\"")));
    assert_eq!(r.bytes().await.expect("bytes"), file);
    // Small JSON and non-JSON are not compressed; error answers carry an id too.
    let r = get("/health", true, None).await.expect("health");
    assert_eq!(header(&r, "content-encoding"), None);
    let r = get("/metrics", false, None).await.expect("metrics");
    assert_eq!(header(&r, "content-encoding"), None);
    let plain = r.text().await.expect("metrics text");
    assert!(
        plain.len() > 1024 && plain.contains("runyard_store_up"),
        "{plain}"
    );
    let r = get("/metrics", true, None).await.expect("metrics");
    assert_eq!(header(&r, "content-encoding").as_deref(), Some("gzip"));
    let body = r.bytes().await.expect("body");
    assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip magic");
    assert!(
        body.len() < plain.len(),
        "{} of {}",
        body.len(),
        plain.len()
    );
    let r = get("/no/such/route", true, None).await.expect("404");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(header(&r, "x-request-id").is_some());
    // A refusal of the edge itself (a cross-origin write, before any route) too.
    let r = ts
        .client
        .post(ts.at("/async/jobs"))
        .header("origin", "https://elsewhere.example")
        .header("x-request-id", "client-id-43")
        .send()
        .await
        .expect("403");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&r, "x-request-id").as_deref(), Some("client-id-43"));
    // Two requests, two ids.
    let a = header(
        &get("/health", false, None).await.expect("a"),
        "x-request-id",
    );
    let b = header(
        &get("/health", false, None).await.expect("b"),
        "x-request-id",
    );
    assert_ne!(a, b);
}

/// The counters other rooms keep (src/metrics/features.rs) reach `/metrics`: an open event
/// stream, a job that waits for a signal and is released by it. (The waiting and webhook
/// counters are per process, so other servers of this test binary may add to them: deltas.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_and_waiting_counters_are_exported() {
    let ts = TestServer::builder(RUNNERS)
        .service("m.ok", |_ctx| async { Ok(json!("ok")) })
        .service("m.hold", |_ctx| async { Ok(json!("ok")) })
        .start()
        .await;
    let before = scrape(&ts).await;
    for name in [
        "runyard_event_streams_open",
        "runyard_webhook_deliveries_total",
        "runyard_waiting_releases_total",
    ] {
        assert!(before.has(name), "{name} missing:\n{}", before.1);
    }
    assert_eq!(before.get("runyard_event_streams_open", &[]), 0.0);

    // An SSE stream held open.
    let sse = ts
        .client
        .get(ts.at("/async/events/sse"))
        .send()
        .await
        .expect("SSE");
    assert_eq!(sse.status(), StatusCode::OK);
    let mut open = 0.0;
    for _ in 0..50 {
        open = scrape(&ts).await.get("runyard_event_streams_open", &[]);
        if open == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open, 1.0, "one stream open");

    // A job waiting for one record of a key, then released by it.
    let key = format!("metrics.{}", uuid::Uuid::now_v7().simple());
    let id = ts
        .submit_ok(json!({"type": "m.ok", "wait_for": [{"key": key}]}))
        .await;
    let (status, _) = ts
        .post(&format!("/async/signals/{key}"), Some(&json!({})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    ts.wait_status(&id, "SUCCESS", WAIT).await;
    let after = scrape(&ts).await;
    assert!(
        after.get("runyard_waiting_jobs_entered_total", &[])
            >= before.get("runyard_waiting_jobs_entered_total", &[]) + 1.0
    );
    assert!(
        after.get("runyard_waiting_releases_total", &[("by", "signals")])
            >= before.get("runyard_waiting_releases_total", &[("by", "signals")]) + 1.0
    );
    drop(sse);
}

/// The process's own resources reach `/metrics` (src/metrics/process.rs): resident memory as the
/// kernel reports it, CPU seconds that grow with work, open descriptors that count a socket held
/// open, and the embedded store's SQLite heap. The test server runs in this process, so the test
/// reads the same figures from /proc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_memory_cpu_and_descriptors_are_exported() {
    let ts = TestServer::builder(RUNNERS)
        .service("m.ok", |_ctx| async { Ok(json!("ok")) })
        .service("m.hold", |_ctx| async { Ok(json!("ok")) })
        .start()
        .await;
    let id = ts.submit_ok(json!({"type": "m.ok"})).await;
    ts.wait_status(&id, "SUCCESS", WAIT).await;
    let before = scrape(&ts).await;
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let vm_rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    let rss = before.get("process_resident_memory_bytes", &[]);
    let ratio = rss / (vm_rss_kib * 1024.0);
    assert!(
        (0.5..2.0).contains(&ratio),
        "resident memory {rss} B against VmRSS {vm_rss_kib} KiB"
    );
    // An open store has its page cache and statements on SQLite's heap.
    assert!(
        before.get("runyard_sqlite_heap_bytes", &[]) > 64.0 * 1024.0,
        "{}",
        before.1
    );
    // Sockets held open are more descriptors (other tests of this binary open and close theirs
    // meanwhile: 50 held, at least 25 more counted).
    let fds = before.get("process_open_fds", &[]);
    let held: Vec<_> = (0..50)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let after = scrape(&ts).await;
    assert!(
        after.get("process_open_fds", &[]) >= fds + 25.0,
        "{fds} -> {}",
        after.get("process_open_fds", &[])
    );
    drop(held);
    // CPU time this process spends shows: spin until 0.2 s more is counted (bounded: on a busy
    // machine the spin gets a share of a core, not a whole one).
    let cpu = after.get("process_cpu_seconds_total", &[]);
    assert!(cpu > 0.0, "{}", after.1);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut x = 0u64;
    let later = loop {
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let v = scrape(&ts).await.get("process_cpu_seconds_total", &[]);
        if v >= cpu + 0.2 || std::time::Instant::now() > deadline {
            break v;
        }
    };
    assert!(later >= cpu + 0.2, "{cpu} -> {later}");
}

/// A store that hangs (Redis stopped with SIGSTOP: connections open, no answer) with the default
/// `store.retry` (30 s): a scrape still answers before Prometheus's default scrape timeout
/// (10 s), with `runyard_store_up 0`, no job gauges, and the process counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_during_a_store_outage_answers_with_store_up_0() {
    let r = TestRedis::private(&["--save", "", "--appendonly", "no"]);
    let ts = TestServer::builder("[[runners]]\nkind = \"service\"\ntypes = [\"m.*\"]\n")
        .config(&r.server_config("metrics-outage-master-key-0123456789"))
        .service("m.ok", |_ctx| async { Ok(json!("ok")) })
        .start()
        .await;
    ts.submit_ok(json!({"type": "m.ok"})).await;
    let pid = r.pid().expect("a private redis") as i32;
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let scraped = reqwest::Client::new()
        .get(ts.at("/metrics"))
        .timeout(Duration::from_secs(9))
        .send()
        .await;
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    let res = scraped.expect("a scrape answered within 9 s");
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.expect("text");
    assert!(text.contains("runyard_store_up 0"), "{text}");
    assert!(
        !text.contains("runyard_jobs{"),
        "no stale job gauges: {text}"
    );
    assert!(text.contains("runyard_http_requests_total"), "{text}");
}
