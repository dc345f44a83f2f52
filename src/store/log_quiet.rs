//! Logging what is met again and again (an unreadable record that every listing request, on
//! every process, meets) at most once a minute per thing and process: [`loud`] says when.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long after a thing was logged loudly it is logged quietly (at DEBUG).
pub(crate) const QUIET: Duration = Duration::from_secs(60);

/// How many things [`loud`] remembers when it last said so (beyond: quiet).
const REMEMBERED: usize = 1024;

/// Whether the thing named `key` (its kind in the name: `schedule x`, a Redis key) is to be
/// logged loudly now: the first time, and again once [`QUIET`] has passed; false in between
/// (the caller logs at DEBUG then), so that a listing read often or many processes do not
/// flood the log.
pub(crate) fn loud(key: &str) -> bool {
    static LOG: OnceLock<Mutex<HashMap<String, Instant>>> = OnceLock::new();
    let now = Instant::now();
    let mut logged = LOG
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let quiet = |at: &Instant| now.duration_since(*at) < QUIET;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thing_is_loud_once_a_minute() {
        assert!(loud("log_quiet test a"));
        assert!(!loud("log_quiet test a"));
        assert!(loud("log_quiet test b"));
    }
}
