//! The page size: new databases take [`super::PAGE_SIZE`]; a database made with 4 KiB pages
//! (every one before session 7) keeps them and works.

use super::SqliteStore;
use crate::job::{now_us, Job};
use crate::store::{JobStore, StoreSettings};

fn page_size(dir: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(dir.join("runyard.db")).expect("db");
    c.query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("page_size")
}

#[tokio::test]
async fn a_new_database_takes_the_small_page_and_an_old_one_keeps_its_own() {
    let new = tempfile::tempdir().expect("temp dir");
    let s = SqliteStore::open(new.path(), StoreSettings::default(), false).expect("open");
    let j = s
        .submit(Job::new("t", "r", now_us()))
        .await
        .expect("submit")
        .job;
    assert_eq!(s.get(j.id).await.expect("get").map(|g| g.id), Some(j.id));
    assert_eq!(page_size(new.path()), 2048);

    let old = tempfile::tempdir().expect("temp dir");
    {
        let c = rusqlite::Connection::open(old.path().join("runyard.db")).expect("db");
        c.execute_batch(
            // Marked as runyard's (`schema.rs`), with 4 KiB pages.
            "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; PRAGMA application_id = 1380866372;
             CREATE TABLE made_before(x);",
        )
        .expect("old database");
    }
    let s = SqliteStore::open(old.path(), StoreSettings::default(), false).expect("open old");
    let j = s
        .submit(Job::new("t", "r", now_us()))
        .await
        .expect("submit")
        .job;
    assert_eq!(s.get(j.id).await.expect("get").map(|g| g.id), Some(j.id));
    assert_eq!(page_size(old.path()), 4096);
}
