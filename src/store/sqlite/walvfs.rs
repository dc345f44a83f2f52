//! A VFS shim for the writer's connection: each transaction's WAL frames reach the file in one
//! `pwrite` instead of two per frame.
//!
//! SQLite writes a WAL frame as two writes, its 24-byte header and then the page
//! (`walWriteOneFrame`), so a commit of a dozen pages is two dozen `pwrite` calls: with one
//! producer about 13% of the server's CPU, on the path of every `202`. Here the WAL file's
//! appends (writes past the end this connection wrote) are gathered while they follow one
//! another and handed to the real file in one write when the page of the frame that commits the
//! transaction has been added (a frame header with a non-zero "database size after commit", the
//! WAL format's commit mark), in parts of at most `GATHER_MAX`; any write below the end (a
//! restart's WAL header, a frame rewritten in place, the checksum headers SQLite rewrites at the
//! commit of a transaction that spilled) is written through at once. So when SQLite's write
//! of a commit frame returns, every byte of the transaction is in the file, exactly as before
//! (test: `every_commit_is_in_the_files_when_it_returns`, which opens a copy of the files after
//! each commit, as `kill -9` would leave them):
//! durability does not change (nor the `synchronous` setting). Any other use of the file (a
//! read, a sync, its size, a truncation, a lock, close, or a write elsewhere) first writes what
//! is gathered, so SQLite never sees the file differ from what it wrote. Readers on other
//! connections only read frames the wal-index lists, which SQLite updates after the commit
//! frame's write returns.
//!
//! Every other file (the database, its shared memory, journals) is the default VFS's own.

use std::ffi::{c_int, c_void, CStr};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name the writer opens its connection with.
pub(super) const NAME: &CStr = c"runyard-wal";

/// A WAL frame's header: the bytes SQLite writes before each page.
const FRAME_HEADER: usize = 24;
/// Bytes written in one call at most: the unix VFS writes at most 128 KiB - 1 per `pwrite`
/// (`seekAndWriteFd` masks the length with `0x1ffff`: a longer write is cut short and reported as
/// a full disk). A larger transaction (group commit) is written in parts of this size.
const GATHER_MAX: usize = 96 << 10;

/// The default VFS this one wraps (as an address: the pointer is not `Send`).
static REAL: OnceLock<usize> = OnceLock::new();

fn real_vfs() -> *mut ffi::sqlite3_vfs {
    REAL.get().copied().unwrap_or(0) as *mut ffi::sqlite3_vfs
}

/// Registers the VFS (once); false when SQLite has no default VFS to wrap.
pub(super) fn register() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        // Safety: SQLite's own registry calls; the VFS struct is leaked, so it lives as long as
        // the process (SQLite keeps a pointer to it).
        unsafe {
            let real = ffi::sqlite3_vfs_find(std::ptr::null());
            if real.is_null() {
                return false;
            }
            let _ = REAL.set(real as usize);
            let mut vfs: ffi::sqlite3_vfs = *real;
            vfs.pNext = std::ptr::null_mut();
            vfs.zName = NAME.as_ptr();
            vfs.szOsFile = (std::mem::size_of::<WalFile>() as c_int) + (*real).szOsFile;
            vfs.xOpen = Some(open);
            let vfs = Box::leak(Box::new(vfs));
            ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK
        }
    })
}

/// A WAL file: this header, then the real VFS's file in the same allocation.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// Bytes written by SQLite and not yet by the real file, from `start` on.
    gathered: Vec<u8>,
    start: i64,
    /// The last frame header gathered marks a commit: its page ends the transaction.
    commit_next: bool,
    /// The end of the WAL as this connection wrote it (from the last WAL header on): a write
    /// below it is not an append.
    appended: i64,
}

/// The real file behind `f` (a `WalFile`).
unsafe fn real(f: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    (*(f as *mut WalFile)).real
}

unsafe fn methods(f: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    &*(*real(f)).pMethods
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let real_vfs = real_vfs();
    let real_open = match (*real_vfs).xOpen {
        Some(o) => o,
        None => return ffi::SQLITE_CANTOPEN,
    };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Not a WAL: the real VFS's file, in the room SQLite gave (larger than it needs).
        return real_open(real_vfs, name, file, flags, out_flags);
    }
    let _ = vfs;
    let inner = (file as *mut u8).add(std::mem::size_of::<WalFile>()) as *mut ffi::sqlite3_file;
    let rc = real_open(real_vfs, name, inner, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        // SQLite calls no method of a file whose `pMethods` is null.
        (*file).pMethods = std::ptr::null();
        return rc;
    }
    std::ptr::write(
        file as *mut WalFile,
        WalFile {
            base: ffi::sqlite3_file { pMethods: &METHODS },
            real: inner,
            gathered: Vec::new(),
            start: 0,
            commit_next: false,
            appended: 0,
        },
    );
    ffi::SQLITE_OK
}

/// Writes what is gathered to the real file.
unsafe fn flush(f: *mut ffi::sqlite3_file) -> c_int {
    let (data, amt, off) = {
        let w = &*(f as *mut WalFile);
        if w.gathered.is_empty() {
            return ffi::SQLITE_OK;
        }
        (w.gathered.as_ptr(), w.gathered.len() as c_int, w.start)
    };
    let rc = write_real(f, data as *const c_void, amt, off);
    (*(f as *mut WalFile)).gathered.clear();
    rc
}

/// One write of the real file.
unsafe fn write_real(
    f: *mut ffi::sqlite3_file,
    data: *const c_void,
    amt: c_int,
    off: i64,
) -> c_int {
    match methods(f).xWrite {
        Some(write) => write(real(f), data, amt, off),
        None => ffi::SQLITE_IOERR_WRITE,
    }
}

unsafe extern "C" fn write(
    f: *mut ffi::sqlite3_file,
    data: *const c_void,
    amt: c_int,
    off: i64,
) -> c_int {
    let bytes = std::slice::from_raw_parts(data as *const u8, amt.max(0) as usize);
    let w = &mut *(f as *mut WalFile);
    if off < w.appended {
        // Not an append: the WAL header of a restart (at 0), a frame of this transaction
        // rewritten in place, the headers `walRewriteChecksums` rewrites at the commit of a
        // transaction that spilled and then rewrote a frame (the last one a commit header with
        // no page after it), or the frames of a rolled-back transaction written over. Written
        // through, after what is gathered: only appends wait for their commit frame's page.
        let rc = flush(f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let rc = write_real(f, data, amt, off);
        let w = &mut *(f as *mut WalFile);
        let end = off + i64::from(amt);
        w.appended = if off == 0 { end } else { w.appended.max(end) };
        return rc;
    }
    w.appended = off + i64::from(amt);
    let apart = off != w.start + w.gathered.len() as i64;
    if !w.gathered.is_empty() && (apart || w.gathered.len() + bytes.len() > GATHER_MAX) {
        let rc = flush(f);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    let w = &mut *(f as *mut WalFile);
    if w.gathered.is_empty() {
        w.start = off;
    }
    w.gathered.extend_from_slice(bytes);
    if bytes.len() == FRAME_HEADER {
        // Bytes 4-7: the database size after a commit, zero in other frames.
        w.commit_next = bytes[4..8] != [0; 4];
        return ffi::SQLITE_OK;
    }
    if w.commit_next {
        // The commit frame's page: the transaction is whole (also when the page did not fit
        // with what was gathered before it, which was written first).
        w.commit_next = false;
        return flush(f);
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn close(f: *mut ffi::sqlite3_file) -> c_int {
    let rc = flush(f);
    let inner = real(f);
    let rc2 = match (*(*inner).pMethods).xClose {
        Some(c) => c(inner),
        None => ffi::SQLITE_OK,
    };
    std::ptr::drop_in_place(&mut (*(f as *mut WalFile)).gathered);
    (*f).pMethods = std::ptr::null();
    if rc != ffi::SQLITE_OK {
        rc
    } else {
        rc2
    }
}

/// Forwards a method to the real file after writing what is gathered.
macro_rules! forward {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(f: *mut ffi::sqlite3_file, $($arg: $ty),*) -> c_int {
            let rc = flush(f);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            match methods(f).$method {
                Some(m) => m(real(f), $($arg),*),
                None => ffi::SQLITE_MISUSE,
            }
        }
    };
}

forward!(read, xRead, (buf: *mut c_void, amt: c_int, off: i64));
forward!(truncate_real, xTruncate, (size: i64));

unsafe extern "C" fn truncate(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    let rc = truncate_real(f, size);
    let w = &mut *(f as *mut WalFile);
    w.appended = w.appended.min(size);
    rc
}
forward!(sync, xSync, (flags: c_int));
forward!(file_size, xFileSize, (size: *mut i64));
forward!(lock, xLock, (level: c_int));
forward!(unlock, xUnlock, (level: c_int));
forward!(check_reserved, xCheckReservedLock, (out: *mut c_int));
forward!(file_control, xFileControl, (op: c_int, arg: *mut c_void));
forward!(shm_map, xShmMap, (pg: c_int, size: c_int, extend: c_int, out: *mut *mut c_void));
forward!(shm_lock, xShmLock, (off: c_int, n: c_int, flags: c_int));
forward!(shm_unmap, xShmUnmap, (delete: c_int));
forward!(fetch, xFetch, (off: i64, amt: c_int, out: *mut *mut c_void));
forward!(unfetch, xUnfetch, (off: i64, p: *mut c_void));

unsafe extern "C" fn sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    methods(f).xSectorSize.map_or(4096, |m| m(real(f)))
}

unsafe extern "C" fn device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    methods(f).xDeviceCharacteristics.map_or(0, |m| m(real(f)))
}

unsafe extern "C" fn shm_barrier(f: *mut ffi::sqlite3_file) {
    if let Some(m) = methods(f).xShmBarrier {
        m(real(f))
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    /// Write system calls of this thread so far (`/proc/thread-self/io`).
    fn writes() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").expect("task io accounting");
        io.lines()
            .find_map(|l| l.strip_prefix("syscw: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("syscw")
    }

    fn writer(path: &std::path::Path) -> Connection {
        assert!(super::register());
        let c = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), super::NAME)
            .expect("open");
        c.pragma_update(None, "page_size", 2048).expect("page size");
        c.pragma_update(None, "journal_mode", "WAL").expect("wal");
        c.pragma_update(None, "synchronous", "NORMAL")
            .expect("sync");
        c.pragma_update(None, "wal_autocheckpoint", 0)
            .expect("no checkpoints");
        c.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b TEXT);
             CREATE INDEX t_a ON t(a); CREATE INDEX t_b ON t(b);",
        )
        .expect("schema");
        c
    }

    /// Inserts `n` rows of two `width`-character keys spread over both indexes.
    fn fill(c: &Connection, n: i64, width: usize) {
        for i in 0..n {
            c.execute(
                "INSERT INTO t(a, b) VALUES (?1, ?2)",
                (
                    format!("{:0>width$}", i * 31 % 997),
                    format!("{i:0>width$}"),
                ),
            )
            .expect("insert");
        }
    }

    fn count(path: &std::path::Path) -> i64 {
        let c = Connection::open(path).expect("open with the default VFS");
        assert_eq!(
            c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
                .expect("check"),
            "ok"
        );
        c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .expect("count")
    }

    /// Each commit of a dozen pages (rows spread over both indexes) reaches the WAL in one
    /// write system call, and another connection (the default VFS) reads every row.
    #[test]
    fn a_commit_writes_its_wal_frames_in_one_system_call() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let c = writer(&path);
        let wal = dir.path().join("t.db-wal");
        for round in 0..5i64 {
            let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
            let before = writes();
            c.execute_batch("BEGIN IMMEDIATE").expect("begin");
            for i in 0..12i64 {
                let k = (i * 7919 + round * 104_729) % 1000;
                c.execute(
                    "INSERT INTO t(a, b) VALUES (?1, ?2)",
                    (format!("{k:0>200}"), format!("{:0>200}", 1000 - k)),
                )
                .expect("insert");
            }
            c.execute_batch("COMMIT").expect("commit");
            let frames = (std::fs::metadata(&wal).expect("wal").len() - size) / (24 + 2048);
            assert!(frames >= 8, "a commit of many pages: {frames} frames");
            assert_eq!(writes() - before, 1, "round {round}: {frames} frames");
        }
        assert_eq!(count(&path), 60);
        // A commit larger than one write (group commit): in parts, read back whole.
        let before = writes();
        c.execute_batch("BEGIN IMMEDIATE").expect("begin");
        fill(&c, 400, 200);
        c.execute_batch("COMMIT").expect("commit");
        let parts = writes() - before;
        assert!((2..=8).contains(&parts), "{parts} writes");
        assert_eq!(count(&path), 460);
    }

    /// A transaction larger than the page cache writes frames before its commit and rewrites
    /// some of them; a rolled-back one leaves frames that are never committed. Both read back
    /// whole, with the default VFS, and after the writer is closed.
    #[test]
    fn spilled_rewritten_and_rolled_back_frames_read_back_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let c = writer(&path);
        c.pragma_update(None, "cache_size", 8)
            .expect("a small cache");
        c.execute_batch("BEGIN IMMEDIATE").expect("begin");
        fill(&c, 3000, 300);
        c.execute_batch("UPDATE t SET a = 'x' || a WHERE id % 3 = 0; COMMIT")
            .expect("update, commit");
        c.execute_batch("BEGIN IMMEDIATE").expect("begin");
        fill(&c, 2000, 300);
        c.execute_batch("ROLLBACK").expect("rollback");
        c.execute_batch("BEGIN IMMEDIATE").expect("begin");
        fill(&c, 10, 300);
        c.execute_batch("COMMIT").expect("commit");
        assert_eq!(count(&path), 3010);
        drop(c);
        assert_eq!(count(&path), 3010);
    }

    /// What is in the files once a commit returned, as `kill -9` would leave them: the database
    /// and its WAL copied to a directory of their own and opened there (SQLite recovers the WAL
    /// from the frames and their checksums, as after a crash).
    fn crash_image(path: &std::path::Path) -> i64 {
        let dir = tempfile::tempdir().expect("temp dir");
        let copy = dir.path().join("t.db");
        std::fs::copy(path, &copy).expect("copy the database");
        let wal = path.with_extension("db-wal");
        if wal.exists() {
            std::fs::copy(&wal, dir.path().join("t.db-wal")).expect("copy the WAL");
        }
        count(&copy)
    }

    /// Every committed transaction is whole in the files when its `COMMIT` returns: of every
    /// size from 1 to 110 frames (so also the one whose commit frame's page does not fit with
    /// what was gathered before it, the 48th frame with 2 KiB pages), and one that spilled
    /// frames before its commit and rewrote some (SQLite then rewrites their headers' checksums,
    /// the last a commit header with no page after it).
    #[test]
    fn every_commit_is_in_the_files_when_it_returns() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let c = writer(&path);
        let mut rows = 0;
        for n in 1..=110i64 {
            // A fresh WAL each time, so each transaction's frames are gathered from its first.
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .expect("checkpoint");
            c.execute_batch("BEGIN IMMEDIATE").expect("begin");
            for i in 0..n {
                // About one page a row: n rows write n leaf pages and a few more.
                c.execute(
                    "INSERT INTO t(a, b) VALUES (?1, ?2)",
                    (format!("{:0>900}", i), format!("{:0>900}", n)),
                )
                .expect("insert");
            }
            c.execute_batch("COMMIT").expect("commit");
            rows += n;
            assert_eq!(crash_image(&path), rows, "a transaction of {n} rows");
        }
        c.pragma_update(None, "cache_size", 8)
            .expect("a small cache");
        c.execute_batch("BEGIN IMMEDIATE").expect("begin");
        fill(&c, 2000, 300);
        c.execute_batch("UPDATE t SET a = 'x' || a WHERE id % 3 = 0; COMMIT")
            .expect("update, commit");
        assert_eq!(crash_image(&path), rows + 2000, "a spilled transaction");
    }
}
