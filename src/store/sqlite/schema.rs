//! The embedded store's schema, made at open.

use std::path::Path;

use rusqlite::Connection;

use super::{counts, db_err, deliveries, jobs, replay, schedules, signals, waits};
use crate::store::{Result, StoreError};

/// `PRAGMA application_id` of a runyard database ("RNYD"), written when its schema is made.
const APPLICATION_ID: i32 = 0x524e_5944;

/// Refuses a file that is not a runyard database, before anything opens it for writing (WAL
/// mode, the schema): one whose `application_id` is another program's, or, without one (a
/// database made before the mark), one that holds tables but not runyard's `jobs` table. A
/// missing or empty file is a new database.
pub(super) fn refuse_foreign(path: &Path) -> Result<()> {
    if !std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        return Ok(());
    }
    let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(db_err)?;
    let id: i32 = c
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(db_err)?;
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut q| q.query_map([], |r| r.get(0))?.collect())
        .map_err(db_err)?;
    let ours = match id {
        APPLICATION_ID => true,
        0 => tables.is_empty() || tables.iter().any(|t| t == "jobs"),
        _ => false,
    };
    if ours {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "{} is not a runyard database (another program's SQLite file?): move it away, or \
             point data_dir elsewhere",
            path.display()
        )))
    }
}

/// Creates the tables and indexes that are missing, in one transaction: a schema that does not
/// fit (another program's SQLite file, or a runyard database this version cannot read) is said
/// so, without the whole schema's SQL, and changes nothing in the file.
pub(super) fn create(conn: &Connection, path: &Path) -> Result<()> {
    let unfit = |e: rusqlite::Error| {
        let e = e.to_string();
        let short = e.split(" in ").next().unwrap_or(&e).to_string();
        StoreError::Backend(format!(
            "{} is not a runyard database, or one this version cannot open: {short}",
            path.display()
        ))
    };
    // In one transaction: a schema that does not fit changes nothing in the file.
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
    for schema in [
        super::SCHEMA,
        schedules::SCHEMA,
        signals::SCHEMA,
        counts::SCHEMA,
        jobs::SCHEMA,
        deliveries::SCHEMA,
        waits::SCHEMA,
        replay::SCHEMA,
    ] {
        if let Err(e) = conn.execute_batch(schema) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(unfit(e));
        }
    }
    if let Err(e) = conn.pragma_update(None, "application_id", APPLICATION_ID) {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(db_err(e));
    }
    conn.execute_batch("COMMIT").map_err(db_err)?;
    Ok(())
}
