//! The embedded store's schema, made at open.

use std::path::Path;

use rusqlite::Connection;

use super::{counts, db_err, deliveries, jobs, replay, schedules, signals, waits};
use crate::store::{Result, StoreError};

/// `PRAGMA application_id` of a runyard database ("RNYD"), written when its schema is made.
const APPLICATION_ID: i32 = 0x524e_5944;

/// The format of the database this build writes, in `PRAGMA user_version` (set at every open of
/// a database below it; 0: a build before the mark). Raised when a build writes records an older
/// build cannot read: a build finding a higher one refuses to open the database
/// ([`refuse_foreign`]) rather than fail on its records one by one.
pub(super) const FORMAT: i32 = 1;

/// Refuses a file that is not a runyard database, or one of a newer format than [`FORMAT`],
/// before anything opens it for writing (WAL
/// mode, the schema): one whose `application_id` is another program's, or, without one (a
/// database made before the mark), one that holds tables but not runyard's `jobs` table. A
/// missing or empty file is a new database.
pub(super) fn refuse_foreign(path: &Path) -> Result<()> {
    if !std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        return Ok(());
    }
    let c = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(db_err)?;
    refuse_foreign_on(&c, path)
}

/// [`refuse_foreign`] through a connection already open on `path` (its busy handler waits for
/// the locks of others).
pub(super) fn refuse_foreign_on(c: &Connection, path: &Path) -> Result<()> {
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
    let format: i32 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err)?;
    if ours && format > FORMAT {
        Err(StoreError::Backend(format!(
            "{} was written by a newer runyard (database format {format}; this build reads \
             format {FORMAT} and older): run that build again, or go back to a backup taken \
             before the upgrade (docs/reliability.md, \"Backups\")",
            path.display()
        )))
    } else if ours {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "{} is not a runyard database (another program's SQLite file?): move it away, or \
             point data_dir elsewhere",
            path.display()
        )))
    }
}

/// Marks the database with this build's [`FORMAT`] when its mark is lower (a new database, or
/// one of an older build): at the store's open only, after [`refuse_foreign`]. A backup copy
/// keeps its original's mark (`VACUUM INTO` copies it).
pub(super) fn mark_format(conn: &Connection) -> Result<()> {
    let format: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err)?;
    if format < FORMAT {
        conn.pragma_update(None, "user_version", FORMAT)
            .map_err(db_err)?;
    }
    Ok(())
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
