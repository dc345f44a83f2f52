//! `runyard backup` and a server started on its copy, real processes end to end (probe `s48`):
//! the copy is a store of its own. Started beside its original on the same machine (the obvious
//! way to check a backup: another port), it leaves the original's running local job alone (it
//! used to kill its process group: the recorded pid, machine and start time were the live
//! original's); its events are numbered apart, so a cursor of the original gets a `resync` there
//! (it used to miss the copy's events silently). A DEST inside the data dir is refused, and a
//! backup that fails (a full disk) or is stopped by a signal removes what it wrote.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::child::{ChildServer, Client};
use support::WAIT;

const BIN: &str = env!("CARGO_BIN_EXE_runyard");

/// A local runner whose jobs sleep 10 s, and the built-in service jobs.
const RUNNERS: &str = r#"
[[runners]]
kind = "local"
types = ["nap.*"]
command = ["/bin/sh", "-c", "sleep 10"]
max_attempts = 1

[[runners]]
kind = "service"
types = ["runyard.*"]

[worker]
lease_ttl = "2s"
"#;

/// `dir/<name>.toml` for a server on `data`; its path.
fn config(dir: &Path, name: &str, data: &Path) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let data = toml::Value::String(data.display().to_string());
    std::fs::write(&path, format!("data_dir = {data}\n{RUNNERS}")).unwrap();
    path
}

/// A server on `data` (its config and log in `dir`), healthy.
async fn start(dir: &Path, name: &str, data: &Path) -> ChildServer {
    let cfg = config(dir, name, data);
    let mut s = ChildServer::start(&cfg, &dir.join(format!("{name}.log")));
    s.wait_healthy(WAIT).await;
    s
}

/// `runyard backup --data-dir DATA DEST`, without the developer's `RUNYARD_*` settings.
fn backup_command(data: &Path, dest: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["backup", "--data-dir"]).arg(data).arg(dest);
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNYARD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn backup(data: &Path, dest: &Path) -> Output {
    backup_command(data, dest).output().unwrap()
}

async fn submit(c: &Client, body: Value) -> String {
    let (st, v) = c
        .call(reqwest::Method::POST, "/async/jobs", Some(body))
        .await;
    assert_eq!(st, 202, "{v}");
    v["job_id"].as_str().expect("job_id").to_string()
}

/// Job `id` once `done` says so of it, within [`WAIT`].
async fn wait_for(c: &Client, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + WAIT;
    loop {
        let job = c.job(id).await;
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < until, "job {id} as last seen: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn terminal(job: &Value) -> bool {
    support::is_terminal(&job["status"])
}

/// A server on `data` (named `original` in `dir`) that has run one no-op job to its end.
async fn with_one_finished_job(dir: &Path, data: &Path) -> ChildServer {
    let original = start(dir, "original", data).await;
    let a = Client::new(&original.url);
    let id = submit(&a, json!({"type": "runyard.noop"})).await;
    wait_for(&a, &id, terminal).await;
    original
}

/// A poll of the global stream after `last_id`: its events.
async fn poll(c: &Client, last_id: &str) -> Vec<Value> {
    let (st, v) = c
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/async_event/?last_id={last_id}"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{last_id}: {v}");
    v["result"].as_array().expect("result").clone()
}

/// The newest event id of the server (read to the end from 0).
async fn newest(c: &Client) -> String {
    let mut last = "0".to_string();
    for _ in 0..10_000 {
        match poll(c, &last).await.last() {
            Some(e) => last = e["id"].as_str().expect("id").to_string(),
            None => return last,
        }
    }
    panic!("the stream did not end");
}

/// A server started on a backup while the original runs, on the same machine: the original's
/// running local job runs on to its end (SUCCESS, exit 0, one run), while the copy ends its own
/// record of it (no attempt left) without touching its process. Before, the copy's recovery
/// killed the original's process group at its start (`process killed by signal 9`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_a_backup_beside_its_original_leaves_the_originals_job_running() {
    let dir = tempfile::tempdir().unwrap();
    let (data, dest) = (dir.path().join("data"), dir.path().join("copy"));
    let original = start(dir.path(), "original", &data).await;
    let a = Client::new(&original.url);
    let id = submit(&a, json!({"type": "nap.long"})).await;
    wait_for(&a, &id, |j| j["status"] == "RUNNING").await;
    let o = backup(&data, &dest);
    assert!(o.status.success(), "{o:?}");

    let copy = start(dir.path(), "copy", &dest).await;
    let b = Client::new(&copy.url);
    let there = wait_for(&b, &id, terminal).await;
    assert_eq!(there["status"], "ERROR", "{there}");
    let here = wait_for(&a, &id, terminal).await;
    assert_eq!(here["status"], "SUCCESS", "{here}\n{}", copy.log_tail());
    assert_eq!(here["exit_code"], 0, "{here}");
    assert_eq!(here["runs"].as_array().map(Vec::len), Some(1), "{here}");
}

/// A cursor of the original, one the copy holds an event for and one the original handed out
/// after the backup, gets a `resync` on the copy once the copy has more events than the
/// original had (api.md "A cursor from another database"); read from 0, the copy gives every
/// event it holds, with no resync. Before, the copy went on with the original's numbers: the
/// later cursor silently skipped the copy's events up to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_of_the_original_gets_a_resync_on_its_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (data, dest) = (dir.path().join("data"), dir.path().join("copy"));
    let original = start(dir.path(), "original", &data).await;
    let a = Client::new(&original.url);
    let noop = json!({"type": "runyard.noop"});
    for _ in 0..3 {
        let id = submit(&a, noop.clone()).await;
        wait_for(&a, &id, terminal).await;
    }
    let at_backup = newest(&a).await;
    let o = backup(&data, &dest);
    assert!(o.status.success(), "{o:?}");
    for _ in 0..3 {
        let id = submit(&a, noop.clone()).await;
        wait_for(&a, &id, terminal).await;
    }
    let later = newest(&a).await;

    let copy = start(dir.path(), "copy", &dest).await;
    let b = Client::new(&copy.url);
    let mut mine = Vec::new();
    for _ in 0..6 {
        let id = submit(&b, noop.clone()).await;
        wait_for(&b, &id, terminal).await;
        mine.push(id);
    }
    let top = newest(&b).await;
    for cursor in [&at_backup, &later] {
        let page = poll(&b, cursor).await;
        assert_eq!(page[0]["type"], "resync", "{cursor}: {page:#?}");
        assert_eq!(page[0]["id"], top.as_str(), "{cursor}: {page:#?}");
    }
    let all = poll(&b, "0").await;
    assert!(all.iter().all(|e| e["type"] != "resync"), "{all:#?}");
    for id in &mine {
        assert!(all.iter().any(|e| e["job_id"] == id.as_str()), "{id}");
    }
}

/// A DEST inside the data dir (under `files/`, where later backups would take it for job files,
/// anywhere else in it, or the data dir itself) is refused, nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_into_the_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _original = with_one_finished_job(dir.path(), &data).await;
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    for dest in [
        data.join("files/zz"),
        data.join("bk"),
        data.clone(),
        link.join("files/zz"),
        dir.path().join("elsewhere/../data/x"),
    ] {
        let o = backup(&data, &dest);
        assert_eq!(o.status.code(), Some(1), "{}: {o:?}", dest.display());
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("inside the data dir"), "{}: {e}", dest.display());
    }
    assert!(!data.join("files/zz").exists());
    assert!(!data.join("bk").exists());
    assert!(!data.join("x").exists());
}

/// The database's format mark (`PRAGMA user_version`) travels with a backup as it was: a
/// database this build marked keeps that mark in its copy, and one a newer build marked (a
/// format this build does not know) is refused before anything is made at DEST. Before, the
/// copy was marked with the backing-up build's format whatever the original's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_keeps_the_format_mark_and_refuses_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let original = with_one_finished_job(dir.path(), &data).await;
    drop(original);
    let mark = |db: &Path| -> i64 {
        rusqlite::Connection::open(db)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    let db = data.join("runyard.db");
    let ours = mark(&db);
    assert!(ours >= 1, "marked at open: {ours}");
    // An older mark stays as it was in the copy (the copy's own open raises it, not the backup).
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 0)
        .unwrap();
    let dest = dir.path().join("bk-old");
    let o = backup(&data, &dest);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(mark(&dest.join("runyard.db")), 0);
    // A newer build's: refused, nothing made.
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", ours + 1)
        .unwrap();
    let dest = dir.path().join("bk-new");
    let o = backup(&data, &dest);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("newer runyard"), "{e}");
    assert!(!dest.exists(), "nothing made at {}", dest.display());
    assert_eq!(mark(&db), ours + 1, "the original left as it was");
}

/// A backup that fails for want of room (a full disk) removes what it wrote: the DEST it made
/// is gone, an empty DEST it was given is left empty. Before, the DEST kept a partial
/// `runyard.db` (which opens as an empty store), its journal and the job files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_that_fails_leaves_nothing() {
    let Some(mounted) = support::tmpfs::mount("1m") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let original = start(dir.path(), "original", &data).await;
    let a = Client::new(&original.url);
    // About 2 MB of jobs: more than the tmpfs holds.
    let pad = "x".repeat(20_000);
    for i in 0..100 {
        submit(
            &a,
            json!({"type": "runyard.noop", "args": {"i": i, "pad": pad}}),
        )
        .await;
    }
    let made = mounted.path.join("bk");
    let o = backup(&data, &made);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        !made.exists(),
        "{:?}",
        std::fs::read_dir(&made).map(|d| d.count())
    );
    let given = mounted.path.join("given");
    std::fs::create_dir(&given).unwrap();
    std::fs::set_permissions(&given, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let o = backup(&data, &given);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let left: Vec<_> = std::fs::read_dir(&given).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A backup stopped by SIGINT (here while it waits for a lock another program holds on the
/// database, DEST made) exits 130 and removes what it wrote. Before, it died at once, leaving its DEST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_stopped_by_a_signal_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let mut original = start(dir.path(), "original", &data).await;
        let a = Client::new(&original.url);
        let id = submit(&a, json!({"type": "runyard.noop"})).await;
        wait_for(&a, &id, terminal).await;
        original.kill9();
    }
    // Another program's exclusive lock: every reader waits.
    let holder = rusqlite::Connection::open(data.join("runyard.db")).unwrap();
    holder
        .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE;")
        .unwrap();
    let dest = dir.path().join("bk");
    let mut child = backup_command(&data, &dest)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + WAIT;
    // DEST made: the backup waits for the lock (its check of the database comes first).
    while !dest.exists() {
        assert!(Instant::now() < until, "the backup did not start its copy");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Safety: a signal to the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let until = Instant::now() + WAIT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < until, "the backup did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(holder);
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(
        !dest.exists(),
        "{:?}",
        std::fs::read_dir(&dest).map(|d| d.count())
    );
}

/// A configuration on Redis is refused as a failure (exit 1, as docs/cli.md's table has it for
/// a refused backup), not as a usage error (2: flags and arguments), nothing written.
#[test]
fn a_backup_of_a_redis_configuration_is_refused_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("redis.toml");
    let key = "master_key = \"0123456789abcdef0123456789abcdef\"";
    std::fs::write(
        &cfg,
        format!("redis = \"redis://127.0.0.1:1/0\"\n{key}\n{RUNNERS}"),
    )
    .unwrap();
    let dest = dir.path().join("bk");
    let mut cmd = Command::new(BIN);
    cmd.args(["backup", "--config"]).arg(&cfg).arg(&dest);
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNYARD_") {
            cmd.env_remove(k);
        }
    }
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("uses Redis"), "{e}");
    assert!(!dest.exists());
}
