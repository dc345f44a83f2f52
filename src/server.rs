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
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use runyard_runners::service::{ServiceContext, ServiceRegistry, ServiceResult};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::signed_url::UrlSigner;
use crate::config::Config;
use crate::files::BlobStore;
use crate::metrics::Metrics;
use crate::runner_set::RunnerSet;
use crate::security::MasterKey;
use crate::store::redis::{RedisSettings, RedisStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreSettings};
use crate::worker::Worker;
use runyard_hooks::Verifier;

/// What the HTTP handlers share.
pub struct App {
    /// The configuration.
    pub config: Arc<Config>,
    /// The backend.
    pub store: Arc<dyn Store>,
    /// The runners.
    pub runners: Arc<RunnerSet>,
    /// The key job secrets are derived from.
    pub master_key: Arc<MasterKey>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Job files.
    pub blobs: Arc<BlobStore>,
    /// Hook signature checks (with replay memory).
    pub verifier: Verifier,
    /// Signs blob URLs.
    pub signer: UrlSigner,
    /// `public_url` without a trailing slash.
    pub public_url: String,
    /// The path part of `public_url` (e.g. `/runyard` behind a proxy), or empty.
    pub path_prefix: String,
    /// Cancelled when the server stops: long-lived responses (WebSocket, SSE, long polls) end.
    pub closing: CancellationToken,
    /// The Redis backend when configured: the hook replay memory is shared through it.
    pub redis: Option<Arc<RedisStore>>,
    /// The live fan-out of events to WebSocket and SSE streams (`src/events/`).
    pub events: Arc<crate::events::Hub>,
}

impl App {
    /// A short-lived signed URL for the bytes of a blob.
    pub fn blob_url(&self, hash: &str) -> String {
        let exp =
            (crate::job::now_us() / 1_000_000 + crate::api::signed_url::URL_TTL_SECS).to_string();
        let sig = self.signer.sign(&["get", hash, &exp]);
        format!("{}/async/blobs/{hash}?exp={exp}&sig={sig}", self.public_url)
    }
}

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

    /// Serves on `listener` until `shutdown` completes, then drains the worker and stops.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let running = self.start(listener).await?;
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
        // Out of the config (which is shared widely) into a zeroed-on-drop key.
        let master_key = Arc::new(load_master_key(&mut self.config)?);
        let config = Arc::new(self.config);
        let (store, redis) = open_store(&config).await?;
        // Every store call of this process is timed and every committed change counted.
        let metrics = Arc::new(Metrics::default());
        let store = crate::metrics::MeteredStore::wrap(store, metrics.clone());
        let runners = Arc::new(
            RunnerSet::build(&config, Arc::new(self.services)).map_err(|e| anyhow::anyhow!(e))?,
        );
        let blobs = Arc::new(
            BlobStore::new(config.data_dir.join("files"))
                .context("`data_dir`: cannot create the file store")?,
        );
        let public_url = config.public_url();
        let path_prefix = reqwest::Url::parse(&public_url)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        let app = Arc::new(App {
            config: config.clone(),
            store: store.clone(),
            runners: runners.clone(),
            master_key: master_key.clone(),
            metrics: metrics.clone(),
            blobs: blobs.clone(),
            verifier: Verifier::new().with_require_v2(config.hooks.require_v2),
            signer: UrlSigner::new(&master_key),
            public_url,
            path_prefix,
            redis: redis.clone(),
            closing: CancellationToken::new(),
            events: crate::events::Hub::from_config(&config.events),
        });
        crate::metrics::features::register(&metrics, app.events.clone());
        let bg = CancellationToken::new();
        let worker_stop = CancellationToken::new();
        let tasks = vec![
            // Live events for this node's streams (from every node's commits on Redis).
            tokio::spawn(crate::events::hub::tail_loop(
                app.events.clone(),
                store.clone(),
                redis,
                bg.clone(),
            )),
            tokio::spawn(crate::scheduler::promote_loop(store.clone(), bg.clone())),
            tokio::spawn(crate::waiting::wait_loop(store.clone(), bg.clone())),
            tokio::spawn(crate::schedule::firing::fire_loop(
                crate::schedule::firing::Firing {
                    store: store.clone(),
                    runners: runners.clone(),
                    signal_retention: config.retention.finished,
                },
                bg.clone(),
            )),
            tokio::spawn(crate::scheduler::retention_loop(
                store.clone(),
                blobs,
                config.retention.clone(),
                bg.clone(),
            )),
            tokio::spawn(crate::notify::deliver::delivery_loop(
                crate::notify::deliver::Deliverer::new(&config, store.clone(), master_key.clone()),
                bg.clone(),
            )),
        ];
        let worker = if config.worker.enabled {
            let w = Worker::new(
                store.clone(),
                runners,
                config.worker.clone(),
                master_key,
                format!("{}/async", config.public_url()),
            );
            Some(tokio::spawn(w.run(worker_stop.clone())))
        } else {
            None
        };
        let http_stop = CancellationToken::new();
        let router = crate::api::router(app.clone());
        let limits = crate::connections::EdgeSettings::from_config(&config.api);
        let http = tokio::spawn(crate::connections::serve(
            listener,
            router,
            limits,
            http_stop.clone(),
        ));
        tracing::info!(%addr, store = store.backend_name(), max_connections = limits.max_connections, "runyard listening");
        Ok(RunningServer {
            addr,
            app,
            bg,
            tasks,
            worker_stop,
            worker,
            http_stop,
            http,
        })
    }
}

/// A started server.
pub struct RunningServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The application state.
    pub app: Arc<App>,
    bg: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    worker_stop: CancellationToken,
    worker: Option<JoinHandle<()>>,
    http_stop: CancellationToken,
    http: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// The base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop: the worker stops claiming and drains (the API stays up meanwhile, so running
    /// jobs can still report), then the API stops.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.worker_stop.cancel();
        if let Some(w) = self.worker {
            let _ = w.await;
        }
        self.app.closing.cancel();
        self.http_stop.cancel();
        self.bg.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        // Connections that stay open (a client that never reads) must not hold the stop forever.
        let mut http = self.http;
        match tokio::time::timeout(std::time::Duration::from_secs(10), &mut http).await {
            Ok(r) => r.context("http task")?.context("http server")?,
            Err(_) => {
                tracing::warn!("HTTP connections still open after 10s: closing them");
                http.abort();
            }
        }
        // The accept loop returns once its connection tasks have ended, but an upgraded WebSocket (or
        // an aborted task) may drop its share of the router (and so `App`, the store and the
        // embedded store's lock) a moment later. Wait for them, so that the data dir can be
        // opened again as soon as `stop` returns.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while Arc::strong_count(&self.app) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(())
    }
}

/// The Redis store of a config, when there is one (also the hook replay memory).
type RedisHandle = Option<Arc<RedisStore>>;

async fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn Store>, RedisHandle)> {
    let settings = StoreSettings {
        progress_interval: config.events.progress_interval,
        channel_limit: config.events.channel_limit,
        global_limit: config.events.global_limit,
        log_lines_per_job: config.retention.log_lines_per_job,
    };
    if let Some(url) = &config.redis {
        let r = RedisStore::connect(RedisSettings {
            prefix: config.store.prefix.clone(),
            store: settings,
            channel_ttl: config.retention.events,
            retry: config.store.retry,
            ..RedisSettings::new(url.clone())
        })
        .await
        .context("`redis`")?;
        return Ok((r.clone(), Some(r)));
    }
    let full = config.store.synchronous == crate::config::Synchronous::Full;
    Ok((
        Arc::new(SqliteStore::open(&config.data_dir, settings, full)?),
        None,
    ))
}

impl ServerBuilder {
    /// Runs a worker node until `shutdown` completes: the worker (with its reaper) and the
    /// scheduler, no HTTP API. Needs `redis` (the API runs elsewhere, on the same Redis) and
    /// `public_url` (the API's URL, which jobs report to). Then drains like [`RunningServer::stop`].
    pub async fn work(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let mut config = self.config;
        if config.redis.is_none() {
            anyhow::bail!(
                "`redis`: a worker node shares the queue with the API through Redis; set `redis` \
                 (or run `runyard serve`, which has a worker built in)"
            );
        }
        if config.public_url.is_none() {
            anyhow::bail!(
                "`public_url`: a worker node needs the API's URL (jobs report to `public_url`/async)"
            );
        }
        let master_key = Arc::new(load_master_key(&mut config)?);
        let config = Arc::new(config);
        let (store, _) = open_store(&config).await?;
        let runners = Arc::new(
            RunnerSet::build(&config, Arc::new(self.services)).map_err(|e| anyhow::anyhow!(e))?,
        );
        let bg = CancellationToken::new();
        tokio::spawn(crate::scheduler::promote_loop(store.clone(), bg.clone()));
        tokio::spawn(crate::waiting::wait_loop(store.clone(), bg.clone()));
        tokio::spawn(crate::schedule::firing::fire_loop(
            crate::schedule::firing::Firing {
                store: store.clone(),
                runners: runners.clone(),
                signal_retention: config.retention.finished,
            },
            bg.clone(),
        ));
        tokio::spawn(crate::notify::deliver::delivery_loop(
            crate::notify::deliver::Deliverer::new(&config, store.clone(), master_key.clone()),
            bg.clone(),
        ));
        let (st, rc, stop) = (store.clone(), config.retention.clone(), bg.clone());
        tokio::spawn(async move {
            // Jobs, logs and events; file contents live with the API, whose retention collects them.
            loop {
                let before = crate::job::now_us() - rc.finished.as_micros() as i64;
                if let Err(e) = st.retention(before).await {
                    tracing::warn!(error = %e, "retention pass failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(rc.interval) => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
        let worker = Worker::new(
            store.clone(),
            runners,
            config.worker.clone(),
            master_key,
            format!("{}/async", config.public_url()),
        );
        tracing::info!(worker = %worker.id(), store = store.backend_name(), "runyard worker node started");
        if let Some(listener) = self.health_listener {
            let app = crate::api::health::probe_router(store.clone());
            let stop = bg.clone();
            tracing::info!(addr = ?listener.local_addr().ok(), "worker health probes listening");
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::warn!(error = %e, "worker health listener stopped");
                }
            });
        }
        let stop = CancellationToken::new();
        let w = tokio::spawn(worker.run(stop.clone()));
        shutdown.await;
        stop.cancel();
        let _ = w.await;
        bg.cancel();
        Ok(())
    }
}

/// The master key: from config (`master_key` / `RUNYARD_MASTER_KEY`), which is taken out of
/// `config` (and zeroed), else `data_dir/master.key`, created on first run with mode 0600.
pub fn load_master_key(config: &mut Config) -> anyhow::Result<MasterKey> {
    if let Some(k) = config.master_key.take() {
        let k = zeroize::Zeroizing::new(k);
        if k.len() < 16 {
            anyhow::bail!("`master_key` must be at least 16 characters");
        }
        return Ok(MasterKey::new(k.as_bytes().to_vec()));
    }
    let path = config.data_dir.join("master.key");
    read_or_create_key(&path).map(MasterKey::new)
}

fn read_or_create_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(k) = std::fs::read_to_string(path) {
        let k = zeroize::Zeroizing::new(k);
        let k = k.trim();
        if k.len() >= 32 {
            return Ok(k.as_bytes().to_vec());
        }
        anyhow::bail!("{} is too short to be a master key", path.display());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let key = hex::encode(rand::random::<[u8; 32]>());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(key.as_bytes())?;
    f.sync_all()?;
    Ok(key.into_bytes())
}
