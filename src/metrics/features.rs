//! The counters other rooms keep as plain atomics (event streams, webhooks, waiting jobs),
//! registered once on a process's [`Metrics`] (docs/observability.md lists them).

use std::sync::Arc;

use super::Metrics;
use crate::events::Hub;

/// A counter family with one label: name (without `_total`), help, the label, and its series
/// read at every scrape as `(label value, count)`.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Hub) -> Vec<(&'static str, u64)>,
);

/// The counter families of the event hub, the webhook loop and the waiting jobs.
const FAMILIES: &[Family] = &[
    (
        "runyard_event_streams_refused",
        "Event streams refused at a connection cap (WebSocket close 1013, SSE 503)",
        "cap",
        |h| {
            let s = h.stats();
            vec![("node", s.refused_node), ("channel", s.refused_channel)]
        },
    ),
    (
        "runyard_event_streams_closed",
        "Event streams closed by the server: slow consumers (1008), missed pongs, shutdown (1012), an expired JWT (1008)",
        "reason",
        |h| {
            let s = h.stats();
            vec![
                ("slow_consumer", s.slow_closed),
                ("ping_timeout", s.ping_timeouts),
                ("shutdown", s.shutdown_closed),
                ("credential_expired", s.expired_closed),
            ]
        },
    ),
    (
        "runyard_webhook_deliveries",
        "Webhook delivery attempts by result (given_up: the horizon passed, or a 410 Gone)",
        "result",
        |_| {
            let c = crate::notify::counters();
            vec![
                ("delivered", c.delivered),
                ("failed", c.failed),
                ("given_up", c.given_up),
            ]
        },
    ),
    (
        "runyard_waiting_releases",
        "WAITING jobs released, by what released them and, at a deadline, what on_deadline did",
        "by",
        |_| {
            let c = crate::waiting::counters().snapshot();
            vec![
                ("signals", c.released_by_signals),
                ("deadline_run", c.deadline_runs),
                ("deadline_fail", c.deadline_fails),
                ("deadline_skip", c.deadline_skips),
            ]
        },
    ),
    (
        "runyard_waiting_signal_reads",
        "Signal records the checks and displays of waiting jobs went through: counted (index \
         entries) or read (their numbers)",
        "how",
        |_| {
            let c = crate::waiting::counters().snapshot();
            vec![("counted", c.records_counted), ("numbers", c.numbers_read)]
        },
    ),
];

/// Registers the event hub's, the webhook loop's and the waiting jobs' counters.
pub fn register(metrics: &Metrics, hub: Arc<Hub>) {
    for &(name, help, label, read) in FAMILIES {
        let h = hub.clone();
        metrics.register_counter_family_fn(name, help, move || {
            read(&h)
                .into_iter()
                .map(|(value, n)| (vec![(label, value.to_string())], n))
                .collect()
        });
    }
    let h = hub.clone();
    metrics.register_gauge_fn(
        "runyard_event_streams_open",
        "WebSocket and SSE event streams open on this process",
        move || h.stats().open as i64,
    );
    let h = hub.clone();
    metrics.register_gauge_fn(
        "runyard_event_polls_waiting",
        "Long polls (GET /api/v1/async_event/?wait_ms=) waiting for events on this process, \
         counted with the streams against the node's stream cap",
        move || h.stats().polls as i64,
    );
    let h = hub.clone();
    metrics.register_gauge_fn(
        "runyard_event_channels_open",
        "Channels (and the global stream) with at least one stream open on this process",
        move || h.stats().channels as i64,
    );
    let h = hub.clone();
    metrics.register_counter_fn(
        "runyard_events_delivered",
        "Events written to event streams on this process",
        move || h.stats().delivered,
    );
    metrics.register_counter_fn(
        "runyard_event_tail_errors",
        "Errors reading the store's global event stream (the tail retries)",
        move || hub.stats().tail_errors,
    );
    metrics.register_counter_fn(
        "runyard_waiting_jobs_entered",
        "Jobs that entered WAITING (submitted or fired with wait_for) on this process",
        || crate::waiting::counters().snapshot().entered,
    );
}
