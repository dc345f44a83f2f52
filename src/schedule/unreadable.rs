//! A schedule whose record this build cannot read (written by hand, by a bug): the fire loop
//! cannot plan it, and asking again at every wake-up would fail (and log) every second on every
//! process. It is set aside instead: its wake time moved [`SET_ASIDE`] ahead (only if its record
//! is still the unreadable one and it is still due: `ScheduleStore::schedule_unreadable`), logged naming it at most
//! once a minute per process; the other schedules fire as before. Fixed or deleted, it is handled
//! again (`DELETE /async/schedules/{name}` removes it).

use std::time::Duration;

use crate::store::job_record::is_corrupt;
use crate::store::schedules::{log_unreadable, Unreadable};
use crate::store::{Store, StoreError};

/// How long an unreadable schedule is set aside before the fire loop reads it again.
pub const SET_ASIDE: Duration = Duration::from_secs(60);

/// After the fire loop's handling of schedule `name` failed with `e`: when its record does not
/// read, it is set aside and logged, and true is returned (the loop is not in trouble); false
/// for any other error (or when the record reads after all: the error was about something
/// else), which the caller reports.
pub async fn set_aside(store: &dyn Store, name: &str, e: &StoreError) -> bool {
    if !is_corrupt(e) {
        return false;
    }
    let now = store.time().await;
    let aside = Unreadable::WakeAt {
        at: now + SET_ASIDE.as_micros() as i64,
        due_by: now,
    };
    match store.schedule_unreadable(name, aside).await {
        Ok(true) => {
            log_unreadable(name, "the fire loop (set aside for a minute)", e);
            true
        }
        // Readable after all, no longer due (planned meanwhile by a build that reads it), or the
        // store failed: the caller reports the error it had.
        _ => false,
    }
}
