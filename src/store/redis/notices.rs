//! Notices between processes: what one process commits wakes the others (a worker for a new
//! QUEUED job or to stop a cancelled one, the scheduler for a new SCHEDULED job, long polls for
//! new events). Each process publishes its notices in batches on `P:notices` and relays the other
//! processes' notices into its store's local broadcast channel.
//!
//! Only what other processes act on crosses: `Queued` and `Events` (published by `lua/commit.lua`
//! itself, one message per commit call, so a worker wakes without waiting for the committing
//! process and without a round trip of its own), `Changed` for CANCELLED and SCHEDULED (by the
//! publisher here, in batches). Notices are hints: a lost one costs a
//! poll interval, never a job, so a publish that fails is dropped, and after the subscription
//! comes back every listener is woken once.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::job::JobStatus;
use crate::store::Notice;

/// Most notices folded into one message.
const BATCH: usize = 4096;

/// Whether other processes hear of `n` (the others are left out of the queue to the publisher).
pub(super) fn crosses(n: &Notice) -> bool {
    match n {
        Notice::Queued { .. } | Notice::Events => true,
        Notice::Changed { status, .. } => {
            matches!(status, JobStatus::Cancelled | JobStatus::Scheduled)
        }
    }
}

/// Starts the publisher and the subscriber of the notice channel `P:notices` (`P`: `prefix`).
pub(super) fn start(
    conn: super::conn::SharedConn,
    client: redis::Client,
    prefix: &str,
    origin: &str,
    rx: mpsc::Receiver<Notice>,
    to: Listeners,
    stop: &CancellationToken,
) {
    let channel = format!("{prefix}:notices");
    let o = origin.to_string();
    tokio::spawn(publish(conn, channel.clone(), o.clone(), rx, stop.clone()));
    tokio::spawn(subscribe(client, channel, o, to, stop.clone()));
}

/// Publishes this process's notices until `stop`.
async fn publish(
    conn: super::conn::SharedConn,
    channel: String,
    origin: String,
    mut rx: mpsc::Receiver<Notice>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            n = rx.recv() => match n { Some(n) => n, None => return },
            _ = stop.cancelled() => return,
        };
        let mut runners = BTreeSet::new();
        let mut changed = Vec::new();
        let mut events = false;
        let mut add = |n: Notice| match n {
            Notice::Queued { runner } => {
                runners.insert(runner);
            }
            Notice::Changed { job_id, status }
                if matches!(status, JobStatus::Cancelled | JobStatus::Scheduled) =>
            {
                changed.push((job_id, status))
            }
            Notice::Changed { .. } => {}
            Notice::Events => events = true,
        };
        add(first);
        for _ in 0..BATCH {
            match rx.try_recv() {
                Ok(n) => add(n),
                Err(_) => break,
            }
        }
        if runners.is_empty() && changed.is_empty() && !events {
            continue;
        }
        let mut msg = origin.clone();
        for r in runners {
            msg.push_str("\nQ ");
            msg.push_str(&r);
        }
        for (id, st) in changed {
            msg.push_str(&format!("\nC {id} {st}"));
        }
        if events {
            msg.push_str("\nE");
        }
        let mut c = conn.get();
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(msg)
                .query_async::<i64>(&mut c),
        )
        .await;
        if let Ok(Err(e)) = &r {
            conn.heal(e).await;
        }
        if !matches!(r, Ok(Ok(_))) {
            tracing::debug!("notice not published (redis away); other processes will poll");
        }
    }
}

fn parse(msg: &str, origin: &str) -> Vec<Notice> {
    let mut lines = msg.lines();
    if lines.next() == Some(origin) {
        return vec![];
    }
    lines
        .filter_map(|l| {
            let mut p = l.splitn(3, ' ');
            match p.next()? {
                "Q" => Some(Notice::Queued {
                    runner: p.next()?.to_string(),
                }),
                "C" => Some(Notice::Changed {
                    job_id: Uuid::parse_str(p.next()?).ok()?,
                    status: p.next()?.parse().ok()?,
                }),
                "E" => Some(Notice::Events),
                _ => None,
            }
        })
        .collect()
}

/// Where the notices received go.
pub(super) struct Listeners {
    /// This process's listeners.
    pub(super) notify: broadcast::Sender<Notice>,
    /// Told of every QUEUED announcement before the listeners are (see hints.rs).
    pub(super) hints: std::sync::Arc<super::hints::QueueHints>,
    /// Notified when the subscription comes back after a loss: Redis may have come back
    /// without its data (`keycheck.rs`).
    pub(super) resubscribed: std::sync::Arc<tokio::sync::Notify>,
}

impl Listeners {
    fn send(&self, n: Notice) {
        if let Notice::Queued { runner } = &n {
            self.hints.queued(runner);
        }
        let _ = self.notify.send(n);
    }
}

/// Relays the other processes' notices to `to` until `stop`, resubscribing after a loss.
async fn subscribe(
    client: redis::Client,
    channel: String,
    origin: String,
    to: Listeners,
    stop: CancellationToken,
) {
    let mut delay = Duration::from_millis(100);
    let mut first = true;
    loop {
        let connect = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(ps)
        };
        let ps = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(3), connect) => r,
            _ = stop.cancelled() => return,
        };
        match ps {
            Ok(Ok(mut ps)) => {
                delay = Duration::from_millis(100);
                to.hints.live(true);
                if !first {
                    // Notices may have been missed while away: wake everyone once.
                    to.send(Notice::Queued { runner: "*".into() });
                    to.send(Notice::Events);
                    to.resubscribed.notify_one();
                }
                first = false;
                let mut stream = ps.on_message();
                loop {
                    let m = tokio::select! {
                        m = stream.next() => m,
                        _ = stop.cancelled() => return,
                    };
                    let Some(m) = m else { break };
                    let Ok(text) = m.get_payload::<String>() else {
                        continue;
                    };
                    for n in parse(&text, &origin) {
                        to.send(n);
                    }
                }
                to.hints.live(false);
                tracing::warn!("redis notice subscription lost; resubscribing");
            }
            Ok(Err(e)) => {
                first = false;
                // Refused (an ACL without SUBSCRIBE or the channel, `&` patterns) or unreachable:
                // the processes poll meanwhile, so jobs wait up to a claim round longer to start
                // and events to be seen; said once a minute, not every 2 s.
                let key = e.code().unwrap_or("io").to_string();
                if crate::store::log_quiet::loud("redis subscribe", &key) {
                    tracing::warn!(channel = %channel, error = %e, "cannot subscribe to the Redis notice channel: this process polls meanwhile (jobs start and events arrive later); retrying");
                }
            }
            Err(_) => {
                first = false;
                if crate::store::log_quiet::loud("redis subscribe", "timeout") {
                    tracing::warn!(channel = %channel, "no answer to SUBSCRIBE on the Redis notice channel within 3 s: this process polls meanwhile; retrying");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_skip_our_own() {
        let id = Uuid::now_v7();
        let msg = format!("me\nQ local-0\nC {id} CANCELLED\nE");
        assert!(parse(&msg, "me").is_empty());
        let n = parse(&msg, "other");
        assert_eq!(n.len(), 3);
        assert!(matches!(&n[0], Notice::Queued { runner } if runner == "local-0"));
        assert!(
            matches!(&n[1], Notice::Changed { job_id, status: JobStatus::Cancelled } if *job_id == id)
        );
        assert!(matches!(n[2], Notice::Events));
    }
}
