//! A database written by the build before the compact job rows (main at session 7:
//! `testdata/main-s7.sql`, the `sqlite3 .dump` of a data dir `runyard serve` of that build made:
//! five jobs run to their end, SUCCESS and ERROR, service and local, one with an idempotency key,
//! one in the shared channel `orders`; then, without a worker, a QUEUED job in `orders`, a
//! SCHEDULED job with a key and a WAITING one) opens and reads the same through the store: each
//! job as that build read its body, every event as it read it, the listings, the counts, the
//! dead letters, an idempotent resubmit; and a job of it claimed is written in today's form.

use std::collections::BTreeMap;
use std::time::Duration;

use uuid::Uuid;

use super::{stored, SqliteStore};
use crate::job::{Event, Job, JobStatus};
use crate::store::activity::ActivityStore;
use crate::store::counts::JobCountStore;
use crate::store::{EventLog, JobQueue, JobStore, ListQuery, StoreSettings};

const MAIN_S7: &str = include_str!("testdata/main-s7.sql");

/// The jobs and events as the build that wrote them read them: each job's body is its whole
/// JSON; each event as `stored::read_event` read it (unchanged since), channel as text.
fn as_written(db: &std::path::Path) -> (BTreeMap<Uuid, Job>, Vec<Event>) {
    let c = rusqlite::Connection::open(db).expect("db");
    let jobs = c
        .prepare("SELECT body FROM jobs")
        .expect("jobs")
        .query_map([], |r| r.get::<_, String>(0))
        .expect("jobs")
        .map(|b| {
            let j: Job = serde_json::from_str(&b.expect("body")).expect("a job");
            (j.id, j)
        })
        .collect();
    let events = c
        .prepare("SELECT id, channel, body FROM events ORDER BY id")
        .expect("events")
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .expect("events")
        .map(|r| {
            let (id, ch, body) = r.expect("event");
            stored::read_event(id, &ch, &body).expect("an event")
        })
        .collect();
    (jobs, events)
}

fn open(dir: &std::path::Path) -> SqliteStore {
    // The store's threads let go of the lock file when they end.
    for _ in 0..100 {
        if let Ok(s) = SqliteStore::open(dir, StoreSettings::default(), false) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("cannot open the store");
}

async fn all_events(s: &SqliteStore, channel: Option<&str>) -> Vec<Event> {
    s.events(channel, None, 1000).await.expect("events")
}

fn json(e: &[Event]) -> serde_json::Value {
    serde_json::to_value(e).expect("json")
}

#[tokio::test]
async fn a_database_of_the_previous_form_reads_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("runyard.db");
    rusqlite::Connection::open(&db)
        .expect("db")
        .execute_batch(MAIN_S7)
        .expect("the fixture loads");
    let (jobs, events) = as_written(&db);
    assert_eq!((jobs.len(), events.len()), (8, 23));

    let s = open(dir.path());
    // Each job, and the listing of them all, newest first.
    for (id, want) in &jobs {
        assert_eq!(s.get(*id).await.expect("get").as_ref(), Some(want));
    }
    let page = s
        .list(ListQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("list");
    let want: Vec<&Job> = jobs.values().rev().collect();
    assert_eq!(page.jobs.iter().collect::<Vec<_>>(), want);
    let orders = s
        .list(ListQuery {
            limit: 100,
            channel: Some("orders".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(orders.jobs.len(), 2);
    assert!(orders.jobs.iter().all(|j| j.channel_id == "orders"));
    // Counts and dead letters (read from the bodies by SQL).
    let counts = s.job_counts().await.expect("counts");
    let n = |st| counts.by_type_status.get(&("bench.noop".to_string(), st));
    assert_eq!(n(JobStatus::Success), Some(&3));
    assert_eq!(n(JobStatus::Queued), Some(&1));
    let dead = s.dead_letters().await.expect("dead");
    assert_eq!(dead.get("sh.fail"), Some(&1), "{dead:?}");
    // An idempotent resubmit answers the stored job.
    let keyed = jobs
        .values()
        .find(|j| j.idempotency_key.as_deref() == Some("key-1"))
        .expect("keyed");
    let mut again = Job::new("bench.noop", "service-0", crate::job::now_us());
    again.idempotency_key = Some("key-1".into());
    let got = s.submit(again).await.expect("submit");
    assert!(!got.created);
    assert_eq!(&got.job, keyed);

    // Every event, the global stream and each channel's.
    assert_eq!(json(&all_events(&s, None).await), json(&events));
    let channels: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.channel_id.as_str()).collect();
    assert_eq!(channels.len(), 7);
    for ch in channels {
        let want: Vec<Event> = events
            .iter()
            .filter(|e| e.channel_id == ch)
            .cloned()
            .collect();
        assert_eq!(json(&all_events(&s, Some(ch)).await), json(&want), "{ch}");
    }

    // The queued job is claimed and written in today's form; it reads back as claimed, and
    // its new event joins its channel's.
    let queued = jobs
        .values()
        .find(|j| j.status == JobStatus::Queued)
        .expect("queued");
    let claimed = s
        .claim("service-0", "w", 10, Duration::from_secs(30))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, queued.id);
    assert_eq!(claimed[0].args, queued.args);
    assert_eq!(
        s.get(queued.id).await.expect("get"),
        Some(claimed[0].clone())
    );
    assert_eq!(all_events(&s, Some("orders")).await.len(), 6);
    drop(s);

    let c = rusqlite::Connection::open(&db).expect("db");
    let body: String = c
        .query_row(
            "SELECT body FROM jobs WHERE id = ?1",
            [queued.id.to_string()],
            |r| r.get(0),
        )
        .expect("body");
    assert!(
        !body.contains("orders") && !body.contains("\"id\""),
        "{body}"
    );
    // A job's own channel is stored as its 16 bytes, a named channel as its text.
    let kinds: Vec<(String, i64)> = c
        .prepare("SELECT typeof(channel), COUNT(*) FROM events GROUP BY 1 ORDER BY 1")
        .expect("kinds")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("kinds")
        .collect::<rusqlite::Result<_>>()
        .expect("kinds");
    assert_eq!(kinds, [("blob".to_string(), 18), ("text".to_string(), 6)]);
    drop(c);
    // Opened again, it reads the same (the claimed job's lease, found at open, is expired).
    let s = open(dir.path());
    let again = s.get(queued.id).await.expect("get").expect("claimed job");
    assert_eq!(
        (again.runs, again.lease.map(|l| l.token)),
        (claimed[0].runs.clone(), Some(6))
    );
    for (id, want) in jobs.iter().filter(|(id, _)| **id != queued.id) {
        assert_eq!(s.get(*id).await.expect("get").as_ref(), Some(want));
    }
    let mut want = events.clone();
    want.retain(|e| e.channel_id != "orders");
    let mut got = all_events(&s, None).await;
    got.retain(|e| e.channel_id != "orders");
    assert_eq!(json(&got), json(&want));
}
