//! One paging rule for the listings that go newest first with a cursor (jobs on both
//! backends): read one item more than the page ([`probe`]); when it came, the page is cut to its
//! size and the key of its last item is the cursor of the next page ([`cut`]).
//!
//! And one meaning for the job listing's filters ([`ListQuery::matches`]), which both backends
//! apply to the records they read: what an index can answer (status, channel on SQLite, the
//! creation time as a range of the time-ordered ids) narrows the read; what no index holds
//! (schedule, text in args, dead letters, a type glob on Redis) is checked record by record, at
//! most [`SCAN_BOUND`] records and [`SCAN_BYTES`] of them per read: past that a page comes back
//! short, with a cursor to go on. And one bound on what a read holds: [`Kept`], [`READ_BYTES`].
//!
//! A caller confined by its grant ([`ListQuery::visible`]) is answered as if the jobs it does not
//! see were not stored: they are skipped before anything else looks at them, so the page, the
//! cursor (always the id of a job it sees, or none) and the point where a scan stops (counted in
//! jobs it sees) are the same whatever other tenants store. The price: the jobs it does not see
//! are read past without bound (on SQLite by the `type` and `channel` columns, in SQL; on Redis
//! record by record).

use uuid::Uuid;

use super::{JobPage, ListQuery, Names, Visibility};
use crate::job::{Job, JobStatus};

/// Records examined per page at most when a filter is checked record by record.
pub const SCAN_BOUND: usize = 10_000;

/// Bytes of jobs (as stored) one read of a listing keeps, past which it stops: a read holds at
/// most this plus the one job that passed it, whatever its `limit`. Its page is then short
/// ([`JobPage::bytes_cut`]) and goes on from its last job.
pub const READ_BYTES: usize = 4 << 20;

/// Bytes of records (as stored) one read examines, with [`SCAN_BOUND`] records: past either a
/// page comes back short, its cursor the last record examined. Only a filter checked record by
/// record reaches it (otherwise every record examined is kept, and [`READ_BYTES`] comes first);
/// it bounds the work of a read over large jobs (10,000 records of 1 MiB were 10 GB of JSON).
pub const SCAN_BYTES: usize = 16 << 20;

/// How far a job's id time (UUID v7, milliseconds) may be from its `created_at`: the id is made
/// for it ([`crate::job::id_at`]: that time, or at most [`crate::job::ID_AHEAD_MS`] after it).
/// An older build made the id with its node's clock, read with `created_at` (Redis's submits
/// since 369dd94 read the store's clock for it: such a job from a node whose clock was off by
/// more than this is outside its range). The range read is widened by this and `created_at`
/// checked exactly.
const ID_SKEW_MS: i64 = 60_000;

/// The smallest UUID v7 of the millisecond `ms` (ids compare as their text does).
fn id_floor(ms: i64) -> Uuid {
    let ms = u128::try_from(ms.clamp(0, (1i64 << 48) - 1)).unwrap_or(0);
    Uuid::from_u128(ms << 80)
}

impl ListQuery {
    /// Whether `j` passes every filter of the query (the cursor aside).
    pub fn matches(&self, j: &Job) -> bool {
        self.status.is_none_or(|s| j.status == s)
            && self
                .job_type
                .as_deref()
                .is_none_or(|g| runyard_runners::glob_match(g, &j.job_type))
            && self.channel.as_deref().is_none_or(|c| j.channel_id == c)
            && self
                .schedule
                .as_deref()
                .is_none_or(|s| j.schedule.as_deref() == Some(s))
            && self.runner.as_deref().is_none_or(|r| j.runner == r)
            && self.created_after.is_none_or(|t| j.created_at >= t)
            && self.created_before.is_none_or(|t| j.created_at < t)
            && (!self.dead || (j.status == JobStatus::Error && j.attempt >= j.max_attempts))
            && self.text.as_deref().is_none_or(|t| args_contain(j, t))
            && self.visible_to(j)
    }

    /// Whether the caller the query is for sees `j` (always, for an unconfined caller).
    pub fn visible_to(&self, j: &Job) -> bool {
        self.visible.as_ref().is_none_or(|v| v.sees(j))
    }

    /// Whether some filter is checked record by record (then a read is bounded by
    /// [`SCAN_BOUND`]). `by_index` says what the backend's indexes answer: status, type, channel.
    pub fn scans(&self, type_by_index: bool, channel_by_index: bool) -> bool {
        self.schedule.is_some()
            || self.runner.is_some()
            || self.text.is_some()
            || self.dead
            || self.created_after.is_some()
            || self.created_before.is_some()
            || (self.job_type.is_some() && !type_by_index)
            || (self.channel.is_some() && !channel_by_index)
            || (self.visible.is_some() && !(type_by_index && channel_by_index))
    }

    /// The ids to read, newest first: below `upper` (exclusive: the cursor, or past
    /// `created_before`) and from `lower` (inclusive: before `created_after`).
    pub fn id_range(&self) -> (Option<Uuid>, Option<Uuid>) {
        let lower = self
            .created_after
            .map(|t| id_floor(t.div_euclid(1000) - ID_SKEW_MS));
        let before = self
            .created_before
            .map(|t| id_floor(t.div_euclid(1000) + 1 + ID_SKEW_MS));
        let upper = match (self.cursor, before) {
            (Some(c), Some(b)) => Some(c.min(b)),
            (c, b) => c.or(b),
        };
        (lower, upper)
    }

    /// The query with `status` only (a dead letter is ERROR).
    pub fn status_read(&self) -> Option<JobStatus> {
        if self.dead {
            Some(JobStatus::Error)
        } else {
            self.status
        }
    }
}

impl Visibility {
    /// Whether the job's type and channel are both within it.
    pub fn sees(&self, j: &Job) -> bool {
        self.sees_fields(&j.job_type, &j.channel_id)
    }

    /// [`Self::sees`] of a job of `job_type` on `channel` (read without its body).
    pub fn sees_fields(&self, job_type: &str, channel: &str) -> bool {
        self.types.as_ref().is_none_or(|t| t.matches(job_type))
            && self.channels.as_ref().is_none_or(|c| c.matches(channel))
    }
}

impl Names {
    /// Why `g` is not a runyard glob (`*` any run of characters, `?` one character): brackets,
    /// braces and backslashes, which other dialects read as classes, alternatives or escapes,
    /// are refused rather than taken literally. Grants, runner types and listings' filters alike.
    pub fn glob_error(g: &str) -> Option<String> {
        let c = g.chars().find(|c| "[]{}\\".contains(*c))?;
        Some(format!(
            "`{g}` is not a valid glob: `{c}` has no meaning here (runyard globs have `*`, \
             any run of characters, and `?`, one character)"
        ))
    }

    /// Whether `s` is one of the names, or matches one of the globs.
    pub fn matches(&self, s: &str) -> bool {
        if self.exact {
            return self.list.iter().any(|l| l == s);
        }
        self.list.iter().any(|g| runyard_runners::glob_match(g, s))
    }
}

/// Text in args: the args as compact JSON contain `needle`, ignoring case (what the dashboard's
/// search box means).
fn args_contain(j: &Job, needle: &str) -> bool {
    let hay = serde_json::to_string(&j.args).unwrap_or_default();
    hay.to_lowercase().contains(&needle.to_lowercase())
}

/// How many items to read for a page of `limit`: one more, which tells whether a next page
/// exists.
pub fn probe(limit: usize) -> usize {
    limit.saturating_add(1)
}

/// Cuts `items`, read with [`probe`], to `limit`; returns the cursor of the next page (`key` of
/// the last item kept) when more items were read than fit, `None` at the end.
pub fn cut<T, C>(items: &mut Vec<T>, limit: usize, key: impl FnOnce(&T) -> Option<C>) -> Option<C> {
    if items.len() <= limit {
        return None;
    }
    items.truncate(limit);
    items.last().and_then(key)
}

impl JobPage {
    /// A page of jobs from jobs read with [`probe`] (newest first).
    pub fn from_probe(mut jobs: Vec<Job>, limit: usize) -> Self {
        let next_cursor: Option<Uuid> = cut(&mut jobs, limit, |j| Some(j.id));
        Self {
            jobs,
            next_cursor,
            bytes_cut: false,
        }
    }
}

/// The jobs one read of a listing keeps for its page, newest first: [`probe`] of them, or fewer
/// once they pass [`READ_BYTES`] as stored; and the bytes of the records it examined, against
/// [`SCAN_BYTES`]. Both backends read record by record into it and stop as soon as it says so,
/// so that the last job kept is the last record examined.
pub struct Kept {
    limit: usize,
    jobs: Vec<Job>,
    bytes: usize,
    scanned_bytes: usize,
}

impl Kept {
    /// Nothing kept yet, for a page of `limit`.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            jobs: Vec::new(),
            bytes: 0,
            scanned_bytes: 0,
        }
    }

    /// Counts a record of `bytes` (as stored) examined; `true` once the read has examined
    /// [`SCAN_BYTES`]: it ends with a short page ([`Self::short`]) unless [`Self::keep`] said
    /// it is done.
    pub fn examined(&mut self, bytes: usize) -> bool {
        self.scanned_bytes = self.scanned_bytes.saturating_add(bytes);
        self.scanned_bytes >= SCAN_BYTES
    }

    /// Keeps `j`, `bytes` as stored; `true` when the read is done ([`Self::done`]).
    pub fn keep(&mut self, j: Job, bytes: usize) -> bool {
        self.jobs.push(j);
        self.bytes = self.bytes.saturating_add(bytes);
        self.done()
    }

    /// Whether the read is done: [`probe`] jobs kept, or [`READ_BYTES`] of them.
    pub fn done(&self) -> bool {
        self.jobs.len() >= probe(self.limit) || self.bytes >= READ_BYTES
    }

    /// The page of a read that is done or read to the end: the probe's, or, stopped at
    /// [`READ_BYTES`] before it, the jobs kept with the last one as cursor.
    pub fn page(self) -> JobPage {
        if self.jobs.len() > self.limit || self.bytes < READ_BYTES {
            return JobPage::from_probe(self.jobs, self.limit);
        }
        let next_cursor = self.jobs.last().map(|j| j.id);
        JobPage {
            jobs: self.jobs,
            next_cursor,
            bytes_cut: true,
        }
    }

    /// The short page of a read stopped by a scan bound: the jobs kept, then `cursor` (the last
    /// record examined).
    pub fn short(self, cursor: Option<Uuid>) -> JobPage {
        JobPage {
            jobs: self.jobs,
            next_cursor: cursor,
            bytes_cut: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{cut, probe};

    #[test]
    fn a_next_cursor_only_when_more_came() {
        let mut v: Vec<u32> = (1..=probe(3) as u32).collect();
        assert_eq!(cut(&mut v, 3, |x| Some(*x)), Some(3));
        assert_eq!(v, vec![1, 2, 3]);
        let mut v = vec![1, 2, 3];
        assert_eq!(cut(&mut v, 3, |x| Some(*x)), None);
        assert_eq!(v, vec![1, 2, 3]);
        let mut v = vec![1];
        assert_eq!(cut(&mut v, 0, |x| Some(*x)), None);
        assert!(v.is_empty());
    }
}
