//! [`ScheduleStore`] for the embedded backend: table `schedules`, one row per schedule with its
//! version and wake time as columns and the record as JSON. The compare-and-set is one `UPDATE ...
//! WHERE version = ?` on the writer thread (a child module of `sqlite`, reusing its writer and
//! reader pool).

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::{db_err, json_err, SqliteStore};
use crate::job::Micros;
use crate::schedule::Schedule;
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

fn parse(body: &str) -> Result<Schedule> {
    serde_json::from_str(body).map_err(json_err)
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn schedule(&self, name: &str) -> Result<Option<Schedule>> {
        let name = name.to_string();
        self.read(move |c| {
            let body: Option<String> = c
                .prepare_cached("SELECT body FROM schedules WHERE name = ?1")
                .map_err(db_err)?
                .query_row([name], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            body.as_deref().map(parse).transpose()
        })
        .await
    }

    async fn schedules(&self) -> Result<Vec<Schedule>> {
        self.read(|c| {
            let bodies: Vec<String> = c
                .prepare_cached("SELECT body FROM schedules ORDER BY name")
                .map_err(db_err)?
                .query_map([], |r| r.get(0))
                .map_err(db_err)?
                .collect::<std::result::Result<_, _>>()
                .map_err(db_err)?;
            bodies.iter().map(|b| parse(b)).collect()
        })
        .await
    }

    async fn schedules_due(&self, now: Micros, max: usize) -> Result<Vec<String>> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT name FROM schedules WHERE wake_at IS NOT NULL AND wake_at <= ?1
                 ORDER BY wake_at LIMIT ?2",
            )
            .map_err(db_err)?
            .query_map(params![now, max as i64], |r| r.get(0))
            .map_err(db_err)?
            .collect::<std::result::Result<_, _>>()
            .map_err(db_err)
        })
        .await
    }

    async fn schedules_next_wake(&self) -> Result<Option<Micros>> {
        self.read(|c| {
            c.prepare_cached("SELECT MIN(wake_at) FROM schedules")
                .map_err(db_err)?
                .query_row([], |r| r.get::<_, Option<i64>>(0))
                .map_err(db_err)
        })
        .await
    }

    async fn schedule_cas(&self, s: &Schedule, expected: Option<u64>) -> Result<bool> {
        let body = serde_json::to_string(s).map_err(json_err)?;
        let (name, version, wake) = (s.spec.name.clone(), s.version as i64, s.wake_at());
        self.write(move |ctx| {
            let n = match expected {
                None => ctx
                    .conn
                    .prepare_cached(
                        "INSERT INTO schedules(name, version, wake_at, body) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(name) DO NOTHING",
                    )
                    .map_err(db_err)?
                    .execute(params![name, version, wake, body])
                    .map_err(db_err)?,
                Some(v) => ctx
                    .conn
                    .prepare_cached(
                        "UPDATE schedules SET version = ?2, wake_at = ?3, body = ?4
                         WHERE name = ?1 AND version = ?5",
                    )
                    .map_err(db_err)?
                    .execute(params![name, version, wake, body, v as i64])
                    .map_err(db_err)?,
            };
            Ok(n == 1)
        })
        .await
    }

    async fn schedule_delete(&self, name: &str, expected: u64) -> Result<bool> {
        let name = name.to_string();
        self.write(move |ctx| {
            let n = ctx
                .conn
                .prepare_cached("DELETE FROM schedules WHERE name = ?1 AND version = ?2")
                .map_err(db_err)?
                .execute(params![name, expected as i64])
                .map_err(db_err)?;
            Ok(n == 1)
        })
        .await
    }
}
