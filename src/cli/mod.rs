//! The `runyard` command line: `serve`, the client commands, and `bench`.

pub mod answer;
pub mod backup;
pub mod bench;
pub mod client;
pub mod client_flags;
pub mod completions;
pub mod exit;
pub mod files;
pub mod follow;
pub mod jobs;
pub mod launch;
mod log_tail;
pub mod output;
pub mod schedules;
pub mod signal;
mod sse;
pub mod stop;
pub mod submit;
pub mod submit_batch;
pub mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};
use crate::server::ServerBuilder;
use runyard_runners::service::ServiceRegistry;
pub use stop::{shutdown_signal, stop_signal};

/// runyard: an async job service.
#[derive(Debug, Parser)]
#[command(name = "runyard", version, about, after_help = client_flags::HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Cmd,
    #[command(flatten)]
    client_flags: client_flags::ClientFlags,
    /// Log format on stderr: `text` (colours only on a terminal) or `json` (one object per line).
    #[arg(
        long,
        global = true,
        env = "RUNYARD_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: crate::logging::LogFormat,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the API, a worker and the scheduler in one process.
    Serve(ServeArgs),
    /// Run a worker node (worker, reaper, scheduler; no HTTP) on the Redis the API uses.
    Worker(WorkerArgs),
    /// Submit a job; prints its id (with --wait, follows it and prints the final job).
    Submit(submit::SubmitArgs),
    /// Print a job as JSON.
    Status(client::IdArgs),
    /// Print a job's logs.
    Logs(client::LogsArgs),
    /// Cancel a job.
    Cancel(client::IdArgs),
    /// Retry a job that did not succeed.
    Retry(client::IdArgs),
    /// List jobs, newest first.
    Jobs(jobs::JobsArgs),
    /// Cron schedules: list (default), get, pause, resume, trigger.
    Schedules(schedules::SchedulesArgs),
    /// Write a readiness signal: `runyard signal KEY [--payload JSON] [--id ID]`.
    Signal(signal::SignalArgs),
    /// A job's files: `files get JOB PROPERTY [INDEX] [-o FILE]`, `files put JOB PROPERTY FILE`.
    Files(files::FilesArgs),
    /// Print a shell completion script: `runyard completions bash|zsh|fish`.
    Completions(completions::CompletionsArgs),
    /// Measure end-to-end throughput and submit-to-start latency.
    Bench(bench::BenchArgs),
    /// The bare HTTP server of `bench --http-ceiling` (prints its port; serves until killed).
    #[command(hide = true)]
    BenchBareServer,
    /// API tokens: `token new NAME --scopes ...` prints a token once and its config lines.
    Token(token::TokenArgs),
    /// Run inside a job: a registered operation (`launch OP`) or a command (`launch -- CMD ...`),
    /// reporting through the signed hook.
    Launch(launch::LaunchArgs),
    /// Copy an embedded store (database, master.key, files) into DEST while its server runs.
    Backup(backup::BackupArgs),
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file (default ./runyard.toml when present).
    #[arg(long, env = "RUNYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, e.g. 127.0.0.1:7070.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory of the embedded store.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Redis URL (scale-out backend).
    #[arg(long)]
    redis: Option<String>,
    /// The URL jobs use to reach this server.
    #[arg(long)]
    public_url: Option<String>,
    /// Run only the API and scheduler, no worker (with `redis`: workers are `runyard worker`
    /// nodes; on the embedded store no job would run).
    #[arg(long)]
    no_worker: bool,
    /// Listen on a non-loopback address without [auth] (something in front authenticates).
    #[arg(long)]
    insecure_no_auth: bool,
    /// Start even when no runner is configured (every submit is then refused with 422).
    #[arg(long)]
    allow_no_runners: bool,
    /// Add demo runners (shell, Python, a Rust function), use a fresh temporary data dir unless
    /// --data-dir is given, run one demo job of each, then keep serving.
    #[arg(long)]
    demo: bool,
}

impl ServeArgs {
    /// Loads the configuration these flags point at.
    pub fn load(&self) -> Result<Config, crate::config::ConfigError> {
        let (path, required) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from("runyard.toml"), false),
        };
        refuse_redis_password(self.redis.as_deref())?;
        let config = Config::load(
            &path,
            required,
            &Overrides {
                listen: self.listen,
                data_dir: self.data_dir.clone(),
                redis: self.redis.clone(),
                public_url: self.public_url.clone(),
            },
        )?;
        crate::security::warn_if_config_readable(&path);
        Ok(config)
    }
}

/// Flags of `worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Config file (default ./runyard.toml when present).
    #[arg(long, env = "RUNYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Redis URL (required: the API and the workers share it).
    #[arg(long)]
    redis: Option<String>,
    /// The API's URL, which jobs report to.
    #[arg(long)]
    public_url: Option<String>,
    /// Data directory (files of local jobs' working state; the store is in Redis).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve `/health/live` and `/health/ready` here (for Kubernetes probes), e.g. 0.0.0.0:7071.
    #[arg(long)]
    health_listen: Option<SocketAddr>,
}

impl WorkerArgs {
    /// Loads the configuration these flags point at.
    pub fn load(&self) -> Result<Config, crate::config::ConfigError> {
        let (path, required) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from("runyard.toml"), false),
        };
        refuse_redis_password(self.redis.as_deref())?;
        let config = Config::load(
            &path,
            required,
            &Overrides {
                redis: self.redis.clone(),
                public_url: self.public_url.clone(),
                data_dir: self.data_dir.clone(),
                ..Default::default()
            },
        )?;
        crate::security::warn_if_config_readable(&path);
        crate::security::warn_if_root_jobs_beside_isolated(&runner_isolation(&config));
        Ok(config)
    }
}

/// Each local, docker and kube runner's name (else `runners[i]`) and whether its jobs are kept
/// from the server's memory: a container's are, a local runner's are when it runs them as a
/// `user` other than root.
fn runner_isolation(config: &Config) -> Vec<(String, bool)> {
    use crate::config::RunnerKind;
    use runyard_runners::isolation::Principal;
    let root =
        |p: &Principal| matches!(p, Principal::Id(0)) || *p == Principal::Name("root".into());
    let isolated = |r: &crate::config::RunnerConfig| match r.kind {
        RunnerKind::Local => Some(r.user.as_ref().is_some_and(|u| !root(u))),
        RunnerKind::Docker | RunnerKind::Kube => Some(true),
        _ => None,
    };
    let named = |(i, r): (usize, &crate::config::RunnerConfig)| {
        let name = r.name.clone().unwrap_or_else(|| format!("runners[{i}]"));
        isolated(r).map(|iso| (name, iso))
    };
    config
        .runners
        .iter()
        .enumerate()
        .filter_map(named)
        .collect()
}

/// Refuses a `--redis` URL holding a password: a process's command line is readable by every
/// user of the host (`ps`, `/proc/PID/cmdline`), a job run as another user included, and the
/// Redis password opens the whole store. `RUNYARD_REDIS` (scrubbed from the environment at
/// start) and the configuration file (0600) keep it.
fn refuse_redis_password(redis: Option<&str>) -> Result<(), crate::config::ConfigError> {
    use ::redis::IntoConnectionInfo;
    let refuse = |why: &str| Err(crate::config::ConfigError(format!("`--redis`: {why}")));
    match redis.map(IntoConnectionInfo::into_connection_info) {
        // The driver's own reading: `user:password@` and `unix://...?pass=` alike.
        Some(Ok(info)) if info.redis.password.is_some() => refuse(
            "the URL holds a password, which every user of this host can read in the process's \
             command line (`ps`, /proc/PID/cmdline); give the URL as RUNYARD_REDIS or as `redis` \
             in the configuration file instead",
        ),
        // Not repeated: it may hold a password the driver could not find.
        Some(Err(_)) => refuse("not a Redis URL (redis://, rediss:// or unix://)"),
        _ => Ok(()),
    }
}

/// The configuration loaded before the runtime started.
type Preloaded = Option<Result<Config, crate::config::ConfigError>>;

async fn worker(a: WorkerArgs, preloaded: Preloaded) -> anyhow::Result<()> {
    crate::limits::raise_nofile();
    let config = match preloaded {
        Some(c) => c?,
        None => a.load()?,
    };
    let builtins = ServiceRegistry::with_builtins();
    let services: Vec<&str> = builtins.names().collect();
    crate::startup::refuse(&config, &services, crate::startup::Allow::default())
        .map_err(|e| anyhow::anyhow!(e))?;
    crate::startup::warn(&config).await;
    let mut builder = ServerBuilder::new(config);
    if let Some(addr) = a.health_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("`--health-listen`: cannot listen on {addr}: {e}"))?;
        builder = builder.health_listener(listener);
    }
    builder.work(stop::drain_signal(None)).await
}

/// The log filter: `RUNYARD_LOG` when set, else `RUST_LOG` (when valid: another program's may
/// not be), else `info`. A `RUNYARD_LOG` that is not a valid filter, or with a bare word that is
/// no level (`degub`: tracing would read it as a target and log nothing else), is an error
/// naming it: a typo must not silence the log.
pub fn log_filter(
    runyard_log: Option<&str>,
    rust_log: Option<&str>,
) -> Result<tracing_subscriber::EnvFilter, String> {
    use tracing_subscriber::EnvFilter;
    if let Some(s) = runyard_log.filter(|s| !s.trim().is_empty()) {
        const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
        // Each part trimmed (tracing keeps the spaces: `debug ` would be a target).
        let parts: Vec<&str> = s
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .collect();
        if parts.is_empty() {
            return Err(format!("RUNYARD_LOG: `{s}` names no level"));
        }
        let level = |d: &str| {
            LEVELS.iter().any(|l| l.eq_ignore_ascii_case(d))
                || matches!(d, "0" | "1" | "2" | "3" | "4" | "5")
        };
        if let Some(d) = parts
            .iter()
            .find(|d| !d.contains(['=', '[', ':']) && !level(d))
        {
            return Err(format!(
                "RUNYARD_LOG: `{d}` is not a log level ({}); a target's level is written \
                 `target=level`, e.g. `info,runyard=debug`",
                LEVELS.join(", ")
            ));
        }
        let filter = parts.join(",");
        return EnvFilter::try_new(&filter).map_err(|e| format!("RUNYARD_LOG: `{s}`: {e}"));
    }
    Ok(rust_log
        .filter(|s| !s.trim().is_empty())
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("info")))
}

/// `serve` and `worker`: reads the configuration, then, still in the only thread, takes the
/// secrets out of the environment and hardens the process (docs/security.md), and starts the
/// spawners when this process runs jobs (`runs_jobs`).
fn load_server_config(
    load: impl FnOnce() -> Result<Config, crate::config::ConfigError>,
    runs_jobs: impl FnOnce(&Config) -> bool,
) -> Result<Config, crate::config::ConfigError> {
    let config = load();
    // Safety: no other thread exists yet (the runtime starts after this), so nothing reads or
    // writes the environment concurrently.
    unsafe { crate::security::scrub_env(crate::security::SECRET_ENV) };
    crate::security::harden_process();
    match &config {
        Ok(c) if runs_jobs(c) => {
            // Safety: still the only thread, secrets gone (see above).
            unsafe { crate::startup::start_spawner(c) }
        }
        _ => {}
    }
    config
}

/// The configuration of `serve` and `worker` (`None` for the client commands), read before the
/// runtime starts any thread (see [`load_server_config`]).
fn server_config(command: &Cmd) -> Option<Result<Config, crate::config::ConfigError>> {
    match command {
        Cmd::Serve(a) => Some(load_server_config(
            || {
                let mut c = a.load()?;
                if a.demo {
                    crate::demo::configure(&mut c);
                    if a.data_dir.is_none() {
                        c.data_dir = crate::demo::temp_data_dir();
                    }
                }
                // With the demo's runners, which are the config's as much as any.
                if !a.no_worker && c.worker.enabled {
                    crate::security::warn_if_root_jobs_beside_isolated(&runner_isolation(&c));
                }
                Ok(c)
            },
            // `--no-worker` beats `worker.enabled` (see `serve`).
            |c| !a.no_worker && c.worker.enabled,
        )),
        // A worker node runs its worker whatever `worker.enabled` says.
        Cmd::Worker(a) => Some(load_server_config(|| a.load(), |_| true)),
        _ => None,
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = client_flags::parse().unwrap_or_else(|e| clap_error(e));
    if !matches!(
        cli.command,
        Cmd::Serve(_) | Cmd::Worker(_) | Cmd::Bench(_) | Cmd::BenchBareServer | Cmd::Launch(_)
    ) {
        quiet_on_closed_stdout();
    }
    let log_format = cli.log_format;
    let filter = log_filter(
        std::env::var("RUNYARD_LOG").ok().as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    match filter {
        Ok(filter) => crate::logging::init(log_format, filter),
        Err(e) => {
            crate::logging::fatal(log_format, &e);
            return ExitCode::from(2); // a usage error (docs/cli.md)
        }
    }
    // Before the runtime starts any thread (see `load_server_config`).
    let server_config = server_config(&cli.command);
    // `serve` on the embedded store with its worker, on up to 2 cores: the HTTP side on one
    // thread, the worker on a thread of its own (`server.rs`, `WorkerThread`), the SQLite writer
    // on a third. Measured on 2 cores only (docs/benchmarks.md "Session 13: seq"); with more,
    // the HTTP side keeps the multi-thread runtime's threads. A worker node (`runyard worker`,
    // Redis) on up to 2 cores runs on one thread: it is one of several processes sharing the
    // cores (redis-server, the API, the other nodes), and its runtime's second thread only
    // added wake-ups (docs/benchmarks.md "Session 14: redis": about a quarter of the worker
    // nodes' CPU per job with one producer). The API node on Redis (`serve --no-worker`) too:
    // about a fifth of its CPU per job; a batch submit's work runs on the blocking pool there,
    // not on the one thread that answers everything else (docs/benchmarks.md "Session 15:
    // redis (the API node)").
    // `TOKIO_WORKER_THREADS` set asks for tokio's multi-thread runtime with that many workers
    // (tokio reads it), e.g. a worker pod on 2 vCPUs that has them to itself.
    let one_thread_fits = std::thread::available_parallelism().map_or(1, |n| n.get()) <= 2
        && std::env::var_os("TOKIO_WORKER_THREADS").is_none();
    let single = one_thread_fits
        && match (&cli.command, &server_config) {
            (Cmd::Serve(a), Some(Ok(c))) if c.redis.is_none() => c.worker.enabled && !a.no_worker,
            (Cmd::Worker(_), Some(Ok(_))) => true,
            // The API alone on Redis (`serve --no-worker`): a batch's work goes to the
            // blocking pool (`api/batch.rs`).
            (Cmd::Serve(a), Some(Ok(c))) if c.redis.is_some() => a.no_worker || !c.worker.enabled,
            _ => false,
        };
    let rt = if single {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            crate::logging::fatal(log_format, &format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    // The demo's data dir, created here and removed at exit.
    let demo_dir = match (&cli.command, &server_config) {
        (Cmd::Serve(a), Some(Ok(c))) if a.demo && a.data_dir.is_none() => Some(c.data_dir.clone()),
        _ => None,
    };
    let r = rt.block_on(async move {
        match cli.command {
            Cmd::Serve(a) => serve(a, server_config).await.map(|_| ExitCode::SUCCESS),
            Cmd::Worker(a) => worker(a, server_config).await.map(|_| ExitCode::SUCCESS),
            Cmd::Submit(a) => submit::submit(a).await,
            Cmd::Status(a) => client::status(a).await,
            Cmd::Logs(a) => client::logs(a).await,
            Cmd::Cancel(a) => client::cancel(a).await,
            Cmd::Retry(a) => client::retry(a).await,
            Cmd::Jobs(a) => jobs::jobs(a).await,
            Cmd::Schedules(a) => schedules::run(a).await,
            Cmd::Signal(a) => signal::run(a).await,
            Cmd::Files(a) => files::run(a).await,
            Cmd::Completions(a) => Ok(completions::run(a)),
            Cmd::Bench(a) => bench::run(a).await,
            Cmd::BenchBareServer => bench::serve_bare().await,
            Cmd::Token(a) => token::run(a).await,
            Cmd::Launch(a) => launch::run(a, ServiceRegistry::with_builtins()).await,
            Cmd::Backup(a) => backup::run(a).await,
        }
    });
    // Blocking work nobody waits for any more (a DNS lookup of an unreachable Redis, a kill of a
    // job's tree) does not hold the exit past the stop's bound (docs/reliability.md).
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Some(d) = demo_dir {
        let _ = std::fs::remove_dir_all(d);
    }
    match r {
        Ok(code) => code,
        Err(e) => {
            crate::logging::fatal(log_format, &format!("{e:#}"));
            // docs/cli.md: 1 job not successful, 2 usage, 3 unreachable, 4 refused.
            exit::code_of(&e)
        }
    }
}

/// clap's refusal as clap prints it; but one echoing an argument with invisible or bidirectional
/// characters is printed plain with them escaped (`\u{202e}`): clap showed them raw, and a bidi
/// override reversed the rest of its message (probe s54b F7).
fn clap_error(e: clap::Error) -> ! {
    let text = e.render().to_string();
    if !text.chars().any(crate::job::invisible) {
        e.exit();
    }
    let shown: String = text
        .split_inclusive('\n')
        .map(|l| {
            crate::job::echoed(l.trim_end_matches('\n'), usize::MAX)
                + &l[l.trim_end_matches('\n').len()..]
        })
        .collect();
    eprint!("{shown}");
    std::process::exit(e.exit_code())
}

/// A client command whose reader went away (`runyard logs ID | head`) ends quietly with 141, as
/// a Unix tool killed by SIGPIPE does, instead of a panic: `print!` panics on a closed stdout
/// (Rust ignores SIGPIPE, and it stays ignored: the commands' sockets rely on it).
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        // `print!`, and clap_complete's writer (`runyard completions bash | head`).
        let printing = msg.starts_with("failed printing to stdout")
            || msg.starts_with("failed to write completion file");
        if printing && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

async fn serve(a: ServeArgs, preloaded: Preloaded) -> anyhow::Result<()> {
    // Room for client connections and jobs (the accept loop keeps `api.fd_reserve` for the latter).
    crate::limits::raise_nofile();
    let config = match preloaded {
        Some(c) => c?,
        None => a.load()?,
    };
    crate::auth::check_exposure(config.listen, &config.auth, a.insecure_no_auth)
        .map_err(anyhow::Error::msg)?;
    let builtins = ServiceRegistry::with_builtins();
    let mut services: Vec<&str> = builtins.names().collect();
    if a.demo {
        services.extend(crate::demo::SERVICES);
    }
    let allow = crate::startup::Allow {
        no_runners: a.allow_no_runners || a.demo,
    };
    crate::startup::refuse(&config, &services, allow).map_err(|e| anyhow::anyhow!(e))?;
    crate::startup::warn(&config).await;
    let listener = crate::connections::listen(config.listen)
        .map_err(|e| anyhow::anyhow!("`listen`: cannot listen on {}: {e}", config.listen))?;
    // `--no-worker` beats `worker.enabled`; neither runs a worker in this process.
    let worker = !a.no_worker && config.worker.enabled;
    if !worker && config.redis.is_none() {
        // Only a worker in this process can run the embedded store's jobs.
        tracing::warn!(
            "NO JOB WILL RUN: this server runs no worker (`--no-worker` or `worker.enabled = \
             false`) and its store is the embedded one, which no other process can work on \
             (`runyard worker` needs `redis`); its jobs stay QUEUED. Start it with a worker, or \
             use `redis` for separate worker nodes"
        );
    }
    // The demo's data dir (as `run` removes it at exit): removed by a cold stop too.
    let demo_dir = (a.demo && a.data_dir.is_none()).then(|| config.data_dir.clone());
    let mut builder = ServerBuilder::new(config).worker(worker);
    if !a.demo {
        return builder.serve(listener, stop::drain_signal(None)).await;
    }
    builder = crate::demo::register(builder);
    // Listening for the stop signals from here on, through the demo's own jobs.
    let mut stop = std::pin::pin!(stop::drain_signal(demo_dir));
    let server = tokio::select! {
        r = builder.start(listener) => r?,
        () = &mut stop => return crate::server::stopped_during_start(),
    };
    let url = server.url();
    let demo_jobs = async {
        if worker {
            if let Err(e) = crate::demo::run_jobs(&url).await {
                tracing::warn!(error = %e, "the demo jobs could not be run");
            }
        }
        std::future::pending::<()>().await
    };
    // A signal stops the demo's own jobs too.
    tokio::select! {
        () = demo_jobs => {}
        () = &mut stop => {}
    }
    server.stop().await
}
