//! [`LogStore`] for Redis: `P:log:{id}` list of lines, `P:logn:{id}` their sequence counter
//! (`lua/logs_append.lua`, `lua/logs_read.lua`).

use super::*;

/// A log line as `logs_append.lua` receives it: `stream|ts|line` (the script prefixes `seq|`).
pub fn log_entry(stream: LogStream, ts: Micros, line: &str) -> String {
    format!("{}|{ts}|{line}", stream.as_str())
}

/// A stored log entry (`seq|stream|ts|line`, as `logs_read.lua` returns it) read back.
pub fn parse_log_entry(e: &str) -> Result<LogLine> {
    let mut it = e.splitn(4, '|');
    let bad = || StoreError::Backend("corrupt log entry".into());
    let seq = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let stream = LogStream::from_stored(it.next().ok_or_else(bad)?);
    let ts = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let line = it.next().unwrap_or("").to_string();
    Ok(LogLine {
        seq,
        stream,
        ts,
        line,
    })
}

#[async_trait]
impl LogStore for RedisStore {
    async fn append_logs(&self, id: Uuid, lines: Vec<(LogStream, Micros, String)>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let entries: Vec<String> = lines
            .into_iter()
            .map(|(s, ts, line)| log_entry(s, ts, &line))
            .collect();
        let keep = self.s.store.log_lines_per_job.max(1);
        let keys = [
            self.keyed("job:", id),
            self.keyed("logn:", id),
            self.keyed("log:", id),
        ];
        let _: i64 = self
            .exec(true, |mut c| {
                let mut inv = self.scripts.logs_append.prepare_invoke();
                inv.key(&keys[0]).key(&keys[1]).key(&keys[2]).arg(keep);
                for e in &entries {
                    inv.arg(e);
                }
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        Ok(())
    }

    async fn logs(&self, id: Uuid, after: u64, limit: usize) -> Result<Vec<LogLine>> {
        if limit == 0 {
            return Ok(vec![]);
        }
        let (counter, key) = (self.keyed("logn:", id), self.keyed("log:", id));
        let raw: Vec<String> = self
            .exec(true, |mut c| {
                let mut inv = self.scripts.logs_read.prepare_invoke();
                inv.key(&counter).key(&key).arg(after).arg(limit);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        raw.iter().map(|e| parse_log_entry(e)).collect()
    }
}
