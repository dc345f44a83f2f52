//! [`LogStore`] for the embedded backend: table `logs`, bounded per job.

use async_trait::async_trait;
use rusqlite::params;
use uuid::Uuid;

use super::{db_err, exec, row, rows, SqliteStore};
use crate::job::Micros;
use crate::store::{LogLine, LogStore, LogStream, Result};

#[async_trait]
impl LogStore for SqliteStore {
    async fn append_logs(&self, id: Uuid, lines: Vec<(LogStream, Micros, String)>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let keep = self.settings.log_lines_per_job as i64;
        self.write(move |ctx| {
            let id = id.to_string();
            let last: i64 = row(
                ctx.conn,
                "SELECT COALESCE(MAX(seq), 0) FROM logs WHERE job_id = ?1",
                [&id],
                |r| r.get(0),
            )?;
            let mut ins = ctx
                .conn
                .prepare_cached(
                    "INSERT INTO logs(job_id, seq, stream, ts, line) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db_err)?;
            let n = lines.len() as i64;
            for (i, (stream, ts, line)) in lines.into_iter().enumerate() {
                let s = stream.as_str();
                ins.execute(params![id, last + 1 + i as i64, s, ts, line])
                    .map_err(db_err)?;
            }
            if last + n > keep {
                exec(
                    ctx.conn,
                    "DELETE FROM logs WHERE job_id = ?1 AND seq <= ?2",
                    params![id, last + n - keep],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn logs(&self, id: Uuid, after: u64, limit: usize) -> Result<Vec<LogLine>> {
        self.read(move |c| {
            rows(
                c,
                "SELECT seq, stream, ts, line FROM logs WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                params![id.to_string(), after as i64, limit as i64],
                |r| {
                let stream: String = r.get(1)?;
                Ok(LogLine {
                    seq: r.get::<_, i64>(0)? as u64,
                    stream: LogStream::from_stored(&stream),
                    ts: r.get(2)?,
                    line: r.get(3)?,
                })
            },
            )
        })
        .await
    }
}
