//! The listing's channel filter over the partial index (`jobs_shared_channel`): a job in its own
//! channel is listed from its id, others from the index, in one newest-first order; a database
//! made with the full `jobs_channel` index opens, loses it and lists the same.

use uuid::Uuid;

use super::SqliteStore;
use crate::job::{now_us, Job, JobStatus};
use crate::store::{JobStore, ListQuery, StoreSettings};

fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir, StoreSettings::default(), false).expect("open")
}

/// Every job the channel lists, `limit` per page, following the cursor.
async fn by_channel(s: &SqliteStore, channel: &str, limit: usize) -> Vec<Uuid> {
    let mut out = Vec::new();
    let mut cursor = None;
    for _ in 0..100 {
        let page = s
            .list(ListQuery {
                limit,
                cursor,
                channel: Some(channel.into()),
                ..Default::default()
            })
            .await
            .expect("list");
        out.extend(page.jobs.iter().map(|j| j.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("paging did not end");
}

/// A parent in its own channel, two children in the parent's channel (one submitted before the
/// parent, naming its id ahead), a job in its own channel that is not listed, and noise.
async fn fill(s: &SqliteStore) -> (Job, Vec<Uuid>) {
    let parent = Job::new("p", "r", now_us());
    let mut early = Job::new("c", "r", now_us());
    early.channel_id = parent.id.to_string();
    let early = s.submit(early).await.expect("submit").job;
    let parent = s.submit(parent).await.expect("submit").job;
    for _ in 0..5 {
        s.submit(Job::new("noise", "r", now_us()))
            .await
            .expect("submit");
    }
    let mut late = Job::new("c", "r", now_us());
    late.channel_id = parent.id.to_string();
    let late = s.submit(late).await.expect("submit").job;
    // Newest first by id (the parent's id was made before `early`'s).
    let mut want = vec![late.id, parent.id, early.id];
    want.sort_by(|a, b| b.cmp(a));
    (parent, want)
}

#[tokio::test]
async fn a_channel_lists_its_own_job_and_the_others_in_order_on_every_page() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = open(dir.path());
    let (parent, want) = fill(&s).await;
    let ch = parent.id.to_string();
    for limit in [1, 2, 50] {
        assert_eq!(by_channel(&s, &ch, limit).await, want, "limit {limit}");
    }
    // With a status: the parent and `late` only when they have it.
    let queued = s
        .list(ListQuery {
            limit: 10,
            channel: Some(ch.clone()),
            status: Some(JobStatus::Queued),
            job_type: Some("p".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        queued.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![parent.id]
    );
    // A noise job's own channel lists it alone.
    let noise = s
        .list(ListQuery {
            limit: 10,
            job_type: Some("noise".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    let one = noise.jobs[0].id;
    assert_eq!(by_channel(&s, &one.to_string(), 1).await, vec![one]);
    assert!(by_channel(&s, "nobody", 5).await.is_empty());
}

/// The plan reads a shared channel from the partial index, not by scanning the table.
#[test]
fn the_channel_listing_reads_the_partial_index() {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(open(dir.path()));
    let c = rusqlite::Connection::open(dir.path().join("runyard.db")).expect("db");
    super::sql::register_glob(&c).expect("glob");
    let asked = ListQuery {
        limit: 10,
        channel: Some("orders".into()),
        ..Default::default()
    };
    // A caller confined to named channels: the same read, once per channel.
    let confined = ListQuery {
        limit: 10,
        visible: Some(crate::store::Visibility {
            types: None,
            channels: Some(crate::store::Names {
                list: vec!["orders".into(), "refunds".into()],
                exact: false,
            }),
        }),
        ..Default::default()
    };
    for q in [asked, confined] {
        let (sql, args) = super::jobs::list_sql(&q, Some("zzz"), 11);
        let mut st = c
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("plan");
        let plan: Vec<String> = st
            .query_map(
                rusqlite::params_from_iter(args.iter().map(|a| a.as_ref())),
                |r| r.get::<_, String>(3),
            )
            .expect("plan")
            .collect::<rusqlite::Result<_>>()
            .expect("plan");
        let plan = plan.join("\n");
        assert!(plan.contains("jobs_shared_channel"), "{plan}");
        assert!(!plan.contains("SCAN jobs"), "{plan}");
    }
}

#[tokio::test]
async fn a_database_with_the_full_channel_index_opens_and_lists_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = open(dir.path());
    let (parent, want) = fill(&s).await;
    drop(s);
    // As the previous build left it: every job in `jobs_channel`, no partial index.
    let c = rusqlite::Connection::open(dir.path().join("runyard.db")).expect("db");
    c.execute_batch(
        "DROP INDEX jobs_shared_channel; CREATE INDEX jobs_channel ON jobs(channel, id);",
    )
    .expect("old schema");
    drop(c);
    // The store's threads let go of the lock file when they end.
    let mut reopened = None;
    for _ in 0..100 {
        match SqliteStore::open(dir.path(), StoreSettings::default(), false) {
            Ok(s) => {
                reopened = Some(s);
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    let s = reopened.expect("reopen");
    assert_eq!(by_channel(&s, &parent.id.to_string(), 2).await, want);
    let c = rusqlite::Connection::open(dir.path().join("runyard.db")).expect("db");
    let names: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'")
        .expect("names")
        .query_map([], |r| r.get(0))
        .expect("names")
        .collect::<rusqlite::Result<_>>()
        .expect("names");
    assert!(
        names.contains(&"jobs_shared_channel".to_string()),
        "{names:?}"
    );
    assert!(!names.contains(&"jobs_channel".to_string()), "{names:?}");
}
