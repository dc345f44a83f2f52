//! The delivery loop: claims due deliveries from the store (at most `notify.concurrency` in
//! flight, at most `notify.per_endpoint` of them to one endpoint: [`InFlight`]), POSTs each
//! signed, records the attempt, and sleeps until the next one is due, a commit wakes it, an
//! attempt ends, or a second passes (deliveries written by other processes). Nothing is held in
//! memory beyond the attempts in flight: a receiver that is down costs stored records, not memory.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::answer::{self, Refusal};
use super::in_flight::InFlight;
use super::{count, endpoint_key, endpoint_of, signature, target, NotifyConfig};
use crate::job::now_us;
use crate::security::MasterKey;
use crate::store::deliveries::{
    this_node, Attempt, AttemptOutcome, Claimed, DeliveryState, Outcome,
};
use crate::store::log_quiet::warn_unless_refused;
use crate::store::{Notice, Store};

/// How often the store is looked at when nothing wakes the loop.
const POLL: Duration = Duration::from_secs(1);
/// The shortest pause between two looks at the store after a wake-up by a commit.
const MIN_GAP: Duration = Duration::from_millis(20);
/// How often delivered and given-up deliveries past retention are deleted.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// What the loop needs.
pub struct Deliverer {
    /// The store.
    pub store: Arc<dyn Store>,
    /// `[notify]`.
    pub config: NotifyConfig,
    /// Endpoint keys derive from it.
    pub master_key: Arc<MasterKey>,
    /// Deliveries that ended are deleted this long after (`retention.finished`).
    pub retention: Duration,
}

impl Deliverer {
    /// The loop's settings: `[notify]` and `retention.finished` (notify never reads the whole
    /// configuration: `crate::config` embeds `[notify]`, not the other way round).
    pub fn new(
        config: &NotifyConfig,
        retention: Duration,
        store: Arc<dyn Store>,
        master_key: Arc<MasterKey>,
    ) -> Self {
        if retention < config.horizon {
            // Deliveries outlive their job then, and their log (read through the job) goes with
            // it: a backlog no API call can show (probe s53c F2; notifications.md).
            tracing::warn!(
                retention_finished = ?retention,
                notify_horizon = ?config.horizon,
                "retention.finished is shorter than notify.horizon: a webhook delivery still pending \
                 when its job is deleted goes on, but its log can no longer be read"
            );
        }
        Self {
            store,
            config: config.clone(),
            master_key,
            retention,
        }
    }
}

/// The HTTP client of deliveries: names resolved through [`target::CheckedResolver`], no
/// redirects (a 3xx is a failed attempt), no proxy from the environment.
pub fn client(config: &NotifyConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(target::CheckedResolver {
            allow_private: config.allow_private,
        }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .pool_max_idle_per_host(2)
        .user_agent(concat!("runyard/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The hold of a claim: long enough for an attempt and its record.
fn hold(config: &NotifyConfig) -> Duration {
    config.timeout * 2 + Duration::from_secs(5)
}

/// Runs until `stop`; attempts in flight then get a few seconds to finish and be recorded.
pub async fn delivery_loop(d: Deliverer, stop: CancellationToken) {
    let http = match client(&d.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client: no deliveries");
            return;
        }
    };
    let d = Arc::new(d);
    let s = Starter {
        slots: Arc::new(Semaphore::new(d.config.concurrency)),
        in_flight: InFlight::new(d.config.per_endpoint()),
        done: Arc::new(tokio::sync::Notify::new()),
        d: d.clone(),
        http,
    };
    let mut notices = d.store.subscribe_to(only_events);
    let mut tasks = tokio::task::JoinSet::new();
    let mut last_trim = Instant::now();
    let mut store_backoff = Duration::from_millis(100);
    // No claim before this (see `Starter::claim`).
    let mut not_before = Instant::now();
    loop {
        while tasks.try_join_next().is_some() {}
        let mut wait = POLL;
        let free = s.slots.available_permits();
        let now = Instant::now();
        if now < not_before {
            wait = (not_before - now).clamp(MIN_GAP, POLL);
        } else if free > 0 {
            let due = d.store.deliveries_next_due().await;
            match due {
                Ok(Some(at)) if at <= now_us() => match s.claim(free, &mut tasks).await {
                    Ok((w, after)) => {
                        store_backoff = Duration::from_millis(100);
                        wait = w;
                        not_before = after;
                    }
                    Err(e) => {
                        warn_unless_refused!(e, "webhook deliveries: claim failed");
                        wait = store_backoff;
                        store_backoff = (store_backoff * 2).min(POLL * 5);
                    }
                },
                Ok(Some(at)) => {
                    let until = Duration::from_micros((at - now_us()).max(0) as u64);
                    wait = until.clamp(MIN_GAP, POLL);
                }
                Ok(None) => {}
                Err(e) => {
                    warn_unless_refused!(e, "webhook deliveries: store unavailable");
                    wait = store_backoff;
                    store_backoff = (store_backoff * 2).min(POLL * 5);
                }
            }
        }
        trim_if_due(&d, &mut last_trim).await;
        if stopped_waiting(&d, &stop, wait, &s.done, &mut notices).await {
            break;
        }
    }
    // Let attempts in flight finish and be recorded; a claim left behind is taken again when its
    // hold runs out (or at the next start, embedded store).
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
}

/// What starting attempts needs: the slots (`notify.concurrency`), the attempts per endpoint
/// (`notify.per_endpoint`), and the wake-up of the loop when an attempt ends.
struct Starter {
    d: Arc<Deliverer>,
    http: reqwest::Client,
    slots: Arc<Semaphore>,
    in_flight: InFlight,
    done: Arc<tokio::sync::Notify>,
}

impl Starter {
    /// Claims up to `free` due deliveries and starts their attempts; the loop's next wait, and
    /// the earliest time of the next claim.
    ///
    /// A claim that passes over the backlog of endpoints at their cap may read it (an index scan
    /// on the embedded store; on Redis one entry per endpoint at its cap, however deep its
    /// backlog): when such a claim finds less than it could take, the next one waits nine times
    /// as long as it took, so passing over a large backlog takes at most a tenth of the store's
    /// time however often commits wake the loop. The backlog's own deliveries wait for one of its
    /// attempts to end (`done`), not for time to pass.
    async fn claim(
        &self,
        free: usize,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> crate::store::Result<(Duration, Instant)> {
        let started = Instant::now();
        let limits = self.in_flight.limits();
        let batch = (self.d.store)
            .deliveries_claim(free, hold(&self.d.config), limits)
            .await?;
        let took = started.elapsed();
        let full = batch.len() == free;
        for c in batch {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                break;
            };
            let counted = self.in_flight.start(&c.delivery.url);
            let (d, http, done) = (self.d.clone(), self.http.clone(), self.done.clone());
            tasks.spawn(async move {
                attempt(&d, &http, c).await;
                drop((counted, permit));
                done.notify_one();
            });
        }
        Ok(match (full, self.in_flight.any_full()) {
            (true, _) => (POLL, Instant::now()),
            (false, false) => (MIN_GAP, Instant::now()),
            (false, true) => (POLL, Instant::now() + took * 9),
        })
    }
}

/// The notices the loop acts on: a delivery is only ever stored with an event.
fn only_events(n: &Notice) -> bool {
    matches!(n, Notice::Events)
}

/// Drops old delivery records, at most once per `TRIM_EVERY`.
async fn trim_if_due(d: &Deliverer, last_trim: &mut Instant) {
    if last_trim.elapsed() >= TRIM_EVERY {
        *last_trim = Instant::now();
        // Deliveries end at the store's time: the cut is the store's too (not this node's
        // wall clock, which may run ahead of the others').
        let before = d.store.time().await - d.retention.as_micros() as i64;
        if let Err(e) = d.store.deliveries_trim(before).await {
            warn_unless_refused!(e, "webhook deliveries: trim failed");
        }
    }
}

/// Waits up to `wait` for something to do (an attempt done, new events); `true` on `stop`.
async fn stopped_waiting(
    d: &Deliverer,
    stop: &CancellationToken,
    wait: Duration,
    done: &tokio::sync::Notify,
    notices: &mut tokio::sync::broadcast::Receiver<Notice>,
) -> bool {
    let until = tokio::time::sleep(wait);
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return true,
            _ = &mut until => return false,
            _ = done.notified() => return false,
            n = notices.recv() => match n {
                // A delivery is only ever stored with an event (`append_event`), so only a
                // commit that appended events can have added one; status and queue notices
                // (several per job) are not worth a look at the store.
                Ok(Notice::Events) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Commits come in bursts: one look for a burst.
                    tokio::time::sleep(MIN_GAP).await;
                    return false;
                }
                Ok(_) => {}
                Err(_) => {
                    *notices = d.store.subscribe_to(only_events);
                    return false;
                }
            },
        }
    }
}

/// One attempt of a claimed delivery, recorded. The claim stored it as started (the write-ahead
/// record, committed before this runs): should this process be lost before the record, the log
/// shows it as unknown, never as nothing.
async fn attempt(d: &Deliverer, http: &reqwest::Client, c: Claimed) {
    // The store's time, as the claim's record of the attempt and the delivery's due times.
    let at = d.store.time().await;
    let started = Instant::now();
    let r = send(d, http, &c).await;
    let duration_ms = started.elapsed().as_millis() as u64;
    let backoff = || d.config.retry_delay(c.delivery.attempts + 1);
    let failed = |retry_in| Outcome::Failed {
        retry_in,
        horizon: d.config.horizon,
    };
    let (status, error, outcome) = match r {
        Ok((s, _)) if (200..300).contains(&s) => (Some(s), None, Outcome::Delivered),
        Ok((s, refusal)) => {
            let outcome = match refusal {
                Refusal::Gone => Outcome::Gone,
                // No sooner than the receiver asked; past the horizon, `plan` gives up.
                Refusal::Later(wait) => failed(backoff().max(wait.unwrap_or_default())),
            };
            (Some(s), Some(answer::describe(s, refusal)), outcome)
        }
        Err(e) => (None, Some(e), failed(backoff())),
    };
    let rec = Attempt {
        at,
        by: Some(this_node().to_string()),
        outcome: Some(if outcome == Outcome::Delivered {
            AttemptOutcome::Accepted
        } else {
            AttemptOutcome::Failed
        }),
        status,
        error,
        duration_ms: Some(duration_ms),
    };
    record(d, &c, rec, outcome).await;
}

/// Records the attempt `rec` of `c`, counts and logs it. The store may be away for a moment: a
/// few tries, else the claim runs out and the delivery is attempted again (at least once, never
/// lost).
async fn record(d: &Deliverer, c: &Claimed, rec: Attempt, outcome: Outcome) {
    let mut pause = Duration::from_millis(100);
    for i in 0..5 {
        match d.store.delivery_record(c, rec.clone(), outcome).await {
            Ok(Some(state)) => {
                let counters = count();
                match (outcome, state) {
                    (Outcome::Delivered, _) => counters.delivered.fetch_add(1, Ordering::Relaxed),
                    (_, DeliveryState::GivenUp) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        let why = if outcome == Outcome::Gone {
                            "the receiver answered 410 Gone"
                        } else {
                            "the end of its horizon"
                        };
                        job_span(d, c, true).await.in_scope(|| {
                            tracing::warn!(delivery = c.delivery.id, job_id = %c.delivery.job_id,
                                attempts = c.delivery.attempts + 1, "webhook delivery given up: {why}")
                        });
                        counters.given_up.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => {
                        job_span(d, c, true)
                            .await
                            .in_scope(|| log_retry(c, &rec, outcome));
                        counters.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                return;
            }
            Ok(None) => {
                job_span(d, c, true).await.in_scope(|| {
                    tracing::info!(
                        delivery = c.delivery.id,
                        job_id = %c.delivery.job_id,
                        "webhook delivery: claim lost while attempting (its hold ran out, or it \
                         was taken over): the attempt shows as unknown"
                    )
                });
                return;
            }
            // The store failing: the job is not looked up (its span without the type).
            Err(e) if i < 4 => {
                job_span(d, c, false).await.in_scope(|| {
                    tracing::warn!(delivery = c.delivery.id, job_id = %c.delivery.job_id,
                        error = %e, "webhook delivery: cannot record the attempt; retrying")
                });
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e) => {
                job_span(d, c, false).await.in_scope(|| {
                    tracing::warn!(delivery = c.delivery.id, job_id = %c.delivery.job_id,
                        error = %e, "webhook delivery: attempt not recorded")
                });
            }
        }
    }
}

/// The span of the delivery's job, for the lines about its attempts: `job_id`, `type` and
/// `attempt`, as every line about a job carries (docs/configuration.md, `--log-format json`: a
/// pipeline routing by `span.type` or `span.job_id` dropped these lines, probe s53c F6). The
/// attempt is the job's run the event is of; the type is read from the job (`look_up`: the
/// delivery does not keep it), a store read made only for these lines (failed attempts, give-ups,
/// lost claims), never for an accepted one. A job that cannot be read leaves the type out.
async fn job_span(d: &Deliverer, c: &Claimed, look_up: bool) -> tracing::Span {
    let job = match look_up {
        true => d.store.get(c.delivery.job_id).await.ok().flatten(),
        false => None,
    };
    let span = tracing::info_span!(
        "job",
        job_id = %c.delivery.job_id,
        r#type = tracing::field::Empty,
        attempt = tracing::field::Empty
    );
    if let Some(j) = &job {
        span.record("type", j.job_type.as_str());
    }
    if let Some(a) = c.delivery.event_attempt().or(job.map(|j| j.attempt)) {
        span.record("attempt", a);
    }
    span
}

/// A failed attempt that will be retried, at `info`: the job, the receiver's host (never the
/// URL: its query may carry a secret) and what went wrong, so a backlog shows before the give-up.
fn log_retry(c: &Claimed, rec: &Attempt, outcome: Outcome) {
    let host = reqwest::Url::parse(&c.delivery.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let retry_in = match outcome {
        Outcome::Failed { retry_in, .. } => retry_in,
        Outcome::Delivered | Outcome::Gone => Duration::ZERO,
    };
    tracing::info!(
        delivery = c.delivery.id,
        job_id = %c.delivery.job_id,
        host = %host,
        attempts = c.delivery.attempts + 1,
        error = rec.error.as_deref().unwrap_or(""),
        retry_in_ms = retry_in.as_millis() as u64,
        "webhook attempt failed; retrying"
    );
}

/// POSTs the delivery; the receiver's status and what it asks of the next attempt (read for a
/// status that is not 2xx), or what went wrong.
async fn send(
    d: &Deliverer,
    http: &reqwest::Client,
    c: &Claimed,
) -> Result<(u16, Refusal), String> {
    let u = super::parse_url("notify.url", &c.delivery.url)?;
    // Names are checked by the client's resolver; an address written in the URL here.
    target::check_literal(&u, d.config.allow_private)?;
    let body = c.delivery.body();
    let key = endpoint_key(&d.master_key, &endpoint_of(&u));
    let t = now_us() / 1_000_000;
    let sig = signature(&key, t, body.as_bytes());
    let r = http
        .post(u)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(super::SIGNATURE_HEADER, sig)
        .header(super::DELIVERY_HEADER, c.delivery.id.to_string())
        .body(body)
        .send()
        .await
        .map_err(describe)?;
    let status = r.status().as_u16();
    let retry_after = r.headers().get(reqwest::header::RETRY_AFTER);
    let refusal = answer::refusal(
        status,
        retry_after.and_then(|v| v.to_str().ok()),
        std::time::SystemTime::now(),
    );
    Ok((status, refusal))
}

/// A reqwest error with its causes (the refusal of the resolver is a cause), never a key.
fn describe(e: reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    let mut last = String::new();
    while let Some(s) = src {
        let m = s.to_string();
        if m != last {
            out.push_str(": ");
            out.push_str(&m);
            last = m;
        }
        src = s.source();
    }
    out
}
