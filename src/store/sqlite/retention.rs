//! [`Maintenance`] for the embedded backend: retention of finished jobs and events, blob references,
//! health.

use async_trait::async_trait;
use rusqlite::params;

use super::{db_err, exec, row_opt, rows, SqliteStore};
use crate::job::Micros;
use crate::store::{Maintenance, Result, RetentionReport};

#[async_trait]
impl Maintenance for SqliteStore {
    async fn retention(&self, finished_before: Micros) -> Result<RetentionReport> {
        let global = self.settings.global_limit as i64;
        let per_channel = self.settings.channel_limit as i64;
        self.write(move |ctx| {
            let c = ctx.conn;
            let mut report = RetentionReport::default();
            let counts = &mut ctx.counts;
            // Finished jobs past retention, in bounded chunks, with their logs.
            let ids: Vec<String> = rows(
                c,
                "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?1 LIMIT 5000",
                [finished_before],
                |r| r.get(0),
            )?;
            for id in &ids {
                exec(c, "DELETE FROM logs WHERE job_id = ?1", [id])?;
                exec(c, "DELETE FROM file_refs WHERE job_id = ?1", [id])?;
                // The counts kept by the writer lose the job (`counts.rs`).
                let gone: Option<(String, String)> = row_opt(
                    c,
                    "DELETE FROM jobs WHERE id = ?1 RETURNING type, status",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if let Some((job_type, status)) = gone {
                    counts.add(&job_type, &status, -1);
                }
            }
            report.jobs = ids.len() as u64;
            // Accepted hook requests past their expiry (replay.rs), in chunks, up to 200,000 a
            // pass (20,000 hook calls a second at the default interval).
            let now_ms = runyard_hooks::now_ms();
            for _ in 0..10 {
                if super::replay::forget_expired(c, now_ms, 20_000)? < 20_000 {
                    break;
                }
            }
            // The global stream.
            let max: i64 = c
                .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
                .map_err(db_err)?;
            // Never the newest event: the next event id is the largest kept + 1 (mod.rs).
            let cut = (max - global).min(max - 1);
            if cut > 0 {
                let n = c
                    .execute("DELETE FROM events WHERE id <= ?1", [cut])
                    .map_err(db_err)?;
                if n > 0 {
                    report.events += n as u64;
                    c.execute(
                        "INSERT INTO trims(channel, upto) VALUES ('', ?1)
                         ON CONFLICT(channel) DO UPDATE SET upto = excluded.upto
                         WHERE excluded.upto > trims.upto",
                        [cut],
                    )
                    .map_err(db_err)?;
                }
            }
            // Channels over their limit (`events.channel` as stored: see events.rs): their trim
            // mark moves to the newest event past the limit (written only when it moves), and their readers start after it
            // (events.rs); the rows stay. The table is also the global stream: deleting a busy
            // channel's old rows made holes in it that no global reader was told of (no
            // resync). The global limit above bounds the table.
            let over: Vec<(rusqlite::types::Value, i64)> = c
                .prepare("SELECT channel, COUNT(*) FROM events GROUP BY channel HAVING COUNT(*) > ?1")
                .map_err(db_err)?
                .query_map([per_channel], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db_err)?
                .collect::<std::result::Result<_, _>>()
                .map_err(db_err)?;
            for (ch, _) in over {
                let upto: i64 = c
                    .query_row(
                        "SELECT id FROM events WHERE channel = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2",
                        params![ch, per_channel],
                        |r| r.get(0),
                    )
                    .map_err(db_err)?;
                let upto = upto.min(max - 1);
                let name = super::events::channel_name((&ch).into()).map_err(db_err)?;
                c.execute(
                    "INSERT INTO trims(channel, upto) VALUES (?1, ?2)
                     ON CONFLICT(channel) DO UPDATE SET upto = excluded.upto
                     WHERE excluded.upto > trims.upto",
                    params![name, upto],
                )
                .map_err(db_err)?;
            }
            Ok(report)
        })
        .await
    }

    async fn file_hashes(&self) -> Result<std::collections::HashSet<String>> {
        self.read(|c| {
            c.prepare("SELECT DISTINCT hash FROM file_refs")
                .map_err(db_err)?
                .query_map([], |r| r.get(0))
                .map_err(db_err)?
                .collect::<std::result::Result<_, _>>()
                .map_err(db_err)
        })
        .await
    }

    async fn time(&self) -> Micros {
        // The process's own clock: every time this store writes is taken from it.
        crate::job::now_us()
    }

    async fn health(&self) -> Result<()> {
        if self.write_failed.lock().is_some() {
            // A small write of its own: the flag is cleared only by a commit that wrote, and a
            // node the probe took out of service gets no other write (a full disk freed meanwhile
            // would keep it out for good).
            let now = crate::job::now_us();
            let _ = self
                .write(move |ctx| {
                    exec(
                        ctx.conn,
                        "INSERT INTO meta(key, value) VALUES ('health_write', ?1)
                         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        [now],
                    )
                })
                .await;
        }
        if let Some(e) = self.write_failed.lock().clone() {
            return Err(crate::store::StoreError::Unavailable(format!(
                "the last write failed to commit: {e}"
            )));
        }
        self.read(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(db_err)
                .map(|_| ())
        })
        .await
    }
}
