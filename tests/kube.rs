//! The `kube` runner against a stateful fake Kubernetes API server (tests/kube_fake): success,
//! failure, deadline, cancel (Foreground propagation, waiting for the pods), Job names, the
//! secret kept out of the Job spec, a 410 on watch, reconcile after a restart, launch failures,
//! the exact set of API calls, a whole server using the runner through a kubeconfig; and what a
//! real cluster does that a kind fake would not: pods that never start (image pull,
//! unschedulable, refused by Pod Security), no overlap between attempts, stops that wait, broken
//! log streams, evictions, OOM kills, sidecars, the `restricted` Pod Security profile, watch
//! history compaction, a Job deleted behind runyard's back with `--cascade=orphan`; API requests
//! that never answer (bounded by `api_timeout`, a hung launch ended by a cancel or the timeout, a
//! hung recovery holding up no other runner's reaps), a create answered 504 after it was stored,
//! a container that cannot start.

mod kube_fake;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_fake::{Deletion, Fake};
use runyard_runners::kube::k8s_openapi::api::batch::v1::Job;
use runyard_runners::kube::{
    is_dns_label, job_name, KubeConfig, KubeOptions, KubeRunner, API_CALLS, LABEL_ATTEMPT,
    LABEL_JOB_ID, LABEL_JOB_TYPE, LABEL_MANAGED_BY,
};
use runyard_runners::{
    Execution, JobSpec, LogStream, Outcome, Recovered, Reporter, Runner, Secret,
};
use serde_json::{json, Value};
use support::{TestServer, WAIT};

const NS: &str = "jobs";
const SECRET: &str = "s3cr3t-4f9a1c0e8b7d6a5f";
const HOOK: &str = "http://runyard.runyard.svc:7070/async";

/// Collects log lines.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl Reporter for Lines {
    fn log(&self, _stream: LogStream, line: String) {
        self.0.lock().unwrap().push(line);
    }
    fn progress(&self, _progress: f64, _details: Option<Value>) {}
}

impl Lines {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn has(&self, s: &str) -> bool {
        self.all().iter().any(|l| l.contains(s))
    }
}

/// A fresh UUID v7-looking job id.
fn new_id() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1000;
    format!("0192a3b4-c5d6-7e8f-9a0b-{:012x}", n)
}

fn spec(job_type: &str, id: &str, attempt: u32) -> JobSpec {
    JobSpec {
        id: id.into(),
        job_type: job_type.into(),
        args: json!({"n": 1, "name": "quarterly"}),
        attempt,
        secret: Secret::from_string(SECRET.into()),
        hook_url: HOOK.into(),
        timeout: None,
        deployment: String::new(),
    }
}

fn config() -> KubeConfig {
    KubeConfig {
        namespace: Some(NS.into()),
        image: "ghcr.io/example/runyard-job:1.2".into(),
        command: ["runyard", "launch", "--", "python3", "job.py"]
            .map(String::from)
            .to_vec(),
        env: BTreeMap::from([
            ("LOG_LEVEL".to_string(), "debug".to_string()),
            ("JOB_ID".to_string(), "spoofed".to_string()),
        ]),
        service_account: Some("runyard-job".into()),
        ttl_after_finished: Some(Duration::from_secs(600)),
        kubeconfig: None,
        options: fast(),
        large_args: Default::default(),
    }
}

/// The lifecycle bounds scaled down for the fake (whose grace second lasts 100 ms).
fn fast() -> KubeOptions {
    KubeOptions {
        termination_grace: Duration::from_secs(2),
        image_pull_timeout: Duration::from_millis(600),
        start_timeout: Duration::from_millis(800),
        finish_timeout: Duration::from_millis(500),
        delete_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(50),
        ..KubeOptions::default()
    }
}

fn runner(fake: &Fake) -> KubeRunner {
    KubeRunner::with_client(config(), fake.client()).expect("runner")
}

async fn wait(exec: &mut Box<dyn Execution>) -> Outcome {
    tokio::time::timeout(WAIT, exec.wait())
        .await
        .expect("the execution ends within the bound")
}

/// Nothing wrong seen by the fake, and no call the Role would not allow.
fn check(fake: &Fake) {
    assert!(fake.violations().is_empty(), "{:#?}", fake.violations());
    assert!(fake.warnings().is_empty(), "{:#?}", fake.warnings());
    let allowed: BTreeSet<(String, String, String)> = API_CALLS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    let extra: Vec<_> = fake.api_calls().difference(&allowed).cloned().collect();
    assert!(extra.is_empty(), "calls outside API_CALLS: {extra:?}");
}

fn env_of(job: &Job) -> Vec<runyard_runners::kube::k8s_openapi::api::core::v1::EnvVar> {
    job.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap_or_default()
}

fn position(fake: &Fake, resource: &str, verb: &str) -> usize {
    fake.calls()
        .iter()
        .position(|c| c.resource == resource && c.verb == verb)
        .unwrap_or_else(|| panic!("no {verb} {resource}"))
}

#[tokio::test]
async fn success_copies_logs_and_builds_the_job() {
    let fake = Fake::new();
    let r = runner(&fake);
    let lines = Arc::new(Lines::default());
    let id = new_id();
    let mut ex = r
        .launch(spec("report.daily", &id, 1), lines.clone())
        .await
        .expect("launch");
    let name = job_name("report.daily", &id, 1);
    let h = ex.handle();
    assert_eq!((h.kind.as_str(), h.id.as_str()), ("kube", name.as_str()));
    assert_eq!(h.data["namespace"], NS);
    assert_eq!(wait(&mut ex).await, Outcome::Success { result: None });
    // Logs: the pod's lines, env resolved by the "kubelet" from the Secret.
    for l in [
        format!("hello from {id}"),
        r#"args={"n":1,"name":"quarterly"}"#.to_string(),
        format!("secret-len={}", SECRET.len()),
        format!("hook={HOOK}"),
        "done".to_string(),
    ] {
        assert!(lines.has(&l), "missing log line {l:?} in {:?}", lines.all());
    }
    // The Job.
    let job = fake.job(NS, &name).expect("the Job exists");
    let js = job.spec.clone().unwrap();
    assert_eq!(js.backoff_limit, Some(0));
    assert_eq!(js.ttl_seconds_after_finished, Some(600));
    assert_eq!(
        js.active_deadline_seconds,
        Some(24 * 3600),
        "no timeout: the backstop deadline"
    );
    assert_eq!(js.suspend, Some(false), "resumed after its Secret was made");
    let labels = job.metadata.labels.clone().unwrap();
    assert_eq!(labels[LABEL_MANAGED_BY], "runyard");
    assert_eq!(labels[LABEL_JOB_ID], id);
    assert_eq!(labels[LABEL_JOB_TYPE], "report.daily");
    assert_eq!(labels[LABEL_ATTEMPT], "1");
    let tpl_labels = js.template.metadata.clone().unwrap().labels.unwrap();
    assert_eq!(tpl_labels[LABEL_JOB_ID], id);
    let pod = js.template.spec.clone().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.service_account_name.as_deref(), Some("runyard-job"));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("ghcr.io/example/runyard-job:1.2"));
    assert_eq!(
        c.command.clone().unwrap(),
        ["runyard", "launch", "--", "python3", "job.py"]
    );
    let env: BTreeMap<String, Option<String>> = env_of(&job)
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect();
    assert_eq!(
        env["JOB_ID"].as_deref(),
        Some(id.as_str()),
        "config env cannot spoof JOB_ID"
    );
    assert_eq!(env["JOB_HOOK"].as_deref(), Some(HOOK));
    assert_eq!(env["JOB_TYPE"].as_deref(), Some("report.daily"));
    assert_eq!(env["JOB_ATTEMPT"].as_deref(), Some("1"));
    assert_eq!(env["LOG_LEVEL"].as_deref(), Some("debug"));
    assert_eq!(env["JOB_SECRET_KEY"], None);
    assert_eq!(
        env_of(&job).iter().filter(|e| e.name == "JOB_ID").count(),
        1,
        "one JOB_ID"
    );
    // Order: the Job exists (suspended) before its Secret, which exists before the Job resumes.
    let (create_job, create_secret, resume) = (
        position(&fake, "jobs", "create"),
        position(&fake, "secrets", "create"),
        position(&fake, "jobs", "patch"),
    );
    assert!(create_job < create_secret && create_secret < resume);
    check(&fake);
}

#[tokio::test]
async fn failure_reports_the_exit_code() {
    let fake = Fake::new();
    let r = runner(&fake);
    let lines = Arc::new(Lines::default());
    let mut ex = r
        .launch(spec("etl.fail", &new_id(), 2), lines.clone())
        .await
        .expect("launch");
    match wait(&mut ex).await {
        Outcome::Failed { message, exit_code } => {
            assert_eq!(exit_code, Some(3));
            assert!(message.contains("code 3"), "{message}");
        }
        o => panic!("expected a failure, got {o:?}"),
    }
    assert!(lines.has("oops"), "{:?}", lines.all());
    check(&fake);
}

#[tokio::test]
async fn long_log_lines_are_split() {
    let fake = Fake::new().with_script(|_job, _env| kube_fake::Script {
        lines: vec!["x".repeat(40 * 1024), "short".into()],
        exit: Some(0),
        run_for: Duration::from_millis(10),
        ..Default::default()
    });
    let r = runner(&fake);
    let lines = Arc::new(Lines::default());
    let mut ex = r
        .launch(spec("report.big", &new_id(), 1), lines.clone())
        .await
        .expect("launch");
    assert_eq!(wait(&mut ex).await, Outcome::Success { result: None });
    let got: Vec<usize> = lines.all().iter().map(String::len).collect();
    assert_eq!(got, vec![16 * 1024, 16 * 1024, 8 * 1024, 5]);
    check(&fake);
}

/// A Job that meets its active deadline (the attempt's timeout plus the margin) timed out: a
/// TIMEOUT, watched or found ended by a server started after it (before: a failure, so a job
/// whose time ran out while runyard was down ended ERROR).
#[tokio::test]
async fn timeout_becomes_the_active_deadline() {
    // One "second" of activeDeadlineSeconds lasts 20 ms here.
    let fake = Fake::new().with_deadline_unit(Duration::from_millis(20));
    let r = runner(&fake);
    let limit = Duration::from_millis(1500);
    let id = new_id();
    let mut s = spec("etl.hang", &id, 1);
    s.timeout = Some(limit);
    let mut ex = r
        .launch(s, Arc::new(Lines::default()))
        .await
        .expect("launch");
    let job = fake.job(NS, &job_name("etl.hang", &id, 1)).unwrap();
    // ceil(1.5 s) + the 10 s margin that lets the server's own timeout fire first.
    assert_eq!(job.spec.unwrap().active_deadline_seconds, Some(12));
    assert_eq!(wait(&mut ex).await, Outcome::TimedOut { limit });

    // The server dies with the attempt running; its deadline passes; a new one recovers it.
    let id = new_id();
    let mut s = spec("etl.hang", &id, 1);
    s.timeout = Some(limit);
    let handle = {
        let ex = r
            .launch(s.clone(), Arc::new(Lines::default()))
            .await
            .expect("launch");
        ex.handle()
    };
    let name = handle.id.clone();
    fake.until("deadline met", |f| f.job_finished(NS, &name))
        .await;
    match runner(&fake)
        .recover(&handle, s, Arc::new(Lines::default()))
        .await
        .unwrap()
    {
        Recovered::Finished(o) => assert_eq!(o, Outcome::TimedOut { limit }),
        _ => panic!("expected Finished"),
    }
    check(&fake);
}

#[tokio::test]
async fn cancel_deletes_with_foreground_propagation_and_waits() {
    let fake = Fake::new();
    let r = runner(&fake);
    let lines = Arc::new(Lines::default());
    let id = new_id();
    let name = job_name("etl.hang", &id, 1);
    let mut ex = r
        .launch(spec("etl.hang", &id, 1), lines.clone())
        .await
        .expect("launch");
    // Running, logs flowing.
    for _ in 0..500 {
        if lines.has("hello from") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(lines.has("hello from"), "{:?}", lines.all());
    assert!(!fake.secrets().is_empty() && !fake.pods().is_empty());
    let t0 = std::time::Instant::now();
    tokio::time::timeout(WAIT, ex.stop(Duration::from_millis(300)))
        .await
        .expect("stop returns");
    let out = tokio::time::timeout(Duration::from_secs(1), ex.wait())
        .await
        .expect("wait is prompt after stop");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(&out, Outcome::Failed { message, .. } if message.contains("stopped")),
        "{out:?}"
    );
    // The pods got the stop's grace, the Job went in the foreground, and stop returned only
    // once both were gone (and the Secret with the Job).
    let d = fake.deletions();
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(
        (d[0].resource.as_str(), d[1].resource.as_str()),
        ("pods", "jobs")
    );
    assert_eq!(d[1].name, name);
    assert_eq!(d[1].propagation.as_deref(), Some("Foreground"));
    assert!(
        fake.pods().is_empty() && fake.jobs().is_empty() && fake.secrets().is_empty(),
        "stop returned before the attempt was gone"
    );
    assert!(
        lines.has("terminating"),
        "the pod got SIGTERM and its last lines were kept"
    );
    check(&fake);
}

#[tokio::test]
async fn names_are_valid_for_long_and_odd_types() {
    let fake = Fake::new();
    let r = runner(&fake);
    let long = "analytics.".repeat(30) + "rebuild_everything";
    let types = [
        long.as_str(),
        "Report.Daily_v2:EU",
        "ÜNÏCÖDE.tÿpe",
        "...",
        "x",
        "a-.-b",
        "9.lives",
    ];
    let mut names = BTreeSet::new();
    for (i, t) in types.iter().enumerate() {
        let id = new_id();
        let attempt = [1, 7, 42, 4_000_000_000][i % 4];
        let mut ex = r
            .launch(spec(t, &id, attempt), Arc::new(Lines::default()))
            .await
            .unwrap_or_else(|e| panic!("type {t:?}: {e}"));
        let name = ex.handle().id;
        assert!(is_dns_label(&name) && name.len() <= 63, "{t:?} -> {name:?}");
        assert!(name.ends_with(&format!("-{attempt}")), "{name}");
        assert!(names.insert(name.clone()), "duplicate name {name}");
        assert_eq!(
            wait(&mut ex).await,
            Outcome::Success { result: None },
            "{t:?}"
        );
        // The exact type is kept in an annotation.
        let job = fake.job(NS, &name).unwrap();
        assert_eq!(job.metadata.annotations.unwrap()["runyard.io/job-type"], *t);
    }
    // Attempts of one job get distinct names.
    let id = new_id();
    assert_ne!(job_name(&long, &id, 1), job_name(&long, &id, 2));
    check(&fake);
}

#[tokio::test]
async fn the_secret_is_never_in_the_job_spec() {
    let fake = Fake::new();
    let r = runner(&fake);
    let id = new_id();
    let name = job_name("report.daily", &id, 1);
    let mut ex = r
        .launch(spec("report.daily", &id, 1), Arc::new(Lines::default()))
        .await
        .expect("launch");
    assert_eq!(wait(&mut ex).await, Outcome::Success { result: None });
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
    let bodies = fake.job_bodies();
    assert_eq!(bodies.len(), 1);
    for b in &bodies {
        assert!(
            !b.contains(SECRET) && !b.contains(&b64),
            "secret in the Job spec: {b}"
        );
        assert!(
            !b.contains("quarterly"),
            "args belong in the Secret too: {b}"
        );
    }
    for c in fake.calls() {
        if c.resource == "jobs" {
            let text = c.body.map(|b| b.to_string()).unwrap_or_default();
            assert!(!text.contains(SECRET) && !c.uri.contains(SECRET), "{text}");
        }
    }
    let job = fake.job(NS, &name).unwrap();
    let from = env_of(&job)
        .into_iter()
        .find(|e| e.name == "JOB_SECRET_KEY")
        .expect("JOB_SECRET_KEY env");
    assert!(from.value.is_none());
    let sel = from
        .value_from
        .unwrap()
        .secret_key_ref
        .expect("secretKeyRef");
    let secret = fake
        .secrets()
        .into_iter()
        .find(|s| s.metadata.name.as_deref() == Some(sel.name.as_str()))
        .expect("the referenced Secret exists");
    assert_eq!(
        secret.data.as_ref().unwrap()[&sel.key].0,
        SECRET.as_bytes(),
        "the Secret holds the key"
    );
    assert_eq!(secret.immutable, Some(true));
    let owner = &secret.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            Some(owner.uid.as_str())
        ),
        ("Job", name.as_str(), job.metadata.uid.as_deref()),
        "the Secret is owned by the Job"
    );
    check(&fake);
}

#[tokio::test]
async fn a_410_on_watch_relists() {
    let fake = Fake::new();
    fake.expire_next_watches(2);
    let r = runner(&fake);
    let lines = Arc::new(Lines::default());
    let id = new_id();
    let name = job_name("etl.hang", &id, 1);
    let mut ex = r
        .launch(spec("etl.hang", &id, 1), lines.clone())
        .await
        .expect("launch");
    // Both watches are answered `410 Gone`; the Job ends while the watcher is re-listing.
    fake.until("two 410s sent", |f| f.watch_410s() == 2).await;
    fake.finish_job(NS, &name, 0);
    assert_eq!(wait(&mut ex).await, Outcome::Success { result: None });
    // The watcher's lists (by field selector): the first one, then one after each 410.
    let relists = fake
        .calls()
        .iter()
        .filter(|c| c.resource == "jobs" && c.verb == "list" && c.uri.contains("fieldSelector"))
        .count();
    assert!(
        relists >= 3,
        "expected a re-list after each 410, saw {relists} lists"
    );
    assert!(lines.has("hello from"));
    check(&fake);
}

/// A worker that hung after it created the attempt's Job but before it recorded the handle (a
/// job cancelled while `STARTING`): `unrecorded` names the Job from the job id and attempt,
/// `recover` finds it running, and the reaper's stop deletes it; an attempt never launched is
/// gone.
#[tokio::test]
async fn an_unrecorded_attempt_is_found_by_its_name_and_stopped() {
    let fake = Fake::new();
    let id = new_id();
    let s = spec("etl.hang", &id, 1);
    let launched = runner(&fake)
        .launch(s.clone(), Arc::new(Lines::default()))
        .await
        .expect("launch");
    until_a_pod_runs(&fake).await;
    // The worker hangs here: its execution is never heard from again, its handle not stored.
    std::mem::forget(launched);
    let r = runner(&fake);
    let h = r.unrecorded(&s, None).expect("a Job is found by its name");
    assert_eq!(h.id, job_name("etl.hang", &id, 1));
    assert!(r.reaches(&h));
    let mut ex = match r.recover(&h, s, Arc::new(Lines::default())).await.unwrap() {
        Recovered::Running(e) => e,
        Recovered::Finished(o) => panic!("finished? {o:?}"),
        Recovered::Gone => panic!("not found without its handle"),
    };
    assert!(ex.stop(Duration::from_millis(300)).await);
    until_gone(&fake, &h.id).await;
    let never = spec("etl.hang", &id, 2);
    let h2 = r.unrecorded(&never, None).unwrap();
    let got = r.recover(&h2, never, Arc::new(Lines::default())).await;
    assert!(matches!(got, Ok(Recovered::Gone)));
    check(&fake);
}

#[tokio::test]
async fn reconcile_after_restart() {
    let fake = Fake::new();
    let id = new_id();
    let s = spec("etl.hang", &id, 1);
    let name = job_name("etl.hang", &id, 1);

    // Running work is adopted: a new runner (new process) finds it by label and waits on it.
    let handle = {
        let r1 = runner(&fake);
        let ex = r1
            .launch(s.clone(), Arc::new(Lines::default()))
            .await
            .expect("launch");
        fake.until("pod running", |f| !f.pods().is_empty()).await;
        ex.handle()
        // The server "dies" here: the execution and its tasks are dropped.
    };
    let r2 = runner(&fake);
    let lines = Arc::new(Lines::default());
    let mut ex2 = match r2.recover(&handle, s.clone(), lines.clone()).await.unwrap() {
        Recovered::Running(e) => e,
        Recovered::Finished(o) => panic!("finished? {o:?}"),
        Recovered::Gone => panic!("gone?"),
    };
    assert_eq!(ex2.handle().id, name);
    fake.finish_job(NS, &name, 0);
    assert_eq!(wait(&mut ex2).await, Outcome::Success { result: None });
    assert!(fake.deletions().is_empty(), "{:?}", fake.deletions());

    // Finished while nobody watched: the outcome, exit code included.
    let r3 = runner(&fake);
    match r3.recover(&handle, s.clone(), lines.clone()).await.unwrap() {
        Recovered::Finished(o) => assert_eq!(o, Outcome::Success { result: None }),
        _ => panic!("expected Finished"),
    }
    let fid = new_id();
    let fs = spec("etl.fail", &fid, 1);
    let fhandle = {
        let ex = r3
            .launch(fs.clone(), Arc::new(Lines::default()))
            .await
            .unwrap();
        let n = ex.handle().id;
        fake.until("failed job finished", |f| f.job_finished(NS, &n))
            .await;
        ex.handle()
    };
    match runner(&fake)
        .recover(&fhandle, fs, lines.clone())
        .await
        .unwrap()
    {
        Recovered::Finished(Outcome::Failed { exit_code, .. }) => assert_eq!(exit_code, Some(3)),
        _ => panic!("expected Finished(Failed)"),
    }

    // Gone: the Job was deleted while the server was down.
    let gid = new_id();
    let gs = spec("etl.hang", &gid, 1);
    let ghandle = {
        let ex = r3
            .launch(gs.clone(), Arc::new(Lines::default()))
            .await
            .unwrap();
        ex.handle()
    };
    let jobs: runyard_runners::kube::kube_client::Api<Job> =
        runyard_runners::kube::kube_client::Api::namespaced(fake.client(), NS);
    jobs.delete(
        &ghandle.id,
        &runyard_runners::kube::kube_client::api::DeleteParams::background(),
    )
    .await
    .unwrap();
    assert!(matches!(
        runner(&fake)
            .recover(&ghandle, gs, lines.clone())
            .await
            .unwrap(),
        Recovered::Gone
    ));

    // A leftover of an older attempt (its worker died before saving the handle) is deleted
    // before the next attempt starts: never two attempts at once.
    let lid = new_id();
    let lhandle = {
        let ex = r3
            .launch(spec("etl.hang", &lid, 1), Arc::new(Lines::default()))
            .await
            .unwrap();
        ex.handle()
    };
    let old = job_name("etl.hang", &lid, 1);
    let mut ex = runner(&fake)
        .launch(spec("etl.hang", &lid, 2), Arc::new(Lines::default()))
        .await
        .unwrap();
    assert!(fake.deletions().iter().any(|d| d
        == &Deletion {
            resource: "jobs".into(),
            name: old.clone(),
            propagation: Some("Foreground".into())
        }));
    assert!(fake.job(NS, &old).is_none());
    let live: Vec<String> = fake
        .jobs()
        .into_iter()
        .filter(|j| j.metadata.labels.as_ref().unwrap()[LABEL_JOB_ID] == lid)
        .map(|j| j.metadata.name.unwrap())
        .collect();
    assert_eq!(live, vec![job_name("etl.hang", &lid, 2)]);
    // A recovery of attempt 1 read before the job moved on (a reaper's batch that waited behind
    // a slow backend while another node requeued the job): its Job is gone, and attempt 2's,
    // which runs now, is left alone.
    assert!(matches!(
        runner(&fake)
            .recover(&lhandle, spec("etl.hang", &lid, 1), lines.clone())
            .await
            .unwrap(),
        Recovered::Gone
    ));
    let attempt2 = job_name("etl.hang", &lid, 2);
    assert!(
        fake.job(NS, &attempt2)
            .is_some_and(|j| j.metadata.deletion_timestamp.is_none()),
        "a stale recovery deleted the running attempt's Job"
    );
    ex.stop(Duration::from_millis(100)).await;
    check(&fake);
}

#[tokio::test]
async fn launch_failures_leave_nothing_behind() {
    let fake = Fake::new();
    let r = runner(&fake);
    // The Secret cannot be made: the suspended Job goes (with Background propagation).
    fake.fail_next("", "secrets", "create", 403);
    let e = r
        .launch(
            spec("report.daily", &new_id(), 1),
            Arc::new(Lines::default()),
        )
        .await
        .err()
        .expect("launch fails");
    assert!(e.to_string().contains("Secret"), "{e}");
    fake.until("Job removed", |f| f.jobs().is_empty()).await;
    // The Job cannot be resumed: it goes, and its Secret with it.
    fake.fail_next("batch", "jobs", "patch", 500);
    assert!(r
        .launch(
            spec("report.daily", &new_id(), 1),
            Arc::new(Lines::default())
        )
        .await
        .is_err());
    fake.until("Job and Secret removed", |f| {
        f.jobs().is_empty() && f.secrets().is_empty()
    })
    .await;
    assert!(fake.pods().is_empty(), "no pod ever started");
    assert!(fake
        .deletions()
        .iter()
        .all(|d| d.propagation.as_deref() == Some("Foreground")));
    // The API refuses the Job: a launch error, nothing created.
    fake.fail_next("batch", "jobs", "create", 403);
    let e = r
        .launch(
            spec("report.daily", &new_id(), 1),
            Arc::new(Lines::default()),
        )
        .await
        .err()
        .expect("launch fails");
    assert!(
        e.to_string().contains("cannot create Kubernetes Job"),
        "{e}"
    );
    assert!(fake.jobs().is_empty() && fake.secrets().is_empty());
    check(&fake);
}

/// The runner makes exactly the calls of `API_CALLS` (which the chart's Role grants).
#[tokio::test]
async fn api_calls_are_exactly_the_declared_ones() {
    let fake = Fake::new();
    let r = runner(&fake);
    let lines = Arc::new(Lines::default());
    let mut ok = r
        .launch(spec("report.daily", &new_id(), 1), lines.clone())
        .await
        .unwrap();
    let mut fail = r
        .launch(spec("etl.fail", &new_id(), 1), lines.clone())
        .await
        .unwrap();
    let hs = spec("etl.hang", &new_id(), 1);
    let hang = r.launch(hs.clone(), lines.clone()).await.unwrap();
    wait(&mut ok).await;
    wait(&mut fail).await;
    let handle = hang.handle();
    drop(hang);
    let mut rec = match runner(&fake)
        .recover(&handle, hs, lines.clone())
        .await
        .unwrap()
    {
        Recovered::Running(e) => e,
        _ => panic!("expected Running"),
    };
    // The adopted attempt's Job deleted behind its back with `Orphan` propagation: its pods and
    // its Secret (named in the Job it adopted) are deleted.
    {
        use runyard_runners::kube::kube_client::api::{Api, DeleteParams};
        let jobs: Api<Job> = Api::namespaced(fake.client(), NS);
        jobs.delete(&handle.id, &DeleteParams::orphan())
            .await
            .expect("the Job is deleted");
    }
    assert!(failed_message(&wait(&mut rec).await).contains("was deleted"));
    let left: Vec<_> = fake
        .secrets()
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .filter(|n| n.starts_with(&handle.id))
        .collect();
    assert!(left.is_empty(), "the orphaned Secret was left: {left:?}");
    // A pod refused at creation: the runner reads the Job's events.
    let refused = Fake::new().with_script(|_, _| kube_fake::Script {
        refuse: Some("exceeded quota: compute".into()),
        ..Default::default()
    });
    let _ = fake; // (the same fake would need a per-job script; a second one is simpler)
    let mut ex = runner(&refused)
        .launch(spec("report.daily", &new_id(), 1), lines.clone())
        .await
        .unwrap();
    wait(&mut ex).await;
    let mut seen = fake.api_calls();
    seen.extend(refused.api_calls());
    let declared: BTreeSet<(String, String, String)> = API_CALLS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    assert_eq!(seen, declared);
    check(&fake);
}

/// The fake is strict where the API server is: a malformed or invalid Job is refused, so the
/// tests above mean something; an unknown field is only warned about, as by a real server.
#[tokio::test]
async fn the_fake_refuses_malformed_jobs() {
    use tower::ServiceExt;
    let fake = Fake::new();
    let post = |body: Value| {
        let router = fake.router();
        async move {
            let req = axum::http::Request::post("/apis/batch/v1/namespaces/jobs/jobs")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap();
            router.oneshot(req).await.unwrap().status().as_u16()
        }
    };
    let good = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "ok-1"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "job", "image": "x"}]}}}
    });
    assert_eq!(post(good.clone()).await, 201);
    let mut typo = good.clone();
    typo["metadata"]["name"] = json!("ok-2");
    typo["spec"]["backofLimit"] = json!(0);
    // A real API server's default `fieldValidation` is `Warn`: accepted, with a Warning header.
    assert_eq!(post(typo).await, 201, "unknown field");
    assert_eq!(
        fake.warnings(),
        vec!["unknown field \"spec.backofLimit\"".to_string()]
    );
    let mut wrong_type = good.clone();
    wrong_type["metadata"]["name"] = json!("ok-3");
    wrong_type["spec"]["backoffLimit"] = json!("zero");
    assert_eq!(post(wrong_type).await, 400, "wrong type");
    let mut long = good.clone();
    long["metadata"]["name"] = json!("a".repeat(64));
    assert_eq!(post(long).await, 422, "name too long");
    let mut literal = good.clone();
    literal["metadata"]["name"] = json!("ok-4");
    literal["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "JOB_SECRET_KEY", "value": "x"}]);
    assert_eq!(post(literal).await, 422, "literal secret");
    let mut always = good;
    always["metadata"]["name"] = json!("ok-5");
    always["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    assert_eq!(post(always).await, 422, "restartPolicy Always");
}

/// A whole server with a kube runner configured by a kubeconfig file (the real config path),
/// the fake serving on 127.0.0.1: success with logs, worker timeout and API cancel (both delete
/// the Job with Foreground propagation).
#[tokio::test]
async fn server_runs_kube_jobs_through_a_kubeconfig() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let (_addr, kubeconfig) = fake.serve_tcp(dir.path(), "runyard-test").await;
    let ts = TestServer::start(&server_runner(
        &kubeconfig,
        r#"ttl_after_finished = "10m"
[runners.kube]
termination_grace = "2s"
poll_interval = "50ms"
finish_timeout = "500ms""#,
    ))
    .await;

    // Success, logs copied into the job's logs.
    let id = ts
        .submit_ok(json!({"type": "kube.report", "args": {"n": 5}}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "SUCCESS", "{job:#}");
    let (_, logs) = ts.get(&format!("/async/jobs/{id}/logs")).await;
    let text: Vec<String> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(text.contains(&format!("hello from {id}")), "{text:?}");
    assert!(text.contains(&r#"args={"n":5}"#.to_string()), "{text:?}");
    assert!(text.contains(&format!("hook={}/async", ts.url)), "{text:?}");
    // The kubeconfig's context namespace and token were used.
    let name = job_name("kube.report", &id, 1);
    assert!(fake.job("runyard-test", &name).is_some());
    assert!(fake
        .calls()
        .iter()
        .all(|c| c.auth.as_deref() == Some("Bearer fake-token")));

    // Timeout: the worker stops the job, the Job is deleted with Foreground propagation.
    let id = ts
        .submit_ok(json!({"type": "kube.hang", "timeout": "1s"}))
        .await;
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "TIMEOUT", "{job:#}");
    let timed_out = job_name("kube.hang", &id, 1);
    fake.until("timed-out Job deleted", |f| {
        f.deletions()
            .iter()
            .any(|d| d.name == timed_out && d.propagation.as_deref() == Some("Foreground"))
    })
    .await;

    // Cancel through the API.
    let id = ts.submit_ok(json!({"type": "kube.hang"})).await;
    let name = job_name("kube.hang", &id, 1);
    fake.until("pod running", |f| {
        f.pods().iter().any(|p| {
            p.metadata.labels.as_ref().unwrap().get(LABEL_JOB_ID) == Some(&id)
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
    })
    .await;
    let (st, v) = ts.post(&format!("/async/jobs/{id}/cancel"), None).await;
    assert!(st.is_success(), "{v}");
    let job = ts.wait_terminal(&id, WAIT).await;
    assert_eq!(job["status"], "CANCELLED", "{job:#}");
    fake.until("cancelled Job deleted", |f| {
        f.deletions()
            .iter()
            .any(|d| d.name == name && d.propagation.as_deref() == Some("Foreground"))
    })
    .await;
    fake.until("its pods and Secret collected", |f| {
        !f.pods().iter().any(|p| {
            p.metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .starts_with(&name)
        }) && !f.secrets().iter().any(|s| {
            s.metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .starts_with(&name)
        })
    })
    .await;
    check(&fake);
}

#[test]
fn config_requires_an_image_and_reads_the_kubeconfig() {
    use runyard::config::Config;
    let e = Config::from_toml("[[runners]]\nkind = \"kube\"\ntypes = [\"a\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("runners[0].image"), "{e}");
    let e = Config::from_toml(
        "[[runners]]\nkind = \"kube\"\ntypes = [\"a\"]\nimage = \"x\"\nnamespace = \"Bad_NS\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("runners[0].namespace"), "{e}");
    let c = Config::from_toml(
        "[[runners]]\nkind = \"kube\"\ntypes = [\"a\"]\nimage = \"x\"\nkubeconfig = \"/nonexistent/kubeconfig\"\n",
    )
    .expect("validates");
    let e = runyard::runner_set::RunnerSet::build(
        &c,
        Arc::new(runyard_runners::service::ServiceRegistry::with_builtins()),
    )
    .err()
    .expect("a missing kubeconfig stops the server")
    .to_string();
    assert!(e.contains("runners[0].kubeconfig"), "{e}");
}

// ---- a real cluster's ways (issue 16) ----

fn scripted(
    f: impl Fn(&BTreeMap<String, String>) -> kube_fake::Script + Send + Sync + 'static,
) -> Fake {
    Fake::new().with_script(move |_job, env| f(env))
}

fn failed_message(o: &Outcome) -> String {
    match o {
        Outcome::Failed { message, .. } => message.clone(),
        o => panic!("expected a failure, got {o:?}"),
    }
}

/// A server's kube runner for `kube.*` jobs through `kubeconfig` (the fake's), with `rest`
/// after its keys (more keys, then `[runners.kube]`).
/// A server on `fake` (served over TCP under `dir`) whose kube runner has short bounds
/// (`delete_timeout` as given), with `runner` lines before its `[runners.kube]` and `worker`
/// config.
async fn short_bound_server(
    fake: &Fake,
    dir: &std::path::Path,
    runner: &str,
    delete_timeout: &str,
    worker: &str,
) -> TestServer {
    let (_addr, kubeconfig) = fake.serve_tcp(dir, "runyard-test").await;
    let rest = format!(
        "{runner}\n[runners.kube]\ntermination_grace = \"100ms\"\n\
         delete_timeout = \"{delete_timeout}\"\nfinish_timeout = \"100ms\"\n\
         poll_interval = \"50ms\""
    );
    TestServer::builder(&server_runner(&kubeconfig, &rest))
        .config(worker)
        .start()
        .await
}

fn server_runner(kubeconfig: &std::path::Path, rest: &str) -> String {
    format!(
        r#"
[[runners]]
kind = "kube"
types = ["kube.*"]
image = "ghcr.io/example/runyard-job:1.2"
command = ["runyard", "launch", "--", "python3", "job.py"]
kubeconfig = "{}"
{rest}
"#,
        kubeconfig.display()
    )
}

/// Waits (bounded) until a pod of the fake runs.
async fn until_a_pod_runs(fake: &Fake) {
    fake.until("pod running", |f| {
        f.pods()
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
}

/// Waits (bounded) until the attempt's Job and pods are gone from the fake.
async fn until_gone(fake: &Fake, name: &str) {
    let n = name.to_string();
    fake.until("the attempt's Job and pods gone", move |f| {
        f.job(NS, &n).is_none()
            && !f.pods().iter().any(|p| {
                p.metadata
                    .name
                    .as_deref()
                    .unwrap_or_default()
                    .starts_with(&n)
            })
    })
    .await;
}

#[tokio::test]
async fn an_unpullable_image_fails_the_attempt_with_the_reason() {
    let fake = scripted(|_| kube_fake::Script {
        pending: Some(kube_fake::Pending::ImagePull),
        ..Default::default()
    });
    let id = new_id();
    let t0 = std::time::Instant::now();
    // No timeout: only the runner's bound ends it.
    let mut ex = runner(&fake)
        .launch(spec("report.daily", &id, 1), Arc::new(Lines::default()))
        .await
        .unwrap();
    let out = wait(&mut ex).await;
    let m = failed_message(&out);
    assert!(m.contains("cannot pull the image"), "{m}");
    assert!(
        m.contains("ErrImagePull") || m.contains("ImagePullBackOff"),
        "{m}"
    );
    // image_pull_timeout is 600 ms here.
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    // The attempt is over: nothing left running.
    until_gone(&fake, &job_name("report.daily", &id, 1)).await;
    check(&fake);
}

#[tokio::test]
async fn an_unschedulable_pod_fails_the_attempt_with_the_reason() {
    let fake = scripted(|_| kube_fake::Script {
        pending: Some(kube_fake::Pending::Unschedulable),
        ..Default::default()
    });
    let id = new_id();
    let t0 = std::time::Instant::now();
    let mut ex = runner(&fake)
        .launch(spec("report.daily", &id, 1), Arc::new(Lines::default()))
        .await
        .unwrap();
    let m = failed_message(&wait(&mut ex).await);
    assert!(m.contains("Unschedulable"), "{m}");
    assert!(m.contains("Insufficient cpu"), "{m}");
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    until_gone(&fake, &job_name("report.daily", &id, 1)).await;
    check(&fake);
}

#[tokio::test]
async fn a_container_config_error_fails_the_attempt() {
    let fake = scripted(|_| kube_fake::Script {
        pending: Some(kube_fake::Pending::ConfigError),
        ..Default::default()
    });
    let mut ex = runner(&fake)
        .launch(
            spec("report.daily", &new_id(), 1),
            Arc::new(Lines::default()),
        )
        .await
        .unwrap();
    let m = failed_message(&wait(&mut ex).await);
    assert!(m.contains("CreateContainerConfigError"), "{m}");
    check(&fake);
}

#[tokio::test]
async fn a_pod_refused_by_pod_security_fails_the_attempt() {
    // The runner's own pods pass `restricted` (see the test below); a stricter policy (a
    // webhook, a pinned older profile) refuses them as Pod Security admission would.
    let fake = scripted(|_| kube_fake::Script {
        refuse: Some(
            "violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false".into(),
        ),
        ..Default::default()
    });
    let id = new_id();
    let t0 = std::time::Instant::now();
    let mut ex = runner(&fake)
        .launch(spec("report.daily", &id, 1), Arc::new(Lines::default()))
        .await
        .unwrap();
    let m = failed_message(&wait(&mut ex).await);
    assert!(m.contains("Pod Security"), "{m}");
    assert!(m.contains("violates PodSecurity"), "{m}");
    // At once, not after start_timeout (800 ms) + more.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    fake.until("Job gone", |f| f.jobs().is_empty()).await;
    // A quota refusal may heal: it fails after start_timeout, with the event's message.
    let fake = scripted(|_| kube_fake::Script {
        refuse: Some(
            "exceeded quota: compute, requested: cpu=1, used: cpu=4, limited: cpu=4".into(),
        ),
        ..Default::default()
    });
    let mut ex = runner(&fake)
        .launch(
            spec("report.daily", &new_id(), 1),
            Arc::new(Lines::default()),
        )
        .await
        .unwrap();
    let m = failed_message(&wait(&mut ex).await);
    assert!(
        m.contains("FailedCreate") && m.contains("exceeded quota"),
        "{m}"
    );
    check(&fake);
}

#[tokio::test]
async fn the_pods_pass_the_restricted_pod_security_profile() {
    let fake = Fake::new();
    fake.enforce_restricted(NS);
    let r = runner(&fake);
    let id = new_id();
    let mut ex = r
        .launch(spec("report.daily", &id, 1), Arc::new(Lines::default()))
        .await
        .unwrap();
    assert_eq!(wait(&mut ex).await, Outcome::Success { result: None });
    let job = fake.job(NS, &job_name("report.daily", &id, 1)).unwrap();
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        kube_fake::pss::restricted_violations(&pod),
        Vec::<String>::new()
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    // The check itself refuses what the standard forbids.
    let mut bad = pod.clone();
    bad.containers[0].security_context = None;
    let v = kube_fake::pss::restricted_violations(&bad);
    assert!(
        v.iter().any(|v| v.contains("allowPrivilegeEscalation")),
        "{v:?}"
    );
    assert!(v.iter().any(|v| v.contains("capabilities")), "{v:?}");
    let mut root = pod.clone();
    root.security_context.as_mut().unwrap().run_as_non_root = None;
    root.security_context.as_mut().unwrap().seccomp_profile = None;
    root.containers[0]
        .security_context
        .as_mut()
        .unwrap()
        .run_as_non_root = None;
    root.containers[0]
        .security_context
        .as_mut()
        .unwrap()
        .seccomp_profile = None;
    let v = kube_fake::pss::restricted_violations(&root);
    assert!(v.iter().any(|v| v.contains("runAsNonRoot")), "{v:?}");
    assert!(v.iter().any(|v| v.contains("seccompProfile")), "{v:?}");
    // Configured pod settings reach the pod.
    let mut cfg = config();
    cfg.options.requests = BTreeMap::from([("cpu".into(), "250m".into())]);
    cfg.options.limits = BTreeMap::from([("memory".into(), "256Mi".into())]);
    cfg.options.image_pull_secrets = vec!["regcred".into()];
    cfg.options.node_selector = BTreeMap::from([("pool".into(), "batch".into())]);
    cfg.options.annotations = BTreeMap::from([("sidecar.istio.io/inject".into(), "false".into())]);
    cfg.options.tolerations = vec![serde_json::from_value(
        json!({"key": "batch", "operator": "Exists", "effect": "NoSchedule"}),
    )
    .unwrap()];
    let r = KubeRunner::with_client(cfg, fake.client()).unwrap();
    let id = new_id();
    let mut ex = r
        .launch(spec("report.daily", &id, 1), Arc::new(Lines::default()))
        .await
        .unwrap();
    assert_eq!(wait(&mut ex).await, Outcome::Success { result: None });
    let job = fake.job(NS, &job_name("report.daily", &id, 1)).unwrap();
    let tpl = job.spec.unwrap().template;
    let pod = tpl.spec.unwrap();
    assert_eq!(
        kube_fake::pss::restricted_violations(&pod),
        Vec::<String>::new()
    );
    let res = pod.containers[0].resources.clone().unwrap();
    assert_eq!(res.requests.unwrap()["cpu"].0, "250m");
    assert_eq!(res.limits.unwrap()["memory"].0, "256Mi");
    assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "regcred");
    assert_eq!(pod.node_selector.unwrap()["pool"], "batch");
    assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("batch"));
    assert_eq!(
        tpl.metadata.unwrap().annotations.unwrap()["sidecar.istio.io/inject"],
        "false"
    );
    check(&fake);
}

/// Each attempt writes lines naming itself, runs until deleted, and takes a while to stop.
fn attempt_script(env: &BTreeMap<String, String>) -> kube_fake::Script {
    let a = env.get("JOB_ATTEMPT").cloned().unwrap_or_default();
    kube_fake::Script {
        lines: (0..5).map(|i| format!("attempt-{a} line {i}")).collect(),
        exit: None,
        term_delay: Duration::from_millis(700),
        ..Default::default()
    }
}

#[tokio::test]
async fn cancel_then_retry_never_overlaps_and_never_mixes_logs() {
    let fake = scripted(attempt_script);
    let r = runner(&fake);
    let id = new_id();
    let first = Arc::new(Lines::default());
    let mut ex = r
        .launch(spec("etl.hang", &id, 1), first.clone())
        .await
        .unwrap();
    for _ in 0..500 {
        if first.has("attempt-1 line 4") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Stopped (a timeout or a cancel), then the next attempt at once.
    // (A grace second lasts 100 ms in the fake: 20 s is 2 s, more than the pod needs.)
    let t0 = std::time::Instant::now();
    ex.stop(Duration::from_secs(20)).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "stop waited for the pod's SIGTERM handling: {:?}",
        t0.elapsed()
    );
    let second = Arc::new(Lines::default());
    let ex2 = r
        .launch(spec("etl.hang", &id, 2), second.clone())
        .await
        .unwrap();
    for _ in 0..500 {
        if second.has("attempt-2 line 4") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A worker that died without stopping its attempt: the next launch deletes the leftover
    // and waits for it before starting.
    drop(ex2);
    let third = Arc::new(Lines::default());
    let mut ex3 = r
        .launch(spec("etl.hang", &id, 3), third.clone())
        .await
        .unwrap();
    for _ in 0..500 {
        if third.has("attempt-3 line 4") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ex3.stop(Duration::from_secs(20)).await;
    for (lines, n) in [(&first, 1), (&second, 2), (&third, 3)] {
        let all = lines.all();
        assert!(lines.has(&format!("attempt-{n} line 4")), "{all:?}");
        assert!(
            all.iter()
                .all(|l| l == "terminating" || l.starts_with(&format!("attempt-{n} "))),
            "attempt {n} got another attempt's lines: {all:?}"
        );
    }
    // The fake records a violation when a pod starts while another pod of the job runs.
    check(&fake);
}

#[tokio::test]
async fn a_stop_waits_for_the_pod_to_go() {
    let fake = scripted(|_| kube_fake::Script {
        lines: vec!["working".into()],
        exit: None,
        term_delay: Duration::from_millis(800),
        ..Default::default()
    });
    let lines = Arc::new(Lines::default());
    let mut ex = runner(&fake)
        .launch(spec("etl.hang", &new_id(), 1), lines.clone())
        .await
        .unwrap();
    until_a_pod_runs(&fake).await;
    // (A grace second lasts 100 ms in the fake: 20 s is 2 s, more than the pod needs.)
    let t0 = std::time::Instant::now();
    assert!(
        ex.stop(Duration::from_secs(20)).await,
        "the pod's end is confirmed"
    );
    let took = t0.elapsed();
    assert!(
        fake.pods().is_empty(),
        "stop returned while the pod was still there"
    );
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    // The pod was asked to stop within the stop's grace.
    let pod_delete = fake
        .calls()
        .into_iter()
        .find(|c| c.resource == "pods" && c.verb == "delete")
        .expect("the pods were deleted with the grace period");
    assert_eq!(pod_delete.body.unwrap()["gracePeriodSeconds"], 20);
    assert!(lines.has("terminating"), "{:?}", lines.all());
    check(&fake);
}

/// A running attempt of `etl.hang` whose pod outlives any stop (a grace second lasts 20 s in this
/// fake: the pod runs on for 20 s after its delete), with a runner whose bounds are short
/// (`delete_timeout` as given).
async fn a_pod_that_outlives_its_bound(delete_timeout: Duration) -> (Fake, Box<dyn Execution>) {
    let fake = scripted(|_| kube_fake::Script {
        lines: vec!["working".into()],
        exit: None,
        term_delay: Duration::from_secs(60),
        ..Default::default()
    })
    .with_grace_unit(Duration::from_secs(20));
    let mut cfg = config();
    cfg.options.termination_grace = Duration::from_millis(100);
    cfg.options.delete_timeout = delete_timeout;
    cfg.options.finish_timeout = Duration::from_millis(100);
    let ex = KubeRunner::with_client(cfg, fake.client())
        .expect("runner")
        .launch(spec("etl.hang", &new_id(), 1), Arc::new(Lines::default()))
        .await
        .unwrap();
    until_a_pod_runs(&fake).await;
    (fake, ex)
}

/// A stop whose pod outlives the stop's bound (a node that does not kill it in time) says so:
/// `stop` is false, and the worker then keeps the job's lease to run out rather than let a
/// retry start beside the pod (`worker/supervise.rs` `not_confirmed`).
#[tokio::test]
async fn a_stop_whose_pod_outlives_its_bound_says_so() {
    let (fake, mut ex) = a_pod_that_outlives_its_bound(Duration::from_millis(100)).await;
    let t0 = std::time::Instant::now();
    assert!(
        !ex.stop(Duration::from_secs(1)).await,
        "a stop returned true while the pod was still there"
    );
    assert!(!fake.pods().is_empty(), "the pod is still terminating");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

/// Through a server: a cancelled kube job whose pod outlives the worker's stop keeps its lease.
/// The worker gives the stop up after its bound (about 10 s here) while the pod still
/// terminates (14 s); it then neither gives the lease up nor lets a retry in: the retry is
/// still refused once the pod is gone, until the lease (40 s) runs out. Before, the lease went
/// as soon as the stop returned, and a retry could start beside the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_whose_pod_outlives_the_stop_keeps_its_lease() {
    let fake = scripted(|_| kube_fake::Script {
        lines: vec!["working".into()],
        exit: None,
        term_delay: Duration::from_secs(14),
        ..Default::default()
    })
    .with_grace_unit(Duration::from_secs(20));
    let dir = tempfile::tempdir().unwrap();
    let ts = short_bound_server(
        &fake,
        dir.path(),
        "",
        "100ms",
        "[worker]\nlease_ttl = \"40s\"",
    )
    .await;
    let id = ts.submit_ok(json!({"type": "kube.hang"})).await;
    until_a_pod_runs(&fake).await;
    let (st, v) = ts.post(&format!("/async/jobs/{id}/cancel"), None).await;
    assert!(st.is_success(), "{v}");
    assert_eq!(ts.wait_terminal(&id, WAIT).await["status"], "CANCELLED");
    let path = format!("/async/jobs/{id}/retry");
    let (st, v) = ts.post(&path, None).await;
    assert_eq!(st.as_u16(), 409, "refused while being stopped: {v}");
    // The pod goes about 14 s after its delete; the worker's stop gave up before.
    let start = std::time::Instant::now();
    while !fake.pods().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "the pod never went"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (st, v) = ts.post(&path, None).await;
    assert_eq!(
        st.as_u16(),
        409,
        "a retry let in while the lease of work not confirmed stopped still ran: {v}"
    );
    let job = ts.get_job(&id).await;
    assert_eq!(job["attempt"], 1, "no second attempt: {job:#}");
    assert_eq!(job["status"], "CANCELLED", "{job:#}");
}

/// Deletes the attempt's Job as `kubectl delete job --cascade=orphan` does (through the API,
/// `propagationPolicy: Orphan`): the pods are left running, owned by nothing.
async fn delete_job_orphaning_its_pods(fake: &Fake) -> String {
    use runyard_runners::kube::kube_client::api::{Api, DeleteParams};
    let job = fake.jobs().remove(0);
    let (name, ns) = (job.metadata.name.unwrap(), job.metadata.namespace.unwrap());
    let jobs: Api<Job> = Api::namespaced(fake.client(), &ns);
    jobs.delete(&name, &DeleteParams::orphan())
        .await
        .expect("the Job is deleted");
    assert!(fake.job(&ns, &name).is_none());
    let orphans = fake.pods();
    assert!(
        !orphans.is_empty()
            && orphans
                .iter()
                .all(|p| p.metadata.deletion_timestamp.is_none()
                    && p.metadata
                        .owner_references
                        .clone()
                        .unwrap_or_default()
                        .is_empty()),
        "an Orphan deletion leaves the pods running, owned by nothing: {orphans:#?}"
    );
    let secrets = fake.secrets();
    assert!(
        secrets.len() == 1
            && secrets[0]
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default()
                .is_empty(),
        "an Orphan deletion leaves the attempt's Secret, owned by nothing: {secrets:#?}"
    );
    name
}

/// A Job deleted behind runyard's back with `--cascade=orphan` leaves its pod running: the
/// attempt deletes it and ends only once it is gone, so the next attempt never runs beside it.
/// Before, the attempt ended (after waiting in vain) with the pod still running and the retry
/// started a second pod of the job.
#[tokio::test]
async fn a_job_deleted_with_orphan_propagation_has_its_pods_deleted_before_the_attempt_ends() {
    let fake = scripted(attempt_script);
    let r = runner(&fake);
    let id = new_id();
    let first = Arc::new(Lines::default());
    let mut ex = r
        .launch(spec("etl.hang", &id, 1), first.clone())
        .await
        .unwrap();
    fake.until("attempt 1 writes its lines", |_| {
        first.has("attempt-1 line 4")
    })
    .await;
    let name = delete_job_orphaning_its_pods(&fake).await;
    let o = wait(&mut ex).await;
    assert!(
        failed_message(&o).contains(&format!("Kubernetes Job {name} was deleted")),
        "{o:?}"
    );
    assert!(
        fake.pods().is_empty(),
        "the attempt ended while its pod was still there: {:#?}",
        fake.pods()
    );
    assert!(ex.end_confirmed(), "the pod's end is confirmed");
    assert!(
        fake.secrets().is_empty(),
        "the orphaned Secret (JOB_SECRET_KEY, JOB_ARGS) was left: {:#?}",
        fake.secrets()
    );
    // Deleted with the pods' own grace period (`termination_grace`, 2 s here).
    let pod_delete = fake
        .calls()
        .into_iter()
        .find(|c| c.resource == "pods" && c.verb == "delete")
        .expect("the orphaned pod was deleted");
    assert_eq!(pod_delete.body.unwrap()["gracePeriodSeconds"], 2);
    assert!(first.has("terminating"), "{:?}", first.all());
    // The retry: the fake records a violation if its pod runs beside attempt 1's.
    let second = Arc::new(Lines::default());
    let mut ex2 = r
        .launch(spec("etl.hang", &id, 2), second.clone())
        .await
        .unwrap();
    fake.until("attempt 2 writes its lines", |_| {
        second.has("attempt-2 line 4")
    })
    .await;
    assert!(ex2.stop(Duration::from_secs(20)).await);
    check(&fake);
}

/// The pod of a Job deleted with `--cascade=orphan` that outlives the bound (a node that does
/// not kill it in time): the attempt ends, but not confirmed, so the worker keeps the job's
/// lease to run out rather than let a retry start beside the pod.
#[tokio::test]
async fn an_orphaned_pod_that_outlives_its_bound_leaves_the_end_unconfirmed() {
    let (fake, mut ex) = a_pod_that_outlives_its_bound(Duration::from_millis(300)).await;
    delete_job_orphaning_its_pods(&fake).await;
    let t0 = std::time::Instant::now();
    let o = wait(&mut ex).await;
    assert!(failed_message(&o).contains("was deleted"), "{o:?}");
    assert!(
        !ex.end_confirmed(),
        "an end confirmed while the pod was still there"
    );
    let pods = fake.pods();
    assert!(
        pods.len() == 1 && pods[0].metadata.deletion_timestamp.is_some(),
        "the pod was deleted and is still terminating: {pods:#?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

/// Through a server: a kube Job deleted with `--cascade=orphan` whose pod outlives the bound (it
/// takes 10 s to stop). The worker records nothing and keeps the lease (20 s) to run out: while
/// the pod runs no second attempt starts, and the retry comes after the lease ran out. Before,
/// attempt 1 ended ERROR and attempt 2 started at once beside the orphaned pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_with_orphan_propagation_keeps_its_lease_while_its_pod_runs() {
    let fake = scripted(|env| kube_fake::Script {
        lines: vec![format!(
            "attempt {}",
            env.get("JOB_ATTEMPT").cloned().unwrap_or_default()
        )],
        exit: None,
        term_delay: Duration::from_secs(10),
        ..Default::default()
    })
    .with_grace_unit(Duration::from_secs(20));
    let dir = tempfile::tempdir().unwrap();
    let ts = short_bound_server(
        &fake,
        dir.path(),
        "max_attempts = 2\n\
         backoff = {initial_ms = 100, max_ms = 100, multiplier = 1, jitter = false}",
        "100ms",
        "[worker]\nlease_ttl = \"20s\"",
    )
    .await;
    let id = ts.submit_ok(json!({"type": "kube.hang"})).await;
    until_a_pod_runs(&fake).await;
    delete_job_orphaning_its_pods(&fake).await;
    // The orphaned pod is deleted, and goes about 10 s later; meanwhile the attempt holds on.
    let start = std::time::Instant::now();
    fake.until("the orphaned pod is deleted", |f| {
        f.pods()
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;
    while !fake.pods().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the pod never went"
        );
        let job = ts.get_job(&id).await;
        assert_eq!(
            job["attempt"], 1,
            "a second attempt beside the pod: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ts.get_job(&id).await["attempt"], 1);
    // Once the lease ran out, the job's next attempt runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let job = ts.get_job(&id).await;
        if job["attempt"] == 2 && job["status"] == "RUNNING" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no second attempt: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    until_a_pod_runs(&fake).await;
    // The fake records a violation when a pod starts while another pod of the job runs.
    assert!(fake.violations().is_empty(), "{:#?}", fake.violations());
}

#[tokio::test]
async fn a_log_stream_cut_in_the_middle_loses_no_line() {
    let want: Vec<String> = (0..40).map(|i| format!("line {i:02}")).collect();
    let w = want.clone();
    let fake = scripted(move |_| kube_fake::Script {
        lines: w.clone(),
        exit: Some(0),
        run_for: Duration::from_millis(50),
        break_logs_every: Some(7),
        ..Default::default()
    });
    let lines = Arc::new(Lines::default());
    let mut ex = runner(&fake)
        .launch(spec("report.daily", &new_id(), 1), lines.clone())
        .await
        .unwrap();
    assert_eq!(wait(&mut ex).await, Outcome::Success { result: None });
    assert!(fake.log_breaks() >= 5, "{}", fake.log_breaks());
    assert_eq!(lines.all(), want, "every line once, in order");
    check(&fake);
}

/// A pod disrupted from outside the kubelet (the Eviction API, preemption) is deleted, and it
/// is gone before its Job fails (Kubernetes 1.31 adds `Failed` once no pod is left): the
/// failure still names the disruption, read while the pod terminated. The poll is slower than
/// the whole attempt here: the read comes from the Job's counts changing (`terminating`).
#[tokio::test]
async fn a_pod_disrupted_and_gone_before_its_job_fails_reads_disrupted() {
    for (reason, words) in [
        ("EvictionByEvictionAPI", "was evicted (Eviction API)"),
        ("PreemptionByScheduler", "was preempted"),
    ] {
        let fake = scripted(move |_| kube_fake::Script {
            lines: vec!["working".into()],
            disrupt: Some(reason.into()),
            term_delay: Duration::from_millis(150),
            ..Default::default()
        });
        let mut cfg = config();
        cfg.options.poll_interval = Duration::from_secs(600);
        let mut ex = KubeRunner::with_client(cfg, fake.client())
            .expect("runner")
            .launch(
                spec("report.daily", &new_id(), 1),
                Arc::new(Lines::default()),
            )
            .await
            .unwrap();
        let out = wait(&mut ex).await;
        let m = failed_message(&out);
        assert!(m.contains(words), "{reason}: {m}");
        assert!(
            matches!(
                out,
                Outcome::Failed {
                    exit_code: None,
                    ..
                }
            ),
            "{reason}: {out:?}"
        );
        check(&fake);
    }
}

#[tokio::test]
async fn an_evicted_pod_reads_evicted() {
    let fake = scripted(|_| kube_fake::Script {
        lines: vec!["working".into()],
        evict: true,
        ..Default::default()
    });
    let mut ex = runner(&fake)
        .launch(
            spec("report.daily", &new_id(), 1),
            Arc::new(Lines::default()),
        )
        .await
        .unwrap();
    let out = wait(&mut ex).await;
    let m = failed_message(&out);
    assert!(m.contains("evicted"), "{m}");
    assert!(m.contains("low on resource"), "{m}");
    assert!(
        matches!(
            out,
            Outcome::Failed {
                exit_code: None,
                ..
            }
        ),
        "not the job's own exit 137: {out:?}"
    );
    // OOM kills are named too.
    let fake = scripted(|_| kube_fake::Script {
        oom: true,
        ..Default::default()
    });
    let mut ex = runner(&fake)
        .launch(
            spec("report.daily", &new_id(), 1),
            Arc::new(Lines::default()),
        )
        .await
        .unwrap();
    let out = wait(&mut ex).await;
    assert!(failed_message(&out).contains("OOMKilled"), "{out:?}");
    assert!(
        matches!(
            out,
            Outcome::Failed {
                exit_code: None,
                ..
            }
        ),
        "{out:?}"
    );
    check(&fake);
}

#[tokio::test]
async fn a_sidecar_does_not_hold_a_finished_job() {
    for (exit, ok) in [(0, true), (4, false)] {
        let fake = scripted(move |_| kube_fake::Script {
            lines: vec!["work".into()],
            exit: Some(exit),
            run_for: Duration::from_millis(20),
            sidecar: true,
            ..Default::default()
        });
        let id = new_id();
        let t0 = std::time::Instant::now();
        let mut ex = runner(&fake)
            .launch(spec("report.daily", &id, 1), Arc::new(Lines::default()))
            .await
            .unwrap();
        let out = wait(&mut ex).await;
        if ok {
            assert_eq!(out, Outcome::Success { result: None });
        } else {
            assert_eq!(failed_message(&out), "container exited with code 4");
        }
        assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
        // The pod (and its sidecar) was stopped.
        until_gone(&fake, &job_name("report.daily", &id, 1)).await;
        check(&fake);
    }
}

#[tokio::test]
async fn watch_history_compaction_and_timeouts_are_survived() {
    let fake = Fake::new();
    let r = runner(&fake);
    let id = new_id();
    let mut ex = r
        .launch(spec("etl.hang", &id, 1), Arc::new(Lines::default()))
        .await
        .unwrap();
    let name = job_name("etl.hang", &id, 1);
    // Watches end every ~580 ms here (timeoutSeconds=290 at 2 ms a second); compact the
    // history several times meanwhile, so a re-watch from an old version gets 410.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Another Job's changes move the version on.
        let _ = r
            .launch(
                spec("report.daily", &new_id(), 1),
                Arc::new(Lines::default()),
            )
            .await
            .unwrap();
        fake.compact_history();
    }
    fake.finish_job(NS, &name, 0);
    assert_eq!(wait(&mut ex).await, Outcome::Success { result: None });
    check(&fake);
}

#[test]
fn bad_kube_config_is_refused_naming_the_key() {
    use runyard::config::Config;
    let base = "[[runners]]\nkind = \"kube\"\ntypes = [\"a\"]\nimage = \"x\"\n";
    for (extra, key) in [
        ("env = {\"BAD-NAME\" = \"1\"}\n", "runners[0].env.BAD-NAME"),
        (
            "[runners.kube]\nlimits = {memory = \"lots\"}\n",
            "runners[0].kube.limits.memory",
        ),
        (
            "[runners.kube]\nrun_as_user = 0\n",
            "runners[0].kube.run_as_user",
        ),
        (
            "[runners.kube]\nimage_pull_secrets = [\"Bad_Name\"]\n",
            "runners[0].kube.image_pull_secrets[0]",
        ),
        (
            "[runners.kube]\npoll_interval = \"0s\"\n",
            "runners[0].kube.poll_interval",
        ),
    ] {
        let e = Config::from_toml(&format!("{base}{extra}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{extra}: {e}");
    }
    // An unknown key in the kube table is refused too.
    let e = Config::from_toml(&format!("{base}[runners.kube]\nrequest = {{}}\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("request"), "{e}");
    // Only kube runners take it.
    let e = Config::from_toml(
        "[[runners]]\nkind = \"local\"\ntypes = [\"a\"]\ncommand = [\"true\"]\n[runners.kube]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("runners[0].kube"), "{e}");
    Config::from_toml(&format!(
        "{base}[runners.kube]\nrequests = {{cpu = \"250m\"}}\ntolerations = [{{key = \"batch\", operator = \"Exists\"}}]\n"
    ))
    .expect("a good kube table");
}

/// Log lines with the time each was received (what the store keeps), and the time recovery
/// reports as the last stored line's.
#[derive(Default)]
struct Timed {
    lines: Mutex<Vec<(std::time::SystemTime, String)>>,
    last: Option<std::time::SystemTime>,
}

impl Reporter for Timed {
    fn log(&self, _stream: LogStream, line: String) {
        self.lines
            .lock()
            .unwrap()
            .push((std::time::SystemTime::now(), line));
    }
    fn progress(&self, _progress: f64, _details: Option<Value>) {}
    fn last_log_time(&self) -> Option<std::time::SystemTime> {
        self.last
    }
}

impl Timed {
    fn texts(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }
}

#[tokio::test]
async fn after_a_restart_logs_resume_from_the_last_stored_line() {
    let want: Vec<String> = (0..30).map(|i| format!("step {i:02}")).collect();
    let w = want.clone();
    let fake = scripted(move |_| kube_fake::Script {
        lines: w.clone(),
        exit: Some(0),
        run_for: Duration::from_millis(100),
        ..Default::default()
    });
    let id = new_id();
    let s = spec("report.daily", &id, 1);
    let before = Arc::new(Timed::default());
    let ex = runner(&fake)
        .launch(s.clone(), before.clone())
        .await
        .unwrap();
    for _ in 0..500 {
        if before.texts().len() >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let handle = ex.handle();
    // The server dies; lines go on being written while none runs.
    drop(ex);
    tokio::time::sleep(Duration::from_millis(80)).await;
    let stored = before.texts();
    let last = before.lines.lock().unwrap().last().map(|(t, _)| *t);
    assert!(stored.len() >= 8 && stored.len() < 30, "{stored:?}");
    let after = Arc::new(Timed {
        last,
        ..Default::default()
    });
    let mut ex = match runner(&fake)
        .recover(&handle, s, after.clone())
        .await
        .unwrap()
    {
        Recovered::Running(e) => e,
        other => panic!("expected Running, got {}", matches!(other, Recovered::Gone)),
    };
    assert_eq!(wait(&mut ex).await, Outcome::Success { result: None });
    let mut all = stored.clone();
    all.extend(after.texts());
    assert_eq!(all, want, "no line lost or repeated across the restart");
    check(&fake);
}

/// Args of 200 KB as JSON (`{"x":"AAA…"}`): over the 120 KiB a job's `JOB_ARGS` may hold.
fn args_200_kb() -> Value {
    json!({"x": "A".repeat(200_000 - 8)})
}

/// Review 18: a container's `JOB_ARGS` over 128 KiB fails at exec (`E2BIG`), which used to be
/// retried as if transient. By default such args are refused (at submit, and at launch before
/// any API call, not retried); with `large_args = "hook"` the container gets `JOB_ARGS_SIZE`
/// instead, and neither its env nor its Secret holds the args: the job reads them from its hook.
#[tokio::test]
async fn args_too_large_for_the_environment_are_refused_by_default_or_read_through_the_hook() {
    let fake = Fake::new();
    let refuse = runner(&fake);
    let e = refuse
        .validate("report.daily", &args_200_kb())
        .expect_err("refused at submit");
    let m = e.to_string();
    for part in ["`args`", "200000 bytes", "122880", "large_args = \"hook\""] {
        assert!(m.contains(part), "`{part}` in {m}");
    }
    assert!(refuse.validate("report.daily", &json!({"n": 1})).is_ok());
    let mut big = spec("report.daily", &new_id(), 1);
    big.args = args_200_kb();
    let e = match refuse.launch(big.clone(), Arc::new(Lines::default())).await {
        Ok(_) => panic!("launched with args too large for its environment"),
        Err(e) => e,
    };
    assert!(
        e.is_final() && e.to_string().contains("200000 bytes"),
        "{e}"
    );
    assert!(
        fake.calls().is_empty(),
        "no API call: {:?}",
        fake.calls().len()
    );

    let hook = KubeRunner::with_client(
        KubeConfig {
            large_args: runyard_runners::args::LargeArgs::Hook,
            ..config()
        },
        fake.client(),
    )
    .expect("runner");
    assert!(hook.validate("report.daily", &args_200_kb()).is_ok());
    let lines = Arc::new(Lines::default());
    let mut ex = hook
        .launch(big.clone(), lines.clone())
        .await
        .expect("launch");
    assert_eq!(wait(&mut ex).await, Outcome::Success { result: None });
    let job = fake
        .job(NS, &job_name("report.daily", &big.id, 1))
        .expect("the Job exists");
    let env = env_of(&job);
    let size = env
        .iter()
        .find(|e| e.name == "JOB_ARGS_SIZE")
        .expect("JOB_ARGS_SIZE");
    assert_eq!(size.value.as_deref(), Some("200000"));
    // `JOB_ARGS` empty (an image's `ENV JOB_ARGS` does not stand in for the args), not from
    // the Secret.
    let args: Vec<_> = env.iter().filter(|e| e.name == "JOB_ARGS").collect();
    assert_eq!(args.len(), 1, "{env:?}");
    assert_eq!(args[0].value.as_deref(), Some(""), "{env:?}");
    assert!(args[0].value_from.is_none(), "{env:?}");
    assert!(!fake.secrets().is_empty(), "the job's Secret exists");
    for s in fake.secrets() {
        let keys: Vec<&String> = s
            .data
            .as_ref()
            .map(|d| d.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, ["JOB_SECRET_KEY"], "the Secret holds the key only");
    }
    assert!(lines.has("args="), "{:?}", lines.all());
    assert!(!lines.has("AAAA"), "no args in the env");
    check(&fake);
}

/// Review 18, through a server: a kube runner with the default `large_args` refuses a submit
/// with 200 KB of args (422 `invalid_request` naming `args`), and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refuses_args_too_large_for_a_kube_job_at_submit() {
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let (_addr, kubeconfig) = fake.serve_tcp(dir.path(), "runyard-test").await;
    let ts = TestServer::start(&format!(
        r#"
[[runners]]
kind = "kube"
types = ["kube.*"]
image = "ghcr.io/example/runyard-job:1.2"
kubeconfig = "{}"
"#,
        kubeconfig.display()
    ))
    .await;
    let (st, v) = ts
        .submit(json!({"type": "kube.report", "args": args_200_kb()}))
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    let m = v["error"]["message"].as_str().unwrap_or_default();
    for part in [
        "`args`",
        "200000 bytes",
        "122880",
        "large_args = \"hook\"",
        "`kube-0`",
    ] {
        assert!(m.contains(part), "`{part}` in {m}");
    }
    assert_eq!(ts.count_jobs(None).await, 0, "nothing stored");
    assert!(fake.jobs().is_empty() && fake.secrets().is_empty());
}

/// The fake's Jobs (and pods) labelled with this runyard job id.
fn kube_objects_of(fake: &Fake, job_id: &str) -> (usize, usize) {
    let of =
        |m: &runyard_runners::kube::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            m.labels
                .as_ref()
                .and_then(|l| l.get(runyard_runners::kube::LABEL_JOB_ID))
                .is_some_and(|v| v == job_id)
        };
    let jobs = fake.jobs().iter().filter(|j| of(&j.metadata)).count();
    let pods = fake.pods().iter().filter(|p| of(&p.metadata)).count();
    (jobs, pods)
}

/// F4: a job cancelled while the Kubernetes API is unavailable for longer than the teardown's
/// bound ends CANCELLED with its Job and pod still running (the teardown is not confirmed).
/// Once the API is back, the worker's sweep deletes them (pods with the grace, the Job with
/// Foreground propagation), and leaves alone the Job of a job that runs meanwhile. Before,
/// nothing retried the delete: the Job ran until its `activeDeadlineSeconds` (24 h).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_running_by_a_cancel_during_an_api_outage_is_swept_once_it_is_back() {
    let fake = scripted(|_| kube_fake::Script {
        lines: vec!["working".into()],
        exit: None,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let ts = short_bound_server(
        &fake,
        dir.path(),
        "",
        "300ms",
        "[worker]\nsweep_interval = \"300ms\"",
    )
    .await;
    let cancelled = ts.submit_ok(json!({"type": "kube.hang"})).await;
    let running = ts.submit_ok(json!({"type": "kube.hang"})).await;
    for id in [&cancelled, &running] {
        let i = id.clone();
        fake.until("the job's pod runs", move |f| {
            kube_objects_of(f, &i) == (1, 1)
        })
        .await;
        ts.wait_status(id, "RUNNING", WAIT).await;
    }
    // The Jobs carry the deployment's fingerprint.
    let labels = fake.jobs()[0].metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get(runyard_runners::kube::LABEL_DEPLOYMENT)
            .map(String::len),
        Some(16),
        "{labels:?}"
    );

    fake.set_unavailable(true);
    let deletes = || {
        fake.calls()
            .iter()
            .filter(|c| c.resource == "jobs" && c.verb == "delete")
            .count()
    };
    let before = deletes();
    let (st, v) = ts
        .post(&format!("/async/jobs/{cancelled}/cancel"), None)
        .await;
    assert!(st.is_success(), "{v}");
    assert_eq!(ts.get_job(&cancelled).await["status"], "CANCELLED");
    fake.until("the worker tried to delete the Job", |_| deletes() > before)
        .await;
    // Its teardown's bound is the stop's grace (500 ms) plus `delete_timeout` (300 ms): with a
    // wide margin, it gave up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        kube_objects_of(&fake, &cancelled),
        (1, 1),
        "the cancel left the Job and its pod"
    );

    fake.set_unavailable(false);
    let id = cancelled.clone();
    let start = std::time::Instant::now();
    while kube_objects_of(&fake, &id) != (0, 0) {
        assert!(
            start.elapsed() < WAIT,
            "the Job left behind was not swept: {:?}",
            kube_objects_of(&fake, &id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Deleted as a teardown does: Foreground propagation.
    assert!(
        fake.calls().iter().any(|c| c.resource == "jobs"
            && c.verb == "delete"
            && c.body
                .as_ref()
                .is_some_and(|b| b["propagationPolicy"] == "Foreground")),
        "{:?}",
        fake.calls()
            .iter()
            .filter(|c| c.verb == "delete")
            .map(|c| &c.body)
            .collect::<Vec<_>>()
    );
    // The running job's Job and pod were never touched.
    assert_eq!(kube_objects_of(&fake, &running), (1, 1));
    assert_eq!(ts.get_job(&running).await["status"], "RUNNING");
    let (st, v) = ts
        .post(&format!("/async/jobs/{running}/cancel"), None)
        .await;
    assert!(st.is_success(), "{v}");
    let id = running.clone();
    fake.until("the running job's Job deleted by its cancel", move |f| {
        kube_objects_of(f, &id) == (0, 0)
    })
    .await;
}

/// Jobs whose worker was lost in `STARTING`, after it created the attempt's Kubernetes Job but
/// before it recorded it (the server's store is left as a killed server leaves it: claimed, the
/// Job launched, no handle): when the server starts again, its reaper finds each Job by its name
/// and labels. A Job still running is adopted (same attempt, its handle recorded, RUNNING) and
/// its end is the job's; a Job that finished while no server ran gives its outcome. Neither is
/// run again. Before, the reaper deleted the running Job and ran a second attempt, and took the
/// finished one's attempt for lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_whose_worker_was_lost_while_starting_are_adopted_not_run_again() {
    use runyard::job::{now_us, JobStatus};
    use runyard::store::sqlite::SqliteStore;
    use runyard::store::{JobQueue, JobStore, StoreSettings};
    const CTX_NS: &str = "runyard-test";
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let (_addr, kubeconfig) = fake.serve_tcp(dir.path(), CTX_NS).await;
    let mut ts = TestServer::builder(&server_runner(
        &kubeconfig,
        "name = \"k\"\nmax_attempts = 2\n[runners.kube]\ntermination_grace = \"100ms\"\n\
         finish_timeout = \"100ms\"\npoll_interval = \"50ms\"",
    ))
    .start()
    .await;
    ts.stop().await;
    // What a server killed in `STARTING` leaves: each job claimed, its Job created, no handle.
    let mut launched = Vec::new();
    {
        let store = SqliteStore::open(&ts.data_dir(), StoreSettings::default(), false).unwrap();
        let runner = KubeRunner::with_client(
            KubeConfig {
                namespace: Some(CTX_NS.into()),
                ..config()
            },
            fake.client(),
        )
        .unwrap();
        for job_type in ["kube.hang", "kube.report"] {
            let mut job = runyard::job::Job::new(job_type, "k", now_us());
            job.max_attempts = 2;
            store.submit(job.clone()).await.unwrap();
            let lost = "lost-1-abc@0123456789abcdef";
            let claimed = store
                .claim("k", lost, 1, Duration::from_millis(1))
                .await
                .unwrap()
                .pop()
                .unwrap();
            assert_eq!(claimed.id, job.id);
            let id = job.id.to_string();
            let exec = runner
                .launch(spec(job_type, &id, 1), Arc::new(Lines::default()))
                .await
                .unwrap();
            // The worker dies here: its execution is gone, its handle never stored.
            drop(exec);
            let stored = store.get(job.id).await.unwrap().unwrap();
            assert_eq!((stored.status, stored.handle), (JobStatus::Starting, None));
            launched.push((id, job_name(job_type, &job.id.to_string(), 1)));
        }
    }
    let (hang, report) = (launched[0].clone(), launched[1].clone());
    let (ns, name) = (CTX_NS.to_string(), report.1.clone());
    fake.until("the report Job finished", move |f| {
        f.job_finished(&ns, &name)
    })
    .await;
    ts.restart(true).await;

    // The running one: adopted, its handle recorded, then its end is the job's.
    let job = ts
        .wait_for(&hang.0, WAIT, |j| {
            j["status"] == "RUNNING" || support::is_terminal(&j["status"])
        })
        .await;
    assert_eq!(
        (job["status"].as_str(), job["attempt"].as_u64()),
        (Some("RUNNING"), Some(1)),
        "{job:#}"
    );
    assert_eq!(job["handle"]["kind"], "kube", "{job:#}");
    assert_eq!(job["handle"]["id"], hang.1.as_str(), "{job:#}");
    fake.finish_job(CTX_NS, &hang.1, 0);
    // The finished one: its outcome, on attempt 1.
    for (id, _) in [&hang, &report] {
        let job = ts.wait_terminal(id, WAIT).await;
        assert_eq!(
            (job["status"].as_str(), job["attempt"].as_u64()),
            (Some("SUCCESS"), Some(1)),
            "{job:#}"
        );
        assert_eq!(job["runs"].as_array().map(Vec::len), Some(1), "{job:#}");
        assert_eq!(job["runs"][0]["outcome"], "SUCCESS", "{job:#}");
    }
    // No second attempt's Job was ever created.
    for (id, name) in [&hang, &report] {
        let created: Vec<String> = fake
            .calls()
            .iter()
            .filter(|c| c.resource == "jobs" && c.verb == "create")
            .filter_map(|c| c.body.as_ref().map(|b| &b["metadata"]))
            .filter(|m| m["labels"][LABEL_JOB_ID] == id.as_str())
            .filter_map(|m| m["name"].as_str().map(String::from))
            .collect();
        assert_eq!(created, vec![name.clone()], "{id}");
    }
    check(&fake);
}

// ---- bounded API calls (probe `kube`) ----

/// Waits at most 10 s for `f` (far past any bound the tests below set): a hang fails the test
/// instead of holding it.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting after 10 s"))
}

/// Probe `kube` F1/F2: a Kubernetes API request that never answers (a half-open connection, a
/// load balancer that drops it silently: kube's client has no read timeout) fails after
/// `kube.api_timeout`, as any failed call does: the launch at each of its calls (the Job made
/// suspended before is deleted), a recovery, the sweep's list. Before, each waited for ever.
#[tokio::test]
async fn an_api_request_that_never_answers_fails_after_api_timeout() {
    let fake = Fake::new();
    let cfg = KubeConfig {
        options: KubeOptions {
            api_timeout: Duration::from_millis(500),
            ..fast()
        },
        ..config()
    };
    let r = KubeRunner::with_client(cfg, fake.client()).expect("runner");
    let lines = Arc::new(Lines::default());
    for (group, resource, verb) in [
        ("batch", "jobs", "list"),
        ("batch", "jobs", "create"),
        ("", "secrets", "create"),
        ("batch", "jobs", "patch"),
    ] {
        fake.hang(group, resource, verb, "");
        let launch = r.launch(spec("report.daily", &new_id(), 1), lines.clone());
        let e = within(&format!("a launch whose {resource} {verb} hangs"), launch)
            .await
            .err()
            .expect("the launch fails");
        assert!(
            e.to_string()
                .contains("no answer from the Kubernetes API within 500ms"),
            "{resource} {verb}: {e}"
        );
        fake.release_hangs();
        fake.until("no Job left", |f| f.jobs().is_empty()).await;
    }
    // A recovery and the sweep's list.
    let hs = spec("etl.hang", &new_id(), 1);
    let handle = r.unrecorded(&hs, None).expect("a handle");
    fake.hang("batch", "jobs", "list", "");
    let e = within(
        "a recovery whose list hangs",
        r.recover(&handle, hs, lines.clone()),
    )
    .await
    .err()
    .expect("the recovery fails");
    assert!(e.to_string().contains("within 500ms"), "{e}");
    let e = within("the sweep's list", r.leftovers("0123456789abcdef"))
        .await
        .expect_err("the list fails");
    assert!(e.to_string().contains("within 500ms"), "{e}");
    fake.release_hangs();
    assert!(fake.pods().is_empty(), "no pod ever started");
    check(&fake);
}

/// Probe `kube` F1: jobs whose launch hangs on a Job create that never answers, with
/// `api_timeout` far off (the worker's own bound, not the request's). A cancel, and the job's
/// `timeout`, end the launch as they end a running attempt: the job is CANCELLED or TIMEOUT and
/// its slot (the runner's only one) runs the next job. A launch still going the stop's grace
/// after its stop is abandoned and left to its lease, as after a crash: the reaper then makes
/// sure nothing it made runs (the timed-out one ends TIMEOUT once it has). Before, the slot
/// stayed taken for as long as the request hung, the timeout was not applied, and nothing
/// else ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_launch_is_ended_by_a_cancel_or_the_timeout_and_frees_its_slot() {
    let fake = Fake::new();
    fake.hang("batch", "jobs", "create", "kube.stuck");
    let dir = tempfile::tempdir().unwrap();
    let (_addr, kubeconfig) = fake.serve_tcp(dir.path(), "runyard-test").await;
    let ts = TestServer::start(&server_runner(
        &kubeconfig,
        "concurrency = 1\n[runners.kube]\ntermination_grace = \"100ms\"\n\
         finish_timeout = \"100ms\"\npoll_interval = \"50ms\"\napi_timeout = \"1h\"",
    ))
    .await;
    let stuck = ts.submit_ok(json!({"type": "kube.stuck"})).await;
    fake.until("its Job create hangs", |f| f.hanging() == 1)
        .await;
    let (st, v) = ts.post(&format!("/async/jobs/{stuck}/cancel"), None).await;
    assert!(st.is_success(), "{v}");
    let next = ts.submit_ok(json!({"type": "kube.report"})).await;
    let job = ts.wait_terminal(&next, WAIT).await;
    assert_eq!(job["status"], "SUCCESS", "{job:#}");
    assert_eq!(ts.get_job(&stuck).await["status"], "CANCELLED");

    let late = ts
        .submit_ok(json!({"type": "kube.stuck", "timeout": "1s"}))
        .await;
    let job = ts.wait_terminal(&late, WAIT).await;
    assert_eq!(
        (job["status"].as_str(), job["error"].as_str()),
        (Some("TIMEOUT"), Some("timed out after 1s")),
        "{job:#}"
    );
    let next = ts.submit_ok(json!({"type": "kube.report"})).await;
    let job = ts.wait_terminal(&next, WAIT).await;
    assert_eq!(job["status"], "SUCCESS", "{job:#}");
    // No Job of the stuck ones was ever made, and none is left.
    for id in [&stuck, &late] {
        assert_eq!(kube_objects_of(&fake, id), (0, 0), "{id}");
    }
    check(&fake);
}

/// Probe `kube` F2: the reaper recovers the expired jobs' recorded work in one task per runner,
/// so a kube recovery whose Jobs list never answers (with `api_timeout` far off) holds up no
/// other runner's: a job of a service runner whose worker was lost (its handle recorded, its
/// lease expired after the kube one's) is recovered, requeued and run meanwhile; the kube job is
/// adopted once its list is answered. Before, the reaper's pass awaited each recovery in turn
/// and every expired lease waited for the hung one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_that_hangs_holds_up_no_other_jobs_reap() {
    use runyard::job::{now_us, Command};
    use runyard::store::sqlite::SqliteStore;
    use runyard::store::{JobQueue, JobStore, StoreSettings};
    const CTX_NS: &str = "runyard-test";
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let (_addr, kubeconfig) = fake.serve_tcp(dir.path(), CTX_NS).await;
    let runners = format!(
        "{}\n[[runners]]\nkind = \"service\"\nname = \"svc\"\ntypes = [\"runyard.*\"]\n",
        server_runner(
            &kubeconfig,
            "name = \"k\"\n[runners.kube]\ntermination_grace = \"100ms\"\n\
             finish_timeout = \"100ms\"\npoll_interval = \"50ms\"\napi_timeout = \"1h\"",
        )
    );
    let mut ts = TestServer::builder(&runners).start().await;
    ts.stop().await;
    // What a killed server leaves: a kube job RUNNING with its handle, then a service job
    // claimed; both leases run out, the kube one first.
    let lost = "lost-1-abc@0123456789abcdef";
    let (kube_id, svc_id) = {
        let store = SqliteStore::open(&ts.data_dir(), StoreSettings::default(), false).unwrap();
        let runner = KubeRunner::with_client(
            KubeConfig {
                namespace: Some(CTX_NS.into()),
                ..config()
            },
            fake.client(),
        )
        .unwrap();
        let kube_job = runyard::job::Job::new("kube.hang", "k", now_us());
        store.submit(kube_job.clone()).await.unwrap();
        let claimed = store
            .claim("k", lost, 1, Duration::from_millis(1))
            .await
            .unwrap()
            .pop()
            .unwrap();
        let token = claimed.lease.as_ref().unwrap().token;
        let id = kube_job.id.to_string();
        let exec = runner
            .launch(spec("kube.hang", &id, 1), Arc::new(Lines::default()))
            .await
            .unwrap();
        let handle = Some(exec.handle());
        store
            .apply(kube_job.id, Command::Started { token, handle })
            .await
            .unwrap();
        drop(exec);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut svc_job = runyard::job::Job::new("runyard.noop", "svc", now_us());
        svc_job.max_attempts = 2;
        store.submit(svc_job.clone()).await.unwrap();
        let claimed = store
            .claim("svc", lost, 1, Duration::from_millis(1))
            .await
            .unwrap()
            .pop()
            .unwrap();
        let token = claimed.lease.as_ref().unwrap().token;
        // Its handle recorded too: its runner's `recover` is asked (and finds it gone).
        let handle = Some(runyard_runners::RunHandle {
            kind: runyard_runners::RunKind::Service,
            id: svc_job.id.to_string(),
            data: Value::Null,
        });
        store
            .apply(svc_job.id, Command::Started { token, handle })
            .await
            .unwrap();
        (id, svc_job.id.to_string())
    };
    // The kube recovery's list of the job's Jobs (by its id label) never answers.
    fake.hang("batch", "jobs", "list", LABEL_JOB_ID);
    ts.restart(true).await;
    fake.until("the kube recovery's list hangs", |f| f.hanging() == 1)
        .await;
    let job = ts.wait_terminal(&svc_id, WAIT).await;
    assert_eq!(job["status"], "SUCCESS", "{job:#}");
    assert_eq!(fake.hanging(), 1, "the kube recovery still waits");
    assert_eq!(ts.get_job(&kube_id).await["status"], "RUNNING");
    fake.release_hangs();
    let job = ts
        .wait_for(&kube_id, WAIT, |j| {
            j["worker"].as_str().is_some_and(|w| w != lost)
        })
        .await;
    assert_eq!(
        (job["status"].as_str(), job["attempt"].as_u64()),
        (Some("RUNNING"), Some(1)),
        "adopted: {job:#}"
    );
    let (st, v) = ts
        .post(&format!("/async/jobs/{kube_id}/cancel"), None)
        .await;
    assert!(st.is_success(), "{v}");
    let id = kube_id.clone();
    fake.until("the adopted Job deleted by its cancel", move |f| {
        kube_objects_of(f, &id) == (0, 0)
    })
    .await;
    check(&fake);
}

/// Probe `kube` F3: a Job create the API server carried out but answered `504 Timeout` (kube's
/// client retries the POST by itself and gets `409 AlreadyExists`). The Job is this launch's
/// own: it reads its env from the Secret this launch named (a random name) and has the
/// attempt's labels. The launch carries on with it and the attempt runs once. A same-named Job
/// that is not this launch's is still not taken: the launch fails. Before, the 409 loop meant
/// for a leftover of that name ran out and the attempt failed `AlreadyExists`.
#[tokio::test]
async fn a_job_create_answered_504_after_it_was_stored_is_carried_on_with() {
    use tower::ServiceExt;
    let fake = Fake::new();
    let dir = tempfile::tempdir().unwrap();
    let (_addr, kubeconfig) = fake.serve_tcp(dir.path(), NS).await;
    let r = KubeRunner::new(KubeConfig {
        kubeconfig: Some(kubeconfig),
        ..config()
    })
    .expect("runner");
    fake.time_out_next_job_creates(1);
    let lines = Arc::new(Lines::default());
    let id = new_id();
    let mut ex = within(
        "the launch",
        r.launch(spec("report.daily", &id, 1), lines.clone()),
    )
    .await
    .expect("launched");
    let o = wait(&mut ex).await;
    assert!(matches!(o, Outcome::Success { .. }), "{o:?}");
    assert!(lines.has(&format!("hello from {id}")), "{:?}", lines.all());
    let creates = fake
        .calls()
        .iter()
        .filter(|c| c.resource == "jobs" && c.verb == "create")
        .count();
    assert!(creates >= 2, "the 504 was retried: {creates} creates");
    assert_eq!(fake.jobs().len(), 1, "one Job");

    // Someone else's Job of the attempt's name (not labelled with the job): not taken.
    let other = new_id();
    let name = job_name("report.daily", &other, 1);
    let body = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "job", "image": "x"}]}}}
    });
    let req = axum::http::Request::post(format!("/apis/batch/v1/namespaces/{NS}/jobs"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    assert_eq!(fake.router().oneshot(req).await.unwrap().status(), 201);
    let e = within(
        "the launch",
        r.launch(spec("report.daily", &other, 1), lines.clone()),
    )
    .await
    .err()
    .expect("the launch fails");
    assert!(e.to_string().contains("AlreadyExists"), "{e}");
    let left = fake.job(NS, &name).expect("the other Job is left alone");
    assert!(left.metadata.labels.is_none(), "{left:?}");
    check(&fake);
}

/// Probe `kube` F6: a container the runtime could not start (`StartError`, exit code 128) says
/// the runtime's message. When the message says its command is missing from the image or
/// cannot be executed, the attempt is not retried (another would fail the same way), as the
/// local runner's missing program is not; another `StartError` is retried as any failure.
/// Before: "container exited with code 128", retried.
#[tokio::test]
async fn a_container_that_cannot_start_says_why() {
    const MISSING: &str = "failed to create containerd task: failed to create shim task: OCI \
         runtime create failed: runc create failed: unable to start container process: exec: \
         \"python3\": executable file not found in $PATH: unknown";
    const MOUNT: &str = "failed to create containerd task: failed to create shim task: OCI \
         runtime create failed: runc create failed: unable to start container process: error \
         during container init: error mounting \"/data\" to rootfs: no space left on device: \
         unknown";
    let fake = scripted(|env| kube_fake::Script {
        start_error: Some(
            if env.get("JOB_TYPE").is_some_and(|t| t.ends_with("missing")) {
                MISSING
            } else {
                MOUNT
            }
            .into(),
        ),
        ..Default::default()
    });
    let r = runner(&fake);
    let lines = Arc::new(Lines::default());
    let mut ex = r
        .launch(spec("etl.missing", &new_id(), 1), lines.clone())
        .await
        .expect("launched");
    match wait(&mut ex).await {
        Outcome::Aborted { message } => {
            assert!(message.contains("StartError"), "{message}");
            assert!(
                message.contains("exec: \"python3\": executable file not found in $PATH"),
                "{message}"
            );
        }
        o => panic!("expected an abort (not retried), got {o:?}"),
    }
    let mut ex = r
        .launch(spec("etl.mount", &new_id(), 1), lines.clone())
        .await
        .expect("launched");
    match wait(&mut ex).await {
        Outcome::Failed { message, exit_code } => {
            assert!(message.contains("StartError"), "{message}");
            assert!(message.contains("no space left on device"), "{message}");
            assert_eq!(exit_code, Some(128));
        }
        o => panic!("expected a failure, got {o:?}"),
    }
    check(&fake);
}
