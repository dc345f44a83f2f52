//! The shapes every query of the embedded store takes, written once: all rows, one row, one row
//! or none, a statement's change count (statements cached per connection); and the glob
//! function the queries use.

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OptionalExtension, Params, Row};

use super::db_err;
use crate::store::Result;

/// Every row of `sql`, each read by `f`.
pub(super) fn rows<T>(
    c: &Connection,
    sql: &str,
    p: impl Params,
    f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    c.prepare_cached(sql)
        .map_err(db_err)?
        .query_map(p, f)
        .map_err(db_err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(db_err)
}

/// The one row of `sql` (an aggregate, a `RETURNING`): its absence is an error.
pub(super) fn row<T>(
    c: &Connection,
    sql: &str,
    p: impl Params,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<T> {
    c.prepare_cached(sql)
        .map_err(db_err)?
        .query_row(p, f)
        .map_err(db_err)
}

/// The first row of `sql`, if any.
pub(super) fn row_opt<T>(
    c: &Connection,
    sql: &str,
    p: impl Params,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    c.prepare_cached(sql)
        .map_err(db_err)?
        .query_row(p, f)
        .optional()
        .map_err(db_err)
}

/// Runs `sql`; the rows it changed.
pub(super) fn exec(c: &Connection, sql: &str, p: impl Params) -> Result<usize> {
    c.prepare_cached(sql)
        .map_err(db_err)?
        .execute(p)
        .map_err(db_err)
}

/// Runs one transaction-control statement (`BEGIN IMMEDIATE`, `COMMIT`, `SAVEPOINT op`, ...)
/// through the statement cache: the writer runs a few of them per request, and parsing them
/// again each time was about 1% of the server's CPU on one-connection submits.
pub(super) fn control(c: &Connection, sql: &str) -> rusqlite::Result<()> {
    c.prepare_cached(sql)?.raw_execute().map(|_| ())
}

/// Turns on SQLite's query planner stability guarantee on a connection. Without it, a statement
/// whose plan may depend on a bound value (here: every `LIMIT ?n`; a parameter compared with a
/// partial index's constant) is marked expired when its bindings are cleared, which the
/// statement cache does each time a statement is returned to it: every use of such a cached
/// statement was parsed and planned again (`sqlite3Reprepare`, 7-8% of the server's CPU on
/// one-connection submits, mostly the event tail's and the claim's queries). With it a plan
/// never depends on bound values, and the queries here name their partial indexes' constants
/// literally (`status = 'QUEUED'`), so their plans are unchanged.
pub(super) fn stable_plans(c: &Connection) -> Result<()> {
    c.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map(|_| ())
    .map_err(db_err)
}

/// Registers `runyard_glob(pattern, text)` on a connection: [`runyard_runners::glob_match`], the
/// matcher of runner `types` and of the Redis store's listing, so that a type filter means the
/// same on both backends. (SQLite's own `GLOB` differs: it reads `[...]` as a character class,
/// where ours matches `[` literally.)
pub(super) fn register_glob(conn: &Connection) -> Result<()> {
    conn.create_scalar_function(
        "runyard_glob",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let pattern = ctx.get_raw(0).as_str().unwrap_or_default();
            let text = ctx.get_raw(1).as_str().unwrap_or_default();
            Ok(runyard_runners::glob_match(pattern, text))
        },
    )
    .map_err(db_err)
}
