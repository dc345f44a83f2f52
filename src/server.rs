//! Putting it together: the store, the runners, the worker, the scheduler and the HTTP API in one
//! process, started on a listener you give it and stopped by a future you give it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use runyard::{config::Config, server::ServerBuilder};
//! let config = Config::from_toml(r#"
//!     [[runners]]
//!     kind = "service"
//!     types = ["thumbnail"]
//! "#)?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! ServerBuilder::new(config)
//!     .service("thumbnail", |ctx| async move {
//!         ctx.progress(0.5, None);
//!         Ok(serde_json::json!({"done": true}))
//!     })
//!     .serve(listener, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await?;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use runyard_runners::service::{ServiceContext, ServiceRegistry, ServiceResult};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod open;

use crate::api::signed_url::UrlSigner;
use crate::config::Config;
use crate::files::BlobStore;
pub use crate::master_key::load_master_key;
use crate::metrics::Metrics;
use crate::runner_set::RunnerSet;
use crate::security::MasterKey;
use crate::store::Store;
use crate::worker::{Worker, STOP_MARGIN};
use open::open_store;
use runyard_hooks::Verifier;

use crate::api::App;

/// Builds a server: configuration plus the service operations of an embedding program.
pub struct ServerBuilder {
    config: Config,
    services: ServiceRegistry,
    worker: Option<bool>,
    health_listener: Option<TcpListener>,
}

impl ServerBuilder {
    /// A builder with runyard's built-in service operations registered.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            services: ServiceRegistry::with_builtins(),
            worker: None,
            health_listener: None,
        }
    }

    /// A worker node ([`Self::work`]) serves `/health/live` and `/health/ready` on `listener`
    /// (for Kubernetes probes; nothing else is served there).
    pub fn health_listener(mut self, listener: TcpListener) -> Self {
        self.health_listener = Some(listener);
        self
    }

    /// Registers an async operation that `service` runners can call.
    pub fn service<F, Fut>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(ServiceContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ServiceResult> + Send + 'static,
    {
        self.services.register(name, f);
        self
    }

    /// Runs (or not) a worker in this process, overriding `worker.enabled`.
    pub fn worker(mut self, enabled: bool) -> Self {
        self.worker = Some(enabled);
        self
    }

    /// Serves on `listener` until `shutdown` completes, then drains the worker and stops; a
    /// `shutdown` during the start (a Redis retried) stops it at once, `Ok` (and [`Self::work`]).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        let running = tokio::select! {
            r = self.start(listener) => r?,
            () = &mut shutdown => return stopped_during_start(),
        };
        shutdown.await;
        running.stop().await
    }

    /// Starts everything in the background and returns a handle.
    pub async fn start(mut self, listener: TcpListener) -> anyhow::Result<RunningServer> {
        if let Some(w) = self.worker {
            self.config.worker.enabled = w;
        }
        let addr = listener.local_addr()?;
        if self.config.public_url.is_none() {
            // Port 0 resolves only now.
            self.config.public_url = Some(format!("http://{addr}"));
        }
        crate::security::secure_data_dir(&self.config.data_dir)?;
        let blobs = Arc::new(
            BlobStore::new(self.config.data_dir.join("files"))
                .context("`data_dir`: cannot create the file store")?,
        );
        let metrics = Arc::new(Metrics::default());
        let mut core = Core::assemble(
            self.config,
            self.services,
            Some(blobs.clone()),
            Some(metrics.clone()),
        )
        .await?;
        let config = core.config.clone();
        let public_url = config.public_url();
        let path_prefix = reqwest::Url::parse(&public_url)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        let (dropped, app_dropped) = oneshot::channel();
        let limits = crate::connections::EdgeSettings::from_config(&config.api);
        let app = Arc::new(App {
            config: config.clone(),
            store: core.store.clone(),
            runners: core.runners.clone(),
            master_key: core.master_key.clone(),
            metrics: metrics.clone(),
            blobs,
            verifier: Verifier::new().with_require_v2(config.hooks.require_v2),
            signer: UrlSigner::new(&core.master_key),
            public_url,
            path_prefix,
            closing: CancellationToken::new(),
            draining: core.draining.clone(),
            events: crate::events::Hub::for_server(&config.events, limits.max_connections),
            cron_checks: Arc::new(tokio::sync::Semaphore::new(1)),
            _dropped: dropped,
        });
        crate::metrics::features::register(&metrics, app.events.clone());
        crate::metrics::process::register(&metrics);
        // Live events for this node's streams (from every node's commits on Redis).
        core.tasks.spawn(crate::events::hub::tail_loop(
            app.events.clone(),
            core.store.clone(),
            core.bg.clone(),
        ));
        if config.worker.enabled {
            core.start_worker(true);
        }
        let http_stop = CancellationToken::new();
        let router = crate::api::router(app.clone());
        let http = tokio::spawn(crate::connections::serve(
            listener,
            router,
            limits,
            http_stop.clone(),
        ));
        tracing::info!(%addr, store = core.store.backend_name(), max_connections = limits.max_connections, "runyard listening");
        Ok(RunningServer {
            addr,
            app,
            core,
            http_stop,
            http,
            app_dropped,
        })
    }

    /// Runs a worker node until `shutdown` completes: the worker (with its reaper) and the
    /// scheduler, no HTTP API. Needs `redis` (the API runs elsewhere, on the same Redis) and
    /// `public_url` (the API's URL, which jobs report to). Then drains like [`RunningServer::stop`].
    /// The worker runs on the caller's runtime, also a single-thread one (`runyard worker` on up
    /// to 2 cores): unlike [`ServerBuilder::start`], no thread of its own.
    pub async fn work(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        if self.config.redis.is_none() {
            anyhow::bail!(
                "`redis`: a worker node shares the queue with the API through Redis; set `redis` \
                 (or run `runyard serve`, which has a worker built in)"
            );
        }
        if self.config.public_url.is_none() {
            anyhow::bail!(
                "`public_url`: a worker node needs the API's URL (jobs report to `public_url`/async)"
            );
        }
        // No blobs: file contents live with the API, whose retention collects them.
        // A worker node serves no `/metrics`: its store calls are not metered.
        let mut shutdown = std::pin::pin!(shutdown);
        let mut core = tokio::select! {
            r = Core::assemble(self.config, self.services, None, None) => r?,
            () = &mut shutdown => return stopped_during_start(),
        };
        // A worker node has nothing else to run: its worker stays on the node's runtime.
        let id = core.start_worker(false);
        tracing::info!(worker = %id, store = core.store.backend_name(), "runyard worker node started");
        if let Some(listener) = self.health_listener {
            let app = crate::api::health::probe_router(core.store.clone(), core.draining.clone());
            let stop = core.bg.clone();
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "worker health probes listening");
            }
            core.tasks.spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::warn!(error = %e, "worker health listener stopped");
                }
            });
        }
        shutdown.await;
        core.stop_worker().await;
        core.stop_loops().await;
        Ok(())
    }
}

/// Says that a stop came during the start (the start's future is dropped: nothing ran yet).
pub(crate) fn stopped_during_start() -> anyhow::Result<()> {
    tracing::info!("stopped during the start: nothing ran yet, so there was nothing to drain");
    Ok(())
}

/// What `serve` and `worker` both run, assembled once: the store (metered), the runners, the
/// background loops (promotion, waiting jobs, schedules, retention, webhook deliveries) and,
/// when started, the worker.
struct Core {
    config: Arc<Config>,
    master_key: Arc<MasterKey>,
    /// The embedded store's copy id, when `runyard backup` made it (`SqliteStore::copy_id`).
    copy: Option<u64>,
    store: Arc<dyn Store>,
    runners: Arc<RunnerSet>,
    /// The background loops, ended by `bg`; [`Core::stop_loops`] waits for them all.
    tasks: TaskTracker,
    bg: CancellationToken,
    worker_stop: CancellationToken,
    /// Cancelled when the stop begins (`stop_worker`): readiness answers 503 `draining`.
    draining: CancellationToken,
    /// Set when the stop begins: its last steps end by then (`worker.shutdown_grace +
    /// worker.kill_grace +` [`STOP_MARGIN`] less [`EXIT_SLACK`]), whatever the store does.
    stop_by: Option<tokio::time::Instant>,
    worker: Option<(Arc<Worker>, JoinHandle<()>)>,
    /// The worker's own thread, when a server started by `serve`/`start` runs on a single-thread
    /// runtime ([`WorkerThread`]; a worker node's worker stays on its runtime).
    worker_thread: Option<WorkerThread>,
}

/// A thread of the worker's own, with a single-thread runtime: the worker and its jobs' tasks run
/// there when a server started by `serve`/`start` runs on a single-thread runtime (`runyard
/// serve` on the embedded store, `cli/mod.rs`; not a worker node, `ServerBuilder::work`). The HTTP side keeps its thread, the worker gets the other core, and the
/// SQLite writer's replies wake only the runtime they are for: a multi-thread runtime's workers
/// wake each other to search for every task woken from outside (about 1.3 extra wake-ups per
/// job with one producer, docs/benchmarks.md "Session 13: seq").
struct WorkerThread {
    handle: tokio::runtime::Handle,
    /// Dropped (or sent) to end the thread; its runtime drops whatever task is left.
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl WorkerThread {
    fn start() -> std::io::Result<Self> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, handle) = std::sync::mpsc::sync_channel(1);
        // The runtime is built on its own thread (so a thread that cannot be created drops no
        // runtime inside the server's, which tokio refuses with a panic) and its handle sent back.
        let thread = std::thread::Builder::new()
            .name("runyard-worker".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stopped.await;
                });
                // Its tasks are dropped; blocking work still running on it (a `spawn_blocking`
                // call that does not return) is left, not waited for: dropping the runtime
                // would wait for it, and the stop with it, forever.
                rt.shutdown_timeout(THREAD_END_WAIT);
            })?;
        let handle = handle
            .recv()
            .map_err(|_| std::io::Error::other("the worker's thread ended at start"))??;
        Ok(Self {
            handle,
            stop,
            thread,
        })
    }

    /// Ends the thread (its runtime and every task still on it) and waits for it, a moment
    /// past [`THREAD_END_WAIT`] at most.
    async fn end(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        let joined = tokio::time::timeout(
            THREAD_END_WAIT + Duration::from_secs(1),
            tokio::task::spawn_blocking(move || thread.join()),
        )
        .await;
        if !matches!(joined, Ok(Ok(Ok(())))) {
            tracing::warn!("the worker's thread did not end cleanly");
        }
    }
}

/// How long the worker thread's runtime waits, once told to end, for blocking work still
/// running on it.
const THREAD_END_WAIT: Duration = Duration::from_secs(1);

impl Core {
    /// Opens the store and starts the background loops. `blobs`: the file contents this node
    /// keeps (the API's), collected by retention. `metrics`: where this node's store calls are
    /// timed and its committed changes counted (the node that serves `/metrics`).
    async fn assemble(
        mut config: Config,
        services: ServiceRegistry,
        blobs: Option<Arc<BlobStore>>,
        metrics: Option<Arc<Metrics>>,
    ) -> anyhow::Result<Self> {
        // Out of the config (which is shared widely) into a zeroed-on-drop key.
        let (master_key, key_from) = load_master_key(&mut config)?;
        let master_key = Arc::new(master_key);
        let config = Arc::new(config);
        let (store, copy) = open_store(&config, &master_key, &key_from).await?;
        let store = match metrics {
            Some(m) => crate::metrics::MeteredStore::wrap(store, m),
            None => store,
        };
        let runners = Arc::new(
            RunnerSet::build(&config, Arc::new(services)).map_err(|e| anyhow::anyhow!(e))?,
        );
        // Before any claim: the jobs left under a runner this config no longer gives their type.
        crate::worker::reroute::stranded(&store, &runners).await;
        let (tasks, bg) = (TaskTracker::new(), CancellationToken::new());
        // Redis: the parked jobs whose type a runner here claims, moved at start and after.
        tasks.spawn(crate::worker::reroute::unpark_loop(
            store.clone(),
            runners.clone(),
            bg.clone(),
        ));
        tasks.spawn(crate::scheduler::promote_loop(store.clone(), bg.clone()));
        tasks.spawn(crate::waiting::wait_loop(store.clone(), bg.clone()));
        tasks.spawn(crate::schedule::firing::fire_loop(
            crate::schedule::firing::Firing {
                store: store.clone(),
                runners: runners.clone(),
                signal_retention: config.retention.finished,
            },
            bg.clone(),
        ));
        tasks.spawn(crate::scheduler::retention_loop(
            store.clone(),
            blobs,
            config.retention.clone(),
            bg.clone(),
        ));
        tasks.spawn(crate::notify::deliver::delivery_loop(
            crate::notify::deliver::Deliverer::new(
                &config.notify,
                config.retention.finished,
                store.clone(),
                master_key.clone(),
            ),
            bg.clone(),
        ));
        Ok(Self {
            config,
            master_key,
            copy,
            store,
            runners,
            tasks,
            bg,
            worker_stop: CancellationToken::new(),
            draining: CancellationToken::new(),
            stop_by: None,
            worker: None,
            worker_thread: None,
        })
    }

    /// Starts the worker; returns its id. `own_thread`: on a single-thread runtime, the worker
    /// gets a thread of its own ([`WorkerThread`]), apart from the HTTP side.
    fn start_worker(&mut self, own_thread: bool) -> String {
        let w = Worker::new(
            self.store.clone(),
            self.runners.clone(),
            self.config.worker.clone(),
            self.master_key.clone(),
            self.copy,
            format!("{}/async", self.config.public_url()),
        );
        let id = w.id().to_string();
        let run = w.clone().run(self.worker_stop.clone());
        // On a single-thread runtime the worker gets a thread (and a core) of its own.
        let single = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread
            && own_thread;
        let own = if single {
            match WorkerThread::start() {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the worker's thread: the worker shares the server's");
                    None
                }
            }
        } else {
            None
        };
        let task = match &own {
            Some(t) => t.handle.spawn(run),
            None => tokio::spawn(run),
        };
        self.worker = Some((w, task));
        self.worker_thread = own;
        id
    }

    /// Stops the worker claiming and waits for it to drain.
    async fn stop_worker(&mut self) {
        let w = &self.config.worker;
        self.stop_by = Some(
            tokio::time::Instant::now() + w.shutdown_grace + w.kill_grace + STOP_MARGIN
                - EXIT_SLACK,
        );
        self.draining.cancel();
        // Before anything else, on this thread: once `stop()` has been polled, no finish claims
        // a next job, however long the worker's own thread takes to see the cancellation.
        if let Some((w, _)) = &self.worker {
            w.begin_stopping();
        }
        self.worker_stop.cancel();
        if let Some((_, task)) = self.worker.take() {
            let _ = task.await;
        }
        if let Some(t) = self.worker_thread.take() {
            t.end().await;
        }
    }

    /// How long a last step of the stop may wait: at most `cap`, and no later than the stop's
    /// bound (`stop_by`), though a moment (1 s) at least.
    fn stop_wait(&self, cap: Duration) -> Duration {
        let left = self.stop_by.map_or(cap, |by| {
            by.saturating_duration_since(tokio::time::Instant::now())
        });
        left.min(cap).max(Duration::from_secs(1))
    }

    /// Ends the background loops and waits until every one has returned.
    async fn stop_loops(&self) {
        self.bg.cancel();
        self.tasks.close();
        // Every loop ends on `bg` after its call in flight, which waits up to `store.retry`
        // while Redis is away; the worker node's health listener waits for its connections, and
        // a probe client that stops mid-request must not hold the stop forever.
        let wait = self.stop_wait(Duration::from_secs(10));
        if tokio::time::timeout(wait, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                waited = ?wait,
                "background tasks still running after the stop (waiting for the store?): leaving them"
            );
        }
    }
}

/// The part of [`STOP_MARGIN`] left, past the background loops' and the HTTP connections' last
/// wait, for what follows (the application state's release, the process's exit).
const EXIT_SLACK: Duration = Duration::from_secs(2);

/// A started server.
pub struct RunningServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The application state.
    pub app: Arc<App>,
    core: Core,
    http_stop: CancellationToken,
    http: JoinHandle<std::io::Result<()>>,
    /// Closed when the last share of `app` is dropped.
    app_dropped: oneshot::Receiver<()>,
}

impl RunningServer {
    /// The base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop: the worker stops claiming and drains (the API stays up meanwhile, so running
    /// jobs can still report), then the API stops. When it returns, every task is done and the
    /// store is closed (the embedded data dir can be opened again).
    pub async fn stop(self) -> anyhow::Result<()> {
        let RunningServer {
            app,
            mut core,
            http_stop,
            mut http,
            app_dropped,
            ..
        } = self;
        core.stop_worker().await;
        app.closing.cancel();
        http_stop.cancel();
        // Connections that stay open (a client that never reads) must not hold the stop forever.
        let wait = core.stop_wait(Duration::from_secs(10));
        let (_, served) = tokio::join!(core.stop_loops(), tokio::time::timeout(wait, &mut http));
        if served.is_err() {
            tracing::warn!(waited = ?wait, "HTTP connections still open after the stop: closing them");
            http.abort();
        }
        // The accept loop returns once its connection tasks have ended, but an upgraded WebSocket
        // (or an aborted task) drops its share of the router (and so of `App`, the store and the
        // embedded store's lock) a moment later: wait for the last one to go.
        drop((app, core));
        if tokio::time::timeout(Duration::from_secs(2), app_dropped)
            .await
            .is_err()
        {
            tracing::warn!("the application state is still held 2s after the stop");
        }
        if let Ok(r) = served {
            r.context("http task")?.context("http server")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocking work that never returns on the worker's thread (a `spawn_blocking` call stuck in
    /// a system call) does not hold the server's stop: the thread ends without it. Before, the
    /// runtime's drop waited for it, and `end` with it, for as long as it ran.
    #[tokio::test]
    async fn the_worker_thread_ends_without_waiting_for_stuck_blocking_work() {
        let t = WorkerThread::start().expect("the worker's thread");
        let (started, running) = std::sync::mpsc::channel();
        t.handle.spawn_blocking(move || {
            let _ = started.send(());
            std::thread::sleep(Duration::from_secs(120));
        });
        running
            .recv_timeout(Duration::from_secs(10))
            .expect("the blocking work started");
        tokio::time::timeout(Duration::from_secs(30), t.end())
            .await
            .expect("the thread ended, the blocking work left running");
    }
}
