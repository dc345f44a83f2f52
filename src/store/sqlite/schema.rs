//! The embedded store's schema, made at open.

use std::path::Path;

use rusqlite::Connection;

use super::{counts, db_err, deliveries, jobs, replay, schedules, signals, waits};
use crate::store::{Result, StoreError};

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
    conn.execute_batch("COMMIT").map_err(db_err)?;
    Ok(())
}
