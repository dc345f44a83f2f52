//! The counters other rooms keep as plain atomics (event streams, webhooks, waiting jobs),
//! registered once on a process's [`Metrics`] (docs/observability.md lists them).

use std::sync::Arc;

use super::Metrics;
use crate::events::Hub;

fn one(label: &'static str, value: &str, n: u64) -> (super::Labels, u64) {
    (vec![(label, value.to_string())], n)
}

/// Registers the event hub's, the webhook loop's and the waiting jobs' counters.
pub fn register(metrics: &Metrics, hub: Arc<Hub>) {
    let h = hub.clone();
    metrics.register_gauge_fn(
        "runyard_event_streams_open",
        "WebSocket and SSE event streams open on this process",
        move || h.stats().open as i64,
    );
    let h = hub.clone();
    metrics.register_gauge_fn(
        "runyard_event_channels_open",
        "Channels (and the global stream) with at least one stream open on this process",
        move || h.stats().channels as i64,
    );
    let h = hub.clone();
    metrics.register_counter_family_fn(
        "runyard_event_streams_refused",
        "Event streams refused at a connection cap (WebSocket close 1013, SSE 503)",
        move || {
            let s = h.stats();
            vec![
                one("cap", "node", s.refused_node),
                one("cap", "channel", s.refused_channel),
            ]
        },
    );
    let h = hub.clone();
    metrics.register_counter_family_fn(
        "runyard_event_streams_closed",
        "Event streams closed by the server: slow consumers (1008), missed pongs, shutdown (1012)",
        move || {
            let s = h.stats();
            vec![
                one("reason", "slow_consumer", s.slow_closed),
                one("reason", "ping_timeout", s.ping_timeouts),
                one("reason", "shutdown", s.shutdown_closed),
            ]
        },
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
    metrics.register_counter_family_fn(
        "runyard_webhook_deliveries",
        "Webhook delivery attempts by result (given_up: the horizon passed)",
        || {
            let c = crate::notify::counters();
            vec![
                one("result", "delivered", c.delivered),
                one("result", "failed", c.failed),
                one("result", "given_up", c.given_up),
            ]
        },
    );
    metrics.register_counter_fn(
        "runyard_waiting_jobs_entered",
        "Jobs that entered WAITING (submitted or fired with wait_for) on this process",
        || crate::waiting::counters().snapshot().entered,
    );
    metrics.register_counter_family_fn(
        "runyard_waiting_releases",
        "WAITING jobs released, by what released them and, at a deadline, what on_deadline did",
        || {
            let c = crate::waiting::counters().snapshot();
            vec![
                one("by", "signals", c.released_by_signals),
                one("by", "deadline_run", c.deadline_runs),
                one("by", "deadline_fail", c.deadline_fails),
                one("by", "deadline_skip", c.deadline_skips),
            ]
        },
    );
}
