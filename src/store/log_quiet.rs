//! Logging what is met again and again (an unreadable record that every listing request, on
//! every process, meets) at most once a minute per thing and process: [`loud`] says when.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long after a thing was logged loudly it is logged quietly (at DEBUG).
pub(crate) const QUIET: Duration = Duration::from_secs(60);

/// How many things of one kind [`loud`] remembers when it last said so (beyond: quiet).
const REMEMBERED: usize = 1024;

/// Whether the thing named `key`, of kind `kind` (`"schedule"`, `"redis key"`: each kind has its
/// own [`REMEMBERED`] places, so many things of one kind never quiet another's), is to be logged
/// loudly now: the first time, and again once [`QUIET`] has passed; false in between (the
/// caller logs at DEBUG then), so that a listing read often or many processes do not flood the
/// log.
pub(crate) fn loud(kind: &'static str, key: &str) -> bool {
    type Kinds = HashMap<&'static str, HashMap<String, Instant>>;
    static LOG: OnceLock<Mutex<Kinds>> = OnceLock::new();
    let mut kinds = LOG
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    loud_in(kinds.entry(kind).or_default(), key, Instant::now())
}

/// [`loud`] for one kind's table, at `now`.
fn loud_in(logged: &mut HashMap<String, Instant>, key: &str, now: Instant) -> bool {
    let quiet = |at: &Instant| now.saturating_duration_since(*at) < QUIET;
    if logged.get(key).is_some_and(quiet) {
        return false;
    }
    if logged.len() >= REMEMBERED {
        logged.retain(|_, at| quiet(at));
    }
    let room = logged.len() < REMEMBERED || logged.contains_key(key);
    if room {
        logged.insert(key.to_owned(), now);
    }
    room
}

/// A background loop's failed store call `$e` (a `StoreError`), said at WARN with the rest of
/// the arguments, but at DEBUG when it is this node's refusal of the store's work
/// (`StoreError::is_node_refusal`) or a write the store refused (`StoreError::is_write_refusal`:
/// Redis out of memory, unable to persist, a replica): the key check, or the store, says that at
/// ERROR once a minute, and every loop meets it on every try.
macro_rules! warn_unless_refused {
    ($e:expr, $($rest:tt)+) => {
        if $e.is_node_refusal() || $e.is_write_refusal() {
            tracing::debug!(error = %$e, $($rest)+)
        } else {
            tracing::warn!(error = %$e, $($rest)+)
        }
    };
}
pub(crate) use warn_unless_refused;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thing_is_loud_once_a_minute() {
        assert!(loud("test", "log_quiet test a"));
        assert!(!loud("test", "log_quiet test a"));
        assert!(loud("test", "log_quiet test b"));
        let (mut t, t0) = (HashMap::new(), Instant::now());
        assert!(loud_in(&mut t, "a", t0));
        assert!(!loud_in(&mut t, "a", t0 + Duration::from_secs(59)));
        assert!(
            loud_in(&mut t, "a", t0 + QUIET),
            "loud again after a minute"
        );
        assert!(!loud_in(&mut t, "a", t0 + QUIET + Duration::from_secs(1)));
    }

    #[test]
    fn many_things_of_one_kind_do_not_quiet_another_kind() {
        for i in 0..REMEMBERED + 10 {
            loud("test many", &format!("thing {i}"));
        }
        assert!(!loud("test many", "one more"), "the kind's places are full");
        assert!(loud("test other", "thing 0"));
    }
}
