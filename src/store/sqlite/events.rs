//! [`EventLog`] for the embedded backend: table `events` (ids are its rowids), `trims` for resync.

use async_trait::async_trait;
use rusqlite::params;

use super::{row, rows, SqliteStore};
use crate::job::Event;
use crate::store::{EventLog, Result, StoreError};

/// Parses an event id (`last_id`) of the embedded store: a non-negative integer.
pub fn parse_event_id(s: &str) -> Result<i64> {
    s.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
        StoreError::BadInput(format!(
            "invalid event id `{s}`: expected a non-negative integer"
        ))
    })
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn events(
        &self,
        channel: Option<&str>,
        last_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let after = last_id.map(parse_event_id).transpose()?;
        let channel = channel.map(str::to_string);
        self.read(move |c| {
            let mut out = Vec::new();
            if let Some(after) = after {
                let trimmed: i64 = row(
                    c,
                    "SELECT COALESCE(MAX(upto), 0) FROM trims WHERE channel IN ('', ?1)",
                    [channel.clone().unwrap_or_default()],
                    |r| r.get(0),
                )?;
                if after < trimmed {
                    let mut ev = Event::resync(channel.as_deref().unwrap_or(""));
                    ev.id = trimmed.to_string();
                    out.push(ev);
                }
            }
            let after = after.unwrap_or(0);
            let rows: Vec<(i64, String, String)> = match &channel {
                Some(ch) => rows(
                    c,
                    "SELECT id, channel, body FROM events WHERE channel = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                    params![ch, after, limit as i64],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?,
                None => rows(
                    c,
                    "SELECT id, channel, body FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
                    params![after, limit as i64],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?,
            };
            for (id, channel, body) in rows {
                out.push(super::stored::read_event(id, &channel, &body)?);
            }
            Ok(out)
        })
        .await
    }

    async fn last_event_id(&self) -> Result<Option<String>> {
        self.read(|c| {
            let id: Option<i64> = row(c, "SELECT MAX(id) FROM events", [], |r| r.get(0))?;
            Ok(id.map(|i| i.to_string()))
        })
        .await
    }
}
