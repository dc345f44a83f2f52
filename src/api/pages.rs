//! Answers bounded by bytes as well as by count: a page of log lines or of jobs is written item
//! by item straight into the answer's buffer and ends, before its `limit`, once the next item
//! would take it past [`PAGE_BYTES`] (the first item always goes in, whatever its size). The page
//! then continues as any short page does: from its `next` (logs) or `next_cursor` (jobs), the
//! key of the last item it holds, so nothing is skipped or repeated.
//!
//! The items are also read from the store in chunks ([`LOG_CHUNK`], [`first_jobs_chunk`],
//! [`next_jobs_chunk`]), and a read of jobs stops at [`READ_BYTES`] of them, so that a large
//! `limit` over large items never holds much more than a page of them: see [`jobs`] for the
//! bound.
//!
//! [`READ_BYTES`]: crate::store::paging::READ_BYTES

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::{ApiError, ApiResult};
use super::list_params::Fields;
use super::AppState;
use crate::auth::tokens::Grant;
use crate::store::ListQuery;

/// The most bytes a page of log lines or jobs holds, as JSON, unless its first item alone is
/// larger (then the page is that item).
pub const PAGE_BYTES: usize = 4 << 20;

/// Log lines read from the store at a time: at most 16 KiB each, 4 MiB of text.
pub const LOG_CHUNK: usize = 256;

/// Jobs read from the store first, before their size is known: 8 jobs of the largest args and
/// result (`api.max_body_bytes` each) already fill a page.
pub fn first_jobs_chunk(limit: usize) -> usize {
    limit.min(8)
}

/// Jobs one read asks for at most.
pub const JOBS_CHUNK_MAX: usize = 1000;

/// Store reads behind one page at most: past them the page ends short, its `next_cursor` the
/// last job it holds. Reads fill a page in one or two when its jobs are alike; more come when
/// the room left holds few jobs at their mean size (small jobs after large ones, read 1 at a
/// time) or the store cut reads at their bytes.
pub const MAX_READS: usize = 32;

/// How many more jobs to read: as many as fit the room left at the mean size seen, at most
/// [`JOBS_CHUNK_MAX`]; at least 1, at most `left`. What bounds the memory of a read is the
/// store's own cut at [`READ_BYTES`] of jobs, not this estimate (small jobs in front of large
/// ones make it ask for many).
///
/// [`READ_BYTES`]: crate::store::paging::READ_BYTES
pub fn next_jobs_chunk(page: &Page, left: usize) -> usize {
    let mean = page.body_bytes() / page.items.max(1);
    let room = PAGE_BYTES.saturating_sub(page.buf.len());
    (room / mean.max(1))
        .min(JOBS_CHUNK_MAX)
        .clamp(1, left.max(1))
}

/// The answer of `GET /async/jobs` for `query` (its filters checked, `visible` set): jobs read
/// in chunks, written job by job within the budget; a cut page's `next_cursor` is its last job,
/// where the store would have put it (the next page lists the jobs below it). With `fields`,
/// each job is written with only those members, and the budget counts them so: a page of small
/// members of large jobs holds many more jobs (the store still reads whole records, each read
/// stopping at [`READ_BYTES`] as stored, at most [`MAX_READS`] a page).
///
/// The memory behind one answer, counted as JSON: the answer (at most [`PAGE_BYTES`], or its
/// first job alone), one read's jobs (at most [`READ_BYTES`] as stored plus the job that passed
/// it), and within the read one record more (SQLite reads row by row; Redis loads 1 MiB of
/// records a round trip, or one larger record). With `J` the largest job listed: about
/// 9 MiB + 3 J. A job's large parts each came in one request body of at most
/// `api.max_body_bytes` (1 MiB by default): its args (the submit), its result and its status
/// details (a report each), the error message of each run (one report per attempt); so `J` is
/// about 3 MiB plus 1 MiB per run that reported a long error. Parsed, a job takes a few times
/// its JSON (serde_json's tree: up to ~16x for an array of one-digit numbers).
///
/// [`READ_BYTES`]: crate::store::paging::READ_BYTES
pub async fn jobs(
    st: &AppState,
    grant: &Grant,
    mut query: ListQuery,
    fields: Option<&Fields>,
) -> ApiResult<Response> {
    let mut page = Page::open(r#"{"jobs":["#);
    let mut left = query.limit;
    let mut last: Option<uuid::Uuid> = None;
    query.limit = first_jobs_chunk(left);
    let mut reads = 0;
    let next_cursor = loop {
        let asked = query.limit;
        let got = st.app.store.list(query.clone()).await?;
        reads += 1;
        let n = got.jobs.len();
        // Never reached for a job the store should not have listed; kept as a second lock.
        for j in got
            .jobs
            .iter()
            .filter(|j| grant.sees(&j.job_type, Some(&j.channel_id)))
        {
            // With `fields`, the members not asked for are not built (a job's args, result and
            // runs may each be a megabyte).
            let shown = match fields {
                Some(f) => f.pick(j),
                None => j.to_public(),
            };
            if !page.push(&shown)? {
                break;
            }
            last = Some(j.id);
        }
        if page.full {
            break last;
        }
        left = left.saturating_sub(n);
        match got.next_cursor {
            // A full chunk, or one the store cut at its bytes, and more wanted: on from the
            // store's cursor. Otherwise its cursor is the page's (none at the end; after a scan's
            // bound, the last job read; after MAX_READS, the page's last job).
            Some(c) if left > 0 && (n == asked || got.bytes_cut) && reads < MAX_READS => {
                query.cursor = Some(c);
                query.limit = next_jobs_chunk(&page, left);
            }
            c => break c,
        }
    };
    page.close(&[("next_cursor", &next_cursor)])
}

/// A JSON object whose one array is written item by item, within [`PAGE_BYTES`].
pub struct Page {
    buf: Vec<u8>,
    start: usize,
    item: Vec<u8>,
    /// Items in the array.
    pub items: usize,
    /// Whether an item was refused: the page ends here.
    pub full: bool,
}

fn encode_err(e: serde_json::Error) -> ApiError {
    ApiError::internal("encode_error", format!("cannot encode the answer: {e}"))
}

impl Page {
    /// A page whose text starts with `head`, which opens the array (`{"jobs":[`).
    pub fn open(head: &str) -> Self {
        Self {
            buf: head.as_bytes().to_vec(),
            start: head.len(),
            item: Vec::new(),
            items: 0,
            full: false,
        }
    }

    /// Bytes of the items written so far.
    fn body_bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Adds `item` to the array when it fits the budget (the first always does); `false` when it
    /// does not: it was not added and the page is full.
    pub fn push(&mut self, item: &impl Serialize) -> ApiResult<bool> {
        if self.full {
            return Ok(false);
        }
        self.item.clear();
        serde_json::to_writer(&mut self.item, item).map_err(encode_err)?;
        // Room kept for the tail (`],"next_cursor":"<uuid>"}` and the like).
        if self.items > 0 && self.buf.len() + 1 + self.item.len() + 128 > PAGE_BYTES {
            self.full = true;
            return Ok(false);
        }
        if self.items > 0 {
            self.buf.push(b',');
        }
        self.buf.extend_from_slice(&self.item);
        self.items += 1;
        Ok(true)
    }

    /// Closes the array and appends `tail`'s members (`"next":3,"status":"SUCCESS"`), in order.
    pub fn close(mut self, tail: &[(&str, &dyn erased::Field)]) -> ApiResult<Response> {
        self.buf.push(b']');
        for (key, value) in tail {
            self.buf.push(b',');
            serde_json::to_writer(&mut self.buf, key).map_err(encode_err)?;
            self.buf.push(b':');
            value.write(&mut self.buf).map_err(encode_err)?;
        }
        self.buf.push(b'}');
        Ok(([(header::CONTENT_TYPE, "application/json")], self.buf).into_response())
    }
}

/// A member value of a page's tail, whatever its type.
pub mod erased {
    /// Written as JSON.
    pub trait Field {
        /// Writes the value into `out`.
        fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()>;
    }

    impl<T: serde::Serialize> Field for T {
        fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
            serde_json::to_writer(out, self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_holds_its_first_item_whatever_its_size_and_then_stops_at_the_budget() {
        let big = "x".repeat(PAGE_BYTES);
        let mut p = Page::open(r#"{"lines":["#);
        assert!(p.push(&big).unwrap());
        assert!(!p.push(&"y").unwrap());
        assert!(p.full);
        let mut p = Page::open(r#"{"lines":["#);
        let line = "z".repeat(1000);
        let mut n = 0;
        while p.push(&line).unwrap() {
            n += 1;
        }
        assert!(n > 1000, "{n}");
        let tail: &[(&str, &dyn erased::Field)] = &[("next", &7u64), ("status", &"SUCCESS")];
        let res = p.close(tail).unwrap();
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    }
}
