//! [`EventLog`] for the embedded backend: table `events` (ids are its rowids), `trims` for resync.
//!
//! `events.channel` holds a channel that is a UUID in its usual text form (a job's own channel,
//! the common case) as its 16 bytes, any other channel as its text ([`ChannelKey`]): 20 bytes
//! less in each event row and in each entry of `events_channel`. Every query of `events` binds
//! and reads the channel through [`ChannelKey`] and [`channel_name`]; the rows written before (the
//! text of every channel) are rewritten once at open ([`migrate`]).

use async_trait::async_trait;
use rusqlite::params;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};
use uuid::Uuid;

use super::{db_err, row, row_opt, rows, SqliteStore};
use crate::job::Event;
use crate::store::{EventLog, Result, StoreError};

/// A channel as `events.channel` holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum ChannelKey<'a> {
    /// A UUID written as `Uuid` writes it (lower case, hyphens): its bytes.
    Uuid(Uuid),
    /// Any other channel: its text.
    Text(&'a str),
}

impl<'a> ChannelKey<'a> {
    pub(super) fn of(channel: &'a str) -> Self {
        if channel.len() == 36 {
            if let Ok(u) = Uuid::try_parse(channel) {
                let mut buf = Uuid::encode_buffer();
                if u.hyphenated().encode_lower(&mut buf) == channel {
                    return ChannelKey::Uuid(u);
                }
            }
        }
        ChannelKey::Text(channel)
    }
}

impl ToSql for ChannelKey<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            ChannelKey::Uuid(u) => ToSqlOutput::Borrowed(ValueRef::Blob(u.as_bytes())),
            ChannelKey::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
        })
    }
}

/// The channel a stored `events.channel` names.
pub(super) fn channel_name(v: ValueRef<'_>) -> rusqlite::Result<String> {
    match v {
        ValueRef::Blob(b) => Uuid::from_slice(b)
            .map(|u| u.to_string())
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, v.data_type(), Box::new(e))),
        _ => v.as_str().map(str::to_string).map_err(Into::into),
    }
}

/// Marks (in `meta`) that every UUID channel of `events` is stored as bytes.
const MIGRATED: &str = "events_channel_bytes";

/// Rewrites the UUID channels of `events` written before as text into bytes, once per database
/// (a database made by this build has none: the mark is set at once).
pub(super) fn migrate(conn: &Connection) -> Result<()> {
    let done: Option<i64> = row_opt(
        conn,
        "SELECT value FROM meta WHERE key = ?1",
        [MIGRATED],
        |r| r.get(0),
    )?;
    if done.is_some() {
        return Ok(());
    }
    let hex = "[0-9a-f]";
    let glob = [8, 4, 4, 4, 12].map(|n| hex.repeat(n)).join("-");
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
    let r = conn
        .execute(
            "UPDATE events SET channel = unhex(replace(channel, '-', ''))
             WHERE typeof(channel) = 'text' AND channel GLOB ?1",
            [glob],
        )
        .and_then(|_| conn.execute("INSERT INTO meta(key, value) VALUES (?1, 1)", [MIGRATED]));
    match r {
        Ok(_) => conn.execute_batch("COMMIT").map_err(db_err),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(db_err(e))
        }
    }
}

/// Marks (in `meta`) the first event id of this database (see [`first_id`]).
const FIRST: &str = "events_first";

/// Inserts an event (`?1` its channel as [`ChannelKey`], `?2` its body), numbered one past the
/// newest, or the database's first id ([`first_id`]) when it has none yet (an empty table: the
/// newest event is never deleted, so only before the first). SQLite would number it 1.
pub(super) const INSERT: &str = "INSERT INTO events(id, channel, body) VALUES (
    COALESCE((SELECT MAX(id) FROM events) + 1,
             (SELECT value FROM meta WHERE key = 'events_first'), 1), ?1, ?2)";

/// Inserts an event numbered by SQLite, one past the newest: once the table has an event (it
/// never empties again: retention keeps the newest), as [`INSERT`] would, without its lookup.
pub(super) const INSERT_NEXT: &str = "INSERT INTO events(channel, body) VALUES (?1, ?2)";

/// Whether the database has no event yet (or cannot tell: then [`INSERT`] is used, right in
/// every case).
pub(super) fn none_yet(conn: &Connection) -> bool {
    conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM events)", [], |r| r.get(0))
        .unwrap_or(true)
}

/// The first event id of this database, chosen when it is made (kept in `meta`): a random
/// multiple of 2^32 from 2^42 to 2^52, so that the ids of two databases (a data dir made again, a
/// restore of another one) do not meet: a cursor of another database is below this one's first
/// id or past its newest ([`EventLog::events`] answers both with a resync), whatever its value.
/// Ids stay integers below 2^53 (a JavaScript number holds them exactly); on Redis such an id
/// reads as a time after 2109, past its newest (a resync there too). A database an older build
/// wrote events in keeps numbering from 1 (its cursors are all its own).
pub(super) fn first_id(conn: &Connection) -> Result<i64> {
    let kept = |conn: &Connection| -> Result<Option<i64>> {
        row_opt(
            conn,
            "SELECT value FROM meta WHERE key = ?1",
            [FIRST],
            |r| r.get(0),
        )
    };
    if let Some(first) = kept(conn)? {
        // Events below it were numbered by an older build that opened this database after this
        // one chose the id (a downgrade, then an upgrade): its cursors are the database's own,
        // so it numbers from 1 again (else every cursor it handed out would read as foreign).
        let lowest: Option<i64> = row(conn, "SELECT MIN(id) FROM events", [], |r| r.get(0))?;
        if first > 1 && lowest.is_some_and(|l| l < first) {
            conn.execute("UPDATE meta SET value = 1 WHERE key = ?1", params![FIRST])
                .map_err(db_err)?;
            return Ok(1);
        }
        return Ok(first);
    }
    let used: bool = row(
        conn,
        "SELECT EXISTS (SELECT 1 FROM events) OR EXISTS (SELECT 1 FROM trims)",
        [],
        |r| r.get(0),
    )?;
    let first = if used { 1 } else { random_first() };
    conn.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES (?1, ?2)",
        params![FIRST, first],
    )
    .map_err(db_err)?;
    Ok(kept(conn)?.unwrap_or(first))
}

/// A random multiple of 2^32 in [2^42, 2^52): about a million, each 4 billion events apart.
pub(super) fn random_first() -> i64 {
    let k = rand::random::<u32>() % ((1 << 20) - (1 << 10)) + (1 << 10);
    i64::from(k) << 32
}

/// Parses an event id (`last_id`) of the embedded store: a non-negative integer.
pub fn parse_event_id(s: &str) -> Result<i64> {
    s.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
        StoreError::BadInput(format!(
            "invalid event id `{s}`: expected a non-negative integer"
        ))
    })
}

/// A `last_id` as the embedded store reads it.
enum Cursor {
    /// An id of this store.
    Own(i64),
    /// A well-formed id this store never hands out (a Redis stream id, an integer past
    /// `i64`, one below this database's first id): a cursor from another database.
    Foreign,
}

/// Reads a `last_id`: an id of this store (`0`, before every id, or from its `first` id on),
/// one of another database (below `first`, or not of its form), or garbage (refused). A cursor
/// past the newest id is told foreign by the read ([`EventLog::events`]).
fn parse_cursor(s: &str, first: i64) -> Result<Cursor> {
    match parse_event_id(s) {
        Ok(v) if v == 0 || v >= first => Ok(Cursor::Own(v)),
        Ok(_) => Ok(Cursor::Foreign),
        Err(_) if well_formed(s) => Ok(Cursor::Foreign),
        Err(e) => Err(e),
    }
}

/// An event id of either store's form (`42`, `1607477697866-0`): 1-20 digits, twice with `-`.
fn well_formed(s: &str) -> bool {
    let digits = |x: &str| (1..=20).contains(&x.len()) && x.bytes().all(|c| c.is_ascii_digit());
    match s.split_once('-') {
        Some((a, b)) => digits(a) && digits(b),
        None => digits(s),
    }
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn events(
        &self,
        channel: Option<&str>,
        last_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let first = self.events_first;
        let cursor = last_id.map(|s| parse_cursor(s, first)).transpose()?;
        let channel = channel.map(str::to_string);
        self.read(move |c| {
            let newest = || -> Result<i64> {
                row(c, "SELECT COALESCE(MAX(id), 0) FROM events", [], |r| {
                    r.get(0)
                })
            };
            let resync_at = |id: i64| {
                let mut ev = Event::resync(channel.as_deref().unwrap_or(""));
                ev.id = id.to_string();
                ev
            };
            // A cursor of another database: go on from the newest event (no silent gap).
            let after = match cursor {
                Some(Cursor::Foreign) => return Ok(vec![resync_at(newest()?)]),
                Some(Cursor::Own(a)) => Some(a),
                None => None,
            };
            let mut out = Vec::new();
            // Where the stream asked for starts: past the global trim (rows deleted) and, for a
            // channel, past its own (its rows past `events.channel_limit` stay for the global
            // stream: retention.rs), so a channel's reader never sees more than its limit.
            let trimmed: i64 = row(
                c,
                "SELECT COALESCE(MAX(upto), 0) FROM trims WHERE channel IN ('', ?1)",
                [channel.clone().unwrap_or_default()],
                |r| r.get(0),
            )?;
            if after.is_some_and(|a| a < trimmed) {
                out.push(resync_at(trimmed));
            }
            let asked = after.unwrap_or(0);
            let after = asked.max(trimmed);
            let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(i64, String, String)> {
                Ok((r.get(0)?, channel_name(r.get_ref(1)?)?, r.get(2)?))
            };
            let rows: Vec<(i64, String, String)> = match &channel {
                Some(ch) => rows(
                    c,
                    "SELECT id, channel, body FROM events WHERE channel = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                    params![ChannelKey::of(ch), after, limit as i64],
                    read,
                )?,
                None => rows(
                    c,
                    "SELECT id, channel, body FROM events WHERE id > ?1 ORDER BY id LIMIT ?2",
                    params![after, limit as i64],
                    read,
                )?,
            };
            // Nothing after a cursor past the newest event: ids are handed out only once
            // stored and the newest is never deleted, so it is from another database (a fresh
            // data dir): a resync to the newest, or the client waits until ids pass it.
            if rows.is_empty() && asked > trimmed {
                let top = newest()?.max(trimmed);
                if asked > top {
                    out.push(resync_at(top));
                }
            }
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
