//! [`App`]: what the HTTP handlers share. Built by the server (`server.rs`, which re-exports it); it
//! lives here, with the API, so that the API never imports the server.

use std::sync::Arc;

use runyard_hooks::Verifier;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::signed_url::UrlSigner;
use crate::config::Config;
use crate::files::BlobStore;
use crate::metrics::Metrics;
use crate::runner_set::RunnerSet;
use crate::security::MasterKey;
use crate::store::Store;

/// What the HTTP handlers share.
pub struct App {
    /// The configuration (its `master_key` taken out: see [`App::master_key`]).
    pub config: Arc<Config>,
    /// The backend (replay memory and the live event tail included: no handler names one).
    pub store: Arc<dyn Store>,
    /// The runners.
    pub runners: Arc<RunnerSet>,
    /// The key job secrets are derived from: zeroed when dropped, `Debug` prints `***`.
    pub master_key: Arc<MasterKey>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Job files.
    pub blobs: Arc<BlobStore>,
    /// Hook signature checks (the replay check is the store's: [`crate::store::ReplayMemory`]).
    pub verifier: Verifier,
    /// Signs blob URLs.
    pub signer: UrlSigner,
    /// `public_url` without a trailing slash.
    pub public_url: String,
    /// The path part of `public_url` (e.g. `/runyard` behind a proxy), or empty.
    pub path_prefix: String,
    /// Cancelled when the server stops: long-lived responses (WebSocket, SSE, long polls) end.
    pub closing: CancellationToken,
    /// Cancelled when the stop begins, before the worker drains: readiness answers 503
    /// `draining` from then on, so a load balancer sends no new client there.
    pub draining: CancellationToken,
    /// The live fan-out of events to WebSocket and SSE streams (`src/events/`).
    pub events: Arc<crate::events::Hub>,
    /// Cron pattern checks in flight at once: one per server (see `api::schedules::parse_cron`).
    pub cron_checks: Arc<tokio::sync::Semaphore>,
    /// Dropped with the last share of the `App` (and so of the store it holds): the server's
    /// stop waits for that (see `server::RunningServer::stop`).
    pub(crate) _dropped: oneshot::Sender<()>,
}

impl App {
    /// The time signed URLs are stamped and checked by (seconds since the epoch): the store's,
    /// as for hook requests, so the nodes agree on a URL's expiry whatever their wall clocks,
    /// and a used upload URL expires before the store forgets its use.
    pub async fn signed_url_now(&self) -> i64 {
        self.store.time().await / 1_000_000
    }

    /// A short-lived signed URL for the bytes of a blob.
    pub async fn blob_url(&self, hash: &str) -> String {
        let exp = (self.signed_url_now().await + super::signed_url::URL_TTL_SECS).to_string();
        let sig = self.signer.sign(&["get", hash, &exp]);
        format!("{}/async/blobs/{hash}?exp={exp}&sig={sig}", self.public_url)
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("store", &self.store.backend_name())
            .field("public_url", &self.public_url)
            .field("master_key", &self.master_key)
            .finish_non_exhaustive()
    }
}
