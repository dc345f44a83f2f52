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
    serve_with_env(config, &[])
}

fn serve_with_env(config: &str, env: &[(&str, &str)]) -> Serve {
    serve_with(config, env, |_| {})
}

/// [`serve_with_env`], `prepare` changing the server's command before it starts (its output goes
/// nowhere unless `prepare` says where).
fn serve_with(config: &str, env: &[(&str, &str)], prepare: impl FnOnce(&mut Command)) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("runyard.toml"), config).unwrap();
    let port = free_port();
    let child = spawn_serve(dir.path(), port, env, prepare);
    Serve {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// Reads a request's head (to its blank line) from `conn`, for the raw servers of the tests.
fn skip_request_head(conn: &std::net::TcpStream) {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
}

/// Answers `200` with the JSON `body`, closing the connection.
fn answer_json(conn: &mut std::net::TcpStream, body: &str) {
    use std::io::Write;
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// `runyard logs ID --follow` on the server at `url`, without a token.
fn follow_logs(id: &str, url: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["logs", id, "--follow"])
        .env("RUNYARD_SERVER", url)
        .env_remove("RUNYARD_TOKEN");
    cmd
}

/// Reads a request's line and head from `conn`; returns its path (with its query).
fn request_path(conn: &std::net::TcpStream) -> String {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    let mut request = String::new();
    let _ = reader.read_line(&mut request);
    let mut h = String::new();
    while reader.read_line(&mut h).unwrap_or(0) > 0 && h != "\r\n" {
        h.clear();
    }
    request.split(' ').nth(1).unwrap_or("").to_string()
}

/// Reads a whole request from `conn`: its line, its head and the body its `Content-Length`
/// announces; returns its path (with its query).
fn read_request(conn: &std::net::TcpStream) -> String {
    read_request_body(conn).0
}

/// [`read_request`], with the body read.
fn read_request_body(conn: &std::net::TcpStream) -> (String, Vec<u8>) {
    use std::io::{BufRead, Read};
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    let (mut request, mut length) = (String::new(), 0usize);
    let _ = reader.read_line(&mut request);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    (request.split(' ').nth(1).unwrap_or("").to_string(), body)
}

/// `runyard serve` on `dir`'s runyard.toml and data dir, listening on `port`; returns once it
/// accepts connections.
fn spawn_serve(
    dir: &std::path::Path,
    port: u16,
    env: &[(&str, &str)],
    prepare: impl FnOnce(&mut Command),
) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    prepare(&mut cmd);
    let child = cmd
        .envs(env.iter().copied())
        .args(["serve", "--config"])
        .arg(dir.join("runyard.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        // The flag beats the environment, which beats the file.
        .env("RUNYARD_LISTEN", "127.0.0.1:1")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

impl Serve {
    /// A crash and a restart: SIGKILL, `down` with nothing listening, then `runyard serve` again
    /// on the same port, config and data dir.
    fn crash_and_restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        let port = self.url.rsplit(':').next().unwrap().parse().unwrap();
        self.child = spawn_serve(self._dir.path(), port, &[], |_| {});
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
        texts_of(&String::from_utf8_lossy(&logs.stdout)),
        ["line-one", "line-two"]
    );
    let status = cli(&s.url, &["status", id]);
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(st["id"], id);

    // `--timeout` in plain seconds, as the API's number, or with a unit.
    for (t, ms) in [("500", 500_000), ("2m", 120_000)] {
        let out = cli(&s.url, &["submit", "sh.ok", "--timeout", t]);
        assert!(out.status.success(), "--timeout {t}: {out:?}");
        let tid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let st = cli(&s.url, &["status", &tid]);
        let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
        assert_eq!(v["timeout_ms"], ms, "--timeout {t}: {v}");
    }

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
    assert_eq!(text.lines().count(), 2, "a header and one job: {text}");
    assert!(text.lines().next().unwrap().starts_with("ID "), "{text}");
    assert!(text.lines().nth(1).unwrap().contains("sh.fail"), "{text}");
    // By runner name: the local runner's failed job; none under a name no job has.
    let mine = cli(
        &s.url,
        &["jobs", "--status", "ERROR", "--runner", "local-0"],
    );
    assert_eq!(String::from_utf8_lossy(&mine.stdout), text);
    let none = cli(&s.url, &["jobs", "--runner", "service-1"]);
    let none = String::from_utf8_lossy(&none.stdout);
    assert!(!none.contains("sh."), "{none}");
}

/// `runyard logs ID | head -1`: the reader goes away after a line; the command ends quietly
/// with 141 (as a Unix tool killed by SIGPIPE), not with a panic's 101.
#[test]
fn logs_into_a_closed_pipe_end_quietly() {
    let s = serve(
        r#"
[[runners]]
kind = "local"
types = ["sh.*"]
command = ["/bin/sh", "-c", "seq 1 5000"]
max_attempts = 1
"#,
    );
    let ok = cli(&s.url, &["submit", "sh.many", "--wait"]);
    assert!(ok.status.success(), "{ok:?}");
    let job: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    let id = job["id"].as_str().unwrap();
    let mut child = Command::new(BIN)
        .args(["logs", id])
        .env("RUNYARD_SERVER", &s.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    assert!(first.trim_end().ends_with(" 1"), "{first}");
    drop(out);
    let done = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
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
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(texts_of(&text), ["tick 1", "tick 2", "tick 3"], "{text}");
}

/// Lines the server no longer keeps (`retention.log_lines_per_job`) are said on stderr, not
/// skipped silently; the kept ones are printed.
#[test]
fn logs_say_how_many_earlier_lines_the_server_no_longer_keeps() {
    let s = serve(
        r#"
[retention]
log_lines_per_job = 5

[[runners]]
kind = "local"
types = ["chatty"]
command = ["/bin/sh", "-c", "for i in $(seq 1 20); do echo line $i; done"]
"#,
    );
    let sub = cli(&s.url, &["submit", "chatty", "--wait"]);
    assert!(sub.status.success(), "{sub:?}");
    let job: serde_json::Value = serde_json::from_slice(&sub.stdout).unwrap();
    assert_eq!(job["status"], "SUCCESS", "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    for args in [
        vec!["logs", id.as_str()],
        vec!["logs", id.as_str(), "--follow"],
    ] {
        let out = cli(&s.url, &args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let want: Vec<String> = (16..=20).map(|i| format!("line {i}")).collect();
        assert_eq!(texts_of(&text), want, "{args:?}: {text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("15 earlier line(s) of this job are no longer kept"),
            "{args:?}: {err}"
        );
    }
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
        // Runner names: empty, padded, with a control character, the parked jobs' own.
        (
            "[[runners]]\nname = \"\"\nkind = \"service\"\ntypes = [\"a\"]\n",
            "runners[0].name",
        ),
        (
            "[[runners]]\nname = \"(no runner) \"\nkind = \"service\"\ntypes = [\"a\"]\n",
            "runners[0].name",
        ),
        (
            "[[runners]]\nname = \"a\\u0000b\"\nkind = \"service\"\ntypes = [\"a\"]\n",
            "runners[0].name",
        ),
        (
            "[[runners]]\nname = \"(no runner)\"\nkind = \"service\"\ntypes = [\"a\"]\n",
            "reserved",
        ),
        // A webhook default's glob that could never match a type, as anywhere else.
        (
            "[[notify.defaults]]\ntypes = [\"report.{a,b}\"]\nurl = \"https://example.com/h\"\n",
            "notify.defaults[0].types",
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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RUNYARD_WORKER__LEASE_TTL"), "{err}");
    // A malformed secret table from the environment: named, its value not repeated.
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .env(
            "RUNYARD_AUTH",
            "{jwt_secret = \"ENVJWT-0123456789abcdefghijklmnopqrstuvwxyz\", junk}",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.to_lowercase().contains("auth") && !err.contains("ENVJWT"),
        "{err}"
    );
}

/// The text of `logs` lines (`TIME #ATTEMPT TEXT`), checking the time and attempt of each; the
/// final status line of `--follow` (`job ... ended ...`) is left out.
fn texts_of(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| !l.starts_with("job "))
        .map(|l| {
            let (time, rest) = l.split_once(' ').unwrap_or_else(|| panic!("{l}"));
            assert!(
                time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
                "a log line starts with its time: {l}"
            );
            let (attempt, text) = rest.split_once(' ').unwrap_or_else(|| panic!("{l}"));
            assert_eq!(attempt, "#1", "then its attempt: {l}");
            text.to_string()
        })
        .collect()
}

fn cli_env(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("RUNYARD_SERVER", url)
        .env_remove("RUNYARD_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// [`cli_env`] run in `dir` (no token).
fn cli_env_in(dir: &std::path::Path, url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("RUNYARD_SERVER", url)
        .env_remove("RUNYARD_TOKEN")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The single JSON document a command printed with `--output json`.
fn json_doc(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{o:?}");
    let text = stdout(o);
    assert_eq!(
        text.lines().count(),
        1,
        "one JSON document on one line: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The JSON lines a streaming command printed with `--output json`.
fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}", free_port()) // nothing listens there any more
}

/// POST JSON with a real HTTP client (what the CLI cannot do: create a schedule).
fn http_post(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or_default())
    })
}

const FOLLOW_RUNNERS: &str = r#"
[[runners]]
kind = "local"
types = ["sh.*"]
command = ["/bin/sh", "-c", "echo line-one; echo line-two; test \"$JOB_TYPE\" != sh.fail"]
max_attempts = 1

[[runners]]
kind = "local"
types = ["hang"]
command = ["/bin/sh", "-c", "echo start; exec sleep 30"]
timeout = "1s"
max_attempts = 1

[[runners]]
kind = "service"
types = ["runyard.*"]
"#;

#[test]
fn exit_codes_tell_success_failure_usage_unreachable_and_refusal_apart() {
    let s = serve(FOLLOW_RUNNERS);
    let code = |args: &[&str]| {
        let o = cli_env(&s.url, args, &[]);
        (o.status.code(), stderr(&o))
    };
    // 0: success.
    assert_eq!(code(&["submit", "sh.ok", "--wait"]).0, Some(0));
    // 1: the job did not succeed (ERROR, TIMEOUT), with --wait and with logs --follow.
    assert_eq!(code(&["submit", "sh.fail", "--wait"]).0, Some(1));
    assert_eq!(code(&["submit", "hang", "--wait"]).0, Some(1));
    // 2: usage, from clap and from the command's own checks (nothing is sent).
    for (args, says) in [
        (&["submit"][..], "TYPE"),
        (&["submit", "sh.ok", "--args", "{not json"], "--args"),
        (&["submit", "sh.ok", "--args", "[1, 2]"], "--args"),
        // An integer past 64 bits would be rounded on the way: refused as the API refuses it.
        (
            &[
                "submit",
                "sh.ok",
                "--args",
                r#"{"n": 99999999999999999999}"#,
            ],
            "64 bits",
        ),
        (
            &["signal", "k.big", "--payload=-99999999999999999999"],
            "64 bits",
        ),
        (&["submit", "sh.ok", "--input", "no-equals-sign"], "--input"),
        (
            &["submit", "sh.ok", "--input", "inputs=/no/such/file"],
            "/no/such/file",
        ),
        (&["jobs", "--output", "xml"], "xml"),
        (&["nonsense-command"], "nonsense"),
        (&["submit", "sh.ok", "--server", "not a url"], "--server"),
    ] {
        let (c, err) = code(args);
        assert_eq!(c, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?} names {says}: {err}");
    }
    let jobs_before = stdout(&cli_env(&s.url, &["jobs", "--output", "json"], &[]));
    // 3: the server is unreachable.
    let dead = closed_port_url();
    for args in [
        &["submit", "sh.ok"][..],
        &["status", "01a22d2b-1c54-7698-be6b-3e5256c4d637"],
        &["jobs"],
    ] {
        let o = cli_env(&dead, args, &[]);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
    }
    // 4: refused by the server (4xx): unknown type, unknown job, a job that already ended.
    let (c, err) = code(&["submit", "nope.nothing"]);
    assert_eq!(c, Some(4), "{err}");
    assert!(err.contains("nope.nothing") && err.contains("422"), "{err}");
    let (c, err) = code(&["status", "01a22d2b-1c54-7698-be6b-3e5256c4d637"]);
    assert_eq!(c, Some(4), "{err}");
    assert!(err.contains("404"), "{err}");
    let done = stdout(&cli_env(
        &s.url,
        &["submit", "sh.ok", "--wait", "--output", "json"],
        &[],
    ));
    let done: serde_json::Value = serde_json::from_str(&done).unwrap();
    let id = done["id"].as_str().unwrap();
    assert_eq!(code(&["cancel", id]).0, Some(4));
    assert_eq!(code(&["files", "get", id, "outputs", "3"]).0, Some(4));
    // The refused and usage cases changed nothing: the same jobs plus the one submitted above.
    let jobs_after: serde_json::Value = serde_json::from_str(&stdout(&cli_env(
        &s.url,
        &["jobs", "--output", "json"],
        &[],
    )))
    .unwrap();
    let before: serde_json::Value = serde_json::from_str(&jobs_before).unwrap();
    assert_eq!(
        jobs_after["jobs"].as_array().unwrap().len(),
        before["jobs"].as_array().unwrap().len() + 1
    );
}

#[test]
fn output_json_parses_for_every_command() {
    let s = serve(FOLLOW_RUNNERS);
    let run = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        cli_env(&s.url, &a, &[])
    };
    let sub = json_doc(&run(&["submit", "sh.ok"]));
    let id = sub["job_id"].as_str().unwrap().to_string();
    assert!(
        sub["status"].is_string() && sub["channel_id"].is_string(),
        "{sub}"
    );
    let waited = json_doc(&run(&["submit", "sh.ok", "--wait"]));
    assert_eq!(waited["status"], "SUCCESS");
    let wid = waited["id"].as_str().unwrap().to_string();
    assert_eq!(json_doc(&run(&["status", &wid]))["id"], wid.as_str());

    let lines = json_lines(&run(&["logs", &wid]));
    let texts: Vec<_> = lines.iter().map(|l| l["line"].clone()).collect();
    assert_eq!(texts, ["line-one", "line-two"], "{lines:?}");
    for l in &lines {
        assert_eq!(l["kind"], "log");
        assert_eq!(l["attempt"], 1);
        assert_eq!(l["stream"], "stdout");
        assert!(l["ts"].as_str().unwrap().ends_with('Z'), "{l}");
    }
    let followed = json_lines(&run(&["logs", &wid, "--follow"]));
    let end = followed.last().unwrap();
    assert_eq!(end["kind"], "end");
    assert_eq!(end["status"], "SUCCESS");
    assert_eq!(followed.len(), 3, "{followed:?}");

    let page = json_doc(&run(&["jobs"]));
    let listed: Vec<_> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].clone())
        .collect();
    assert!(listed.contains(&serde_json::json!(id)) && listed.contains(&serde_json::json!(wid)));

    let long = json_doc(&run(&[
        "submit",
        "runyard.sleep",
        "--args",
        r#"{"ms": 60000}"#,
    ]));
    let long = long["job_id"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.bin");
    std::fs::write(&file, b"some bytes").unwrap();
    let put = json_doc(&run(&[
        "files",
        "put",
        &long,
        "inputs",
        file.to_str().unwrap(),
    ]));
    assert_eq!(
        (put["index"].clone(), put["size"].clone()),
        (0.into(), 10.into())
    );
    let out = dir.path().join("out.bin");
    let got = json_doc(&run(&[
        "files",
        "get",
        &long,
        "inputs",
        "0",
        "-o",
        out.to_str().unwrap(),
    ]));
    assert_eq!(got["size"], 10);
    assert_eq!(json_doc(&run(&["cancel", &long]))["status"], "CANCELLED");
    // A retry waits for the cancelled attempt to have stopped (409 until then).
    let retried = (0..100)
        .map(|i| {
            if i > 0 {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            run(&["retry", &long])
        })
        .find(|o| o.status.success())
        .expect("the retry accepted once the cancelled attempt stopped");
    assert_eq!(json_doc(&retried)["status"], "QUEUED");
    assert_eq!(json_doc(&run(&["cancel", &long]))["status"], "CANCELLED");

    let sig = json_doc(&run(&[
        "signal",
        "cli.ready",
        "--payload",
        r#"{"rows": 3}"#,
    ]));
    assert_eq!(
        (sig["key"].clone(), sig["seq"].clone()),
        ("cli.ready".into(), 1.into())
    );

    let (status, body) = http_post(
        &format!("{}/async/schedules", s.url),
        serde_json::json!({"name": "cli-nightly", "cron": "0 3 * * *", "job": {"type": "runyard.sleep"}}),
    );
    assert_eq!(status, 201, "{body}");
    let list = json_doc(&run(&["schedules"]));
    assert_eq!(list["schedules"][0]["name"], "cli-nightly", "{list}");
    assert_eq!(
        json_doc(&run(&["schedules", "list"]))["schedules"],
        list["schedules"]
    );
    assert_eq!(
        json_doc(&run(&["schedules", "get", "cli-nightly"]))["name"],
        "cli-nightly"
    );
    assert_eq!(
        json_doc(&run(&["schedules", "pause", "cli-nightly"]))["paused"],
        true
    );
    assert_eq!(
        json_doc(&run(&["schedules", "resume", "cli-nightly"]))["paused"],
        false
    );
    assert!(json_doc(&run(&["schedules", "trigger", "cli-nightly"]))["job_id"].is_string());

    // The text tables have a header.
    let text = stdout(&cli_env(&s.url, &["schedules"], &[]));
    assert!(text.starts_with("NAME "), "{text}");
    assert!(
        text.lines().nth(1).unwrap().starts_with("cli-nightly "),
        "{text}"
    );
}

#[test]
fn logs_follow_ends_with_the_final_status_and_exits_with_its_code() {
    let s = serve(FOLLOW_RUNNERS);
    let id = stdout(&cli_env(&s.url, &["submit", "hang"], &[]))
        .trim()
        .to_string();
    let out = cli_env(&s.url, &["logs", &id, "--follow"], &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "a TIMEOUT exits 1: {text}");
    assert_eq!(texts_of(&text), ["start"], "{text}");
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with(&format!("job {id} ended TIMEOUT")),
        "{text}"
    );

    let ok = stdout(&cli_env(&s.url, &["submit", "sh.ok"], &[]))
        .trim()
        .to_string();
    let out = cli_env(&s.url, &["logs", &ok, "--follow"], &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(texts_of(&text), ["line-one", "line-two"], "{text}");
    // The exit code shows when the server recorded one (it does for a process that failed).
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with(&format!("job {ok} ended SUCCESS")),
        "{text}"
    );

    let failed = stdout(&cli_env(&s.url, &["submit", "sh.fail"], &[]))
        .trim()
        .to_string();
    let out = cli_env(&s.url, &["logs", &failed, "--follow"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).ends_with(&format!(
            "job {failed} ended ERROR (exit code 1): exited with status 1\n"
        )) || stdout(&out).contains(&format!("job {failed} ended ERROR (exit code 1)")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn submit_wait_and_logs_follow_read_the_event_stream_with_the_token() {
    // With `[auth]` every request, the event stream included, needs a bearer token: `submit
    // --wait` and `logs --follow` work with one (a JWT from RUNYARD_TOKEN, a static API token
    // from --token) and are refused (exit 4) without one or outside its channel.
    use sha2::Digest;
    let secret = "a-secret-of-at-least-thirty-two-bytes!";
    let api_token = "ry_cli_test_token_0123456789";
    let sha = hex::encode(sha2::Sha256::digest(api_token.as_bytes()));
    let s = serve(&format!(
        "{FOLLOW_RUNNERS}\n[auth]\njwt_secret = \"{secret}\"\n\n[[auth.tokens]]\nname = \"ci\"\n\
         sha256 = \"{sha}\"\nscopes = [\"jobs:submit\", \"jobs:read\", \"jobs:cancel\"]\n"
    ));
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mint = |channel: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"channel": channel, "sub": "ci", "exp": exp,
                                "scope": "jobs:submit jobs:read jobs:cancel"}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let jwt = mint("team-a");
    let args = ["submit", "sh.ok", "--channel", "team-a", "--wait"];
    let with = cli_env(&s.url, &args, &[("RUNYARD_TOKEN", &jwt)]);
    assert_eq!(with.status.code(), Some(0), "{}", stderr(&with));
    let job: serde_json::Value = serde_json::from_slice(&with.stdout).unwrap();
    assert_eq!(job["status"], "SUCCESS");
    // Not a terminal: the statuses as plain lines on stderr.
    assert!(
        stderr(&with).contains("RUNNING (attempt 1)"),
        "{}",
        stderr(&with)
    );
    let without = cli_env(&s.url, &args, &[]);
    assert_eq!(without.status.code(), Some(4), "{}", stderr(&without));
    assert!(stderr(&without).contains("401"), "{}", stderr(&without));

    // logs --follow on a running job, with the static token as a flag: to the end.
    let hang = cli_env(
        &s.url,
        &[
            "submit",
            "hang",
            "--channel",
            "team-a",
            "--token",
            api_token,
        ],
        &[],
    );
    assert!(hang.status.success(), "{}", stderr(&hang));
    // A token on the command line works, with a warning: every user of the host can read it
    // (`ps`); from RUNYARD_TOKEN (above) there is none.
    assert!(
        stderr(&hang).contains("warning: --token on the command line"),
        "{}",
        stderr(&hang)
    );
    assert!(!stderr(&with).contains("warning"), "{}", stderr(&with));
    let hang = stdout(&hang).trim().to_string();
    let flag = cli_env(
        &s.url,
        &["logs", &hang, "--follow", "--token", api_token],
        &[],
    );
    assert_eq!(flag.status.code(), Some(1), "{}", stderr(&flag));
    assert!(stdout(&flag).contains(&format!("job {hang} ended TIMEOUT")));
    // Without a token, or with one for another channel: refused.
    let none = cli_env(&s.url, &["logs", &hang, "--follow"], &[]);
    assert_eq!(none.status.code(), Some(4), "{}", stderr(&none));
    let other = cli_env(
        &s.url,
        &["logs", &hang, "--follow"],
        &[("RUNYARD_TOKEN", &mint("team-b"))],
    );
    assert_eq!(other.status.code(), Some(4), "{}", stderr(&other));
    assert!(stderr(&other).contains("403"), "{}", stderr(&other));
}

#[test]
fn a_wait_that_outlives_its_jwt_ends_with_the_job_id_and_leaves_the_job_running() {
    // `submit --wait` with a JWT that expires while the job runs: the server ends the event
    // stream at its expiry and refuses the reconnect. The command exits 4 (refused) saying the
    // job was accepted and is not cancelled, naming it; the job runs on.
    use sha2::Digest;
    let secret = "a-secret-of-at-least-thirty-two-bytes!";
    let api_token = "ry_cli_test_token_0123456789";
    let sha = hex::encode(sha2::Sha256::digest(api_token.as_bytes()));
    let s = serve(&format!(
        "{FOLLOW_RUNNERS}\n[[runners]]\nkind = \"local\"\ntypes = [\"long\"]\n\
         command = [\"sleep\", \"60\"]\ntimeout = \"90s\"\nmax_attempts = 1\n\n\
         [auth]\njwt_secret = \"{secret}\"\njwt_leeway = \"0s\"\n\n[[auth.tokens]]\n\
         name = \"ci\"\nsha256 = \"{sha}\"\nscopes = [\"jobs:read\", \"jobs:cancel\"]\n"
    ));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "ci", "exp": now + 10, "scope": "jobs:submit jobs:read"}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = cli_env(
        &s.url,
        &["submit", "long", "--wait"],
        &[("RUNYARD_TOKEN", &jwt)],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(45),
        "waited for the job, not for the token: {err}"
    );
    let id = err.lines().next().unwrap_or("").trim().to_string();
    assert!(
        err.contains(&format!(
            "stopped waiting for job {id}, which was accepted and is not cancelled"
        )) && err.contains(&format!("runyard status {id}"))
            && err.contains("401"),
        "{err}"
    );
    let status = cli_env(
        &s.url,
        &["status", &id, "--output", "json", "--token", api_token],
        &[],
    );
    assert!(status.status.success(), "{}", stderr(&status));
    assert_eq!(json_doc(&status)["status"], "RUNNING", "the job goes on");
    let cancel = cli_env(&s.url, &["cancel", &id, "--token", api_token], &[]);
    assert!(cancel.status.success(), "{}", stderr(&cancel));
}

#[test]
fn files_put_and_get_round_trip_and_submit_input_attaches_files() {
    let s = serve(FOLLOW_RUNNERS);
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let src = dir.path().join("data.bin");
    std::fs::write(&src, &bytes).unwrap();
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, "hello\n").unwrap();

    // submit --input: the files are on the job when it is created.
    let sub = cli_env(
        &s.url,
        &[
            "submit",
            "runyard.sleep",
            "--args",
            r#"{"ms": 60000}"#,
            "--input",
            &format!("inputs={}", src.display()),
            "--input",
            &format!("inputs={}", other.display()),
            "--input",
            &format!("extra={}", other.display()),
        ],
        &[],
    );
    assert!(sub.status.success(), "{}", stderr(&sub));
    let id = stdout(&sub).trim().to_string();
    let job: serde_json::Value =
        serde_json::from_str(&stdout(&cli_env(&s.url, &["status", &id], &[]))).unwrap();
    let inputs = &job["files"]["inputs"];
    assert_eq!(inputs[0]["name"], "data.bin", "{job}");
    assert_eq!(inputs[0]["size"], 70_000);
    assert_eq!(inputs[1]["name"], "notes.txt");
    assert_eq!(job["files"]["extra"][0]["size"], 6);

    // files get: to a file, and to stdout, byte for byte.
    let out = dir.path().join("copy.bin");
    let got = cli_env(
        &s.url,
        &["files", "get", &id, "inputs", "-o", out.to_str().unwrap()],
        &[],
    );
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    let piped = cli_env(&s.url, &["files", "get", &id, "inputs", "1"], &[]);
    assert_eq!(piped.stdout, b"hello\n");
    // `-o -` is stdout too (no file named `-`); a directory is refused, named (exit 2).
    let dash = cli_env_in(
        dir.path(),
        &s.url,
        &["files", "get", &id, "inputs", "1", "-o", "-"],
    );
    assert_eq!(dash.stdout, b"hello\n", "{}", stderr(&dash));
    assert!(!dir.path().join("-").exists());
    // `-o -/` names a directory `-`, not stdout.
    let slash = cli_env_in(
        dir.path(),
        &s.url,
        &["files", "get", &id, "inputs", "1", "-o", "-/"],
    );
    assert!(slash.stdout.is_empty(), "{}", stderr(&slash));
    assert!(!slash.status.success(), "{slash:?}");
    let d = dir.path().to_str().unwrap();
    let into_dir = cli_env(&s.url, &["files", "get", &id, "inputs", "1", "-o", d], &[]);
    assert_eq!(into_dir.status.code(), Some(2), "{into_dir:?}");
    assert!(stderr(&into_dir).contains(d), "{}", stderr(&into_dir));

    // files put: a new file under a property, then read back.
    let put = cli_env(
        &s.url,
        &[
            "files",
            "put",
            &id,
            "inputs",
            src.to_str().unwrap(),
            "--name",
            "again.bin",
        ],
        &[],
    );
    assert!(put.status.success(), "{}", stderr(&put));
    assert!(
        stdout(&put).starts_with("inputs[2] 70000 bytes, md5 "),
        "{}",
        stdout(&put)
    );
    let back = cli_env(&s.url, &["files", "get", &id, "inputs", "2"], &[]);
    assert_eq!(back.stdout, bytes);
    // A missing file is a usage error; a file on an ended job is refused.
    let missing = cli_env(
        &s.url,
        &["files", "put", &id, "inputs", "/no/such/file"],
        &[],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(cli_env(&s.url, &["cancel", &id], &[]).status.success());
    let late = cli_env(
        &s.url,
        &["files", "put", &id, "inputs", src.to_str().unwrap()],
        &[],
    );
    assert_eq!(late.status.code(), Some(4), "{}", stderr(&late));
}

#[test]
fn completions_are_generated_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef runyard"),
        ("fish", "complete -c runyard"),
    ] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = stdout(&out);
        assert!(
            text.contains(marker),
            "{shell}: {}",
            &text[..text.len().min(300)]
        );
        for sub in ["submit", "logs", "files", "schedules"] {
            assert!(text.contains(sub), "{shell} completes {sub}");
        }
    }
    let bad = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// A stand-in server for `logs --follow`: the job and its (empty) log, and an event stream whose
/// first connection drops after one event. Records each stream request's `Last-Event-ID`.
fn flaky_event_server(
    id: &'static str,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let record = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(50) {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut last_event_id = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("last-event-id") {
                        last_event_id = Some(v.trim().to_string());
                    }
                }
            }
            let path = request.split(' ').nth(1).unwrap_or("").to_string();
            let status = if done.load(std::sync::atomic::Ordering::SeqCst) {
                "SUCCESS"
            } else {
                "RUNNING"
            };
            let event = |n: u32, st: &str| {
                let ev = serde_json::json!({"id": n.to_string(), "job_id": id, "type": "status",
                    "runyard_status": st, "attempt": 1});
                format!("id: {n}\ndata: {ev}\n\n")
            };
            if path.starts_with("/async/events/sse") {
                record.lock().unwrap().push(last_event_id.clone());
                let body = match last_event_id.as_deref() {
                    None => event(1, "RUNNING"), // then the connection drops
                    Some(_) => {
                        done.store(true, std::sync::atomic::Ordering::SeqCst);
                        event(2, "SUCCESS")
                    }
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{body}"
                );
                continue;
            }
            let body = if path.contains("/logs") {
                serde_json::json!({"job_id": id, "status": status, "lines": [], "next": 0})
            } else {
                serde_json::json!({"id": id, "status": status, "channel_id": "ch", "runs": [],
                    "exit_code": if status == "SUCCESS" { serde_json::json!(0) } else { serde_json::Value::Null }})
            }
            .to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

#[test]
fn logs_follow_reconnects_from_the_last_event_id() {
    let id = "01a22d2b-1c54-7698-be6b-3e5256c4d637";
    let (url, seen) = flaky_event_server(id);
    let out = cli_env(&url, &["logs", id, "--follow"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("job {id} ended SUCCESS (exit code 0)\n")
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [None, Some("1".to_string())],
        "one reconnect, from the last event seen"
    );
}

/// A client command running in the background, its stdout collected as it comes.
struct Running {
    child: Child,
    out: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        use std::io::Read;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (mut pipe, sink) = (child.stdout.take().unwrap(), out.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Running { child, out }
    }

    fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits (at most 20 s) until its stdout holds `text`.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.stdout().contains(text) {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("ended ({st}) before `{text}`: {}", self.stdout());
            }
            assert!(Instant::now() < deadline, "no `{text}`: {}", self.stdout());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its exit code, stdout and stderr, once it ended (at most 60 s).
    fn end(mut self) -> (Option<i32>, String, String) {
        use std::io::Read;
        let deadline = Instant::now() + Duration::from_secs(60);
        let st = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("still running: {}", self.stdout());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        // The reader thread has the rest once the pipe closed.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::sync::Arc::strong_count(&self.out) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        (st.code(), self.stdout(), err)
    }
}

#[test]
fn logs_follow_and_submit_wait_on_a_terminal_ride_out_a_server_restart() {
    // The first run of each job says `first` and hangs until the server dies (its process dies
    // with it); the run after the restart (the lease expired) says `again` and succeeds.
    let marks = tempfile::tempdir().unwrap();
    let mut s = serve(&format!(
        r#"
[worker]
lease_ttl = "1s"

[[runners]]
kind = "local"
types = ["restart"]
command = ["/bin/sh", "-c", "if [ -e \"$MARKS/$JOB_ID\" ]; then echo again; else echo first; touch \"$MARKS/$JOB_ID\"; exec sleep 60; fi"]
env = {{ MARKS = {:?} }}
"#,
        marks.path().display().to_string()
    ));
    let id = stdout(&cli(&s.url, &["submit", "restart"]))
        .trim()
        .to_string();
    let mut follow = Command::new(BIN);
    follow
        .args(["logs", &id, "--follow"])
        .env("RUNYARD_SERVER", &s.url);
    let mut follow = Running::start(follow);
    // `submit --wait` with its stderr on a terminal (the progress view): under script(1).
    let mut wait = Command::new("script");
    wait.args([
        "-qefc",
        &format!("{BIN} submit restart --wait"),
        "/dev/null",
    ])
    .env("RUNYARD_SERVER", &s.url);
    let mut wait = Running::start(wait);
    follow.wait_for("first");
    wait.wait_for("first");

    s.crash_and_restart(Duration::from_millis(1500));

    let (code, text, err) = follow.end();
    assert_eq!(code, Some(0), "{text}{err}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("job "))
        .filter_map(|l| l.splitn(3, ' ').nth(2))
        .collect();
    assert_eq!(lines, ["first", "again"], "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with(&format!("job {id} ended SUCCESS"))),
        "{text}"
    );
    let (code, text, err) = wait.end();
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(text.contains("again"), "{text}");
}

/// The status of `GET url` (`None`: no answer).
fn http_status(url: &str) -> Option<u16> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new().get(url).send().await.ok()?;
        Some(r.status().as_u16())
    })
}

/// Waits (at most 20 s) until `GET url` answers `status`.
fn wait_status(url: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_status(url) != Some(status) {
        assert!(Instant::now() < deadline, "{url} never answered {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (at most `within`) until `child` ended; `None` if it did not.
fn ended_within(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn send_signal(child: &Child, signal: i32) {
    // Safety: a plain syscall on this test's own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

#[test]
fn a_second_signal_during_the_drain_stops_serve_at_once_and_its_job_runs_after_a_restart() {
    // The first run holds its slot for longer than the test (the drain would wait the whole
    // `shutdown_grace` for it); the run after the restart ends at once.
    let marks = tempfile::tempdir().unwrap();
    let log = marks.path().join("serve.log");
    let config = format!(
        r#"
[worker]
shutdown_grace = "10m"
lease_ttl = "1s"

[[runners]]
kind = "local"
types = ["hold"]
command = ["/bin/sh", "-c", "if [ -e \"$MARKS/$JOB_ID\" ]; then echo again; else touch \"$MARKS/$JOB_ID\"; exec sleep 600; fi"]
env = {{ MARKS = {:?} }}
"#,
        marks.path().display().to_string()
    );
    let out = std::fs::File::create(&log).unwrap();
    let mut s = serve_with(&config, &[], |cmd| {
        cmd.stderr(out);
    });
    let id = stdout(&cli(&s.url, &["submit", "hold"])).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marks.path().join(&id).exists() {
        assert!(Instant::now() < deadline, "the job did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    send_signal(&s.child, libc::SIGTERM);
    wait_status(&format!("{}/health/ready", s.url), 503);
    send_signal(&s.child, libc::SIGINT);
    let st = ended_within(&mut s.child, Duration::from_secs(15))
        .expect("a second signal stops serve without waiting for its job");
    assert_eq!(st.code(), Some(128 + libc::SIGINT), "{st:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("second stop signal"), "{text}");

    // As after a crash: once its lease expired, the job runs again on the same data dir.
    s.crash_and_restart(Duration::ZERO);
    let out = cli(&s.url, &["logs", &id, "--follow"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(" again\n"), "{}", stdout(&out));
}

#[test]
fn sighup_drains_serve_as_sigterm_does_and_the_demo_dir_is_removed() {
    // `serve --demo` keeps its data (its master.key too) in a temporary dir removed at exit.
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = tmp.path().to_path_buf();
    let port = free_port();
    let mut s = Serve {
        child: Command::new(BIN)
            .args(["serve", "--demo", "--listen", &format!("127.0.0.1:{port}")])
            .env("TMPDIR", &tmp_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        url: format!("http://127.0.0.1:{port}"),
        _dir: tmp,
    };
    wait_status(&format!("{}/health", s.url), 200);
    assert_eq!(
        std::fs::read_dir(&tmp_path).unwrap().count(),
        1,
        "the demo dir"
    );
    send_signal(&s.child, libc::SIGHUP);
    let st = ended_within(&mut s.child, Duration::from_secs(30)).expect("serve ended after SIGHUP");
    assert_eq!(
        st.code(),
        Some(0),
        "a drain, not death by the signal: {st:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&tmp_path).unwrap().collect();
    assert!(left.is_empty(), "the demo dir is removed: {left:?}");
}

/// `serve --demo` as root beside a local runner isolated by `user`: the demo's own local runners
/// run their jobs as root, so the warning of docs/security.md is given (probe s50 F6: the demo's
/// runners were added after the check, which saw the isolated runner alone and said nothing).
#[test]
fn serve_demo_as_root_beside_an_isolated_runner_warns_of_root_jobs() {
    // Safety: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: not root (the warning is about a root server)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("runyard.toml");
    std::fs::write(
        &cfg,
        "[[runners]]\nkind = \"local\"\ntypes = [\"iso.*\"]\ncommand = [\"/bin/true\"]\nuser = \"nobody\"\n",
    )
    .unwrap();
    let log = dir.path().join("serve.log");
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--demo", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_status(&format!("http://127.0.0.1:{port}/health"), 200);
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("runs its jobs as root") && text.contains("demo"),
        "{text}"
    );
}

#[test]
fn serve_started_with_sighup_ignored_keeps_ignoring_it() {
    // `nohup runyard serve`: a closed terminal does not stop it. An ignored signal is dropped
    // when sent, so the SIGTERM after it is the first (a drain), not a second (a cold stop).
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("serve.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut s = serve_with(RUNNERS, &[], |cmd| {
        use std::os::unix::process::CommandExt;
        cmd.stderr(out);
        // Safety: signal() only, in the child before exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                Ok(())
            });
        }
    });
    wait_status(&format!("{}/health", s.url), 200);
    send_signal(&s.child, libc::SIGHUP);
    send_signal(&s.child, libc::SIGTERM);
    let st = ended_within(&mut s.child, Duration::from_secs(30)).expect("serve drained");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(st.code(), Some(0), "{st:?}: {text}");
    // The drain was started by the SIGTERM: the SIGHUP never arrived.
    let first = text
        .lines()
        .find(|l| l.contains("shutdown requested"))
        .unwrap_or_default();
    assert!(first.contains("SIGTERM"), "{text}");
    assert!(!text.contains("second stop signal"), "{text}");
}

#[test]
fn submit_batch_prints_one_result_per_line_and_exits_4_when_any_failed() {
    let s = serve(RUNNERS);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.jsonl");
    std::fs::write(
        &file,
        concat!(
            "{\"type\": \"runyard.noop\", \"idempotency_key\": \"cli-1\"}\n",
            "\n",
            "{\"type\": \"nope.nothing\"}\n",
            "not json\n",
            "{\"type\": \"runyard.noop\", \"idempotency_key\": \"cli-1\"}\n",
            "{\"type\": \"runyard.noop\", \"args\": {\"n\": 99999999999999999999}}\n",
        ),
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = cli(&s.url, &["submit", "--batch", path]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "one result per job line: {text}");
    let id = lines[0].strip_prefix("1 ").expect("line 1 accepted");
    assert!(lines[1].starts_with("3 error unknown_type: "), "{text}");
    assert!(lines[1].contains("nope.nothing"), "{text}");
    assert!(lines[2].starts_with("4 error bad_json: "), "{text}");
    assert_eq!(lines[3], format!("5 {id} replayed"), "{text}");
    // An integer the API would refuse is refused here, not rounded on the way.
    assert!(lines[4].starts_with("6 error invalid_request: "), "{text}");
    assert!(lines[4].contains("64 bits"), "{text}");
    assert!(stderr(&out).contains("3 of 5"), "{}", stderr(&out));

    // JSON lines from stdin; all accepted: exit 0.
    let mut child = Command::new(BIN)
        .args(["submit", "--batch", "-", "--output", "json"])
        .env("RUNYARD_SERVER", &s.url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..3 {
            writeln!(
                stdin,
                "{{\"type\": \"runyard.noop\", \"args\": {{\"i\": {i}}}}}"
            )
            .unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let docs = json_lines(&out);
    assert_eq!(docs.len(), 3, "{}", stdout(&out));
    for (i, d) in docs.iter().enumerate() {
        assert_eq!(
            (d["line"].as_u64(), d["status_code"].as_u64()),
            (Some(i as u64 + 1), Some(202)),
            "{d}"
        );
        let job = cli(&s.url, &["status", d["job_id"].as_str().unwrap()]);
        let job: serde_json::Value = serde_json::from_slice(&job.stdout).unwrap();
        assert_eq!(job["args"]["i"], i, "{job}");
    }
    // A usage error: --batch with a type.
    let both = cli(&s.url, &["submit", "runyard.noop", "--batch", path]);
    assert_eq!(both.status.code(), Some(2), "{both:?}");
    // Or with a flag of one job, which a line would not get (it was dropped, exit 0).
    for flag in [
        ["--run-at", "2030-01-01T00:00:00Z"],
        ["--args", "{\"x\": 1}"],
        ["--timeout", "5s"],
        ["--max-attempts", "7"],
        ["--idempotency-key", "k"],
        ["--channel", "c"],
    ] {
        let out = cli(&s.url, &["submit", "--batch", path, flag[0], flag[1]]);
        assert_eq!(out.status.code(), Some(2), "{flag:?}: {out:?}");
    }
}

/// Lines go as written (a key given twice is the server's to refuse, in its slot), requests are
/// cut by bytes as well as by count, and a line too large for the server is refused in its own
/// slot while the others are stored; a byte order mark does not spoil the first line.
#[test]
fn submit_batch_sends_lines_as_written_in_requests_the_server_takes() {
    let s = serve(RUNNERS);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.jsonl");
    let mut text =
        String::from("\u{feff}{\"type\": \"runyard.noop\", \"args\": {\"tag\": \"first\"}}\n");
    text.push_str(&format!(
        "{{\"type\": \"runyard.noop\", \"args\": {{\"p\": \"{}\"}}}}\n",
        "q".repeat(1_100_000)
    ));
    text.push_str("{\"type\": \"runyard.noop\", \"type\": \"runyard.noop\"}\n");
    // 600 lines of about 2 KB: more than one default-sized body.
    for i in 0..600 {
        text.push_str(&format!(
            "{{\"type\": \"runyard.noop\", \"args\": {{\"i\": {i}, \"pad\": \"{}\"}}}}\n",
            "x".repeat(2000)
        ));
    }
    std::fs::write(&file, text).unwrap();
    let out = cli(&s.url, &["submit", "--batch", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let printed = stdout(&out);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 603, "one result per job line");
    assert!(
        !lines[0].contains("error"),
        "the BOM line is a job: {}",
        lines[0]
    );
    assert!(lines[1].starts_with("2 error too_large: "), "{}", lines[1]);
    assert!(lines[2].starts_with("3 error "), "{}", lines[2]);
    assert!(lines[2].contains("type"), "{}", lines[2]);
    for (n, l) in lines[3..].iter().enumerate() {
        let id = l
            .strip_prefix(&format!("{} ", n + 4))
            .unwrap_or_else(|| panic!("line {}: {l}", n + 4));
        assert_eq!(id.len(), 36, "{l}");
    }
    assert!(stderr(&out).contains("2 of 603"), "{}", stderr(&out));
}

/// `bench --http-ceiling` (scripts/compare's HTTP ceiling): a bare server answers every request
/// as a submit would, and the report counts them all, with a rate, round trips and the bare
/// server's CPU per request; it cannot be mixed with a target server or a job shape's flags.
#[test]
fn bench_http_ceiling_answers_every_request_and_reports_them() {
    let o = Command::new(BIN)
        .args(["bench", "--http-ceiling", "--json", "--warmup", "10"])
        .args(["--connections", "4", "--jobs", "300"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json_doc(&o);
    assert_eq!(v["system"], "http-ceiling");
    assert_eq!(v["connections"], 4);
    assert_eq!(v["jobs"], 300);
    assert_eq!(v["submit_errors"], 0);
    assert!(v["e2e_rate"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["server_cpu_ms_per_request"].as_f64().is_some(), "{v}");
    assert_eq!(v["submit_rtt"]["count"], 300);
    // Flags of the job shapes have no meaning here: refused, not ignored.
    for extra in [
        ["--server", "http://127.0.0.1:9"],
        ["--batch-size", "10"],
        ["--trickle-jobs", "5"],
    ] {
        let o = Command::new(BIN)
            .args(["bench", "--http-ceiling"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
    }
}

/// `worker.enabled = false` in the file runs no worker in `serve` (as `--no-worker`): a job
/// stays QUEUED. (The flag used to override the file's value with `true`.)
#[test]
fn worker_enabled_false_in_the_config_runs_no_worker() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("serve.log");
    let out = std::fs::File::create(&log).unwrap();
    let s = serve_with(
        &format!("[worker]\nenabled = false\npoll_interval = \"100ms\"\n{RUNNERS}"),
        &[],
        |cmd| {
            cmd.stderr(out);
        },
    );
    // On the embedded store nothing else can run its jobs: serve says so at start.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("NO JOB WILL RUN") && text.contains("`runyard worker` needs `redis`"),
        "{text}"
    );
    let out = cli(&s.url, &["submit", "runyard.noop", "--output", "json"]);
    assert!(out.status.success(), "{out:?}");
    let job = json_doc(&out);
    let id = job["job_id"].as_str().expect("an id").to_string();
    // Ten of the worker's poll intervals: a worker would have run it long before.
    std::thread::sleep(Duration::from_millis(1000));
    let st = json_doc(&cli(&s.url, &["status", &id, "--output", "json"]));
    assert_eq!(st["status"], "QUEUED", "{st}");
}

/// The names of a process's threads (`/proc/PID/task/*/comm`, at most 15 bytes each).
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

/// `serve` on the embedded store with its worker, on up to 2 cores, runs the worker on a thread
/// of its own (`runyard-worker`) beside a single-thread HTTP runtime; `TOKIO_WORKER_THREADS` set
/// asks for tokio's multi-thread runtime with that many workers instead (a pod with its 2 vCPUs
/// to itself), and the worker then shares its threads. A job runs either way. The threads are
/// read once a job has run: the port answers before the worker (and its thread) has started.
#[test]
fn tokio_worker_threads_chooses_the_multi_thread_runtime() {
    let two_cores = std::thread::available_parallelism().map_or(1, |n| n.get()) <= 2;
    let run_one = |url: &str| {
        let out = cli(url, &["submit", "sh.ok", "--wait"]);
        assert!(out.status.success(), "{out:?}");
        let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(job["status"], "SUCCESS", "{job}");
    };
    let s = serve(RUNNERS);
    run_one(&s.url);
    let names = thread_names(s.child.id());
    assert_eq!(
        names.iter().any(|n| n == "runyard-worker"),
        two_cores,
        "threads: {names:?}"
    );
    drop(s);

    let s = serve_with_env(RUNNERS, &[("TOKIO_WORKER_THREADS", "3")]);
    run_one(&s.url);
    let names = thread_names(s.child.id());
    assert!(
        !names.iter().any(|n| n == "runyard-worker"),
        "threads: {names:?}"
    );
    assert!(
        names
            .iter()
            .filter(|n| *n == "tokio-rt-worker" || *n == "tokio-runtime-w")
            .count()
            >= 3,
        "three runtime workers: {names:?}"
    );
}

/// Audit 18, L3: a job's output cannot drive the operator's terminal: in text output its control
/// characters (ESC, BEL, CR, C1) and bidirectional controls (U+202E) are shown as escapes, and a
/// backslash it wrote is doubled (its `\x1b` text is not taken for an ESC); JSON output keeps
/// the line as it is.
#[test]
fn logs_show_control_characters_of_a_job_as_escapes() {
    let s = serve(
        r#"
[[runners]]
kind = "local"
types = ["esc"]
command = ["/bin/sh", "-c", "printf 'a\\033]0;title\\007b\\rc\\302\\233d\\te\\134x1b\\342\\200\\256z\\n'"]
"#,
    );
    let sub = cli(&s.url, &["submit", "esc", "--wait"]);
    assert!(sub.status.success(), "{sub:?}");
    let job: serde_json::Value = serde_json::from_slice(&sub.stdout).unwrap();
    let id = job["id"].as_str().unwrap();
    let out = cli(&s.url, &["logs", id]);
    assert!(out.status.success(), "{out:?}");
    for b in [0x1b, 0x07, b'\r'] {
        assert!(!out.stdout.contains(&b), "byte {b:#x} printed raw: {out:?}");
    }
    assert_eq!(
        texts_of(&stdout(&out)),
        [r"a\x1b]0;title\x07b\rc\u{9b}d".to_string() + "\te" + r"\\x1b\u{202e}z"]
    );
    let json = json_lines(&cli(&s.url, &["logs", id, "--output", "json"]));
    assert_eq!(
        json[0]["line"],
        "a\x1b]0;title\x07b\rc\u{9b}d\te\\x1b\u{202e}z"
    );
}

/// Audit 18, L5: a local job gets 0, 1 and 2 (its pipes) and no descriptor the server inherited
/// from whoever started it (here a pipe left open, without close-on-exec, as descriptor 100).
#[test]
fn a_local_job_does_not_inherit_descriptors_the_server_inherited() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let (reader, _writer) = std::io::pipe().unwrap();
    let fd = reader.as_raw_fd();
    let s = serve_with(
        r#"
[[runners]]
kind = "local"
types = ["fds"]
command = ["/bin/sh", "-c", "ls /proc/self/fd"]
"#,
        &[],
        |cmd| {
            // Safety: dup2 only, in the child before exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::dup2(fd, 100) != 100 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    );
    let server = s.child.id();
    assert!(
        std::fs::read_link(format!("/proc/{server}/fd/100")).is_ok(),
        "the server holds descriptor 100"
    );
    let sub = cli(&s.url, &["submit", "fds", "--wait"]);
    assert!(sub.status.success(), "{sub:?}");
    let job: serde_json::Value = serde_json::from_slice(&sub.stdout).unwrap();
    let out = cli(&s.url, &["logs", job["id"].as_str().unwrap()]);
    let fds = texts_of(&stdout(&out));
    // `ls` itself holds the directory it reads (3).
    assert_eq!(fds, ["0", "1", "2", "3"], "{out:?}");
}

/// `serve` reads `./runyard.toml` of the directory it runs in, never one of a parent directory
/// (a `runyard.toml` planted in `/tmp` must not decide what a server started below it runs).
#[test]
fn serve_reads_no_config_of_a_parent_directory() {
    let dir = tempfile::tempdir().unwrap();
    let below = dir.path().join("a").join("b");
    std::fs::create_dir_all(&below).unwrap();
    std::fs::write(
        dir.path().join("runyard.toml"),
        "[[runners]]\nkind = \"local\"\ntypes = [\"planted.*\"]\ncommand = [\"/bin/true\"]\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .current_dir(&below)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve started with the parent directory's runyard.toml");
        }
        assert!(
            Instant::now() < deadline,
            "serve neither started nor exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("no runners are configured"), "{err}");
}

/// A signal key the server would refuse is a usage error (exit 2, naming the key) before any
/// request: no server runs here.
#[test]
fn signal_refuses_a_bad_key_before_asking_the_server() {
    let o = cli("http://127.0.0.1:1", &["signal", ""]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`key` must not be empty"),
        "{}",
        stderr(&o)
    );
}

/// The keys `.` and `..`, and a file property `.` or `..`, would be resolved as a path in the
/// URL (`signal ..` was `POST /async/signals`, a 405; `files put JOB .` a 404): a usage error (exit 2)
/// naming the rule, before any request (no server runs here).
#[test]
fn dot_keys_and_properties_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("in.txt");
    std::fs::write(&f, "x").unwrap();
    let f = f.to_str().unwrap();
    let id = uuid::Uuid::now_v7().to_string();
    for dot in [".", ".."] {
        let wait = format!("{dot}:2");
        let input = format!("{dot}={f}");
        for (args, rule) in [
            (vec!["signal", dot], "`.` or `..`"),
            (vec!["submit", "sh.ok", "--wait-for", dot], "`.` or `..`"),
            (vec!["submit", "sh.ok", "--wait-for", &wait], "`.` or `..`"),
            (vec!["files", "put", &id, dot, f], "property"),
            (vec!["files", "get", &id, dot, "0"], "property"),
            (vec!["submit", "sh.ok", "--input", &input], "PROP 1-64"),
        ] {
            let o = cli("http://127.0.0.1:1", &args);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
            assert!(stderr(&o).contains(rule), "{args:?}: {}", stderr(&o));
        }
    }
    // A property past 64 characters, the server's bound (review rev52e: `--input` took it, and
    // the server refused the part once streaming).
    let long = format!("{}={f}", "p".repeat(65));
    let o = cli("http://127.0.0.1:1", &["submit", "sh.ok", "--input", &long]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// `files put --name` is checked as the server checks a file name: a usage error (exit 2) before
/// any byte is sent.
#[test]
fn files_put_refuses_a_name_that_is_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("in.txt");
    std::fs::write(&f, "x").unwrap();
    let id = uuid::Uuid::now_v7().to_string();
    let o = cli(
        "http://127.0.0.1:1",
        &[
            "files",
            "put",
            &id,
            "inputs",
            f.to_str().unwrap(),
            "--name",
            "../x",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("file name"), "{}", stderr(&o));
}

/// A server that answers every request `200 text/html` (a proxy's login page, another site).
fn html_server() -> String {
    html_server_with("200 OK")
}

/// A server that answers every request with `status` and an HTML page.
fn html_server_with(status: &'static str) -> String {
    raw_server(
        status,
        "content-type: text/html\r\n",
        "<html><body>Please log in</body></html>",
    )
}

/// A server that answers every request with `status`, these header lines and `body`.
fn raw_server(status: &'static str, headers: &'static str, body: &'static str) -> String {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().take(50) {
            let Ok(mut conn) = conn else { continue };
            skip_request_head(&conn);
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// A batch server answering its requests in turn: 413, then 200 (a job id per item), then 503.
fn batch_script_server() -> String {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().take(3).enumerate() {
            let Ok(mut conn) = conn else { continue };
            let (_, body) = read_request_body(&conn);
            let items = serde_json::from_slice::<serde_json::Value>(&body)
                .map(|v| v["jobs"].as_array().map_or(0, Vec::len))
                .unwrap_or(0);
            let (status, answer) = match n {
                0 => (
                    "413 Payload Too Large",
                    serde_json::json!({"error": {"code": "too_large", "message": "too large"}}),
                ),
                1 => (
                    "200 OK",
                    serde_json::json!({"results": (0..items).map(|_| serde_json::json!({"status_code": 202, "job_id": uuid::Uuid::now_v7().to_string()})).collect::<Vec<_>>()}),
                ),
                _ => (
                    "503 Service Unavailable",
                    serde_json::json!({"error": {"code": "unavailable", "message": "store down"}}),
                ),
            };
            let text = answer.to_string();
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    url
}

/// A batch split after a 413 whose second half fails: the first half's results (and the lines
/// refused here before the failure) are printed, and the error names only the lines it sent.
#[test]
fn a_batch_failing_after_a_split_prints_what_was_confirmed() {
    let url = batch_script_server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.jsonl");
    std::fs::write(
        &file,
        "{\"type\": \"a\"}\n{\"type\": \"b\"}\nnot json\n{\"type\": \"c\"}\n{\"type\": \"d\"}\n",
    )
    .unwrap();
    let out = cli(&url, &["submit", "--batch", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let printed = stdout(&out);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 3, "{printed}");
    assert!(
        lines[0].starts_with("1 ") && lines[1].starts_with("2 "),
        "{printed}"
    );
    assert!(lines[2].starts_with("3 error bad_json"), "{printed}");
    let said = stderr(&out);
    assert!(
        said.contains("lines 4-5") && said.contains("may have been stored"),
        "{said}"
    );
}

#[test]
fn an_answer_that_is_not_runyards_is_an_error_not_an_empty_success() {
    // Before: `jobs` printed an empty table, `status` null and `schedules pause` "x paused",
    // all with exit 0, against a page that was not runyard at all.
    let url = html_server();
    let id = uuid::Uuid::now_v7().to_string();
    for args in [
        vec!["jobs"],
        vec!["status", &id],
        vec!["cancel", &id],
        vec!["schedules", "pause", "nightly"],
        vec!["signal", "data.ready"],
        vec!["logs", "--follow", &id],
    ] {
        let o = cli(&url, &args);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("not runyard's") && e.contains("text/html"),
            "{args:?}: {e}"
        );
        assert!(!stdout(&o).contains("paused"), "{args:?}: {}", stdout(&o));
    }
    // `files get`: a page is not the file (it was saved with exit 0), and bytes that do not
    // match the md5 the server's ETag gives are not either; no file, no `.part` left.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.csv");
    let altered = raw_server(
        "200 OK",
        "content-type: text/csv\r\netag: \"5d41402abc4b2a76b9719d911017c592\"\r\n",
        "not hello",
    );
    for (url, said) in [(&url, "not a file"), (&altered, "altered or cut")] {
        let o = cli(
            url,
            &["files", "get", &id, "inputs", "-o", out.to_str().unwrap()],
        );
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        assert!(stderr(&o).contains(said), "{}", stderr(&o));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{said}");
        // To stdout the bytes are out already: the exit code says they are not the file.
        let o = cli(url, &["files", "get", &id, "inputs"]);
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    }
    // A proxy that decoded the file may weaken or suffix the tag: the md5 still checks. A file
    // answer with no tag at all (a runyard before it) is saved with a warning.
    let weak = raw_server(
        "200 OK",
        "content-type: text/plain\r\netag: W/\"5d41402abc4b2a76b9719d911017c592-gzip\"\r\n",
        "hello",
    );
    let older = raw_server(
        "200 OK",
        "content-type: text/plain\r\ncontent-disposition: attachment\r\n",
        "hello",
    );
    for (url, warned) in [(&weak, false), (&older, true)] {
        let o = cli(
            url,
            &["files", "get", &id, "inputs", "-o", out.to_str().unwrap()],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(std::fs::read(&out).unwrap(), b"hello");
        assert_eq!(stderr(&o).contains("not checked"), warned, "{}", stderr(&o));
        std::fs::remove_file(&out).unwrap();
    }
    // A proxy's error page: the failure says it is not runyard's error, with no empty code.
    let o = cli(&html_server_with("502 Bad Gateway"), &["jobs"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("not runyard's error") && e.contains("HTTP 502"),
        "{e}"
    );
    assert!(!e.contains("(,"), "{e}");
    // Another web server's 404 page: runyard was not reached (3), nothing runyard refused (4).
    let o = cli(&html_server_with("404 Not Found"), &["jobs"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("not runyard's") && e.contains("404"), "{e}");
}

#[test]
fn a_server_url_with_a_query_or_fragment_is_refused_and_a_password_never_shown() {
    for bad in ["http://127.0.0.1:1/?x=1", "http://127.0.0.1:1/base#frag"] {
        let o = cli(bad, &["jobs"]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("without `?query` or `#fragment`"),
            "{}",
            stderr(&o)
        );
    }
    let port = free_port();
    let o = cli(
        &format!("http://admin:s3cretpw@127.0.0.1:{port}"),
        &["jobs"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!stderr(&o).contains("s3cretpw"), "{}", stderr(&o));
    assert!(stderr(&o).contains("admin:***@127.0.0.1"), "{}", stderr(&o));
    // Nor in the help, which names the variable without its value.
    let o = cli(
        &format!("http://admin:s3cretpw@127.0.0.1:{port}"),
        &["jobs", "--help"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains("s3cretpw"), "{}", stdout(&o));
    assert!(stdout(&o).contains("RUNYARD_SERVER"), "{}", stdout(&o));
}

/// A server that answers every request with an empty page of jobs and records each request's
/// header lines (lowercase names).
fn recording_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(50) {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                headers.push(h.trim_end().to_ascii_lowercase());
            }
            record.lock().unwrap().push(headers);
            let body = r#"{"jobs": [], "next_cursor": null}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

/// `RUNYARD_SERVER=http://user:password@host` with a token: one `Authorization` header, the
/// token's (reqwest sent the URL's `Basic` beside it), a warning that says the URL's credentials
/// are not sent, and the password in no message. Without a token they go as `Basic`, alone.
#[test]
fn a_token_is_the_one_authorization_when_the_server_url_has_a_password() {
    let (url, seen) = recording_server();
    let with_password = url.replace("http://", "http://admin:s3cretpw@");
    let authorizations = |o: &Output| -> Vec<String> {
        assert!(o.status.success(), "{}", stderr(o));
        let last = seen.lock().unwrap().pop().expect("a request");
        last.into_iter()
            .filter(|h| h.starts_with("authorization:"))
            .collect()
    };
    let token = [("RUNYARD_TOKEN", "tok-123")];
    let o = cli_env(&with_password, &["jobs", "--output", "json"], &token);
    assert_eq!(authorizations(&o), ["authorization: bearer tok-123"]);
    let err = stderr(&o);
    assert!(!err.contains("s3cretpw"), "{err}");
    assert!(
        err.contains("user and password") && err.contains("not sent"),
        "{err}"
    );
    // The flag is the same token.
    let o = cli_env(
        &with_password,
        &["jobs", "--output", "json", "--token", "tok-456"],
        &[],
    );
    assert_eq!(authorizations(&o), ["authorization: bearer tok-456"]);
    assert!(!stderr(&o).contains("s3cretpw"), "{}", stderr(&o));
    // Without a token the URL's credentials are the one Authorization.
    let o = cli_env(&with_password, &["jobs", "--output", "json"], &[]);
    // base64("admin:s3cretpw")
    assert_eq!(
        authorizations(&o),
        ["authorization: basic ywrtaw46cznjcmv0chc="]
    );
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    // A token and a URL without credentials: the token alone, no warning.
    let o = cli_env(&url, &["jobs", "--output", "json"], &token);
    assert_eq!(authorizations(&o), ["authorization: bearer tok-123"]);
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

/// `runyard --server URL status ID` was refused (`unexpected argument '--server' found`): the
/// client commands' connection flags were taken only after the command, where kubectl, celery
/// and redis-cli users put them first. Now before, between (`schedules --server URL list`, which
/// was taken and then not used) or after the command alike; either beats the environment, and
/// given twice, the later one (nearer the command's own flags) wins.
#[test]
fn server_and_token_may_come_before_the_command() {
    let (url, seen) = recording_server();
    let closed = closed_port_url();
    let id = "0193a2b4-0000-7000-8000-000000000001";
    // The request line and the Authorization header the server saw.
    let sent = |args: &[&str]| -> (String, Vec<String>) {
        let o = Command::new(BIN)
            .args(args)
            .env("RUNYARD_SERVER", &closed)
            .env("RUNYARD_TOKEN", "tok-env")
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let head = seen.lock().unwrap().pop().expect("a request");
        let auth = head
            .iter()
            .filter(|h| h.starts_with("authorization:"))
            .cloned()
            .collect();
        (head[0].clone(), auth)
    };
    let status = format!("get /async/jobs/{id} http/1.1");
    let bearer = |t: &str| vec![format!("authorization: bearer {t}")];
    let before = sent(&["--server", &url, "--token", "tok-1", "status", id]);
    assert_eq!(before, (status.clone(), bearer("tok-1")));
    let after = sent(&["status", id, "--server", &url, "--token", "tok-1"]);
    assert_eq!(after, before);
    // `--server=URL` too; the token from the environment.
    let (line, auth) = sent(&[&format!("--server={url}"), "jobs", "--output", "json"]);
    assert!(line.starts_with("get /async/jobs?"), "{line}");
    assert_eq!(auth, bearer("tok-env"));
    // Before and after: the later one.
    let both = [
        "--server", &closed, "--token", "tok-1", "status", id, "--server", &url, "--token", "tok-2",
    ];
    assert_eq!(sent(&both), (status, bearer("tok-2")));
    // A command's command, the flags at either level.
    for args in [
        ["--server", &url, "schedules", "list"],
        ["schedules", "--server", &url, "list"],
    ] {
        assert_eq!(sent(&args).0, "get /async/schedules http/1.1", "{args:?}");
    }
}

/// Shell completions offer `--server` and `--token` where they are taken (before the command,
/// and after a command that talks to a server), not after `serve`, `worker`, ... where they are
/// refused (exit 2), and describe them without the code's names.
#[test]
fn completions_offer_the_client_flags_only_where_they_are_taken() {
    let o = Command::new(BIN)
        .args(["completions", "fish"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let script = String::from_utf8_lossy(&o.stdout);
    let offered = |cond: &str, flag: &str| {
        script
            .lines()
            .any(|l| l.contains(&format!("-n \"{cond}")) && l.contains(&format!(" -l {flag} ")))
    };
    for flag in ["server", "token"] {
        assert!(offered("__fish_runyard_needs_command", flag), "{flag}");
        assert!(
            offered("__fish_runyard_using_subcommand jobs", flag),
            "{flag}"
        );
        for command in ["serve", "worker", "backup", "launch", "completions"] {
            let cond = format!("__fish_runyard_using_subcommand {command}\"");
            assert!(!offered(&cond, flag), "{flag} offered after {command}");
        }
    }
    assert!(offered("__fish_runyard_using_subcommand bench", "server"));
    assert!(!offered("__fish_runyard_using_subcommand bench", "token"));
    assert!(
        !script.contains("ServerArg"),
        "the code's names in a description"
    );
}

/// `runyard schedules --output json list`: the `--output` given to `schedules` holds for its
/// command too (it was parsed and ignored: `list` printed its table), as `--server` does.
#[test]
fn schedules_output_before_its_command_is_taken() {
    let (url, _seen) = recording_server();
    for args in [
        ["schedules", "--output", "json", "list", "--server", &url],
        ["schedules", "list", "--output", "json", "--server", &url],
    ] {
        let o = Command::new(BIN).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"));
        assert_eq!(v["next_cursor"], serde_json::Value::Null, "{args:?}: {out}");
    }
}

/// The flags before a command that talks to no server: refused naming them (exit 2), never
/// taken and ignored (`runyard --server URL serve` starting a server of its own, as if the
/// flag meant something to it). `bench --server` is bench's own (the server to measure) and the
/// same before the command; bench sends no token.
#[test]
fn client_flags_before_a_command_that_talks_to_no_server_are_refused() {
    let url = closed_port_url();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_dir = data.to_str().unwrap();
    for (args, flag) in [
        (
            vec!["--server", &url, "serve", "--data-dir", data_dir],
            "--server",
        ),
        (
            vec!["serve", "--data-dir", data_dir, "--token", "t"],
            "--token",
        ),
        (vec!["--server", &url, "completions", "bash"], "--server"),
        (vec!["--token", "t", "bench", "--jobs", "1"], "--token"),
    ] {
        let o = Command::new(BIN).args(&args).output().unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(
            e.contains(&format!("{flag} is for the commands that talk to a server")),
            "{args:?}: {e}"
        );
        assert!(!data.exists(), "{args:?}: serve started");
    }
    // The environment's are the client commands' own, not handed to the others: bench runs
    // without them (and the ceiling, which takes no --server, is not refused).
    let env = [
        ("RUNYARD_SERVER", "http://bob:hunter2@127.0.0.1:9"),
        ("RUNYARD_TOKEN", "t"),
    ];
    for args in [
        &["completions", "bash"][..],
        &["bench", "--http-ceiling", "--jobs", "20", "--warmup", "0"],
    ] {
        let o = Command::new(BIN).args(args).envs(env).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    // bench's own --server, before the command: taken as bench's (it refuses one with
    // credentials before sending anything).
    let o = Command::new(BIN)
        .args(["--server", "http://bob:hunter2@127.0.0.1:9", "bench"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("bench sends no credentials"), "{e}");
    // Nor ignored where bench takes no --server.
    let o = Command::new(BIN)
        .args(["--server", &url, "bench", "--http-ceiling"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("'--http-ceiling' cannot be used with '--server"),
        "{e}"
    );
    // The help says where the flags go, and lists them only where they are taken.
    let help = |args: &[&str]| stdout(&Command::new(BIN).args(args).output().unwrap());
    assert!(
        help(&["--help"]).contains("runyard --server URL jobs"),
        "{}",
        help(&["--help"])
    );
    assert!(help(&["status", "--help"]).contains("--server"));
    assert!(help(&["bench", "--help"]).contains("--server"));
    for cmd in ["serve", "worker", "backup", "completions"] {
        let h = help(&[cmd, "--help"]);
        assert!(
            !h.contains("--server") && !h.contains("--token"),
            "{cmd}: {h}"
        );
    }
    assert!(!help(&["bench", "--help"]).contains("--token"));
}

#[test]
fn token_new_refuses_bad_arguments_as_usage_naming_them() {
    let run = |args: &[&str]| {
        let o = Command::new(BIN)
            .arg("token")
            .arg("new")
            .args(args)
            .output()
            .unwrap();
        (o.status.code(), stdout(&o), stderr(&o))
    };
    for (args, names) in [
        (&["ci", "--scopes", "bogus"][..], "--scopes"),
        (&["", "--scopes", "jobs:read"][..], "NAME"),
        (
            &["ci", "--scopes", "jobs:read", "--types", "[x"][..],
            "--types",
        ),
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
        assert!(
            !out.contains("ry_"),
            "no token printed for a refused one: {out}"
        );
    }
    let (code, out, _) = run(&["ci", "--scopes", "jobs:read,jobs:read"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("scopes = [\"jobs:read\"]\n"), "{out}");
}

#[test]
fn jobs_pages_on_with_the_cursor_it_hints() {
    let s = serve(RUNNERS);
    for _ in 0..3 {
        let (st, v) = http_post(
            &format!("{}/async/jobs", s.url),
            serde_json::json!({"type": "runyard.noop"}),
        );
        assert_eq!(st, 202, "{v}");
    }
    let first = cli(&s.url, &["jobs", "--limit", "2"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(stdout(&first).lines().count(), 3, "a header and 2 rows");
    let hint = stderr(&first);
    let cursor = hint
        .split("--cursor ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no cursor hint: {hint}"))
        .to_string();
    let next = cli(&s.url, &["jobs", "--limit", "2", "--cursor", &cursor]);
    assert_eq!(next.status.code(), Some(0), "{}", stderr(&next));
    assert_eq!(
        stdout(&next).lines().count(),
        2,
        "a header and the third job"
    );
    assert!(!stderr(&next).contains("--cursor"), "{}", stderr(&next));
    let ids = |o: &Output| -> Vec<String> {
        stdout(o)
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    let (a, b) = (ids(&first), ids(&next));
    assert!(b.iter().all(|id| !a.contains(id)), "{a:?} {b:?}");
}

#[test]
fn files_put_of_a_fifo_or_a_bad_name_from_the_path_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("ff");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let id = uuid::Uuid::now_v7().to_string();
    let url = closed_port_url();
    // Bounded: before, opening the FIFO waited for a writer forever.
    let o = Command::new("timeout")
        .args(["20", BIN, "files", "put", &id, "outputs"])
        .arg(&fifo)
        .env("RUNYARD_SERVER", &url)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
    let o = Command::new("timeout")
        .args(["20", BIN, "submit", "runyard.noop", "--input"])
        .arg(format!("inputs={}", fifo.display()))
        .env("RUNYARD_SERVER", &url)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let odd = dir.path().join("we\u{1b}ird.txt");
    std::fs::write(&odd, "x").unwrap();
    let o = cli(
        &url,
        &["files", "put", &id, "outputs", odd.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--name"), "{}", stderr(&o));
}

#[test]
fn files_put_works_with_a_token_that_may_attach_but_not_read() {
    // `jobs:submit` grants attaching files; the client's question about the job's status
    // (`jobs:read`) is skipped when refused, and the upload itself decides.
    use sha2::Digest;
    let (admin, submit) = ("ry_cli_admin_0123456789", "ry_cli_submit_0123456789");
    let sha = |t: &str| hex::encode(sha2::Sha256::digest(t.as_bytes()));
    let s = serve(&format!(
        "{RUNNERS}\n[[auth.tokens]]\nname = \"admin\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n\n\
         [[auth.tokens]]\nname = \"sub\"\nsha256 = \"{}\"\nscopes = [\"jobs:submit\"]\n",
        sha(admin),
        sha(submit)
    ));
    let later = cli_env(
        &s.url,
        &["submit", "runyard.noop", "--run-at", "2099-01-01T00:00:00Z"],
        &[("RUNYARD_TOKEN", admin)],
    );
    assert_eq!(later.status.code(), Some(0), "{}", stderr(&later));
    let id = stdout(&later).trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.txt");
    std::fs::write(&f, "data").unwrap();
    let put = cli_env(
        &s.url,
        &["files", "put", &id, "outputs", f.to_str().unwrap()],
        &[("RUNYARD_TOKEN", submit)],
    );
    assert_eq!(put.status.code(), Some(0), "{}", stderr(&put));
    assert!(stdout(&put).contains("4 bytes"), "{}", stdout(&put));
}

/// `--wait-for KEY[:COUNT]`: a last part of digits is the count, so a key ending in `:digits` is
/// written with its count (`shard:2:1`); a count of 0 (`src:00`) is a usage error (exit 2, saying
/// how to write the key) before any request: no server runs for it. A signed part (`k:+5`) is
/// key text.
#[test]
fn wait_for_a_key_ending_in_digits_takes_its_count_and_a_count_of_0_is_refused() {
    for spec in ["src:00", "src:10001"] {
        let o = cli(
            "http://127.0.0.1:1",
            &["submit", "sh.ok", "--wait-for", spec],
        );
        assert_eq!(o.status.code(), Some(2), "{spec}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("from 1 to 10000") && stderr(&o).contains(&format!("`{spec}:1`")),
            "{spec}: {}",
            stderr(&o)
        );
    }
    let s = serve(RUNNERS);
    let run = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        cli_env(&s.url, &a, &[])
    };
    // A sign is not a digit (docs/cli.md): `k:+5` is the key `k:+5`, not five records of `k`.
    for (spec, key, needed) in [
        ("shard:2:1", "shard:2", 1),
        ("shard:2", "shard", 2),
        ("k:+5", "k:+5", 1),
        ("k:+5:3", "k:+5", 3),
    ] {
        let sub = json_doc(&run(&["submit", "sh.ok", "--wait-for", spec]));
        let id = sub["job_id"].as_str().unwrap().to_string();
        let job = json_doc(&run(&["status", &id]));
        assert_eq!(job["status"], "WAITING", "{job}");
        assert_eq!(
            (
                &job["wait"]["items"][0]["key"],
                &job["wait"]["items"][0]["needed"]
            ),
            (&serde_json::json!(key), &serde_json::json!(needed)),
            "{spec}: {job}"
        );
    }
}

/// `submit --no-notify` sends `"notify": null`: the job has no webhook, not even its type's
/// `[[notify.defaults]]` one, which a submit without it gets. A CLI user had no way to say so but
/// a `--batch` line (probe s53c F3). The default's host is never reached: it wants progress events
/// only, and these jobs report none.
#[test]
fn submit_no_notify_leaves_out_the_types_default_webhook() {
    let s = serve(&format!(
        "{RUNNERS}\n[[notify.defaults]]\ntypes = [\"sh.*\"]\n\
         url = \"https://hooks.example.invalid/runyard\"\nevents = [\"progress\"]\n"
    ));
    let notify_of = |extra: &[&str]| {
        let mut args = vec!["submit", "sh.ok", "--output", "json"];
        args.extend(extra);
        let sub = json_doc(&cli_env(&s.url, &args, &[]));
        let id = sub["job_id"].as_str().unwrap().to_string();
        let job = json_doc(&cli_env(&s.url, &["status", &id, "--output", "json"], &[]));
        job.get("notify").cloned()
    };
    assert_eq!(
        notify_of(&[]).map(|n| n["url"].clone()),
        Some(serde_json::json!("https://hooks.example.invalid/runyard"))
    );
    assert_eq!(notify_of(&["--no-notify"]), Some(serde_json::Value::Null));
    let o = cli(
        "http://127.0.0.1:1",
        &["submit", "--batch", "-", "--no-notify"],
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "a batch line says its own: {}",
        stderr(&o)
    );
}

/// A mistyped `RUNYARD_LOG` is refused naming it (exit 2), not read as a filter that silences
/// the log: `degub` would be a target, and every warning and error of the server would be
/// dropped (probe `docs`). Valid filters go on (here to the unreachable server: exit 3); a
/// `RUST_LOG` another program set is taken only when valid, never refused.
#[test]
fn a_mistyped_log_filter_is_refused_naming_it() {
    let url = closed_port_url();
    let run = |env: &[(&str, &str)]| {
        let mut c = Command::new(BIN);
        c.args(["jobs"])
            .env("RUNYARD_SERVER", &url)
            .env_remove("RUNYARD_TOKEN")
            .env_remove("RUNYARD_LOG")
            .env_remove("RUST_LOG");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    for bad in [
        "degub",
        "inf",
        "info,runyard=bogus",
        "warn, verbose",
        ",",
        " , ",
    ] {
        let o = run(&[("RUNYARD_LOG", bad)]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {o:?}");
        let e = stderr(&o);
        assert!(e.starts_with("error: RUNYARD_LOG: "), "{bad}: {e}");
    }
    let e = stderr(&run(&[("RUNYARD_LOG", "degub")]));
    assert!(e.contains("`degub` is not a log level"), "{e}");
    for good in [
        "warn",
        "INFO,runyard::store=debug",
        "runyard::api",
        " ",
        "debug ",
        " info, runyard=debug",
        "4",
    ] {
        let o = run(&[("RUNYARD_LOG", good)]);
        assert_eq!(o.status.code(), Some(3), "{good}: {o:?}");
    }
    let o = run(&[("RUST_LOG", "degub")]);
    assert_eq!(o.status.code(), Some(3), "RUST_LOG is not refused: {o:?}");
}

/// `runyard backup` of a running server, jobs being submitted meanwhile: the copy opens as a
/// data dir of its own holding every job submitted before it, its files (byte for byte) and the
/// same master key (the webhook key it derives is the same), while a plain copy of a running
/// data dir may not open (probe `embops`: 3 of 31 `cp -r` copies were corrupt). A destination
/// that is not empty, or a data dir without a store, is refused, nothing written.
#[test]
fn a_backup_of_a_running_server_opens_with_its_jobs_files_and_key() {
    let srv = serve(RUNNERS);
    let data = srv._dir.path().join("data");
    let input = srv._dir.path().join("in.txt");
    std::fs::write(&input, "backed-up bytes").unwrap();
    let submit = |args: &[&str]| {
        let o = cli(&srv.url, args);
        assert!(o.status.success(), "{o:?}");
        stdout(&o).trim().to_string()
    };
    let with_file = submit(&[
        "submit",
        "runyard.noop",
        "--input",
        &format!("inputs={}", input.display()),
        "--wait",
        "--output",
        "json",
    ]);
    let with_file: serde_json::Value = serde_json::from_str(&with_file).unwrap();
    let with_file = with_file["id"].as_str().expect("id").to_string();
    let before: Vec<String> = (0..20)
        .map(|_| submit(&["submit", "runyard.noop"]))
        .collect();
    // Writes go on during the backup.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let (url, stop) = (srv.url.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && n < 500 {
                let _ = cli(&url, &["submit", "runyard.noop"]);
                n += 1;
            }
        })
    };
    let bk = tempfile::tempdir().unwrap();
    let dest = bk.path().join("copy");
    let o = Command::new(BIN)
        .args(["backup", "--data-dir"])
        .arg(&data)
        .arg(&dest)
        .output()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    busy.join().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("master.key"), "{o:?}");
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&dest), 0o700);
    assert_eq!(mode(&dest.join("master.key")), 0o600);
    // Again into the same (now full) directory: refused; a data dir without a store: refused.
    let again = Command::new(BIN)
        .args(["backup", "--data-dir"])
        .arg(&data)
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(stderr(&again).contains("is not empty"), "{again:?}");
    let none = Command::new(BIN)
        .args(["backup", "--data-dir"])
        .arg(bk.path())
        .arg(bk.path().join("other"))
        .output()
        .unwrap();
    assert!(stderr(&none).contains("no runyard.db"), "{none:?}");
    assert!(!bk.path().join("other").exists());
    // An empty directory others may use is refused too (it would hand them the copy).
    let open = bk.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = Command::new(BIN)
        .args(["backup", "--data-dir"])
        .arg(&data)
        .arg(&open)
        .output()
        .unwrap();
    assert!(stderr(&o).contains("closed to others"), "{o:?}");
    assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);
    // SQLite's own check of the copy.
    let db = rusqlite::Connection::open(dest.join("runyard.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(db);

    // The copy as a data dir of its own.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    std::fs::write(bk.path().join("runyard.toml"), RUNNERS).unwrap();
    let restored = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(bk.path().join("runyard.toml"))
        .arg("--data-dir")
        .arg(&dest)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _restored = Killed(restored);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the restored server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for id in before.iter().chain([&with_file]) {
        let o = cli(&url, &["status", id]);
        assert!(o.status.success(), "{id} is in the backup: {o:?}");
    }
    let got = bk.path().join("got.txt");
    let o = cli(
        &url,
        &[
            "files",
            "get",
            &with_file,
            "inputs",
            "0",
            "-o",
            got.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "backed-up bytes");
    let key = |url: &str| {
        let (st, v) = http_post(
            &format!("{url}/async/notify/keys"),
            serde_json::json!({"url": "https://hooks.example.com/r"}),
        );
        assert_eq!(st, 200, "{v}");
        v["key"].as_str().expect("key").to_string()
    };
    assert_eq!(key(&url), key(&srv.url), "the same master key");
}

/// A child process killed when dropped (a failed assertion included).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `submit --wait` on a job whose record is gone (a Redis restarted without its data, a
/// FLUSHALL: here its row deleted by hand) ends with exit 4 saying the job is not found, within
/// about 30 s without an event, instead of waiting for ever on an event stream that only sends
/// keep-alives (probe `redisops`).
#[test]
fn submit_wait_ends_when_the_job_is_gone() {
    let srv = serve(
        r#"
[[runners]]
kind = "local"
types = ["sh.*"]
command = ["/bin/sh", "-c", "sleep 120"]
max_attempts = 1
"#,
    );
    let waiting = Command::new(BIN)
        .args(["submit", "sh.long", "--wait"])
        .env("RUNYARD_SERVER", &srv.url)
        .env_remove("RUNYARD_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut waiting = Killed(waiting);
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        assert!(Instant::now() < deadline, "the job did not start");
        let o = cli(&srv.url, &["jobs", "--output", "json"]);
        let page: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if let Some(j) = page["jobs"].as_array().and_then(|a| a.first()) {
            if j["status"] == "RUNNING" {
                break j["id"].as_str().unwrap().to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let db = rusqlite::Connection::open(srv._dir.path().join("data").join("runyard.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        db.execute("DELETE FROM jobs WHERE id = ?1", [&id]).unwrap(),
        1
    );
    drop(db);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = waiting.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "submit --wait still waits");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(waiting.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(4), "{err}");
    assert!(err.contains("404"), "{err}");
}

/// A server answering every request `status` with `Location: {target}/async/signals/kk` (a TLS
/// proxy's `return 301 https://...`).
fn redirect_server(status: &'static str, target: &str) -> String {
    let headers = format!("location: {target}/async/signals/kk\r\n");
    raw_server(status, Box::leak(headers.into_boxed_str()), "")
}

/// Through a redirect the CLI had followed it: `signal --payload` became a GET of the signal
/// list and printed it with exit 0, nothing written; `submit` said "no job_id" with exit 1 (the
/// job failed). A redirect is now an error (exit 3) naming where it points and the --server to
/// give, a password in it masked; nothing is sent to the Location.
#[test]
fn a_redirect_is_not_followed_and_names_the_server_to_give() {
    let list = raw_server(
        "200 OK",
        "content-type: application/json\r\n",
        r#"{"key":"kk","next_since":null,"signals":[]}"#,
    );
    let port = list.rsplit(':').next().unwrap();
    let id = uuid::Uuid::now_v7().to_string();
    for status in [
        "301 Moved Permanently",
        "302 Found",
        "307 Temporary Redirect",
    ] {
        let url = redirect_server(status, &list);
        for args in [
            vec!["signal", "kk", "--payload", "{}"],
            vec!["submit", "sh.ok"],
            vec!["status", &id],
            vec!["cancel", &id],
            vec!["schedules", "trigger", "nightly"],
            vec!["files", "get", &id, "inputs"],
        ] {
            let o = cli(&url, &args);
            let e = stderr(&o);
            assert_eq!(o.status.code(), Some(3), "{status} {args:?}: {e}");
            assert_eq!(stdout(&o), "", "{status} {args:?}");
            assert!(
                e.contains(&format!(
                    "redirected to http://127.0.0.1:{port}/async/signals/kk"
                )) && e.contains(&status[..3]),
                "{status} {args:?}: {e}"
            );
        }
        let o = cli(&url, &["signal", "kk"]);
        let e = stderr(&o);
        assert!(
            e.contains(&format!("as --server: http://127.0.0.1:{port}")),
            "{e}"
        );
    }
    // A password in the Location is masked.
    let url = redirect_server(
        "301 Moved Permanently",
        &list.replace("http://", "http://bob:hunter2secret@"),
    );
    let o = cli(&url, &["signal", "kk"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(
        !e.contains("hunter2secret") && e.contains("bob:***@"),
        "{e}"
    );
}

/// `submit --batch` answered a redirect said its lines "were sent and not confirmed: they may
/// have been stored", though runyard's API redirects nothing (what answered is not runyard: the
/// lines were not stored). It now says none was stored, and names the redirect as other
/// commands do (exit 3).
#[test]
fn a_batch_answered_a_redirect_says_nothing_was_stored() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.jsonl");
    std::fs::write(&file, "{\"type\": \"sh.ok\"}\n{\"type\": \"sh.ok\"}\n").unwrap();
    for status in ["301 Moved Permanently", "307 Temporary Redirect"] {
        let url = redirect_server(status, "http://127.0.0.1:1");
        let o = cli(&url, &["submit", "--batch", file.to_str().unwrap()]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "{status}: {e}");
        assert!(
            e.contains("lines 1-2 were not stored") && !e.contains("may have been stored"),
            "{status}: {e}"
        );
        assert!(
            e.contains("redirected to http://127.0.0.1:1/async/signals/kk")
                && e.contains(&status[..3]),
            "{status}: {e}"
        );
    }
}

/// A `--server` (or RUNYARD_SERVER) that does not parse was printed whole, password and all.
#[test]
fn a_server_that_is_not_a_url_is_shown_with_its_password_masked() {
    for bad in [
        "http://bob:hunter2secret@127.0.0.1:99999",
        "http://bob:hunter2secret@[::1x]:80",
        "http://bob:hunter2secret@bad host",
        "bob:hunter2secret@127.0.0.1",
    ] {
        let via_env = cli(bad, &["jobs"]);
        let via_flag = cli(&closed_port_url(), &["jobs", "--server", bad]);
        for o in [via_env, via_flag] {
            let e = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{bad}: {e}");
            assert!(!e.contains("hunter2secret"), "{bad}: {e}");
            assert!(e.contains("bob:***@"), "{bad}: {e}");
        }
    }
}

/// A job id past 64 KiB was "cannot reach the server ... builder error" (exit 3, retry later)
/// echoing the whole id; one of 60,000 characters the server's 400. A job id is a UUID: checked
/// before anything is sent (exit 2), and not echoed whole; so is a schedule name.
#[test]
fn a_bad_or_huge_job_id_or_name_is_a_usage_error_not_echoed_whole() {
    let url = closed_port_url();
    let huge = "a".repeat(70_000);
    let long = "b".repeat(60_000);
    for args in [
        vec!["status", huge.as_str()],
        vec!["cancel", long.as_str()],
        vec!["logs", "--follow", huge.as_str()],
        vec!["files", "get", huge.as_str(), "inputs"],
        vec!["status", "not-a-uuid"],
        vec!["schedules", "get", huge.as_str()],
    ] {
        let o = cli(&url, &args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{}: {e:.300}", args[0]);
        assert!(e.len() < 1_000, "{}: {} bytes: {e:.300}", args[0], e.len());
        assert!(!e.contains("cannot reach"), "{e:.300}");
    }
}

/// A server answering every request `status` with this Content-Type and an endless body (no
/// length, written until the connection breaks, at most `limit` bytes); the count of bytes it
/// wrote.
fn endless_server(
    status: &'static str,
    content_type: &'static str,
    limit: u64,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = written.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(5) {
            let Ok(mut conn) = conn else { continue };
            skip_request_head(&conn);
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n["
            );
            let chunk = "1,".repeat(32 << 10);
            let mut sent = 0u64;
            while sent < limit && conn.write_all(chunk.as_bytes()).is_ok() {
                sent += chunk.len() as u64;
                count.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        }
    });
    (url, written)
}

/// The CLI read any answer to its end before looking at it: an endless body grew it to 4 GB.
/// Now a JSON answer is read up to 64 MiB, anything else (and an error's body) up to 64 KiB:
/// exit 3, the connection dropped, the server's writes stop there.
#[test]
fn an_endless_answer_is_not_read_to_its_end() {
    const LIMIT: u64 = 256 << 20;
    for (status, kind, most) in [
        ("200 OK", "application/json", 96u64 << 20),
        ("200 OK", "text/html", 32 << 20),
        ("502 Bad Gateway", "application/json", 32 << 20),
    ] {
        let (url, written) = endless_server(status, kind, LIMIT);
        let o = cli(&url, &["jobs"]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "{status} {kind}: {e}");
        // The server's writes end once the CLI is gone (its last ones fill the socket buffers).
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = u64::MAX;
        loop {
            let now = written.load(std::sync::atomic::Ordering::SeqCst);
            if now == last || Instant::now() > deadline {
                break;
            }
            last = now;
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(
            last < most,
            "{status} {kind}: the server wrote {last} bytes before the CLI let go"
        );
    }
}

/// `submit --wait` gave up about 88 s after the server died, not the 60 s documented: its event
/// reader returned at its own 30 s deadline (no event), and the job read after it started a
/// minute of its own. Now every reader of a follow shares one count from the last answer.
#[test]
fn submit_wait_gives_up_a_minute_after_the_server_dies() {
    let mut srv = serve(RUNNERS);
    // A job waiting for a signal that never comes.
    let mut waiting = Command::new(BIN)
        .args(["submit", "sh.idle", "--wait-for", "never.comes", "--wait"])
        .env("RUNYARD_SERVER", &srv.url)
        .env_remove("RUNYARD_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr_pipe = waiting.stderr.take().unwrap();
    let waiting = Killed(waiting);
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr_pipe).lines() {
            let Ok(line) = line else { break };
            if line.contains("WAITING") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("submit --wait did not show the job waiting");
    let _ = srv.child.kill();
    let _ = srv.child.wait();
    let killed = Instant::now();
    let mut waiting = waiting;
    let status = loop {
        if let Some(s) = waiting.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(150),
            "submit --wait still waits"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = killed.elapsed();
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(
        took > Duration::from_secs(55) && took < Duration::from_secs(75),
        "gave up after {took:?}, not about 60 s: {err}"
    );
}

/// An event stream that sent one endless line (a server that is not runyard's, a proxy gone
/// wrong) was read into memory without end, reconnecting after each drop. `logs --follow` now
/// stops at the bound (1 MiB per event) with exit 3, naming the server.
#[test]
fn an_endless_event_line_ends_the_follow_at_the_bound() {
    use std::io::Write;
    let id = "01a22d2b-1c54-7698-be6b-3e5256c4d637";
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().take(20) {
            let Ok(mut conn) = conn else { continue };
            let path = request_path(&conn);
            if path.starts_with("/async/events/sse") {
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: "
                );
                let chunk = vec![b'x'; 1 << 20];
                for _ in 0..8 {
                    if conn.write_all(&chunk).is_err() {
                        break;
                    }
                }
                continue;
            }
            let body = if path.contains("/logs") {
                serde_json::json!({"job_id": id, "status": "RUNNING", "lines": [], "next": 0})
            } else {
                serde_json::json!({"id": id, "status": "RUNNING", "channel_id": "ch", "runs": []})
            }
            .to_string();
            answer_json(&mut conn, &body);
        }
    });
    let (code, out, err) = Running::start(follow_logs(id, &url)).end();
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(out, "");
    assert!(
        err.contains("ran past 1 MiB without its end") && err.contains(&url),
        "{err}"
    );
}

/// `bench --server URL` for five service jobs, which must fail: what it said.
fn bench_failing_at(url: &str) -> String {
    let o = Command::new(BIN)
        .args(["bench", "--server", url, "--only", "service", "--jobs", "5"])
        .args(["--warmup", "0", "--trickle-jobs", "0", "--timeout", "20s"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_ne!(o.status.code(), Some(0), "{e}");
    e
}

/// `bench --server` printed a URL's password in its report and followed redirects (a submit
/// turned into a GET at the Location). A `--server` with credentials is now refused before
/// anything is sent (bench sends none: exit 2, the password masked), and a redirect stops the
/// run naming where it points.
#[test]
fn bench_refuses_a_server_with_credentials_and_follows_no_redirect() {
    let o = Command::new(BIN)
        .args(["bench", "--server", "http://bob:hunter2secret@127.0.0.1:9"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        !e.contains("hunter2secret") && e.contains("bob:***@") && e.contains("no credentials"),
        "{e}"
    );
    // Without a scheme (it parses as the scheme `bob`), or not http(s): refused at once, as by
    // every client command (it was tried for 30 s, then printed whole).
    for bad in [
        "bob:hunter2secret@127.0.0.1:9",
        "localhost:9",
        "http://127.0.0.1:9/?q=1",
    ] {
        let o = Command::new(BIN)
            .args(["bench", "--server", bad])
            .output()
            .unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{bad}: {e}");
        assert!(!e.contains("hunter2secret"), "{e}");
    }
    let healthy = raw_server(
        "200 OK",
        "content-type: application/json\r\n",
        r#"{"store":"sqlite"}"#,
    );
    let port = healthy.rsplit(':').next().unwrap();
    let url = raw_server(
        "301 Moved Permanently",
        Box::leak(format!("location: {healthy}/health\r\n").into_boxed_str()),
        "",
    );
    let e = bench_failing_at(&url);
    assert!(
        e.contains(&format!(
            "redirected to http://127.0.0.1:{port}/health (HTTP 301)"
        )) && e.contains(&format!("as --server: http://127.0.0.1:{port}")),
        "{e}"
    );
    // A Location with credentials: the address suggested has none (it suggested `bob:***@`,
    // which bench refuses).
    let url = raw_server(
        "302 Found",
        Box::leak(
            format!("location: http://bob:hunter2@127.0.0.1:{port}/health\r\n").into_boxed_str(),
        ),
        "",
    );
    let e = bench_failing_at(&url);
    assert!(
        e.contains(&format!("as --server: http://127.0.0.1:{port}"))
            && !e.contains("bob")
            && !e.contains("hunter2"),
        "{e}"
    );
}

/// `bench --server` read every answer whole: a server answering a submit with an endless body
/// grew the bench's memory until it ended. Answers are now bounded as the client commands bound
/// theirs (64 MiB of a success): past that the run ends naming it, the rest unread.
#[test]
fn bench_reads_no_answer_past_its_bound() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = sent.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(20) {
            let Ok(mut conn) = conn else { continue };
            let path = read_request(&conn);
            if path == "/health" {
                let body = r#"{"store":"sqlite"}"#;
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                continue;
            }
            // 202 with a body that has no announced end: up to 96 MiB, until the reader leaves.
            let _ = write!(
                conn,
                "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{{\"job_id\": \""
            );
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..96 {
                if conn.write_all(&chunk).is_err() {
                    break;
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let o = Command::new(BIN)
        .args([
            "bench", "--server", &url, "--only", "service", "--jobs", "1",
        ])
        .args(["--connections", "1", "--warmup", "0", "--trickle-jobs", "0"])
        .args(["--timeout", "60s"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_ne!(o.status.code(), Some(0), "{e}");
    assert!(
        e.contains("submit: an answer (HTTP 202) over 65536 KiB: not runyard's"),
        "{e}"
    );
    // The rest was not read: the server could not send the whole 96 MiB.
    assert!(
        sent.load(std::sync::atomic::Ordering::SeqCst) < 96,
        "{} MiB read",
        sent.load(std::sync::atomic::Ordering::SeqCst)
    );
}

/// A server that takes the event stream's connection but sends no answer to it (runyard at
/// `api.max_connections` keeps new connections waiting; a hung proxy): `logs --follow` froze
/// 45 s a try on opening the stream, its log reads (twice a second) and job reads with it (probe
/// s53b). The stream's opening now holds no read: new lines come as they are written.
#[test]
fn a_stream_answered_late_holds_no_log_read() {
    let id = "01a25054-cdf6-71b0-a1a3-99b92a749bce";
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let start = Instant::now();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(400) {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let path = request_path(&conn);
                if path.starts_with("/async/events/sse") {
                    std::thread::sleep(Duration::from_secs(120)); // no answer
                    return;
                }
                // Line 1 at once, line 2 after a second; the job runs on.
                let t = start.elapsed();
                let body = if path.contains("/logs") {
                    let after: u64 = path
                        .split("after=")
                        .nth(1)
                        .and_then(|a| a.split('&').next()?.parse().ok())
                        .unwrap_or(0);
                    let top = if t > Duration::from_secs(1) { 2 } else { 1 };
                    let lines: Vec<_> = (after + 1..=top)
                        .map(|i| serde_json::json!({"seq": i, "stream": "stdout", "ts": 1, "line": format!("line {i}")}))
                        .collect();
                    serde_json::json!({"job_id": id, "status": "RUNNING", "lines": lines, "next": top.max(after)})
                } else {
                    serde_json::json!({"id": id, "status": "RUNNING", "channel_id": id, "type": "t.a", "attempt": 1, "runs": []})
                }
                .to_string();
                answer_json(&mut conn, &body);
            });
        }
    });
    let mut run = Running::start(follow_logs(id, &url));
    // Within 20 s (it came after 45 s). (The job's end, without its stream, is seen at the job
    // read after 30 s without an event: not waited for here.)
    run.wait_for("line 2");
    let _ = run.child.kill();
    let _ = run.child.wait();
    assert!(run.stdout().contains("line 1"), "{}", run.stdout());
}

/// `bench` without `--server` runs a server of its own, on a store of its own: the shell's
/// `RUNYARD_*` settings of the user's real server (its Redis, its data dir) went into it, and the
/// bench's jobs into the user's store (probe s53b). They no longer reach it.
#[test]
fn bench_runs_its_own_server_on_its_own_store_whatever_the_shell_says() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real-data");
    let o = Command::new(BIN)
        .args([
            "bench", "--only", "service", "--jobs", "20", "--warmup", "0",
        ])
        .args(["--trickle-jobs", "0", "--timeout", "60s"])
        .env("RUNYARD_DATA_DIR", &real)
        .env("runyard_redis", "redis://127.0.0.1:9") // in any case, as the config reads them
        .env_remove("RUNYARD_SERVER")
        .env_remove("RUNYARD_TOKEN")
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(
        !real.exists(),
        "the bench's server made a store in RUNYARD_DATA_DIR: {e}"
    );
}

/// A server that reads each request whole (head and body) and closes the connection without
/// answering: what a hung proxy or a server that died after storing looks like to a client.
fn silent_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().take(10) {
            let Ok(conn) = conn else { continue };
            read_request(&conn);
            // Dropped unanswered: the connection closes.
        }
    });
    url
}

/// A submit that was sent and not answered may have stored its job (probe s54b F3): before, the
/// CLI said "cannot reach the server", inviting a blind resubmit and a second job.
#[test]
fn a_submit_sent_and_not_answered_says_the_job_may_exist_and_names_the_idempotency_key() {
    let url = silent_server();
    let out = cli(&url, &["submit", "spam", "--args", "{\"n\":1}"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(!said.contains("cannot reach"), "{said}");
    assert!(
        said.contains("may have been stored") && said.contains("--idempotency-key"),
        "{said}"
    );
    // Nothing listening: nothing was sent, and the message says so as before.
    let out = cli(&closed_port_url(), &["submit", "spam"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
}

/// `bench --server` against a server that requires a token ran every scenario into 401s (about
/// 13,000 refused submits by default) and ended blaming the jobs (probe s54b F4): it now stops at
/// the first 401/403, saying bench sends no credentials, exit 4 (a refusal).
#[test]
fn bench_stops_at_the_first_refusal_of_a_server_requiring_a_token() {
    // runyard's `/health` needs no token; everything else is refused without one.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let submits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = submits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (status, body) = if request_path(&conn) == "/health" {
                ("200 OK", r#"{"store":"sqlite"}"#)
            } else {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let refusal =
                    r#"{"error":{"code":"unauthorized","message":"a token is required"}}"#;
                ("401 Unauthorized", refusal)
            };
            let _ = std::io::Write::write_all(
                &mut conn,
                format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    let started = Instant::now();
    let o = Command::new(BIN)
        .args([
            "bench",
            "--server",
            &url,
            "--jobs",
            "50",
            "--local-jobs",
            "10",
        ])
        .args(["--trickle-jobs", "10", "--warmup", "2", "--timeout", "60s"])
        .env("RUNYARD_TOKEN", "not-sent")
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{e}");
    assert!(
        e.contains("sends no credentials") && e.contains("RUNYARD_TOKEN") && e.contains("401"),
        "{e}"
    );
    assert!(!e.contains("did not succeed"), "{e}");
    assert!(!e.contains("burst") && !e.contains("trickle"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(30), "{e}");
    // At most one refused submit per connection, not the whole run's.
    assert!(
        submits.load(std::sync::atomic::Ordering::SeqCst) <= 32,
        "{e}"
    );
    // The trickle alone (1,000 submits at 200/s) stops at its first refusal too.
    let o = Command::new(BIN)
        .args([
            "bench", "--server", &url, "--only", "service", "--jobs", "0",
        ])
        .args([
            "--warmup",
            "0",
            "--trickle-jobs",
            "1000",
            "--timeout",
            "60s",
        ])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{e}");
    assert!(e.contains("sends no credentials"), "{e}");
    assert!(
        submits.load(std::sync::atomic::Ordering::SeqCst) < 100,
        "{e}"
    );
}

/// A bad `bench` flag value exited 1, not 2 as every bad flag (docs/cli.md), and `--trickle-rate
/// 0` was refused as not "between 0 and 100000" (probe s54b F5).
#[test]
fn bench_bad_flag_values_are_usage_errors_saying_the_real_range() {
    for (flag, value, says) in [
        ("--connections", "0", "between 1 and 4096"),
        ("--synchronous", "off", "`normal` or `full`"),
        ("--trickle-rate", "0", "above 0 and at most 100000"),
    ] {
        let o = Command::new(BIN)
            .args(["bench", flag, value, "--server", "http://127.0.0.1:9"])
            .output()
            .unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {e}");
        assert!(e.contains(says), "{flag} {value}: {e}");
    }
}

/// Ctrl-C on `bench` kept its server's temporary data dir (it grows with the run) and exited 1,
/// as a failed run does (probe s54b F10). An interrupt is not a failure to debug: the dir is
/// removed (unless `--keep`) and the exit code is 130, as `backup`'s on SIGINT.
#[test]
fn bench_interrupted_removes_its_data_dir_and_exits_130() {
    use std::io::BufRead;
    for keep in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["bench", "--only", "service", "--jobs", "1000000"])
            .args(["--warmup", "0", "--trickle-jobs", "0", "--timeout", "120s"])
            .env("TMPDIR", tmp.path())
            .env_remove("RUNYARD_SERVER")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if keep {
            cmd.arg("--keep");
        }
        let mut child = Killed(cmd.spawn().unwrap());
        let mut err = std::io::BufReader::new(child.0.stderr.take().unwrap());
        let mut said = String::new();
        while !said.contains("burst of") {
            assert!(err.read_line(&mut said).unwrap() > 0, "{said}");
        }
        let bench_dir = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("runyard-bench-")
            })
            .map(|e| e.path())
            .expect("the bench's data dir");
        send_signal(&child.0, libc::SIGINT);
        let st = ended_within(&mut child.0, Duration::from_secs(30)).expect("bench ended");
        let _ = std::io::Read::read_to_string(&mut err, &mut said);
        assert_eq!(st.code(), Some(130), "{said}");
        assert_eq!(bench_dir.exists(), keep, "keep {keep}: {said}");
    }
}

/// The CLI printed a bidirectional override raw in its own refusals and in the server's messages
/// it relays ("(invalid_request, HTTP 422)" then showed reversed) and in clap's "invalid value"
/// (probe s54b F7): shown escaped (`\u{202e}`), as in its text output.
#[test]
fn refusals_show_a_bidi_override_escaped() {
    let out = cli(&closed_port_url(), &["schedules", "get", "a\u{202e}b"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains("a\\u{202e}b") && !said.contains('\u{202e}'),
        "{said}"
    );
    let out = cli(&closed_port_url(), &["signal", "k\u{202e}x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(!said.contains('\u{202e}'), "{said}");
    // A server's message relayed as it came (an older server echoing the value raw).
    let url = raw_server(
        "422 Unprocessable Entity",
        "content-type: application/json\r\n",
        "{\"error\":{\"code\":\"invalid_request\",\"message\":\"bad type (got `spam\u{202e}x`)\"}}",
    );
    let out = cli(&url, &["submit", "spam"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains("spam\\u{202e}x") && !said.contains('\u{202e}'),
        "{said}"
    );
}
