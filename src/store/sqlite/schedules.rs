//! [`ScheduleStore`] for the embedded backend: table `schedules`, one row per schedule with its
//! version and wake time as columns and the record as JSON. The compare-and-set is one `UPDATE ...
//! WHERE version = ?` on the writer thread (a child module of `sqlite`, reusing its writer and
//! reader pool). A row whose record does not read is left out of the list, logged, and can be
//! deleted or set aside ([`ScheduleStore::schedule_unreadable`]).

use async_trait::async_trait;
use rusqlite::params;
use rusqlite::types::ValueRef;

use super::{exec, json_err, row_opt, rows, SqliteStore};
use crate::job::Micros;
use crate::store::schedules::{corrupt, log_unreadable, Schedule, Unreadable};
use crate::store::{Result, ScheduleStore};

/// The table, created at open.
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    wake_at INTEGER,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS schedules_wake ON schedules(wake_at) WHERE wake_at IS NOT NULL;
"#;

/// What stands in place of a `body` that is not JSON text ([`body_text`]), before the reason. No
/// record starts with it (a schedule's JSON is an object).
const NOT_TEXT: char = '~';

fn parse(name: &str, body: &str) -> Result<Schedule> {
    if let Some(e) = body.strip_prefix(NOT_TEXT) {
        return Err(corrupt(name, e));
    }
    serde_json::from_str(body).map_err(|e| corrupt(name, e))
}

/// The `body` column as text: a value of another type, or text that is not UTF-8 (written by
/// hand, by another program), reads as [`NOT_TEXT`] and why, a corrupt record. Not lossily: a
/// JSON string holding such bytes would read with U+FFFD, and the fire loop would save that
/// changed text for good.
fn body_text(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<String> {
    Ok(match r.get_ref(i)? {
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(t) => t.to_string(),
            Err(e) => format!("{NOT_TEXT}its record is not UTF-8 ({e})"),
        },
        other => format!(
            "{NOT_TEXT}its record is a value of type {}",
            other.data_type()
        ),
    })
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn schedule(&self, name: &str) -> Result<Option<Schedule>> {
        let name = name.to_string();
        self.read(move |c| {
            let body: Option<String> = row_opt(
                c,
                "SELECT body FROM schedules WHERE name = ?1",
                [&name],
                |r| body_text(r, 0),
            )?;
            body.as_deref().map(|b| parse(&name, b)).transpose()
        })
        .await
    }

    async fn schedules(&self) -> Result<Vec<Schedule>> {
        self.read(|c| {
            let bodies: Vec<(String, String)> = rows(
                c,
                "SELECT name, body FROM schedules ORDER BY name",
                [],
                |r| Ok((r.get(0)?, body_text(r, 1)?)),
            )?;
            // One that does not read is left out, logged.
            let mut all = Vec::with_capacity(bodies.len());
            for (name, body) in &bodies {
                match parse(name, body) {
                    Ok(s) => all.push(s),
                    Err(e) => log_unreadable(name, "the schedule list", &e),
                }
            }
            Ok(all)
        })
        .await
    }

    async fn schedules_due(&self, now: Micros, max: usize) -> Result<Vec<String>> {
        self.read(move |c| {
            rows(
                c,
                "SELECT name FROM schedules WHERE wake_at IS NOT NULL AND wake_at <= ?1
                 ORDER BY wake_at LIMIT ?2",
                params![now, max as i64],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn schedules_next_wake(&self) -> Result<Option<Micros>> {
        self.read_min("SELECT MIN(wake_at) FROM schedules").await
    }

    async fn schedule_cas(&self, s: &Schedule, expected: Option<u64>) -> Result<bool> {
        let body = serde_json::to_string(s).map_err(json_err)?;
        let (name, version, wake) = (s.spec.name.clone(), s.version as i64, s.wake_at());
        self.write(move |ctx| {
            let n = match expected {
                None => exec(
                    ctx.conn,
                    "INSERT INTO schedules(name, version, wake_at, body) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(name) DO NOTHING",
                    params![name, version, wake, body],
                )?,
                Some(v) => exec(
                    ctx.conn,
                    "UPDATE schedules SET version = ?2, wake_at = ?3, body = ?4
                         WHERE name = ?1 AND version = ?5",
                    params![name, version, wake, body, v as i64],
                )?,
            };
            Ok(n == 1)
        })
        .await
    }

    async fn schedule_unreadable(&self, name: &str, what: Unreadable) -> Result<bool> {
        let name = name.to_string();
        self.write(move |ctx| {
            let body: Option<String> = row_opt(
                ctx.conn,
                "SELECT body FROM schedules WHERE name = ?1",
                [&name],
                |r| body_text(r, 0),
            )?;
            match body {
                Some(b) if parse(&name, &b).is_err() => {}
                _ => return Ok(false),
            }
            let n = match what {
                Unreadable::Delete => exec(
                    ctx.conn,
                    "DELETE FROM schedules WHERE name = ?1",
                    params![name],
                )?,
                Unreadable::WakeAt { at, due_by } => exec(
                    ctx.conn,
                    "UPDATE schedules SET wake_at = ?2 WHERE name = ?1 AND wake_at <= ?3",
                    params![name, at, due_by],
                )?,
            };
            Ok(n == 1)
        })
        .await
    }

    async fn schedule_orphan(&self, _name: &str) -> Result<bool> {
        // One row holds a schedule and its wake time: no index to be left behind.
        Ok(false)
    }

    async fn schedule_delete(&self, name: &str, expected: u64) -> Result<bool> {
        let name = name.to_string();
        self.write(move |ctx| {
            let n = exec(
                ctx.conn,
                "DELETE FROM schedules WHERE name = ?1 AND version = ?2",
                params![name, expected as i64],
            )?;
            Ok(n == 1)
        })
        .await
    }
}
