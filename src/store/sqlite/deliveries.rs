//! [`DeliveryStore`] for the embedded backend: table `deliveries`, written by [`enqueue_in`] in the
//! transaction that appends the event it delivers.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection};
use uuid::Uuid;

use super::{db_err, exec, json_err, row_opt, rows, SqliteStore};
use crate::job::{now_us, EventKind, Job, Micros};
use crate::store::deliveries::{
    as_recorded, new_token, plan, push_log, this_node, Attempt, ClaimLimits, Claimed, Delivery,
    DeliveryPage, DeliveryState, DeliveryStore, Outcome,
};
use crate::store::{Result, StoreError};

/// The table, created at open.
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    due_at INTEGER,             -- pending: next attempt, or the end of the current claim's hold
    claim INTEGER,              -- the current claim's token
    claim_attempt TEXT,         -- its attempt started (JSON `Attempt`): the write-ahead record
    attempts INTEGER NOT NULL DEFAULT 0,
    log TEXT NOT NULL DEFAULT '[]',
    done_at INTEGER
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_job ON deliveries(job_id, id);
CREATE INDEX IF NOT EXISTS deliveries_done ON deliveries(done_at) WHERE done_at IS NOT NULL;
"#;

/// At open, before [`orphan_claims`]: adds `claim_attempt` to a table made before it was kept.
pub(super) fn migrate(conn: &Connection) -> Result<()> {
    let has = row_opt(
        conn,
        "SELECT 1 FROM pragma_table_info('deliveries') WHERE name = 'claim_attempt'",
        [],
        |_| Ok(()),
    )?;
    if has.is_none() {
        conn.execute_batch("ALTER TABLE deliveries ADD COLUMN claim_attempt TEXT")
            .map_err(db_err)?;
    }
    Ok(())
}

/// At open: claims found belong to a dead process (the data dir is locked to one), so they are
/// due again at once, and their attempts (which may have reached the receiver) go into the log
/// as unknown. One transaction.
pub(super) fn orphan_claims(conn: &Connection) -> Result<()> {
    let lost: Vec<(i64, i64, String, Option<String>)> = rows(
        conn,
        "SELECT id, attempts, log, claim_attempt FROM deliveries
         WHERE claim IS NOT NULL AND state = 'pending'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    if lost.is_empty() {
        return Ok(());
    }
    let now = now_us();
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
    let r = lost.into_iter().try_for_each(|(id, n, log, started)| {
        // A log or an attempt this build cannot read never keeps the store from opening: the
        // claim is let go all the same, the log left as it is.
        let (n, log) = with_lost_claim(n, &log, started.as_deref()).unwrap_or_else(|e| {
            tracing::warn!(delivery = id, error = %e, "a lost claim's attempt cannot be read: left out of the delivery's log");
            (n, log)
        });
        exec(
            conn,
            "UPDATE deliveries SET claim = NULL, claim_attempt = NULL, attempts = ?2, log = ?3,
                    due_at = MIN(due_at, ?4) WHERE id = ?1",
            params![id, n, log, now],
        )
        .map(drop)
    });
    let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
    conn.execute_batch(end).map_err(db_err)?;
    r
}

/// The attempt count and log (JSON) of a delivery whose claim was lost with its attempt started
/// `started` (none: a claim from before they were kept, which adds nothing).
fn with_lost_claim(n: i64, log: &str, started: Option<&str>) -> Result<(i64, String)> {
    let Some(started) = started else {
        return Ok((n, log.to_string()));
    };
    let mut log: Vec<Attempt> = serde_json::from_str(log).map_err(json_err)?;
    push_log(&mut log, serde_json::from_str(started).map_err(json_err)?);
    Ok((n + 1, serde_json::to_string(&log).map_err(json_err)?))
}

/// Writes the delivery of the event `event_id` (`body` as stored in the events table) when the
/// job's webhook wants it. Called in the event's transaction.
pub(super) fn enqueue_in(
    conn: &Connection,
    job: &Job,
    kind: EventKind,
    event_id: i64,
    body: &str,
) -> Result<()> {
    if !crate::job::notify_spec::wants(job, kind) {
        return Ok(());
    }
    let Some(n) = &job.notify else { return Ok(()) };
    exec(
        conn,
        "INSERT INTO deliveries(job_id, url, event_id, event, created_at, state, due_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?5)",
        params![
            job.id.to_string(),
            n.url,
            event_id.to_string(),
            body,
            job.updated_at
        ],
    )?;
    Ok(())
}

/// [`crate::store::deliveries::endpoint_part`] of the `url` column, in SQL.
const ENDPOINT: &str =
    "CASE WHEN instr(url, '?') > 0 THEN substr(url, 1, instr(url, '?') - 1) ELSE url END";

/// Claims up to `max` due deliveries, oldest due first, passing over those of endpoints at their
/// cap. Each round asks for the due deliveries of the endpoints not at their cap (in SQL: a row
/// passed over costs an index step, not a read here); a round that fills an endpoint leaves its
/// later rows to the next round, which leaves the endpoint out. Every round claims at least one
/// (its first row's endpoint had room), so there are at most `max` rounds.
fn claim_in(
    conn: &Connection,
    max: usize,
    hold: Duration,
    mut limits: ClaimLimits,
) -> Result<Vec<Claimed>> {
    let now = now_us();
    let token = new_token();
    let until = now.saturating_add(hold.as_micros() as i64);
    let started = serde_json::to_string(&Attempt::started(now, this_node())).map_err(json_err)?;
    let mut out = Vec::new();
    while out.len() < max {
        let want = max - out.len();
        let full = serde_json::to_string(&limits.full()).map_err(json_err)?;
        let found: Vec<Row> = rows(
            conn,
            &format!(
                "SELECT {COLUMNS} FROM deliveries WHERE due_at <= ?1
                 AND {ENDPOINT} NOT IN (SELECT value FROM json_each(?3))
                 ORDER BY due_at LIMIT ?2"
            ),
            params![now, want as i64, full],
            read_row,
        )?;
        let last_round = found.len() < want;
        for r in found {
            if !limits.take(&r.url) {
                continue;
            }
            let (id, lost) = (r.id, r.claim.and(r.claim_attempt.clone()));
            let mut delivery = to_delivery(r)?;
            if let Some(started) = lost {
                // The last claim's hold ran out without a record: its attempt goes into the log
                // (the rare case: one more statement, in the same transaction).
                push_log(
                    &mut delivery.log,
                    serde_json::from_str(&started).map_err(json_err)?,
                );
                delivery.attempts += 1;
                exec(
                    conn,
                    "UPDATE deliveries SET attempts = ?2, log = ?3 WHERE id = ?1",
                    params![
                        id,
                        delivery.attempts,
                        serde_json::to_string(&delivery.log).map_err(json_err)?
                    ],
                )?;
            }
            exec(
                conn,
                "UPDATE deliveries SET claim = ?2, due_at = ?3, claim_attempt = ?4 WHERE id = ?1",
                params![id, token as i64, until, started],
            )?;
            out.push(Claimed { delivery, token });
        }
        if last_round {
            break;
        }
    }
    Ok(out)
}

const COLUMNS: &str =
    "id, job_id, url, event_id, event, created_at, state, due_at, attempts, log, \
                       claim, claim_attempt";

/// A row of [`COLUMNS`].
struct Row {
    id: i64,
    job_id: String,
    url: String,
    event_id: String,
    event: String,
    created_at: i64,
    state: String,
    due_at: Option<i64>,
    attempts: i64,
    log: String,
    claim: Option<i64>,
    claim_attempt: Option<String>,
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        job_id: r.get(1)?,
        url: r.get(2)?,
        event_id: r.get(3)?,
        event: r.get(4)?,
        created_at: r.get(5)?,
        state: r.get(6)?,
        due_at: r.get(7)?,
        attempts: r.get(8)?,
        log: r.get(9)?,
        claim: r.get(10)?,
        claim_attempt: r.get(11)?,
    })
}

/// The delivery as stored (its claim's attempt left out).
fn to_delivery(r: Row) -> Result<Delivery> {
    Ok(Delivery {
        id: r.id as u64,
        job_id: Uuid::parse_str(&r.job_id)
            .map_err(|e| StoreError::Backend(format!("corrupt delivery: {e}")))?,
        url: r.url,
        event_id: r.event_id,
        event: r.event,
        created_at: r.created_at,
        state: DeliveryState::parse(&r.state),
        next_at: r.due_at,
        attempts: r.attempts.max(0) as u32,
        log: serde_json::from_str(&r.log).map_err(json_err)?,
    })
}

/// The delivery as a listing shows it at `now`: a claimed one with its claim's attempt last.
fn shown(r: Row, now: Micros) -> Result<Delivery> {
    let started = r.claim.and(r.claim_attempt.clone());
    let mut d = to_delivery(r)?;
    if let (Some(started), DeliveryState::Pending) = (started, d.state) {
        let a: Attempt = serde_json::from_str(&started).map_err(json_err)?;
        push_log(&mut d.log, a.as_claimed_at(d.next_at, now));
        d.attempts += 1;
    }
    Ok(d)
}

#[async_trait]
impl DeliveryStore for SqliteStore {
    async fn deliveries_claim(
        &self,
        max: usize,
        hold: Duration,
        limits: ClaimLimits,
    ) -> Result<Vec<Claimed>> {
        if max == 0 {
            return Ok(vec![]);
        }
        self.write(move |ctx| claim_in(ctx.conn, max, hold, limits))
            .await
    }

    async fn delivery_record(
        &self,
        claimed: &Claimed,
        attempt: Attempt,
        outcome: Outcome,
    ) -> Result<Option<DeliveryState>> {
        let (id, token, created) = (
            claimed.delivery.id as i64,
            claimed.token as i64,
            claimed.delivery.created_at,
        );
        self.write(move |ctx| {
            // Only while the claim is the caller's and its hold (`due_at`, its end) has not run
            // out: a record made after it is refused even when no other claim took the delivery
            // yet (its sender was paused past the hold), as on Redis (`dlv_record.lua`); the
            // attempt shows as unknown, and the next claim attempts the delivery again.
            let now = now_us();
            let cur: Option<(i64, String)> = rusqlite::OptionalExtension::optional(
                ctx.conn
                    .prepare_cached(
                        "SELECT attempts, log FROM deliveries
                         WHERE id = ?1 AND claim = ?2 AND due_at > ?3",
                    )
                    .map_err(db_err)?
                    .query_row(params![id, token, now], |r| Ok((r.get(0)?, r.get(1)?))),
            )
            .map_err(db_err)?;
            let Some((n, log)) = cur else { return Ok(None) };
            let mut log: Vec<Attempt> = serde_json::from_str(&log).map_err(json_err)?;
            let (state, due) = plan(created, now, outcome);
            push_log(&mut log, as_recorded(attempt, outcome, state));
            let done: Option<Micros> = due.is_none().then_some(now);
            exec(
                ctx.conn,
                "UPDATE deliveries SET attempts = ?2, log = ?3, state = ?4, due_at = ?5,
                            claim = NULL, claim_attempt = NULL, done_at = ?6 WHERE id = ?1",
                params![
                    id,
                    n + 1,
                    serde_json::to_string(&log).map_err(json_err)?,
                    state.as_str(),
                    due,
                    done
                ],
            )?;
            Ok(Some(state))
        })
        .await
    }

    async fn deliveries_page(
        &self,
        job: Uuid,
        page: DeliveryPage,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let id = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let (cond, order, from) = match page {
            DeliveryPage::After(n) => (">", "", id(n)),
            // No cursor: below the largest rowid (AUTOINCREMENT stops before it).
            DeliveryPage::Before(n) => ("<", " DESC", n.map_or(i64::MAX, id)),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM deliveries WHERE job_id = ?1 AND id {cond} ?2
             ORDER BY id{order} LIMIT ?3"
        );
        self.read(move |c| {
            let rows: Vec<Row> = rows(
                c,
                &sql,
                params![job.to_string(), from, limit.min(i64::MAX as usize) as i64],
                read_row,
            )?;
            let now = now_us();
            rows.into_iter().map(|r| shown(r, now)).collect()
        })
        .await
    }

    async fn deliveries_next_due(&self) -> Result<Option<Micros>> {
        self.read_min("SELECT MIN(due_at) FROM deliveries WHERE due_at IS NOT NULL")
            .await
    }

    async fn deliveries_pending(&self) -> Result<u64> {
        // Pending is exactly "has a due time" (the partial index `deliveries_due`).
        self.read(|c| {
            let n: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE due_at IS NOT NULL")
                .map_err(db_err)?
                .query_row([], |r| r.get(0))
                .map_err(db_err)?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    async fn deliveries_trim(&self, before: Micros) -> Result<u64> {
        self.write(move |ctx| {
            let n = exec(
                ctx.conn,
                "DELETE FROM deliveries WHERE done_at IS NOT NULL AND done_at < ?1",
                [before],
            )?;
            Ok(n as u64)
        })
        .await
    }
}
