//! Jobs cannot forge each other (docs/security.md): a real `runyard serve` process, real local
//! jobs.
//!
//! - A job running as `nobody` cannot open the master key, the database, nor the server's
//!   `/proc/PID/environ` and `/proc/PID/mem`, and still reports through its own hook.
//! - The server takes `RUNYARD_MASTER_KEY` out of its environment (also out of the block
//!   `/proc/PID/environ` shows) and is not dumpable: another process of its own (non-root) user
//!   cannot open its `/proc/PID/environ` or `mem`.
//! - The data directory is 0700 and everything in it private, after jobs and files.
//! - `rlimits` and `user` are applied to the job's processes.
//! - A job run as `nobody` re-opens its own output pipes (`/dev/stdout`, `/dev/stderr`).
//!
//! Switching users needs root (CI runs as root); run elsewhere, those tests say so and pass.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::child::{free_port, serve_command};

const BIN: &str = env!("CARGO_BIN_EXE_runyard");
const NOBODY: u32 = 65534;
const WAIT: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    // Safety: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("{test}: skipped, switching users needs root");
    true
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// A temporary directory other users can traverse (0755), so that only the data directory's own
/// mode keeps them out of it.
fn open_dir() -> tempfile::TempDir {
    let t = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    t
}

/// The runyard binary, where `nobody` can execute it (a copy when a parent directory of the
/// build is closed to other users).
fn bin_for_nobody(dir: &Path) -> PathBuf {
    let bin = Path::new(BIN);
    let reachable = bin
        .ancestors()
        .skip(1)
        .all(|d| d.as_os_str().is_empty() || mode(d) & 0o001 != 0)
        && mode(bin) & 0o001 != 0;
    if reachable {
        return bin.to_path_buf();
    }
    let copy = dir.join("runyard");
    std::fs::copy(bin, &copy).expect("copy the binary");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

/// A `runyard serve` child process, killed when dropped.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    /// Starts `runyard serve` on `config` with `env` added, as `as_user` (uid = gid) if given.
    async fn start(config: &Path, env: &[(&str, &str)], as_user: Option<u32>) -> Server {
        let port = free_port();
        let log = config.with_extension("log");
        let out = std::fs::File::create(&log).expect("server log");
        let mut cmd = serve_command(config, port, out);
        cmd.envs(env.iter().copied());
        if let Some(u) = as_user {
            cmd.uid(u).gid(u);
        }
        let child = cmd.spawn().expect("cannot start runyard serve");
        let mut s = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        s.wait_healthy().await;
        s
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_healthy(&mut self) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("server exited early ({st}):\n{}", self.log_text());
            }
            if let Ok(r) = reqwest::get(format!("{}/health", self.url)).await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < until,
                "server not healthy within 30s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, path: &str) -> Value {
        let r = reqwest::get(format!("{}{path}", self.url))
            .await
            .expect("GET");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("JSON")
    }

    async fn submit(&self, body: Value) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/async/jobs", self.url))
            .json(&body)
            .send()
            .await
            .expect("submit");
        assert_eq!(r.status(), 202, "submit {body}");
        let v: Value = r.json().await.expect("JSON");
        v["job_id"].as_str().expect("job_id").to_string()
    }

    async fn wait_terminal(&self, id: &str) -> Value {
        let until = Instant::now() + WAIT;
        loop {
            let j = self.get(&format!("/async/jobs/{id}")).await;
            if ["SUCCESS", "ERROR", "TIMEOUT", "CANCELLED"]
                .contains(&j["status"].as_str().unwrap_or(""))
            {
                return j;
            }
            assert!(
                Instant::now() < until,
                "job {id} not finished: {j}\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The job's log once a line starts with `prefix`, bounded. A job that reports its outcome
    /// through the hook (`runyard launch`) is terminal as soon as that report lands, while the
    /// runner's copy of the process's output is written when the process has ended.
    async fn logs_with(&self, id: &str, prefix: &str) -> Vec<String> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs(id).await;
            if logs.iter().any(|l| l.starts_with(prefix)) || Instant::now() > until {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn logs(&self, id: &str) -> Vec<String> {
        self.get(&format!("/async/jobs/{id}/logs?limit=10000"))
            .await["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|l| l["line"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tries to open `path` for reading as `uid` (uid = gid): `Ok` or the shell's error message.
fn open_as(uid: u32, path: &str) -> Result<(), String> {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg("exec 3<\"$1\"")
        .arg("probe")
        .arg(path)
        .uid(uid)
        .gid(uid)
        .output()
        .expect("run the probe");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Opens each path (argument 2 on) for reading and prints `OPENED path` or `DENIED path: error`;
/// `$PPID` is the server. Then hands over to `$1` (a command run with the rest of the line).
const PROBE: &str = r#"
echo "who $(id -u) $(id -g) [$(id -G)]"
echo "pwd $(pwd)"
# The job's parent is the server's spawner (runners/src/spawn.rs), whose parent is the server.
SERVER=$(cut -d' ' -f4 /proc/$PPID/stat)
echo "parent $PPID"
for f in "$DATA/master.key" "$DATA/runyard.db" "$DATA/runyard.db-wal" "$DATA/runyard.lock" \
         "/proc/$PPID/environ" "/proc/$PPID/mem" "/proc/$SERVER/environ" "/proc/$SERVER/mem" \
         "$CONTROL"; do
  if err=$( (exec 3<"$f") 2>&1 ); then echo "OPENED $f"; else echo "DENIED $f: $err"; fi
done
exec "$BIN" launch --output report=report.txt -- /bin/sh -c 'echo "made by $(id -u)" > report.txt'
"#;

#[tokio::test]
async fn a_job_run_as_nobody_cannot_read_the_servers_secrets_but_its_hook_works() {
    if skip_unless_root("a_job_run_as_nobody...") {
        return;
    }
    let t = open_dir();
    let data = t.path().join("data");
    let control = t.path().join("readable.txt");
    std::fs::write(&control, "anyone may read this").expect("control file");
    let bin = bin_for_nobody(t.path());
    let config = t.path().join("runyard.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = {data}
[worker]
poll_interval = "200ms"
[[runners]]
kind = "local"
types = ["probe"]
user = "nobody"
group = "nogroup"
command = ["/bin/sh", "-c", {probe}]
env = {{ DATA = {data}, BIN = {bin}, CONTROL = {control} }}
"#,
            data = toml_str(&data.to_string_lossy()),
            probe = toml_str(PROBE),
            bin = toml_str(&bin.to_string_lossy()),
            control = toml_str(&control.to_string_lossy()),
        ),
    )
    .expect("config");
    let server = Server::start(&config, &[], None).await;
    let spid = server.pid();
    let id = server
        .submit(json!({"type": "probe", "max_attempts": 1}))
        .await;
    let job = server.wait_terminal(&id).await;
    let control_line = format!("OPENED {}", control.display());
    let logs = server.logs_with(&id, &control_line).await;
    let text = logs.join("\n");
    // (b) The job reported through its own hook, as nobody: the file it made was uploaded.
    assert_eq!(job["status"], "SUCCESS", "{job}\n{text}");
    let files = &job["files"]["report"];
    assert_eq!(files.as_array().map(Vec::len), Some(1), "{job}");
    let body = reqwest::get(format!("{}/async/jobs/{id}/files/report/0", server.url))
        .await
        .expect("GET file")
        .text()
        .await
        .expect("body");
    assert_eq!(body.trim(), "made by 65534");
    assert!(
        logs.iter().any(|l| l == "who 65534 65534 [65534]"),
        "the job must run as nobody:nogroup with no other group:\n{text}"
    );
    // A private working directory, gone once the job ended.
    let pwd = logs
        .iter()
        .find_map(|l| l.strip_prefix("pwd "))
        .expect("pwd line");
    let tmp = std::env::temp_dir();
    assert!(
        Path::new(pwd).starts_with(&tmp)
            && Path::new(pwd)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("runyard-job-")),
        "{pwd}"
    );
    assert!(!Path::new(pwd).exists(), "{pwd} left behind");
    // (a) The secrets exist, and the job could open none of them.
    for f in ["master.key", "runyard.db", "runyard.db-wal", "runyard.lock"] {
        assert!(
            data.join(f).exists(),
            "{f} missing: the probe would prove nothing"
        );
    }
    let parent: u32 = logs
        .iter()
        .find_map(|l| l.strip_prefix("parent "))
        .and_then(|p| p.parse().ok())
        .expect("parent line");
    assert_ne!(
        parent, spid,
        "the job was forked by the server, not its spawner"
    );
    let secret_paths = [
        data.join("master.key").to_string_lossy().into_owned(),
        data.join("runyard.db").to_string_lossy().into_owned(),
        data.join("runyard.db-wal").to_string_lossy().into_owned(),
        data.join("runyard.lock").to_string_lossy().into_owned(),
        format!("/proc/{spid}/environ"),
        format!("/proc/{spid}/mem"),
        // The spawner, the job's parent: as closed as the server.
        format!("/proc/{parent}/environ"),
        format!("/proc/{parent}/mem"),
    ];
    for p in &secret_paths {
        let line = logs
            .iter()
            .find(|l| l.ends_with(p.as_str()) || l.contains(&format!(" {p}:")))
            .unwrap_or_else(|| panic!("no probe line for {p}:\n{text}"));
        assert!(
            line.starts_with(&format!("DENIED {p}:")) && line.contains("Permission denied"),
            "a job running as nobody could open {p}: {line}"
        );
    }
    // The probe itself works: a file open to everyone was opened.
    let c = control.to_string_lossy();
    assert!(
        logs.iter().any(|l| l == &format!("OPENED {c}")),
        "the probe cannot open anything:\n{text}"
    );
}

#[tokio::test]
async fn the_server_takes_the_master_key_out_of_its_environment_and_is_not_dumpable() {
    let t = open_dir();
    let key = format!("isolation-test-key-{:016x}", rand::random::<u64>());
    let bin = bin_for_nobody(t.path());
    let runner = format!(
        r#"[[runners]]
kind = "local"
types = ["echo"]
command = [{bin}, "launch", "runyard.echo"]
env_allow = ["PATH"]
"#,
        bin = toml_str(&bin.to_string_lossy())
    );

    // As the current user (root in CI): the key is gone from /proc/PID/environ, and it is the key
    // the server uses (no master.key was generated, and a job's hook calls are accepted).
    let data = t.path().join("data");
    let config = t.path().join("root.toml");
    std::fs::write(
        &config,
        format!("data_dir = {}\n{runner}", toml_str(&data.to_string_lossy())),
    )
    .expect("config");
    let server = Server::start(
        &config,
        &[("RUNYARD_MASTER_KEY", &key), ("UNRELATED_VAR", "stays")],
        None,
    )
    .await;
    let environ = std::fs::read(format!("/proc/{}/environ", server.pid())).expect("environ");
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains("UNRELATED_VAR=stays"),
        "the test reads the wrong block: {environ}"
    );
    assert!(
        !environ.contains(&key),
        "the key is still in /proc/PID/environ"
    );
    assert!(
        !environ.contains("RUNYARD_MASTER_KEY"),
        "the variable is still in /proc/PID/environ"
    );
    let id = server
        .submit(json!({"type": "echo", "args": {"x": 1}, "max_attempts": 1}))
        .await;
    let job = server.wait_terminal(&id).await;
    assert_eq!(job["status"], "SUCCESS", "{job}");
    assert_eq!(job["result"], json!({"x": 1}), "{job}");
    assert!(
        !data.join("master.key").exists(),
        "the key from the environment was not used"
    );
    drop(server);

    if skip_unless_root("the_server_..._is_not_dumpable (same-user part)") {
        return;
    }
    // As nobody: another process of nobody cannot open the server's environ or mem.
    let ndata = t.path().join("ndata");
    std::fs::create_dir(&ndata).expect("data dir");
    std::os::unix::fs::chown(&ndata, Some(NOBODY), Some(NOBODY)).expect("chown");
    std::fs::set_permissions(&ndata, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let config = t.path().join("nobody.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {}\n{runner}",
            toml_str(&ndata.to_string_lossy())
        ),
    )
    .expect("config");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let server = Server::start(&config, &[("RUNYARD_MASTER_KEY", &key)], Some(NOBODY)).await;
    let pid = server.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&NOBODY.to_string())),
        "the server does not run as nobody: {status}"
    );
    // A process that is not dumpable has its /proc files owned by root (task_dump_owner).
    let owner = std::fs::metadata(format!("/proc/{pid}/environ"))
        .expect("stat")
        .uid();
    assert_eq!(owner, 0, "the server is dumpable (PR_GET_DUMPABLE != 0)");
    for f in ["environ", "mem"] {
        let got = open_as(NOBODY, &format!("/proc/{pid}/{f}"));
        assert!(
            got.as_ref().is_err_and(|e| e.contains("Permission denied")),
            "a process of the server's own user could open /proc/{pid}/{f}: {got:?}"
        );
    }
    // The same probe opens the environ of an ordinary (dumpable) process of that user.
    let mut sleeper = Command::new("/bin/sleep")
        .arg("30")
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .expect("sleep");
    let control = open_as(NOBODY, &format!("/proc/{}/environ", sleeper.id()));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(control, Ok(()), "the probe cannot open anything");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ as root");
    assert!(!String::from_utf8_lossy(&environ).contains(&key));
    // The server still works as nobody.
    let id = server
        .submit(json!({"type": "echo", "args": {"y": 2}, "max_attempts": 1}))
        .await;
    let job = server.wait_terminal(&id).await;
    assert_eq!(job["status"], "SUCCESS", "{job}\n{}", server.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_set_under_other_spellings_leave_the_environment_too() {
    // The configuration reads RUNYARD_* names in any case, and whole tables: these configure
    // the server as RUNYARD_MASTER_KEY and RUNYARD_AUTH__JWT_SECRET do, and must leave its
    // environment (and the block /proc/PID/environ shows) as they do.
    let t = open_dir();
    let key = format!("isolation-mixed-key-{:016x}", rand::random::<u64>());
    let jwt = format!(
        "isolation-jwt-secret-{:016x}-0123456789",
        rand::random::<u64>()
    );
    let data = t.path().join("data");
    let config = t.path().join("mixed.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {}\n[[runners]]\nkind = \"local\"\ntypes = [\"x.*\"]\ncommand = [\"true\"]\n",
            toml_str(&data.to_string_lossy())
        ),
    )
    .expect("config");
    let auth = format!("{{jwt_secret=\"{jwt}\"}}");
    let server = Server::start(
        &config,
        &[
            ("RUNYARD_Master_Key", &key),
            ("RUNYARD_auth", &auth),
            ("UNRELATED_VAR", "stays"),
        ],
        None,
    )
    .await;
    let environ = std::fs::read(format!("/proc/{}/environ", server.pid())).expect("environ");
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains("UNRELATED_VAR=stays"),
        "the test reads the wrong block: {environ}"
    );
    for (what, secret) in [("master key", key.as_str()), ("JWT secret", jwt.as_str())] {
        assert!(
            !environ.contains(secret),
            "the {what} is still in /proc/PID/environ"
        );
    }
    assert!(
        !data.join("master.key").exists(),
        "the key from RUNYARD_Master_Key was not used"
    );
    drop(server);
}

#[tokio::test]
async fn the_data_dir_and_everything_in_it_are_private() {
    let t = open_dir();
    let data = t.path().join("data");
    // An existing data dir open to everyone is narrowed, with a warning.
    std::fs::create_dir(&data).expect("data dir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let work = t.path().join("work");
    std::fs::create_dir(&work).expect("work dir");
    let config = t.path().join("runyard.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = {data}
[[runners]]
kind = "local"
types = ["report"]
# One at a time: the jobs share `cwd` and its report.txt.
concurrency = 1
cwd = {work}
command = [{bin}, "launch", "--output", "report=report.txt", "--", "/bin/sh", "-c", "echo data > report.txt; echo logged"]
"#,
            data = toml_str(&data.to_string_lossy()),
            work = toml_str(&work.to_string_lossy()),
            bin = toml_str(BIN),
        ),
    )
    .expect("config");
    let server = Server::start(&config, &[], None).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            server
                .submit(json!({"type": "report", "max_attempts": 1}))
                .await,
        );
    }
    for id in &ids {
        let job = server.wait_terminal(id).await;
        assert_eq!(job["status"], "SUCCESS", "{job}");
    }
    assert!(
        server.log_text().contains("narrowed to 0700"),
        "no warning about the open data dir:\n{}",
        server.log_text()
    );
    // Files of every kind exist: the store, its WAL, the lock, the key, blobs.
    let mut files = Vec::new();
    let mut dirs = vec![data.clone()];
    let mut i = 0;
    while let Some(d) = dirs.get(i).cloned() {
        i += 1;
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(&data)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for want in ["master.key", "runyard.db", "runyard.db-wal", "runyard.lock"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("files/") && !n.starts_with("files/tmp/")),
        "no blob written: {names:?}"
    );
    for d in &dirs {
        assert_eq!(mode(d), 0o700, "{} is {:o}", d.display(), mode(d));
    }
    for f in &files {
        assert_eq!(
            mode(f) & 0o077,
            0,
            "{} is open to others ({:o})",
            f.display(),
            mode(f)
        );
    }
}

#[tokio::test]
async fn rlimits_and_user_are_applied_to_the_jobs_processes() {
    if skip_unless_root("rlimits_and_user...") {
        return;
    }
    let t = open_dir();
    let config = t.path().join("runyard.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = {data}
[[runners]]
name = "limits"
kind = "local"
types = ["limits"]
user = 65534
command = ["/bin/sh", "-c", "echo uid=$(id -u) gid=$(id -g); cat /proc/self/limits; dd if=/dev/zero of=big bs=1024 count=4096 2>/dev/null; echo dd=$?"]
rlimits = {{ nofile = 64, memory = "1GiB", fsize = "1MiB", nproc = 1000, cpu = "1h" }}
[[runners]]
name = "busy"
kind = "local"
types = ["busy"]
user = "nobody"
command = ["/bin/sh", "-c", "while :; do :; done"]
rlimits = {{ cpu = 1 }}
"#,
            data = toml_str(&t.path().join("data").to_string_lossy()),
        ),
    )
    .expect("config");
    let server = Server::start(&config, &[], None).await;
    let busy = server
        .submit(json!({"type": "busy", "max_attempts": 1, "timeout": 300}))
        .await;
    let id = server
        .submit(json!({"type": "limits", "max_attempts": 1}))
        .await;
    let job = server.wait_terminal(&id).await;
    let logs = server.logs(&id).await;
    let text = logs.join("\n");
    assert_eq!(job["status"], "SUCCESS", "{job}\n{text}");
    assert!(logs.iter().any(|l| l == "uid=65534 gid=65534"), "{text}");
    let limit = |name: &str| -> (String, String) {
        let l = logs
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no `{name}` in:\n{text}"));
        let f: Vec<&str> = l[name.len()..].split_whitespace().collect();
        (f[0].to_string(), f[1].to_string())
    };
    let both = |v: &str| (v.to_string(), v.to_string());
    assert_eq!(limit("Max open files"), both("64"), "{text}");
    assert_eq!(limit("Max address space"), both("1073741824"), "{text}");
    assert_eq!(limit("Max file size"), both("1048576"), "{text}");
    assert_eq!(limit("Max processes"), both("1000"), "{text}");
    assert_eq!(limit("Max cpu time"), both("3600"), "{text}");
    // Writing 4 MiB under a 1 MiB file size limit: dd is killed by SIGXFSZ (128 + 25).
    assert!(logs.iter().any(|l| l == "dd=153"), "{text}");
    // A busy loop under `cpu = 1` is killed (not timed out) after about a second of CPU.
    let started = Instant::now();
    let job = server.wait_terminal(&busy).await;
    assert_eq!(job["status"], "ERROR", "{job}");
    let msg = job["error"].to_string();
    assert!(
        msg.contains("signal 9") || msg.contains("signal 24"),
        "not killed by the CPU limit: {msg}"
    );
    assert!(started.elapsed() < WAIT);
}

/// The job's output pipes are its user's: a job run as `nobody` re-opens them by name
/// (`/dev/stdout`, `/dev/stderr`, which go through `/proc/self/fd/N`), and what it writes there
/// reaches its logs, each line in its stream. Before, the pipes stayed the root server's (mode
/// 0600) and every such open was refused (`Permission denied`).
#[tokio::test]
async fn a_job_run_as_nobody_writes_through_dev_stdout_and_dev_stderr() {
    if skip_unless_root("a_job_run_as_nobody_writes_through_dev_stdout...") {
        return;
    }
    let t = open_dir();
    let config = t.path().join("runyard.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = {data}
[worker]
poll_interval = "200ms"
[[runners]]
kind = "local"
types = ["pipes"]
user = "nobody"
command = ["/bin/sh", "-c", {script}]
"#,
            data = toml_str(&t.path().join("data").to_string_lossy()),
            script = toml_str(
                "set -e; echo plain-out; echo plain-err >&2; \
                 echo by-dev-stdout > /dev/stdout; echo by-dev-stderr > /dev/stderr; \
                 echo by-tee | tee /dev/stderr; echo uid=$(id -u) parent=$PPID"
            ),
        ),
    )
    .expect("config");
    let server = Server::start(&config, &[], None).await;
    let id = server
        .submit(json!({"type": "pipes", "max_attempts": 1}))
        .await;
    let job = server.wait_terminal(&id).await;
    let lines: Vec<(String, String)> = server
        .get(&format!("/async/jobs/{id}/logs?limit=10000"))
        .await["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or("").to_string();
            (s("stream"), s("line"))
        })
        .collect();
    let text = format!("{lines:?}");
    assert_eq!(job["status"], "SUCCESS", "{job}\n{text}");
    // Started by a spawner process (the fork path is `runners/src/local.rs`'s test).
    let who = format!("uid=65534 parent={}", server.pid());
    assert!(
        lines
            .iter()
            .any(|(s, l)| s == "stdout" && l.starts_with("uid=65534 parent=") && *l != who),
        "{text}"
    );
    for (stream, line) in [
        ("stdout", "plain-out"),
        ("stderr", "plain-err"),
        ("stdout", "by-dev-stdout"),
        ("stderr", "by-dev-stderr"),
        ("stdout", "by-tee"),
        ("stderr", "by-tee"),
    ] {
        assert!(
            lines.contains(&(stream.to_string(), line.to_string())),
            "no {stream} line `{line}`: {text}"
        );
    }
    assert!(
        !text.contains("Permission denied") && !text.contains("Permission"),
        "{text}"
    );
}

#[test]
fn user_on_a_server_that_cannot_switch_users_stops_serve() {
    if skip_unless_root("user_on_a_server_that_cannot_switch_users...") {
        return;
    }
    let t = open_dir();
    let data = t.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).expect("chown");
    let config = t.path().join("runyard.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {}\n[[runners]]\nkind = \"local\"\ntypes = [\"a\"]\ncommand = [\"true\"]\n\
             user = \"root\"\n",
            toml_str(&data.to_string_lossy())
        ),
    )
    .expect("config");
    let bin = bin_for_nobody(t.path());
    let log = t.path().join("serve.log");
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("run serve");
    // It must stop at once; a server that started would run until killed.
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| !s.success()),
        "serve did not refuse the config: {status:?}\n{err}"
    );
    assert!(
        err.contains("runners[0].user") && err.contains("needs a server running as root"),
        "{err}"
    );
}

#[test]
fn an_unknown_user_stops_serve_with_a_message_naming_the_key() {
    let t = open_dir();
    let config = t.path().join("runyard.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {}\n[[runners]]\nkind = \"local\"\ntypes = [\"a\"]\ncommand = [\"true\"]\n\
             user = \"no-such-user-runyard\"\n",
            toml_str(&t.path().join("data").to_string_lossy())
        ),
    )
    .expect("config");
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .output()
        .expect("run serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("runners[0].user") && err.contains("no such user `no-such-user-runyard`"),
        "{err}"
    );
}

/// Review of the isolation warning: a server without CAP_CHOWN cannot give a job run as another
/// user its output pipes, but the warning was skipped for any root server, as if root always
/// had CAP_CHOWN (a container started with `--cap-drop CHOWN` runs as root without it). Root
/// with CAP_CHOWN dropped from its bounding set (`setpriv`), a local runner with a `user`: the
/// server log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_without_cap_chown_is_warned_that_output_pipes_stay_the_servers() {
    if skip_unless_root("root_without_cap_chown_is_warned...") {
        return;
    }
    if !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("root_without_cap_chown_is_warned...: skipped, no /usr/bin/setpriv");
        return;
    }
    let t = open_dir();
    let config = t.path().join("runyard.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {}\n[[runners]]\nkind = \"local\"\ntypes = [\"a\"]\n\
             command = [\"/bin/sh\", \"-c\", \"true\"]\nuser = \"nobody\"\n",
            toml_str(&t.path().join("data").to_string_lossy())
        ),
    )
    .expect("config");
    let port = support::child::free_port();
    let log = t.path().join("serve.log");
    let out = std::fs::File::create(&log).expect("log");
    let mut child = Command::new("/usr/bin/setpriv")
        .args(["--bounding-set=-chown", "--inh-caps=-chown", "--"])
        .arg(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("run serve");
    let until = Instant::now() + Duration::from_secs(30);
    let healthy = loop {
        if child.try_wait().expect("wait").is_some() {
            break false;
        }
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/health")).await {
            if r.status().is_success() {
                break true;
            }
        }
        if Instant::now() > until {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(healthy, "serve did not start:\n{text}");
    assert!(
        text.contains("cannot give them their output pipes"),
        "no warning:\n{text}"
    );
}
