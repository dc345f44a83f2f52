//! What the store says about the Redis server it connects to: its version (refused below 7.0)
//! and its URL without the password, for messages.

use ::redis::aio::ConnectionManager;

use super::*;

/// The server's version, refused below Redis 7. An answer that passes (`conn::transient`: Redis
/// busy running a script, `BUSY`; loading its data; a connection dropped) is waited on until
/// `deadline` (the start's `store.retry`), as the start's check waits; refused credentials or a
/// TLS handshake refused are said at once.
pub(super) async fn server_version(
    conn: &super::conn::SharedConn,
    deadline: Instant,
) -> Result<String> {
    let deadline = deadline.max(Instant::now() + Duration::from_secs(2));
    let mut delay = Duration::from_millis(100);
    let mut waited = false;
    let info: String = loop {
        let e = match ::redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn.get())
            .await
        {
            Ok(info) => break info,
            Err(e) => e,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if !super::conn::transient(&e)
            || super::conn::stuck(&e)
            || super::conn::tls_refused(&e)
            || left.is_zero()
        {
            return Err(StoreError::Unavailable(format!("redis INFO: {e}")));
        }
        if !waited {
            waited = true;
            tracing::warn!(error = %e, left = ?left, "redis did not answer INFO for now: trying again within `store.retry`");
        }
        tokio::time::sleep(delay.min(left)).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    };
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("0")
        .trim()
        .to_string();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        return Err(StoreError::Unavailable(format!(
            "redis {version} is too old: runyard needs Redis 7.0 or later (stream trimming \
                 metadata used to detect gaps in event streams)"
        )));
    }
    Ok(version)
}

/// The primary a server follows when `INFO replication` (its text) says it is a replica
/// (`role:slave`): `host:port`, as far as it tells; `None` for a primary.
pub(super) fn replica_of(info: &str) -> Option<String> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    if field("role")? != "slave" {
        return None;
    }
    let host = field("master_host").unwrap_or("?");
    let port = field("master_port").unwrap_or("?");
    Some(format!("{host}:{port}"))
}

/// A URL without its password, for messages: `user:***@`, and `pass=***` (or `password=`) in
/// the query, where the driver reads a `unix://` URL's password.
pub(crate) fn redact(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        // Not a URL: no part of it is shown (it may hold a password the parser could not find).
        return "(not a valid URL)".to_string();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    let secret = |k: &str| k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password");
    if u.query_pairs().any(|(k, _)| secret(&k)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// Every command the store's scripts and calls use, run once at start on keys of its own (then
/// deleted), in a script called by `EVALSHA` (`Script`: `EVALSHA`, then `SCRIPT LOAD`), plus
/// the notice channel's `PUBLISH`: an ACL that refuses one stops the start, naming it. Without
/// this a user without `PUBLISH` had every submit stored and answered 500 (the script stopped
/// at its last command, after the writes), one without `EVALSHA` started healthy and failed
/// every write.
const PERMISSIONS_PROBE: &str = r#"
local k = KEYS[1]
local h, z, x, l, s, v = k .. ':h', k .. ':z', k .. ':x', k .. ':l', k .. ':s', k .. ':v'
local calls = {
  {'HSET', h, 'f', '1'}, {'HSETNX', h, 'g', '1'}, {'HGET', h, 'f'}, {'HMGET', h, 'f'},
  {'HINCRBY', h, 'n', 1}, {'HDEL', h, 'g'},
  {'ZADD', z, 1, 'a'}, {'ZRANGEBYSCORE', z, '-inf', '+inf'}, {'ZRANGEBYLEX', z, '-', '+'},
  {'ZRANGE', z, 0, -1}, {'ZCARD', z}, {'ZCOUNT', z, '-inf', '+inf'},
  {'ZREMRANGEBYSCORE', z, 5, 6}, {'ZREMRANGEBYRANK', z, 5, 6}, {'ZPOPMIN', z}, {'ZREM', z, 'a'},
  {'XADD', x, '*', 'f', 'v'}, {'XRANGE', x, '-', '+'}, {'XINFO', 'STREAM', x},
  {'RPUSH', l, 'a'}, {'LRANGE', l, 0, -1}, {'LINDEX', l, 0}, {'LSET', l, 0, 'b'}, {'LLEN', l},
  {'LTRIM', l, 0, 0},
  {'SADD', s, 'a'}, {'SMEMBERS', s}, {'SCARD', s}, {'SREM', s, 'a'},
  {'SET', v, '1'},
  -- The replay memory's form (`replay.rs`): NX with GET needs Redis 7.0.
  {'SET', v, '2', 'NX', 'GET', 'PX', 60000, name = 'SET ... NX GET PX (Redis 7.0 or later)'},
  {'GET', v}, {'INCR', v}, {'INCRBY', v, 2}, {'PEXPIRE', v, 60000},
  {'PTTL', v}, {'EXISTS', v}, {'TYPE', v}, {'TIME'}, {'PUBLISH', ARGV[1], ARGV[2]},
  {'DEL', h, z, x, l, s, v},
}
for _, c in ipairs(calls) do
  local r = redis.pcall(unpack(c))
  if type(r) == 'table' and r.err then
    redis.pcall('DEL', h, z, x, l, s, v)
    return {c.name or c[1], r.err}
  end
end
return {}
"#;

/// Why the start's check ([`check_permissions`]) failed.
pub(super) enum CheckFailed {
    /// Redis refused a write for a reason of its own, not the user's permissions
    /// (`conn::write_refusal`): what to say, and the command it refused.
    Refused(&'static str, String),
    /// An error that passes on its own (`conn::transient`: a replica whose link to its primary
    /// is down, `MASTERDOWN`; Redis loading its data, a connection dropped or timed out; not
    /// refused credentials nor a TLS handshake, which are said at once): waited on at start
    /// within `store.retry`, as a running node waits on it.
    Passing(String),
    /// Anything else: the start's error (a command the ACL refuses, named).
    Other(StoreError),
}

/// An error that says the Redis user may not run a command, reach a key or a channel (an ACL), or
/// that a command is renamed away: Redis's words for these differ by version and by where the
/// command ran (`NOPERM ...`; in a script, 7.0's "The user executing the script can't ..." and
/// "Unknown Redis command called from script", 7.2's "ACL failure in script: ... no permissions").
fn acl_refusal(said: &str) -> bool {
    let said = said.to_ascii_lowercase();
    [
        "noperm",
        "acl failure",
        "no permissions",
        "the user executing the script can't",
        "unknown command",
        "unknown redis command",
    ]
    .iter()
    .any(|w| said.contains(w))
}

/// The start's error for `command` refused with `said`, not a write refusal: the ACL's, with the
/// hint, or Redis's own words.
fn not_taken(command: &str, said: &str) -> StoreError {
    const ACL_HINT: &str = "docs/redis.md lists the commands; an ACL with `+@all` on the \
                            prefix's keys and channels grants them";
    StoreError::Unavailable(if acl_refusal(said) {
        format!("the Redis user cannot run `{command}`, which runyard needs: {said} ({ACL_HINT})")
    } else {
        format!(
            "redis refused `{command}` in the start's check of the commands runyard needs: {said}"
        )
    })
}

/// Refuses a Redis user that cannot run a command runyard needs ([`PERMISSIONS_PROBE`]); a
/// write Redis refuses for a reason of its own (out of memory, unable to persist, too few
/// replicas, a replica) is told apart ([`CheckFailed::Refused`]), since no ACL mends it.
pub(super) async fn check_permissions(
    conn: &mut ConnectionManager,
    prefix: &str,
    origin: &str,
) -> std::result::Result<(), CheckFailed> {
    let key = format!("{prefix}:permcheck:{origin}");
    let refused = |command: &str, e: RedisError| {
        if let Some(said) = super::conn::write_refusal(&e) {
            return CheckFailed::Refused(said, command.to_string());
        }
        if super::conn::transient(&e) && !super::conn::stuck(&e) && !super::conn::tls_refused(&e) {
            // Redis's own words (`MASTERDOWN Link with MASTER is down ...`), not the client's.
            return CheckFailed::Passing(match (e.code(), e.detail()) {
                (Some(code), Some(detail)) => format!("{code} {detail}"),
                _ => e.to_string(),
            });
        }
        CheckFailed::Other(not_taken(command, &e.to_string()))
    };
    // The message's first line is a process id no process has: the others read no notice in it.
    let failed: Vec<String> = ::redis::Script::new(PERMISSIONS_PROBE)
        .key(&key)
        .arg(format!("{prefix}:notices"))
        .arg(format!("{origin}-permcheck"))
        .invoke_async(conn)
        .await
        .map_err(|e| refused("EVALSHA", e))?;
    if let [command, error] = failed.as_slice() {
        if let Some(said) = super::conn::write_refusal_said(error) {
            return Err(CheckFailed::Refused(said, command.clone()));
        }
        return Err(CheckFailed::Other(not_taken(command, error)));
    }
    // The calls made outside scripts.
    let mut pipe = ::redis::pipe();
    pipe.cmd("XTRIM").arg(&key).arg("MAXLEN").arg(0).ignore();
    pipe.cmd("XREVRANGE")
        .arg(&key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .ignore();
    pipe.cmd("HGETALL").arg(&key).ignore();
    pipe.cmd("HSTRLEN").arg(&key).arg("f").ignore();
    pipe.cmd("SSCAN").arg(&key).arg(0).ignore();
    pipe.cmd("ZSCORE").arg(&key).arg("a").ignore();
    pipe.cmd("ZREVRANGEBYSCORE")
        .arg(&key)
        .arg("+inf")
        .arg("-inf")
        .ignore();
    pipe.cmd("BLMPOP")
        .arg(0.001)
        .arg(1)
        .arg(&key)
        .arg("LEFT")
        .ignore();
    pipe.query_async::<()>(conn)
        .await
        .map_err(|e| refused("XTRIM or BLMPOP", e))
}

/// [`check_permissions`] at start, with a write Redis refuses said as a running node says it
/// ("the store refuses writes: ...", `conn::write_refusal`), not as a permission. A replica's
/// refusal (`READONLY`, or `MASTERDOWN`: a failover behind the address may be under way) and
/// the other errors that pass on their own (Redis loading its data, a dropped connection:
/// [`CheckFailed::Passing`]) are waited on until `deadline` (the start's `store.retry`, shared
/// with the connection's own wait) as a running node waits on them, with a new connection at
/// most once a second, which reaches what the address names now; the other refusals (out of
/// memory, unable to persist, too few replicas) last until Redis's operator acts, and a running
/// node answers them at once: the start stops at once, naming them.
pub(super) async fn check_at_start(
    conn: &super::conn::SharedConn,
    prefix: &str,
    origin: &str,
    deadline: Instant,
) -> Result<()> {
    // A connection made late in `store.retry` still gets a renewed connection and a few tries.
    let deadline = deadline.max(Instant::now() + Duration::from_secs(2));
    let mut delay = Duration::from_millis(100);
    let mut waited = false;
    loop {
        let (said, stop) = match check_permissions(&mut conn.get(), prefix, origin).await {
            Ok(()) => {
                if waited {
                    tracing::info!("redis takes writes now: the start goes on");
                }
                return Ok(());
            }
            Err(CheckFailed::Other(e)) => return Err(e),
            Err(CheckFailed::Refused(said, command)) => {
                let error = StoreError::writes_refused_at_start(&format!(
                    "{said} (a write of the start's check: `{command}`)"
                ));
                if !super::conn::replica_refusal(said) {
                    return Err(error);
                }
                (said.to_string(), error)
            }
            Err(CheckFailed::Passing(said)) => {
                let error = StoreError::Unavailable(format!(
                    "redis did not take the start's check within `store.retry`: {said}"
                ));
                (said, error)
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(stop);
        }
        if !waited {
            waited = true;
            tracing::warn!(
                left = ?left,
                "redis refused the start's check for now ({said}): a failover behind the \
                 address, or Redis loading its data, may be under way; trying again, on a new \
                 connection at most once a second, within `store.retry`"
            );
        }
        conn.renew().await;
        tokio::time::sleep(delay.min(left)).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// A warning when Redis may evict keys (`maxmemory-policy` other than `noeviction`): jobs, their
/// queue entries and leases would then vanish without a trace once Redis is full.
pub(super) fn eviction_warning(info_memory: &str) -> Option<String> {
    let policy = info_memory
        .lines()
        .find_map(|l| l.strip_prefix("maxmemory_policy:"))?
        .trim();
    (policy != "noeviction").then(|| {
        format!(
            "Redis's maxmemory-policy is `{policy}`: once it is full it deletes keys, and \
             runyard's jobs, queues and leases with them (jobs lost or run twice). Set \
             `maxmemory-policy noeviction` (writes are then refused when full, nothing of them \
             stored, and /health/ready says so)"
        )
    })
}

/// Logs [`eviction_warning`] for the server `conn` reaches, if it applies.
pub(super) async fn warn_if_evicting(conn: &mut ConnectionManager) {
    let info: RedisResult<String> = ::redis::cmd("INFO").arg("memory").query_async(conn).await;
    if let Some(w) = info.ok().as_deref().and_then(eviction_warning) {
        tracing::warn!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_urls_password_is_never_shown() {
        for (url, shown) in [
            ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
            ("redis://u:pw@h/1", "redis://u:***@h/1"),
            (
                "unix:///run/r.sock?pass=SockPW&db=1",
                "unix:///run/r.sock?pass=***&db=1",
            ),
            (
                "unix:///r.sock?user=default&PASSWORD=x",
                "unix:///r.sock?user=default&PASSWORD=***",
            ),
            ("redis://h:6379", "redis://h:6379"),
            ("not a url :pw@", "(not a valid URL)"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn a_replica_is_told_from_its_info() {
        let primary = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n";
        assert_eq!(replica_of(primary), None);
        let replica = "# Replication\r\nrole:slave\r\nmaster_host:10.0.0.2\r\n\
                       master_port:6380\r\nmaster_link_status:up\r\n";
        assert_eq!(replica_of(replica).as_deref(), Some("10.0.0.2:6380"));
        assert_eq!(replica_of("role:slave\r\n").as_deref(), Some("?:?"));
        assert_eq!(replica_of(""), None, "not said: taken for a primary");
    }

    #[test]
    fn only_noeviction_is_quiet() {
        let info = |p: &str| format!("# Memory\r\nused_memory:1\r\nmaxmemory_policy:{p}\r\n");
        assert_eq!(eviction_warning(&info("noeviction")), None);
        for p in ["allkeys-lru", "volatile-ttl", "allkeys-random"] {
            let w = eviction_warning(&info(p)).expect(p);
            assert!(w.contains(p) && w.contains("noeviction"), "{w}");
        }
        assert_eq!(
            eviction_warning("# Memory\r\n"),
            None,
            "not said: nothing to warn of"
        );
    }

    /// Redis's words for an ACL's refusal, by version and by where the command ran (review
    /// rev52f: only `NOPERM` and two phrasings were read as the ACL's, so the hint naming `&P:*`
    /// was left out of the most likely mistake, a user without the notice channel); and words
    /// that are not the ACL's.
    #[test]
    fn an_acls_refusal_is_told_in_every_wording() {
        for acl in [
            "NOPERM User u has no permissions to run the 'hset' command",
            "ERR The user executing the script can't publish to the channel mentioned in the command",
            "ERR The user executing the script can't access at least one of the keys mentioned in the command arguments",
            "ERR The user executing the script can't run this command or subcommand",
            "ERR Unknown Redis command called from script",
            "ERR ACL failure in script: User u has no permissions to run the 'hset' command",
            "ERR ACL failure in script: No permissions to access a channel",
            "ERR unknown command 'BLMPOP', with args beginning with:",
        ] {
            assert!(acl_refusal(acl), "{acl}");
        }
        for other in [
            "ERR syntax error",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        ] {
            assert!(!acl_refusal(other), "{other}");
        }
    }
}
