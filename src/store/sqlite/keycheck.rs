//! The check value of the master key the database was made with: `meta` row
//! `master_key_check`, recorded at its first start (`crate::master_key` makes and compares it;
//! the store only keeps it). Text in an INTEGER column: the value (`v1:` and hex) is never
//! taken for a number.

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags};

use super::sql::{exec, row, row_opt};
use super::{db_err, SqliteStore};
use crate::store::Result;

/// The `meta` key of the check value.
const KEY: &str = "master_key_check";

impl SqliteStore {
    /// The check value the database in `dir` keeps, read without opening it for writing and
    /// without its lock, so that a start refused for it changes nothing (but SQLite's `-shm`
    /// and empty `-wal` files, which a read of a WAL database makes): `None` for a new
    /// database, or one made before the check.
    pub fn stored_key_check(dir: &Path) -> Result<Option<String>> {
        let path = dir.join("runyard.db");
        if !std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
            return Ok(None);
        }
        // Another program's database is refused as `open` refuses it, naming the file.
        super::schema::refuse_foreign(&path)?;
        let c =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(db_err)?;
        // A runyard database from before `meta` (none): no check value.
        let has_meta: bool = row(
            &c,
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta')",
            [],
            |r| r.get(0),
        )?;
        if !has_meta {
            return Ok(None);
        }
        row_opt(
            &c,
            "SELECT CAST(value AS TEXT) FROM meta WHERE key = ?1",
            [KEY],
            |r| r.get(0),
        )
    }

    /// Records `check` unless the database keeps a check value already; returns the one it
    /// keeps and whether that was recorded now.
    pub async fn remember_key_check(&self, check: String) -> Result<(String, bool)> {
        self.write(move |ctx| {
            let recorded = exec(
                ctx.conn,
                "INSERT OR IGNORE INTO meta(key, value) VALUES (?1, ?2)",
                params![KEY, check],
            )? == 1;
            let kept = row(
                ctx.conn,
                "SELECT CAST(value AS TEXT) FROM meta WHERE key = ?1",
                [KEY],
                |r| r.get(0),
            )?;
            Ok((kept, recorded))
        })
        .await
    }
}
