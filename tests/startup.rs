//! `runyard serve` / `runyard worker` start-up checks as a user meets them (a real process): a
//! configuration that could never work is refused with a message saying what to change; what may
//! still recover, or is only suspicious, gets a warning; and `serve --demo` runs the README's first
//! jobs, after which the CLI submits one more to it.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_runyard");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `runyard ARGS...` in a clean environment (no RUNYARD_*, no Kubernetes, HOME = the temp dir)
/// with `config` as runyard.toml in its working directory; it must exit by itself.
fn run(config: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("runyard.toml"), config).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    if args[0] == "serve" {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    cmd.current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("runyard {args:?} did not stop: it must refuse to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn refused(config: &str, args: &[&str], envs: &[(&str, &str)], wants: &[&str]) {
    let out = run(config, args, envs);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{config}: must be refused; stderr: {err}"
    );
    for w in wants {
        assert!(err.contains(w), "the message names {w:?}: {err}");
    }
}

/// Starts `runyard serve` (it must start), returns its stderr once it serves, then stops it.
fn started(config: &str, extra: &[&str], envs: &[(&str, &str)]) -> String {
    started_with_mode(config, 0o600, extra, envs)
}

/// [`started`] with the config file's mode.
fn started_with_mode(config: &str, mode: u32, extra: &[&str], envs: &[(&str, &str)]) -> String {
    use std::os::unix::fs::PermissionsExt;
    started_with_file(
        config,
        |file| std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap(),
        extra,
        envs,
    )
}

/// Waits (20 s at most) until `child`, a `serve` writing its log to `log`, listens on `port`;
/// kills it and fails with its log when it exits or does not listen in time.
fn wait_listening(child: &mut std::process::Child, port: u16, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "serve did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`started`], `prepare` changing the config file (its mode, its owner) before the start.
fn started_with_file(
    config: &str,
    prepare: impl FnOnce(&std::path::Path),
    extra: &[&str],
    envs: &[(&str, &str)],
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runyard.toml");
    std::fs::write(&file, config).unwrap();
    prepare(&file);
    let port = free_port();
    let log = dir.path().join("stderr");
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(extra)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_listening(&mut child, port, &log);
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    std::fs::read_to_string(&log).unwrap()
}

const SHELL: &str = "[[runners]]\nkind = \"local\"\ntypes = [\"sh.*\"]\ncommand = [\"true\"]\n";

#[test]
fn serve_without_runners_refuses_and_says_how_to_add_one() {
    refused(
        "",
        &["serve"],
        &[],
        &["no runners", "[[runners]]", "--demo", "--allow-no-runners"],
    );
    let err = started("", &["--allow-no-runners"], &[]);
    assert!(err.contains("runyard listening"), "{err}");
}

#[test]
fn a_redis_password_on_the_command_line_is_refused() {
    // Every user of the host reads a command line (`ps`): the password must come another way.
    // The Redis port is closed: the refusal comes before any connection.
    let closed = free_port();
    let with_password = [
        ("serve", format!("redis://:hunter2-pw@127.0.0.1:{closed}/0")),
        (
            "worker",
            format!("redis://app:hunter2-pw@127.0.0.1:{closed}"),
        ),
        (
            "serve",
            "unix:///tmp/no-such-redis.sock?pass=hunter2-pw".to_string(),
        ),
        // TLS: read as a Redis URL (it was "not a Redis URL" in a build without TLS).
        (
            "worker",
            format!("rediss://app:hunter2-pw@127.0.0.1:{closed}"),
        ),
    ];
    for (cmd, url) in &with_password {
        let out = run(SHELL, &[cmd, "--redis", url], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cmd} {url}: must be refused: {err}");
        for w in [
            "`--redis`",
            "password",
            "RUNYARD_REDIS",
            "configuration file",
        ] {
            assert!(
                err.contains(w),
                "{cmd} {url}: the message names {w:?}: {err}"
            );
        }
        assert!(
            !err.contains("hunter2"),
            "the password is not repeated: {err}"
        );
    }
    // What the driver cannot read is refused without being repeated.
    let out = run(SHELL, &["serve", "--redis", "redis://:hunter2@[::1"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a Redis URL"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn overlapping_runner_types_are_refused() {
    let config = format!(
        "{SHELL}[[runners]]\nkind = \"local\"\ntypes = [\"sh.daily\"]\ncommand = [\"true\"]\n"
    );
    refused(
        &config,
        &["serve"],
        &[],
        &[
            "runners[0].types",
            "runners[1].types",
            "sh.*",
            "sh.daily",
            "overlap",
        ],
    );
    refused(
        &config,
        &[
            "worker",
            "--redis",
            "redis://127.0.0.1:1",
            "--public-url",
            "http://127.0.0.1:1",
        ],
        &[("RUNYARD_MASTER_KEY", "0123456789abcdef0123")],
        &["overlap"],
    );
}

#[test]
fn a_service_type_without_a_function_is_refused() {
    refused(
        "[[runners]]\nkind = \"service\"\ntypes = [\"thumbnail\"]\n",
        &["serve"],
        &[],
        &["runners[0].types", "thumbnail", "runyard.noop"],
    );
    // Built-in functions are found, globs included.
    let err = started(
        "[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n",
        &[],
        &[],
    );
    assert!(err.contains("runyard listening"), "{err}");
}

#[test]
fn a_kube_runner_without_a_cluster_is_refused() {
    refused(
        "[[runners]]\nkind = \"kube\"\ntypes = [\"k.*\"]\nimage = \"busybox\"\n",
        &["serve"],
        &[],
        &["runners[0]", "Kubernetes", "kubeconfig"],
    );
}

#[test]
fn a_silent_docker_engine_a_missing_cwd_and_unknown_variables_only_warn() {
    let config = format!(
        "{SHELL}[[runners]]\nkind = \"docker\"\ntypes = [\"d.*\"]\nimage = \"busybox\"\n\
         docker_host = \"unix:///nonexistent/docker.sock\"\n\
         [[runners]]\nkind = \"local\"\ntypes = [\"c.*\"]\ncommand = [\"true\"]\n\
         cwd = \"/nonexistent/dir\"\n"
    );
    let err = started(
        &config,
        &[],
        &[("RUNYARD_LISTN", "127.0.0.1:9"), ("RUNYARD_LOG", "info")],
    );
    assert!(err.contains("runyard listening"), "{err}");
    assert!(
        err.contains("Docker engine does not answer") && err.contains("runners[1]"),
        "{err}"
    );
    assert!(
        err.contains("RUNYARD_LISTN") && err.contains("did you mean `RUNYARD_LISTEN`"),
        "{err}"
    );
    // A local runner's working directory that is not there (yet).
    assert!(
        err.contains("`runners[2].cwd` is not a directory") && err.contains("/nonexistent/dir"),
        "{err}"
    );
    // Known variables are not reported.
    assert!(!err.contains("`RUNYARD_LOG` is not"), "{err}");
}

#[test]
fn a_config_file_with_secrets_that_others_may_read_draws_a_warning() {
    let config =
        format!("{SHELL}[auth]\njwt_secret = \"a-jwt-secret-of-at-least-32-bytes-0123\"\n");
    let err = started_with_mode(&config, 0o644, &[], &[]);
    assert!(err.contains("runyard listening"), "{err}");
    assert!(
        err.contains("other users may read it")
            && err.contains("auth.jwt_secret")
            && err.contains("runyard.toml")
            && err.contains("644"),
        "{err}"
    );
    assert!(
        !err.contains("a-jwt-secret-of-at-least"),
        "the secret itself is not logged: {err}"
    );
    for private in [0o600, 0o640] {
        let err = started_with_mode(&config, private, &[], &[]);
        assert!(
            !err.contains("other users may read it"),
            "{private:o}: {err}"
        );
    }
    let err = started_with_mode(&config, 0o620, &[], &[]);
    assert!(
        err.contains("other users may read it"),
        "group-writable: {err}"
    );
    let err = started_with_mode(SHELL, 0o644, &[], &[]);
    assert!(
        !err.contains("other users may read it"),
        "no secret in it: {err}"
    );

    // Group-readable (0640) is fine, unless a local runner runs its jobs as a user of that
    // group: the job could read the file (root only: a runner's `user` needs it).
    if unsafe { libc::geteuid() } == 0 {
        let as_nobody = format!(
            "{config}[[runners]]\nname = \"untrusted\"\nkind = \"local\"\ntypes = [\"u.*\"]\n\
             command = [\"true\"]\nuser = \"nobody\"\n"
        );
        let nobody_gid = nix_gid_of_nobody();
        let chgrp = |gid: u32| {
            move |file: &std::path::Path| {
                use std::os::unix::fs::PermissionsExt;
                std::os::unix::fs::chown(file, None, Some(gid)).unwrap();
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o640)).unwrap();
            }
        };
        let err = started_with_file(&as_nobody, chgrp(nobody_gid), &[], &[]);
        assert!(
            err.contains("its group holds the user")
                && err.contains("untrusted")
                && err.contains("auth.jwt_secret"),
            "{err}"
        );
        let err = started_with_file(&as_nobody, chgrp(0), &[], &[]);
        assert!(
            !err.contains("its group holds the user"),
            "root's group: {err}"
        );
    }
}

/// The primary group of user `nobody` (from /etc/passwd).
fn nix_gid_of_nobody() -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"nobody")).then(|| f[3].parse().unwrap())
        })
        .expect("user nobody")
}

#[test]
fn serve_demo_runs_its_jobs_and_takes_one_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = dir.path().join("stdout");
    let mut child = Command::new(BIN)
        .args(["serve", "--demo", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let t = std::fs::read_to_string(&out).unwrap_or_default();
        if t.contains("Try, from another terminal") {
            break t;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not finish its jobs: {t}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for ty in ["demo.shell", "demo.python", "demo.greet"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("demo job {ty} ")) && l.contains(": SUCCESS")),
            "{ty}: {text}"
        );
    }
    assert!(text.contains("counted 6 words"), "{text}");
    // The hint names this server (not the client's default port).
    assert!(text.contains(&format!("--wait --server {url}\n")), "{text}");
    let cli = Command::new(BIN)
        .args([
            "submit",
            "demo.greet",
            "--args",
            r#"{"name":"ci"}"#,
            "--wait",
        ])
        .env("RUNYARD_SERVER", &url)
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let shown = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{shown} {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(shown.contains("hello, ci!"), "{shown}");
    // Nothing was written to the working directory: the demo's data is in a temporary dir.
    assert!(!dir.path().join("runyard-data").exists());
}

#[test]
fn serve_demo_with_auth_on_says_why_its_jobs_are_refused_and_runs_them_with_a_token() {
    // With `[auth]` configured the demo's jobs need a token: without RUNYARD_TOKEN the demo says
    // at once that the server refused them (401) and how to give one, instead of waiting on a
    // job that was never accepted; with it, the jobs run.
    use sha2::Digest;
    let token = "ry_demo_test_token_0123456789";
    let sha = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let config = format!(
        "[[auth.tokens]]\nname = \"demo\"\nsha256 = \"{sha}\"\nscopes = [\"jobs:submit\", \"jobs:read\"]\n"
    );
    let run = |with_token: bool, wait_for: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("runyard.toml"), &config).unwrap();
        let port = free_port();
        let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--demo", "--listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir.path())
            .env_remove("RUNYARD_TOKEN")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        if with_token {
            cmd.env("RUNYARD_TOKEN", token);
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let texts = loop {
            let o = std::fs::read_to_string(&out).unwrap_or_default();
            let e = std::fs::read_to_string(&err).unwrap_or_default();
            if o.contains(wait_for) || e.contains(wait_for) || Instant::now() > deadline {
                break (o, e);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let _ = child.kill();
        let _ = child.wait();
        texts
    };
    let (out, err) = run(false, "could not be run");
    assert!(
        err.contains("could not be run"),
        "stdout: {out}\nstderr: {err}"
    );
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("set RUNYARD_TOKEN"), "{err}");
    assert!(!out.contains(": SUCCESS"), "{out}");

    let (out, err) = run(true, "Try, from another terminal");
    assert!(
        !err.contains(token) && !out.contains(token),
        "the token is never printed"
    );
    for ty in ["demo.shell", "demo.python", "demo.greet"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("demo job {ty} ")) && l.contains(": SUCCESS")),
            "{ty}: stdout: {out}\nstderr: {err}"
        );
    }
}

/// The README's configuration example (its TOML block with `listen`).
fn readme_configuration() -> &'static str {
    include_str!("../README.md")
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("listen ="))
        .expect("the README shows a configuration with `listen`")
}

/// The README's configuration example starts `serve` as written (only `--listen` is added, for a
/// free port): a newcomer copies it first.
#[test]
fn the_readme_configuration_starts_as_written() {
    let block = readme_configuration();
    let log = started(block, &[], &[]);
    assert!(!log.contains("ERROR") && !log.contains("WARN"), "{log}");
}

/// The README's configuration example, started from the repository's root as the README says,
/// runs the example job it names to SUCCESS (`submit report.daily --wait`): the command path and
/// the `PYTHONPATH` it shows are real (it once named a `jobs/report.py` that does not exist, and
/// a newcomer's first job burnt its three attempts on "can't open file").
#[test]
fn the_readme_configuration_runs_its_example_job_from_the_repository_root() {
    let block = readme_configuration();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runyard.toml");
    std::fs::write(&config, block).unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUNYARD_SERVER")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    wait_listening(&mut child, port, &dir.path().join("stderr"));
    let cli = Command::new(BIN)
        .args([
            "submit",
            "report.daily",
            "--args",
            r#"{"day":"2026-11-30"}"#,
        ])
        .args(["--wait", "--output", "json", "--server", &url])
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let shown = String::from_utf8_lossy(&cli.stdout);
    let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    assert!(cli.status.success(), "{shown} {log}");
    let job: serde_json::Value = serde_json::from_str(&shown).expect("the final job as JSON");
    assert_eq!(job["status"], "SUCCESS", "{shown}");
    assert_eq!(job["attempt"], 1, "{shown}");
}

/// A data dir holding a database but not the master.key it was made with (lost, or moved) is
/// refused, not given a new key: a new one would make every job secret, signed URL and webhook
/// signature made before stop verifying. A new data dir gets its key as before.
#[test]
fn a_database_without_its_master_key_is_refused_not_given_a_new_one() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("runyard.db"), b"SQLite format 3\0").unwrap();
    let config = format!(
        "data_dir = {:?}\n[[runners]]\nkind = \"service\"\ntypes = [\"runyard.*\"]\n",
        data.path().display().to_string()
    );
    refused(&config, &["serve"], &[], &["no master.key", "restore"]);
    assert!(
        !data.path().join("master.key").exists(),
        "no key was made for the database"
    );
    let keys: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("master.key"))
        .collect();
    assert!(keys.is_empty(), "no key file, whole or partial: {keys:?}");

    // The other way round, a key without its database (an empty file): it starts, with a
    // warning that the store is empty.
    std::fs::write(data.path().join("runyard.db"), b"").unwrap();
    std::fs::write(data.path().join("master.key"), "k".repeat(64)).unwrap();
    let err = started(&config, &[], &[]);
    assert!(err.contains("master.key but no database"), "{err}");
}

/// Secrets from the environment are taken as strings (`RUNYARD_AUTH__JWT_SECRET`,
/// `RUNYARD_MASTER_KEY`): values shaped like a list start the server instead of failing with
/// "expected a string", and the secret is the value as it always was (surrounding whitespace
/// trimmed, as a Secret made from a file needs): a JWT signed with it is accepted, one signed
/// with the untrimmed text is not. A value wrapped in double quotes (which earlier versions
/// unwrapped) is refused naming the variable, never taken with its quotes (a changed key).
#[test]
fn secrets_from_the_environment_are_taken_as_strings() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let jwt = |secret: &str| {
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let claims = serde_json::json!({"scope": "jobs:read", "exp": exp});
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let secret = "[not a list] secret, 32 bytes and more";
    let padded = format!("  {secret}\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("runyard.toml"), SHELL).unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env("RUNYARD_AUTH__JWT_SECRET", &padded)
        .env("RUNYARD_MASTER_KEY", "[0123456789abcdef0123456789abcdef]\n")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    wait_listening(&mut child, port, &dir.path().join("stderr"));
    // The status code of `GET /async/whoami` with `token`.
    let whoami = |token: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let req = format!(
            "GET /async/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer.split(' ').nth(1).unwrap_or_default().to_string()
    };
    let trimmed = whoami(&jwt(secret));
    let untrimmed = whoami(&jwt(&padded));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(trimmed, "200", "a JWT signed with the trimmed value");
    assert_eq!(untrimmed, "401", "a JWT signed with the untrimmed text");
    // Wrapped in quotes: refused, named, the value not shown.
    let quoted = format!("\"{secret}\"");
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data2"))
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("RUNYARD_AUTH__JWT_SECRET", &quoted)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("RUNYARD_AUTH__JWT_SECRET") && err.contains("double quotes"),
        "{err}"
    );
    assert!(!err.contains("not a list"), "the value is not shown: {err}");
}

/// A stop signal while `serve` or `worker` retries an unreachable Redis at start (`store.retry`,
/// 30 s here) ends the process at once, with exit code 0 as a stop after the start does: nothing
/// ran yet, so there is nothing to drain. Before, the signals (even two) were held until the
/// retry gave up: the probe's process lived 30 s and then exited 1 (probe s48, finding 9).
#[test]
fn a_stop_signal_while_redis_is_retried_at_start_ends_the_process_at_once() {
    // Nothing listens there: every connect is refused, and retried.
    let port = free_port();
    let config = format!(
        "redis = \"redis://127.0.0.1:{port}/0\"\nmaster_key = \"a master key of 32 characters or more\"\n\
         public_url = \"http://127.0.0.1:9\"\n[store]\nretry = \"30s\"\n{SHELL}"
    );
    for (command, signal) in [("serve", libc::SIGINT), ("worker", libc::SIGTERM)] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runyard.toml");
        std::fs::write(&file, &config).unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let log = dir.path().join("stderr");
        let mut cmd = Command::new(BIN);
        cmd.arg(command);
        if command == "serve" {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = cmd
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let said = || std::fs::read_to_string(&log).unwrap_or_default();
        let until = Instant::now() + Duration::from_secs(20);
        while !said().contains("redis not reachable yet") {
            if Instant::now() > until || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{command}: no retry of the start seen:\n{}", said());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Safety: a plain signal to our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let sent = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if sent.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{command}: still retrying 10 s after the signal:\n{}",
                    said()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(0), "{command}: {status}\n{}", said());
        assert!(
            said().contains("stopped during the start"),
            "{command}: says so:\n{}",
            said()
        );
    }
}
