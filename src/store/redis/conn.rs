//! The store's multiplexed connection, made anew when redis-rs's `ConnectionManager` can no
//! longer heal itself. The manager reconnects after an I/O error, but a reconnect that fails for
//! another reason (Redis refusing the password while credentials rotate, an ACL reload, a
//! failover to a node that does not know the user yet) leaves it answering that error for good
//! (redis-rs issue #984): a node stayed down after its password worked again. Nor does it leave
//! a server that answers but has become a replica: a failover behind one address (a VIP, a DNS
//! name, a proxy) that leaves the old primary reachable as a replica of the new one kept every
//! write refused (`READONLY`) until the old primary's clients were killed. So an error of those
//! kinds (and a health probe that finds a replica, `retention.rs`) makes a new manager here,
//! which connects to whatever the address names now, at most once a second; until one
//! connects, the old one stays (and so does its error).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, RedisError};

use crate::store::{Result, StoreError};

/// The connection every command of the store takes (cheap clones share it).
#[derive(Clone)]
pub(super) struct SharedConn {
    inner: Arc<Inner>,
}

struct Inner {
    current: parking_lot::RwLock<ConnectionManager>,
    client: Client,
    cfg: ConnectionManagerConfig,
    /// When the last new manager was tried: at most one try a second, one at a time.
    renewed: tokio::sync::Mutex<Option<Instant>>,
}

/// The shortest time between two tries at a new manager.
const RENEW_GAP: Duration = Duration::from_secs(1);

/// Errors worth retrying: the connection, or a Redis that is starting, failing over (a
/// replica's refusal is retried on a new connection, [`SharedConn::heal`]) or busy running a
/// script past `busy-reply-threshold` (`BUSY`: refused before it ran, until the script ends or
/// is killed).
pub(super) fn transient(e: &RedisError) -> bool {
    use ::redis::ErrorKind::*;
    matches!(
        e.kind(),
        IoError | BusyLoadingError | TryAgain | ClusterDown | MasterDown | ReadOnly
    ) || busy(e)
        || e.is_connection_dropped()
        // Credentials refused on a reconnect: retried, with a new connection (`conn.rs`).
        || stuck(e)
        || e.is_connection_refusal()
        || e.is_timeout()
}

/// The time left before `deadline` (none without one).
pub(super) fn left(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::ZERO, |d| {
        d.saturating_duration_since(Instant::now())
    })
}

/// Redis busy running a script: `BUSY`, or a `MULTI` whose `EXEC` came while it was
/// (`EXECABORT ... because of: BUSY`, nothing of it run).
pub(super) fn busy(e: &RedisError) -> bool {
    e.code() == Some("BUSY")
        || (e.code() == Some("EXECABORT") && e.detail().is_some_and(|d| d.contains("BUSY")))
}

/// What a command answers that Redis refused `BUSY` on every try within `store.retry`. Redis
/// refuses `BUSY` before running anything, so nothing of it ran; its own words ("You can only
/// call SCRIPT KILL or SHUTDOWN NOSAVE") are for its operator, not for a client (probe s54a).
pub(super) const BUSY_ALL_ALONG: &str = "redis was busy running a script (`BUSY`: it refuses \
    every command until the script ends or is killed) for the whole of `store.retry`: nothing of \
    it was stored; try again later";

/// What a write Redis refused for lack of memory answers (Redis's own message names a script's
/// hash and line, which say nothing to a client).
pub(super) const OUT_OF_MEMORY: &str = "redis is out of memory (`maxmemory` reached, policy \
    `noeviction`): the write was refused and nothing of it was stored";

/// Redis refused a write for lack of memory (`OOM command not allowed when used memory >
/// 'maxmemory'`): with `noeviction` a script's first write is refused, so nothing was written.
pub(super) fn out_of_memory(e: &RedisError) -> bool {
    e.code() == Some("OOM") || e.to_string().contains(OOM_TEXT)
}

/// What Redis's refusal for lack of memory says (also in a script's error text).
const OOM_TEXT: &str = "command not allowed when used memory";

/// What a write Redis refused because it cannot persist says (`MISCONF`).
const MISCONF: &str = "redis cannot persist to disk (`MISCONF`: its last RDB save failed and \
    `stop-writes-on-bgsave-error` is on; its log says why): the write was refused and nothing of \
    it was stored";

/// What a write Redis refused for want of replicas says (`NOREPLICAS`).
const NOREPLICAS: &str = "redis has fewer good replicas than `min-replicas-to-write` asks for \
    (`NOREPLICAS`): the write was refused and nothing of it was stored";

/// What a write a read-only replica refused says (`READONLY`).
const READ_ONLY: &str = "redis answered as a read-only replica (`READONLY`), not as the \
    primary, for the whole of `store.retry` (a new connection tried once a second: a failover \
    behind the address ends within it; an address that names a replica does not, docs/redis.md): \
    the write was refused and nothing of it was stored";

/// What a write Redis refused because it cannot write its append-only file says (`MISCONF`).
const MISCONF_AOF: &str = "redis cannot write its append-only file (`MISCONF`: e.g. its disk \
    is full; its log says why): the write was refused and nothing of it was stored";

/// Why Redis refused a write before doing any of it (a script's first write is the one refused,
/// so nothing of it was written), for a reason that lasts until its operator acts or a failover
/// ends: out of memory (`OOM`), unable to persist (`MISCONF`), without the replicas
/// `min-replicas-to-write` asks for (`NOREPLICAS`), a replica (`READONLY`). `None` for any other
/// error. Redis's own message names a script's hash and line, which say nothing to a client.
pub(super) fn write_refusal(e: &RedisError) -> Option<&'static str> {
    if out_of_memory(e) {
        return Some(OUT_OF_MEMORY);
    }
    if e.kind() == ErrorKind::ReadOnly {
        return Some(READ_ONLY);
    }
    refusal_coded(e.code().unwrap_or_default(), e.detail().unwrap_or_default())
}

/// [`write_refusal`] for an error as a script's `redis.pcall` hands it over: its text, `CODE
/// detail` (the start's check of the commands runyard needs, `server_info.rs`).
pub(super) fn write_refusal_said(text: &str) -> Option<&'static str> {
    if text.contains(OOM_TEXT) {
        return Some(OUT_OF_MEMORY);
    }
    let text = text.trim_start_matches('-');
    let (code, detail) = text.split_once(' ').unwrap_or((text, ""));
    match code {
        "OOM" => Some(OUT_OF_MEMORY),
        "READONLY" => Some(READ_ONLY),
        _ => refusal_coded(code, detail),
    }
}

/// The refusals told by their code alone (and `MISCONF`'s detail).
fn refusal_coded(code: &str, detail: &str) -> Option<&'static str> {
    match code {
        "MISCONF" if detail.contains("AOF") => Some(MISCONF_AOF),
        "MISCONF" => Some(MISCONF),
        "NOREPLICAS" => Some(NOREPLICAS),
        _ => None,
    }
}

/// Whether a refusal [`write_refusal`] said is a replica's (`READONLY`): the one a failover
/// behind the address ends by itself, so the one worth waiting on.
pub(super) fn replica_refusal(said: &str) -> bool {
    said == READ_ONLY
}

/// A TLS handshake that failed (`rediss://`): the server's certificate not signed by a trusted
/// CA or not naming the URL's host, a server refusing the handshake or answering something
/// else than TLS.
/// Told by rustls's own words: redis-rs hands out the I/O error they come in only as `cause`, a
/// borrowed trait object that cannot be downcast. An error not recognised here is retried as
/// before.
pub(super) fn tls_refused(e: &RedisError) -> bool {
    const RUSTLS: [&str; 3] = [
        "invalid peer certificate",
        "received fatal alert",
        "received corrupt message",
    ];
    e.kind() == ErrorKind::IoError && {
        let said = e.to_string();
        RUSTLS.iter().any(|w| said.contains(w))
    }
}

/// What a TLS handshake's failure at start adds to its error.
const TLS_HINT: &str = "the TLS handshake failed: the server's certificate must be signed by a \
    CA of the system's trust store, or of `store.redis_ca` when set, and name the URL's host; \
    a server that refused the handshake (a fatal alert) may require a client certificate, which \
    runyard does not send (`tls-auth-clients no` or `optional` on the Redis)";

/// What a connection closed by the server as soon as it was made (`redis://`, not TLS) adds to
/// the start's warnings and error: a TLS port resets a client that does not speak TLS (probe
/// s48: 30 s of "Connection reset by peer" and nothing else). Only a hint, and the start still
/// retries: a proxy with no Redis behind it (yet) does the same.
const PLAIN_TO_TLS_HINT: &str = "the server closed the connection as soon as it was made: if \
    this port serves TLS, use a `rediss://` URL; a proxy with no Redis behind it does the same";

/// An error the manager does not heal from by itself: a failed authentication.
pub(super) fn stuck(e: &RedisError) -> bool {
    e.kind() == ErrorKind::AuthenticationFailed
}

/// An answer only a replica gives: a write refused (`READONLY`), or a replica without its link
/// to the primary (`MASTERDOWN`). The connection is on a replica (the old primary after a
/// failover, say): a new one may reach the primary the address names now.
pub(super) fn on_replica(e: &RedisError) -> bool {
    matches!(e.kind(), ErrorKind::ReadOnly | ErrorKind::MasterDown)
}

/// What the store says while its connection is on a replica (`primary`: the one it follows, as
/// the replica tells).
pub(super) fn replica_said(primary: &str) -> String {
    format!(
        "redis: connected to a read-only replica (of {primary}), not to the primary: writes \
         are refused; a new connection is tried at most once a second (a failover behind the \
         address, or an address that names a replica: docs/redis.md)"
    )
}

impl SharedConn {
    /// Connects, retrying a Redis not reachable yet for up to `retry`; `url` (without its
    /// password) names it in the error.
    pub(super) async fn connect(
        client: Client,
        cfg: ConnectionManagerConfig,
        retry: Duration,
        url: &str,
    ) -> Result<Self> {
        let (start, mut delay) = (Instant::now(), Duration::from_millis(100));
        let tls = matches!(
            client.get_connection_info().addr,
            ::redis::ConnectionAddr::TcpTls { .. }
        );
        let conn = loop {
            match ConnectionManager::new_with_config(client.clone(), cfg.clone()).await {
                Ok(c) => break c,
                // A certificate not trusted at start is a configuration error: said at once.
                Err(e) if tls && tls_refused(&e) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot connect to redis at {url}: {e} ({TLS_HINT})"
                    )))
                }
                // Refused credentials at start are a configuration error: said at once.
                Err(e) if transient(&e) && !stuck(&e) && start.elapsed() + delay < retry => {
                    if !tls && e.is_connection_dropped() {
                        tracing::warn!(error = %e, hint = PLAIN_TO_TLS_HINT, "redis not reachable yet; retrying");
                    } else {
                        tracing::warn!(error = %e, "redis not reachable yet; retrying");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) if !tls && e.is_connection_dropped() => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot connect to redis at {url}: {e} ({PLAIN_TO_TLS_HINT})"
                    )))
                }
                Err(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "cannot connect to redis at {url}: {e}"
                    )))
                }
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                current: parking_lot::RwLock::new(conn),
                client,
                cfg,
                renewed: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// The current manager.
    pub(super) fn get(&self) -> ConnectionManager {
        self.inner.current.read().clone()
    }

    /// After `e`: makes a new manager ([`Self::renew`]) when `e` is one the current cannot
    /// heal from ([`stuck`], [`on_replica`]). Returns whether a new one is in place.
    pub(super) async fn heal(&self, e: &RedisError) -> bool {
        if !stuck(e) && !on_replica(e) {
            return false;
        }
        self.renew().await
    }

    /// Makes a new manager, unless one was tried within the last second or is being tried.
    /// Returns whether a new one is in place.
    pub(super) async fn renew(&self) -> bool {
        let Ok(mut last) = self.inner.renewed.try_lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < RENEW_GAP) {
            return false;
        }
        *last = Some(Instant::now());
        let made = tokio::time::timeout(
            Duration::from_secs(3),
            ConnectionManager::new_with_config(self.inner.client.clone(), self.inner.cfg.clone()),
        )
        .await;
        match made {
            Ok(Ok(c)) => {
                *self.inner.current.write() = c;
                // Once a minute at most: a node whose address names a replica for good renews
                // about every second.
                if crate::store::log_quiet::loud("redis renew", "connection") {
                    tracing::info!("redis: connected again with a new connection");
                } else {
                    tracing::debug!("redis: connected again with a new connection");
                }
                true
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "redis: a new connection failed too");
                false
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A script's `redis.pcall` hands a refusal over as text: told as the running node's
    /// commands tell it from their error, an ACL's `NOPERM` (or anything else) not.
    #[test]
    fn a_refusal_is_told_from_a_scripts_error_text() {
        for (text, said) in [
            (
                "OOM command not allowed when used memory > 'maxmemory'.",
                Some(OUT_OF_MEMORY),
            ),
            (
                "READONLY You can't write against a read only replica.",
                Some(READ_ONLY),
            ),
            (
                "MISCONF Redis is configured to save RDB snapshots, but it's currently unable \
                 to persist to disk.",
                Some(MISCONF),
            ),
            (
                "MISCONF Errors writing to the AOF file: No space left on device",
                Some(MISCONF_AOF),
            ),
            (
                "NOREPLICAS Not enough good replicas to write.",
                Some(NOREPLICAS),
            ),
            (
                "-NOREPLICAS Not enough good replicas to write.",
                Some(NOREPLICAS),
            ),
            (
                "NOPERM this user has no permissions to run the 'publish' command",
                None,
            ),
            ("ERR unknown command 'HSET'", None),
            ("", None),
        ] {
            assert_eq!(write_refusal_said(text), said, "{text}");
        }
        assert!(replica_refusal(READ_ONLY));
        assert!(!replica_refusal(MISCONF) && !replica_refusal(OUT_OF_MEMORY));
    }
}
