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
