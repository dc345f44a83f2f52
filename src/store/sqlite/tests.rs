//! The writer queue's bound, seen from inside (the conformance suite covers the rest).

use std::sync::Arc;
use std::time::Duration;

use super::{SqliteStore, WriteOp, WRITE_QUEUE};
use crate::store::StoreSettings;

/// Holds the writer inside a request until the returned sender sends (or 60 s pass), so the
/// requests queued meanwhile go in one transaction; returns once the writer is held.
pub(super) async fn hold_writer(store: &SqliteStore) -> std::sync::mpsc::Sender<()> {
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let hold: WriteOp = Box::new(move |_| {
        let _ = entered_tx.send(());
        let _ = release_rx.recv_timeout(Duration::from_secs(60));
        Box::new(|_| {})
    });
    store.enqueue(hold).await.expect("queued");
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .expect("join")
        .expect("the writer runs the holding request");
    release_tx
}

/// Makes job `id`'s stored record unreadable (as a newer build's record, or a hand edit).
pub(super) async fn spoil_record(store: &SqliteStore, id: uuid::Uuid) {
    let id = id.to_string();
    store
        .write(move |ctx| {
            ctx.conn
                .execute("UPDATE jobs SET body = 'not a record' WHERE id = ?1", [id])
                .map_err(super::db_err)?;
            Ok(())
        })
        .await
        .expect("spoil the record");
}

fn noop() -> WriteOp {
    Box::new(|_| Box::new(|_| {}))
}

/// With the writer held inside a request, exactly [`WRITE_QUEUE`] more requests are queued at
/// once; the next one waits until the writer takes requests off the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_makes_requests_wait_for_room() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store =
        Arc::new(SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open"));
    let release_tx = hold_writer(&store).await;
    for i in 0..WRITE_QUEUE {
        tokio::time::timeout(Duration::from_secs(10), store.enqueue(noop()))
            .await
            .unwrap_or_else(|_| panic!("request {i} of {WRITE_QUEUE} waited"))
            .expect("queued");
    }
    let s2 = store.clone();
    let extra = tokio::spawn(async move { s2.enqueue(noop()).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !extra.is_finished(),
        "a request past the bound waits for room"
    );
    release_tx.send(()).expect("release");
    tokio::time::timeout(Duration::from_secs(30), extra)
        .await
        .expect("room once the writer drains the queue")
        .expect("join")
        .expect("queued");
}

/// The bundled SQLite is built without `SQLITE_ENABLE_MEMORY_MANAGEMENT` (`.cargo/config.toml`):
/// with it every connection shares one page cache under one mutex, taken on each page the writer
/// touches (docs/benchmarks.md "Session 14: store"). A build that lost the setting (the flag
/// dropped from the config, or a build outside this repository's cargo configuration) fails here.
#[test]
fn sqlite_gives_each_connection_a_page_cache_of_its_own() {
    let c = rusqlite::Connection::open_in_memory().expect("db");
    let opts: Vec<String> = c
        .prepare("PRAGMA compile_options")
        .expect("pragma")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<rusqlite::Result<_>>()
        .expect("options");
    assert!(
        opts.iter().any(|o| o.starts_with("THREADSAFE=1")),
        "{opts:?}"
    );
    assert!(
        !opts.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
        "{opts:?}"
    );
}

/// Accepted hook requests are remembered in the database: a request the store accepted before it
/// was closed (a crash, a restart) is still a replay after it is opened again, until it expires;
/// an expired one is taken again, and retention's pass forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_requests_are_remembered_across_a_restart_until_they_expire() {
    use crate::store::{Maintenance, ReplayMemory};
    let dir = tempfile::tempdir().expect("temp dir");
    let now = runyard_hooks::now_ms();
    {
        let store = SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open");
        assert!(store
            .remember_once("live", now + 300_000, now)
            .await
            .unwrap());
        assert!(store.remember_once("old", now + 1_000, now).await.unwrap());
        assert!(!store
            .remember_once("live", now + 300_000, now)
            .await
            .unwrap());
    }
    let store = SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("reopen");
    assert!(
        !store
            .remember_once("live", now + 300_000, now + 10)
            .await
            .unwrap(),
        "a request accepted before the restart is a replay after it"
    );
    assert!(
        store
            .remember_once("fresh", now + 300_000, now)
            .await
            .unwrap(),
        "a request never accepted is taken"
    );
    let count = |store: &SqliteStore| {
        let c = rusqlite::Connection::open(dir.path().join("runyard.db")).expect("read");
        let _ = store;
        c.query_row("SELECT COUNT(*) FROM replay", [], |r| r.get::<_, i64>(0))
            .expect("count")
    };
    assert_eq!(count(&store), 3);
    // Past its expiry, "old" is taken again (its row taken over).
    assert!(store
        .remember_once("old", now + 900_000, now + 2_000)
        .await
        .unwrap());
    assert!(!store
        .remember_once("old", now + 900_000, now + 2_000)
        .await
        .unwrap());
    drop(store);
    let store = SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("reopen");
    // Retention forgets rows past their expiry only ("fresh" and "live" expire in 5 minutes,
    // "old" in 15).
    store.retention(0).await.expect("retention");
    assert_eq!(count(&store), 3, "nothing expired yet");
    store
        .write(move |ctx| super::replay::forget_expired(ctx.conn, now + 600_000, 100))
        .await
        .expect("forget");
    assert_eq!(count(&store), 1, "only the request expiring last is kept");
}

/// Another program's SQLite file in the data dir is refused as not runyard's, naming the file,
/// without the schema's SQL, and left as it was (not even put in WAL mode); a runyard database
/// is marked as such, and one made before the mark still opens.
#[test]
fn a_foreign_sqlite_file_is_refused_as_not_runyards() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("runyard.db");
    for foreign in [
        "CREATE TABLE users (a, b); INSERT INTO users VALUES (1, 2);",
        "PRAGMA application_id = 7; CREATE TABLE jobs (a, b); INSERT INTO jobs VALUES (1, 2);",
    ] {
        let _ = std::fs::remove_file(&path);
        {
            let c = rusqlite::Connection::open(&path).expect("create");
            c.execute_batch(foreign).expect("foreign table");
        }
        let before = std::fs::read(&path).expect("read");
        let e = match SqliteStore::open(dir.path(), StoreSettings::default(), false) {
            Ok(_) => panic!("a foreign database was opened: {foreign}"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("is not a runyard database"), "{e}");
        assert!(e.contains("runyard.db"), "{e}");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            before,
            "left as it was"
        );
        assert!(!dir.path().join("runyard.db-wal").exists());
    }
    // Ours: marked, and opened again.
    std::fs::remove_file(&path).expect("rm");
    drop(SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("new"));
    let id: i32 = rusqlite::Connection::open(&path)
        .expect("read")
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .expect("id");
    assert_eq!(id, 0x524e_5944);
    drop(SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("again"));
    // A `jobs` table without the mark (a database of a runyard before it) is taken as runyard's;
    // one whose schema does not fit is refused by the schema's check, unchanged.
    std::fs::remove_file(&path).expect("rm");
    let _ = std::fs::remove_file(dir.path().join("runyard.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("runyard.db-shm"));
    {
        let c = rusqlite::Connection::open(&path).expect("create");
        c.execute_batch("CREATE TABLE jobs (a, b); INSERT INTO jobs VALUES (1, 2);")
            .expect("foreign table");
    }
    let e = match SqliteStore::open(dir.path(), StoreSettings::default(), false) {
        Ok(_) => panic!("a foreign database was opened"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("is not a runyard database"), "{e}");
    assert!(e.contains("runyard.db"), "{e}");
    assert!(!e.contains("CREATE"), "no SQL: {e}");
    let c = rusqlite::Connection::open(&path).expect("reopen");
    let n: i64 = c
        .query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))
        .expect("its table");
    assert_eq!(n, 1);
    let tables: i64 = c
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
        .expect("its schema");
    assert_eq!(tables, 1, "nothing of runyard's was added to it");
}

/// A database a newer build marked with a format this build does not know is refused at open,
/// saying so and what to do, and left as it was; a new database gets this build's format, and
/// one of a build before the mark (format 0) opens and is marked.
#[test]
fn a_database_of_a_newer_format_is_refused_unchanged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("runyard.db");
    let format = |p: &std::path::Path| -> i32 {
        rusqlite::Connection::open(p)
            .expect("read")
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("user_version")
    };
    drop(SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("new"));
    assert_eq!(
        format(&path),
        super::schema::FORMAT,
        "a new database is marked"
    );
    let c = rusqlite::Connection::open(&path).expect("open");
    c.pragma_update(None, "user_version", 0).expect("unmark");
    drop(c);
    drop(SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("older"));
    // The store's threads close their connections after the drop, the last one folding the WAL
    // into the file: read the file as it was only once they have (the WAL is then gone; the
    // file read before that was changed under the test, once in a loaded run).
    let wal = dir.path().join("runyard.db-wal");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while wal.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        format(&path),
        super::schema::FORMAT,
        "an older one is marked"
    );
    let newer = super::schema::FORMAT + 1;
    let c = rusqlite::Connection::open(&path).expect("open");
    c.pragma_update(None, "user_version", newer).expect("newer");
    drop(c);
    let before = std::fs::read(&path).expect("read");
    let e = match SqliteStore::open(dir.path(), StoreSettings::default(), false) {
        Ok(_) => panic!("a database of a newer format was opened"),
        Err(e) => e.to_string(),
    };
    for part in ["runyard.db", "newer", &format!("format {newer}"), "backup"] {
        assert!(e.contains(part), "{part}: {e}");
    }
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "left as it was"
    );
    assert_eq!(format(&path), newer);
}

/// A job whose stored body holds bytes that are not UTF-8 inside a JSON string (written by
/// hand, by another program) is a corrupt record: reading it says so, a listing leaves it out
/// and lists the others, and its bytes stay as they are. Before, the read failed as a type
/// error of the whole query (the listing with it); read lossily, U+FFFD would be saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_not_utf8_in_a_string_is_a_corrupt_record_left_as_it_is() {
    use crate::job::{now_us, Job};
    use crate::store::{JobStore, ListQuery};
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), StoreSettings::default(), false).expect("open");
    let mut bad = Job::new("t", "r", now_us());
    bad.args = serde_json::json!("cafe");
    let bad = store.submit(bad).await.expect("submit").job;
    let good = store
        .submit(Job::new("t", "r", now_us()))
        .await
        .expect("submit")
        .job;
    let hex = |id: String| {
        store.read(move |c| {
            c.query_row("SELECT hex(body) FROM jobs WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .map_err(super::db_err)
        })
    };
    let id = bad.id.to_string();
    store
        .write(move |ctx| {
            let sql = "UPDATE jobs SET body = CAST(replace(body, 'cafe', \
                       CAST(X'636166E9' AS TEXT)) AS TEXT) WHERE id = ?1";
            ctx.conn.execute(sql, [id]).map_err(super::db_err)?;
            Ok(())
        })
        .await
        .expect("spoil the record");
    let before: String = hex(bad.id.to_string()).await.expect("body");
    assert!(before.contains("636166E922"), "{before}");

    let e = store.get(bad.id).await.expect_err("does not read");
    assert!(e.to_string().contains("corrupt record"), "{e}");
    assert!(e.to_string().contains("not UTF-8"), "{e}");
    let page = store
        .list(ListQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("the listing answers");
    let ids: Vec<_> = page.jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![good.id]);
    let after: String = hex(bad.id.to_string()).await.expect("body");
    assert_eq!(after, before, "the record is left as it is");
    // A body that is not text at all (a blob another program bound) is left out the same way.
    let id = good.id.to_string();
    store
        .write(move |ctx| {
            let sql = "UPDATE jobs SET body = CAST(body AS BLOB) WHERE id = ?1";
            ctx.conn.execute(sql, [id]).map_err(super::db_err)?;
            Ok(())
        })
        .await
        .expect("make a blob");
    let e = store.get(good.id).await.expect_err("does not read");
    assert!(e.to_string().contains("of type Blob"), "{e}");
    let page = store
        .list(ListQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("the listing still answers");
    assert!(page.jobs.is_empty(), "{:?}", page.jobs);
}
