//! [`SignalStore`] for the embedded backend: table `signals` (one row per record), `signal_seqs`
//! (the last sequence number of each key, so numbers are never reused after retention).

use async_trait::async_trait;
use rusqlite::params;
use serde_json::Value;

use super::{exec, json_err, row, row_opt, rows, SqliteStore};
use crate::job::{Job, Micros};
use crate::store::signals::{page_ends, Signal, SignalKey, SignalPage, SignalStore, MAX_PER_KEY};
use crate::store::Result;

/// The tables, created at open.
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS signals (
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    sid TEXT,
    payload TEXT,
    PRIMARY KEY (key, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS signals_sid ON signals(key, sid) WHERE sid IS NOT NULL;
CREATE INDEX IF NOT EXISTS signals_at ON signals(key, at);
CREATE INDEX IF NOT EXISTS signals_age ON signals(at);
CREATE TABLE IF NOT EXISTS signal_seqs (
    key TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
"#;

type Row = (String, i64, i64, Option<String>, Option<String>);

fn to_signal(r: Row) -> Result<Signal> {
    Ok(Signal {
        key: r.0,
        seq: r.1 as u64,
        at: r.2,
        id: r.3,
        payload: r
            .4
            .as_deref()
            .map(serde_json::from_str::<Value>)
            .transpose()
            .map_err(json_err)?,
    })
}

/// A record's size as stored, about as the Redis store counts it (its JSON text).
fn stored_bytes(r: &Row) -> usize {
    64 + r.0.len() + r.3.as_ref().map_or(0, String::len) + r.4.as_ref().map_or(0, String::len)
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

/// Appends a record on the writer's connection (inside its transaction): the API's writes and a
/// job's `emits` when it ends SUCCESS, in the same transaction as the job.
pub(super) fn append_in(
    conn: &rusqlite::Connection,
    key: String,
    id: Option<String>,
    payload: Option<Value>,
    at: Micros,
) -> Result<(Signal, bool)> {
    let body = payload
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(json_err)?;
    if let Some(sid) = &id {
        let found: Option<Row> = row_opt(
            conn,
            "SELECT key, seq, at, sid, payload FROM signals WHERE key = ?1 AND sid = ?2",
            params![key, sid],
            read_row,
        )?;
        if let Some(r) = found {
            return Ok((to_signal(r)?, false));
        }
    }
    // A key's records are stamped in the order they are written: one written after another is
    // at least a microsecond later, whatever time its caller took (`SignalStore::signal_append`).
    let last: Option<i64> = row(
        conn,
        "SELECT max(at) FROM signals WHERE key = ?1",
        [&key],
        |r| r.get(0),
    )?;
    let at = last.map_or(at, |l| at.max(l.saturating_add(1)));
    let seq: i64 = row(
        conn,
        "INSERT INTO signal_seqs(key, seq) VALUES (?1, 1)
                 ON CONFLICT(key) DO UPDATE SET seq = seq + 1 RETURNING seq",
        [&key],
        |r| r.get(0),
    )?;
    exec(
        conn,
        "INSERT INTO signals(key, seq, at, sid, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![key, seq, at, id, body],
    )?;
    exec(
        conn,
        "DELETE FROM signals WHERE key = ?1 AND seq <= ?2",
        params![key, seq - MAX_PER_KEY as i64],
    )?;
    Ok((
        Signal {
            key,
            seq: seq as u64,
            at,
            id,
            payload,
        },
        true,
    ))
}

/// The numbers of `key`'s records written at or after `since`, lowest first, at most `limit`:
/// [`SignalStore::signal_seqs`] on a reader, a waiting job's check in the writer's transaction
/// (counted in [`crate::store::waits::WaitCounters::numbers_read`]).
pub(super) fn seqs_in(
    conn: &rusqlite::Connection,
    key: &str,
    since: Micros,
    until: Micros,
    limit: usize,
) -> Result<Vec<u64>> {
    let seqs: Vec<i64> = rows(
        conn,
        "SELECT seq FROM signals WHERE key = ?1 AND at >= ?2 AND at <= ?3 ORDER BY seq LIMIT ?4",
        params![key, since, until, limit as i64],
        |r| r.get(0),
    )?;
    crate::store::waits::counters().count_reads(0, seqs.len());
    Ok(seqs.into_iter().map(|s| s.max(0) as u64).collect())
}

/// How many of `key`'s records were written at or after `since` and at or before `until`,
/// counted up to `limit` (the index entries only, never the rows): [`SignalStore::signal_count`]
/// on a reader, a waiting job's check in the writer's transaction.
pub(super) fn count_in(
    conn: &rusqlite::Connection,
    key: &str,
    since: Micros,
    until: Micros,
    limit: u64,
) -> Result<u64> {
    let n: i64 = row(
        conn,
        "SELECT COUNT(*) FROM (SELECT 1 FROM signals INDEXED BY signals_at
             WHERE key = ?1 AND at >= ?2 AND at <= ?3 LIMIT ?4)",
        params![key, since, until, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| r.get(0),
    )?;
    let n = n.max(0) as u64;
    crate::store::waits::counters().count_reads(n, 0);
    Ok(n)
}

/// The signals of a job that just ended SUCCESS: one per key of `emits`, id `job:{id}`.
pub(super) fn emit_in(conn: &rusqlite::Connection, job: &Job, at: Micros) -> Result<()> {
    for key in &job.emits {
        let payload = serde_json::json!({"job_id": job.id});
        append_in(
            conn,
            key.clone(),
            Some(format!(
                "{}{}",
                crate::store::signals::EMIT_ID_PREFIX,
                job.id
            )),
            Some(payload),
            at,
        )?;
    }
    Ok(())
}

#[async_trait]
impl SignalStore for SqliteStore {
    async fn signal_append(
        &self,
        key: &str,
        id: Option<String>,
        payload: Option<Value>,
        at: Micros,
    ) -> Result<(Signal, bool)> {
        let key = key.to_string();
        self.write(move |ctx| {
            let r = append_in(ctx.conn, key.clone(), id, payload, at)?;
            if r.1 {
                // The jobs this record completes are released in the same transaction.
                super::waits::on_signal(ctx, &key)?;
            }
            Ok(r)
        })
        .await
    }

    async fn signals_page(
        &self,
        key: &str,
        since: Micros,
        limit: usize,
        bytes: usize,
    ) -> Result<SignalPage> {
        let key = key.to_string();
        self.read(move |c| {
            // Row by row on the `(key, at)` index (its entries end with the primary key's `seq`,
            // so the order needs no sort): a record is parsed only once it is kept.
            let mut stmt = c
                .prepare_cached(
                    "SELECT key, seq, at, sid, payload FROM signals INDEXED BY signals_at
                         WHERE key = ?1 AND at >= ?2 ORDER BY at, seq",
                )
                .map_err(super::db_err)?;
            let mut cur = stmt.query(params![key, since]).map_err(super::db_err)?;
            let mut page = SignalPage::default();
            let (mut used, mut last) = (0usize, None);
            while let Some(r) = cur.next().map_err(super::db_err)? {
                let at: i64 = r.get(2).map_err(super::db_err)?;
                if page_ends(page.records.len(), used, last, at, limit, bytes) {
                    page.more = true;
                    break;
                }
                let row = read_row(r).map_err(super::db_err)?;
                used += stored_bytes(&row);
                last = Some(at);
                page.records.push(to_signal(row)?);
            }
            Ok(page)
        })
        .await
    }

    async fn signal_seqs(
        &self,
        key: &str,
        since: Micros,
        until: Micros,
        limit: usize,
    ) -> Result<Vec<u64>> {
        let key = key.to_string();
        self.read(move |c| seqs_in(c, &key, since, until, limit))
            .await
    }

    async fn signal_count(
        &self,
        key: &str,
        since: Micros,
        until: Micros,
        limit: u64,
    ) -> Result<u64> {
        let key = key.to_string();
        self.read(move |c| count_in(c, &key, since, until, limit))
            .await
    }

    async fn signals_trim(&self, before: Micros) -> Result<u64> {
        self.write(move |ctx| {
            let n = exec(ctx.conn, "DELETE FROM signals WHERE at < ?1", [before])?;
            Ok(n as u64)
        })
        .await
    }

    async fn signal_keys(&self, after: Option<&str>, limit: usize) -> Result<Vec<SignalKey>> {
        let after = after.unwrap_or("").to_string();
        self.read(move |c| {
            // Grouped on the `(key, at)` index: no record row is read; a key holds at most
            // MAX_PER_KEY records, so a page costs at most `limit` times that many index entries.
            let got: Vec<(String, i64, i64)> = rows(
                c,
                "SELECT key, COUNT(*), MAX(at) FROM signals INDEXED BY signals_at
                     WHERE key > ?1 GROUP BY key ORDER BY key LIMIT ?2",
                params![after, limit as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            Ok(got
                .into_iter()
                .map(|(key, n, latest)| SignalKey {
                    key,
                    count: n.max(0) as u64,
                    latest,
                })
                .collect())
        })
        .await
    }
}
