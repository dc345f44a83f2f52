//! What one read of a job listing holds, on both backends (the embedded store and a real Redis):
//! a read stops once the jobs it keeps pass `paging::READ_BYTES` (as stored) and goes on from its
//! last job (`JobPage::bytes_cut`); a filter checked record by record stops a read once the
//! records it examined pass `paging::SCAN_BYTES`, with a short page whose cursor is the last
//! record examined. Following the cursors lists every job exactly once, in order.

mod redis_support;
#[macro_use]
mod store_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use runyard::job::{now_us, Job, JobStatus};
use runyard::store::paging::{READ_BYTES, SCAN_BYTES};
use runyard::store::{JobPage, ListQuery, Names, Store, StoreSettings, Visibility};
use serde_json::json;
use uuid::Uuid;

fn settings() -> StoreSettings {
    StoreSettings::default()
}

both!(
    a_read_of_large_jobs_stops_at_its_bytes_and_the_cursor_lists_each_once,
    a_filtered_read_over_large_jobs_stops_at_its_scan_bytes_and_misses_none,
);

/// The args of a large job: 512 KiB of text.
const LARGE: usize = 512 << 10;

async fn submit(s: &Arc<dyn Store>, args: serde_json::Value) -> Uuid {
    let j = Job {
        args,
        ..Job::new("rb.job", "rb", now_us())
    };
    s.submit(j).await.expect("submit").job.id
}

/// Every page of `q` from the start, following the cursors.
async fn pages(s: &Arc<dyn Store>, q: &ListQuery) -> Vec<JobPage> {
    let mut out = Vec::new();
    let mut q = q.clone();
    loop {
        let page = s.list(q.clone()).await.expect("list");
        let next = page.next_cursor;
        out.push(page);
        match next {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
        assert!(out.len() < 200, "paging did not end");
    }
}

/// The args bytes a page holds.
fn args_bytes(p: &JobPage) -> usize {
    p.jobs.iter().map(|j| j.args.to_string().len()).sum()
}

/// 2 small jobs, 20 of 512 KiB, 2 small (newest): a listing of 1,000 reads at most
/// READ_BYTES of them (and the one that passed it) at a time, unfiltered and by status (on Redis
/// the STARTING jobs are read from the lease set), and its cursors list each job once.
async fn a_read_of_large_jobs_stops_at_its_bytes_and_the_cursor_lists_each_once(s: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..2 {
        ids.push(submit(&s, json!({"small": i})).await);
    }
    for i in 0..20 {
        ids.push(submit(&s, json!({"i": i, "big": "x".repeat(LARGE)})).await);
    }
    for i in 2..4 {
        ids.push(submit(&s, json!({"small": i})).await);
    }
    ids.reverse();
    let claimed = s
        .claim("rb", "w1", 100, Duration::from_secs(300))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), ids.len());
    for status in [None, Some(JobStatus::Starting)] {
        let q = ListQuery {
            limit: 1000,
            status,
            ..Default::default()
        };
        let all = pages(&s, &q).await;
        let listed: Vec<Uuid> = all
            .iter()
            .flat_map(|p| p.jobs.iter().map(|j| j.id))
            .collect();
        assert_eq!(listed, ids, "{status:?}: every job once, newest first");
        assert!(all.len() >= 3, "{status:?}: ~10 MB in reads of 4 MiB");
        for p in &all {
            let held = args_bytes(p);
            assert!(
                held <= READ_BYTES + LARGE + 1024,
                "{status:?}: a read held {held} bytes of args in {} jobs",
                p.jobs.len()
            );
            if p.next_cursor.is_some() {
                assert!(p.bytes_cut, "{status:?}: cut at its bytes");
                assert_eq!(p.next_cursor, p.jobs.last().map(|j| j.id));
            }
        }
    }
}

/// A `text=` filter matching two small jobs around 40 non-matching jobs of 512 KiB (20 MiB): a
/// read stops once it examined SCAN_BYTES of them, its short page's cursor the last one
/// examined; the next read goes on from there and finds the other match. The same for a
/// caller confined by its grant (it sees them all), whose cursor must be a job it sees.
async fn a_filtered_read_over_large_jobs_stops_at_its_scan_bytes_and_misses_none(
    s: Arc<dyn Store>,
) {
    let old = submit(&s, json!({"note": "needle one"})).await;
    let mut large = BTreeSet::new();
    for i in 0..40 {
        large.insert(submit(&s, json!({"i": i, "big": "x".repeat(LARGE)})).await);
    }
    let new = submit(&s, json!({"note": "needle two"})).await;
    let confined = Visibility {
        types: Some(Names {
            list: vec!["rb.*".into()],
            exact: false,
        }),
        channels: None,
    };
    for visible in [None, Some(confined)] {
        let q = ListQuery {
            limit: 10,
            text: Some("needle".into()),
            visible: visible.clone(),
            ..Default::default()
        };
        let all = pages(&s, &q).await;
        let listed: Vec<Uuid> = all
            .iter()
            .flat_map(|p| p.jobs.iter().map(|j| j.id))
            .collect();
        assert_eq!(
            listed,
            vec![new, old],
            "{visible:?}: each match once, in order"
        );
        let first = &all[0];
        assert_eq!(first.jobs.len(), 1, "{visible:?}: a short first page");
        assert!(!first.bytes_cut);
        let cursor = first.next_cursor.expect("a cursor after the scan's bytes");
        assert!(
            large.contains(&cursor),
            "{visible:?}: the last record examined"
        );
        // The records the first read examined: those from the newest down to the cursor.
        let examined = large.iter().filter(|id| **id >= cursor).count();
        let most = SCAN_BYTES / LARGE + 1;
        assert!(
            examined <= most,
            "{visible:?}: the first read examined {examined} records of 512 KiB (at most {most})"
        );
    }
}
