//! The `runyard` command line as a user runs it: a real `runyard serve` process, and the client
//! commands against it.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_runyard");

struct Serve {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(config: &str) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("runyard.toml");
    std::fs::write(&cfg, config).unwrap();
    let port = free_port();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        // The flag beats the environment, which beats the file.
        .env("RUNYARD_LISTEN", "127.0.0.1:1")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Serve {
        child,
        url,
        _dir: dir,
    }
}

fn cli(url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUNYARD_SERVER", url)
        .output()
        .unwrap()
}

const RUNNERS: &str = r#"
[[runners]]
kind = "local"
types = ["sh.*"]
command = ["/bin/sh", "-c", "echo line-one; echo line-two; test \"$JOB_TYPE\" != sh.fail"]
max_attempts = 1

[[runners]]
kind = "service"
types = ["runyard.*"]
"#;

#[test]
fn submit_wait_exit_codes_logs_status_jobs_and_cancel() {
    let s = serve(RUNNERS);
    let ok = cli(&s.url, &["submit", "sh.ok", "--wait"]);
    assert!(ok.status.success(), "{ok:?}");
    let job: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(job["status"], "SUCCESS");
    let id = job["id"].as_str().unwrap();

    let logs = cli(&s.url, &["logs", id]);
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        "line-one\nline-two\n"
    );
    let status = cli(&s.url, &["status", id]);
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(st["id"], id);

    let failed = cli(&s.url, &["submit", "sh.fail", "--wait"]);
    assert!(!failed.status.success(), "ERROR must exit non-zero");
    let fj: serde_json::Value = serde_json::from_slice(&failed.stdout).unwrap();
    assert_eq!(fj["status"], "ERROR");
    assert_eq!(fj["exit_code"], 1);

    let unknown = cli(&s.url, &["submit", "nope.nothing"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nope.nothing"));

    let long = cli(
        &s.url,
        &["submit", "runyard.sleep", "--args", r#"{"ms": 60000}"#],
    );
    let long_id = String::from_utf8_lossy(&long.stdout).trim().to_string();
    let cancel = cli(&s.url, &["cancel", &long_id]);
    assert_eq!(String::from_utf8_lossy(&cancel.stdout).trim(), "CANCELLED");
    let again = cli(&s.url, &["cancel", &long_id]);
    assert!(!again.status.success(), "cancelling a terminal job fails");

    let jobs = cli(&s.url, &["jobs", "--status", "ERROR"]);
    let text = String::from_utf8_lossy(&jobs.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("sh.fail"));
}

#[test]
fn logs_follow_prints_until_the_job_ends() {
    let s = serve(
        r#"
[[runners]]
kind = "local"
types = ["slow"]
command = ["/bin/sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.3; done"]
"#,
    );
    let sub = cli(&s.url, &["submit", "slow"]);
    let id = String::from_utf8_lossy(&sub.stdout).trim().to_string();
    let out = cli(&s.url, &["logs", &id, "--follow"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tick 1\ntick 2\ntick 3\n"
    );
}

#[test]
fn a_bad_config_stops_serve_with_a_message_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (config, key) in [
        ("lisen = \"127.0.0.1:1\"\n", "lisen"),
        ("[worker]\nlease_ttl = \"soon\"\n", "lease_ttl"),
        (
            "[[runners]]\nkind = \"local\"\ntypes = [\"a\"]\n",
            "runners[0].command",
        ),
        (
            "[[runners]]\nkind = \"service\"\ntypes = [\"a\"]\noperation = \"missing\"\n",
            "operation",
        ),
    ] {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, config).unwrap();
        let out = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{config} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(key),
            "message for {config:?} names {key}: {err}"
        );
    }
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUNYARD_WORKER__LEASE_TTL", "never")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .to_lowercase()
        .contains("worker.lease_ttl"));
}
