//! `runyard backup DEST`: a consistent copy of an embedded store's data dir, taken while its
//! server runs (docs/reliability.md "Backups").
//!
//! A plain copy of a running data dir is not a backup: the database and its write-ahead log are
//! read at different moments, and the copy may not open (`database disk image is malformed`).
//! Here the database is copied by SQLite itself, `VACUUM INTO`, inside one read transaction: a
//! snapshot of one moment, taken beside the server's writer (readers never block it in WAL mode,
//! and the server's lock on the data dir is for servers, not readers). Then `master.key` (every
//! job secret, signed URL and webhook key derives from it) and the job files, which are
//! content-addressed and never rewritten, copied once before the snapshot and again after it
//! (what the second pass finds already copied is skipped): a file the snapshot refers to was
//! stored before it, so the first pass has it even if the file collector takes it (no longer
//! referenced: a job deleted, an attempt retried) before the second.
//!
//! Everything is created here, never opened if it exists (`O_EXCL`, no symlink followed), owner
//! only: the database and `master.key` 0600, directories 0700; an existing DEST must be this
//! user's, empty and closed to others, and outside the data dir. The database is written as
//! `runyard.db.partial` and renamed `runyard.db` last, once the rest is there; a backup that
//! fails, or is stopped by a signal (SIGINT, SIGTERM, SIGHUP: the copy is interrupted), removes
//! what it wrote (DEST too when it made it). The copy is made a store of its own
//! (`store::sqlite::mark_copy`): a server started on it never takes the original's work or event
//! ids for its own (docs/reliability.md).

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use crate::config::{Config, Overrides};

/// Set by a stop signal: the backup gives up at its next step, and a wait for the database's
/// lock ends ([`busy`]).
static CANCELLED: AtomicBool = AtomicBool::new(false);

/// The interrupt of the copy's SQLite connection while it copies (`VACUUM INTO`).
type Interrupt = Arc<parking_lot::Mutex<Option<rusqlite::InterruptHandle>>>;

/// Flags of `backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Config file whose `data_dir` to back up (default ./runyard.toml when present).
    #[arg(long, env = "RUNYARD_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory to back up (instead of the config's `data_dir`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where to write the backup: a directory that does not exist yet (made 0700) or is empty.
    dest: PathBuf,
}

/// Runs `runyard backup`: prints what it copied.
pub async fn run(a: BackupArgs) -> anyhow::Result<std::process::ExitCode> {
    let dir = match &a.data_dir {
        Some(d) => d.clone(),
        None => {
            let (path, required) = match &a.config {
                Some(p) => (p.clone(), true),
                None => (PathBuf::from("runyard.toml"), false),
            };
            let config = Config::load(&path, required, &Overrides::default())
                .map_err(|e| crate::cli::exit::Failure::usage(e.to_string()))?;
            if config.redis.is_some() {
                // Not a usage error (exit 2 is for flags and arguments): a refusal, exit 1.
                return Err(anyhow::anyhow!(
                    "this configuration uses Redis: back Redis up by its own means, and the API \
                     nodes' `data_dir/files` (job files, content-addressed: a plain copy is \
                     consistent) with them (docs/reliability.md)",
                ));
            }
            config.data_dir
        }
    };
    let dest = a.dest.clone();
    let interrupt = Interrupt::default();
    let i2 = interrupt.clone();
    // Before anything is written: a signal from then on removes it.
    let mut signals = crate::cli::stop::StopSignals::new();
    let mut task = tokio::task::spawn_blocking(move || backup(&dir, &dest, &i2));
    let (name, number) = tokio::select! {
        done = &mut task => {
            println!("{}", done.context("the backup's thread")??);
            return Ok(std::process::ExitCode::SUCCESS);
        }
        s = signals.recv() => s,
    };
    CANCELLED.store(true, Ordering::SeqCst);
    if let Some(h) = interrupt.lock().as_ref() {
        h.interrupt();
    }
    eprintln!("{name}: the backup stops; what it wrote is removed (a second signal: at once)");
    tokio::select! {
        done = &mut task => {
            // Done before it saw the signal: a whole backup, kept.
            if let Ok(Ok(done)) = done {
                println!("{done}");
                return Ok(std::process::ExitCode::SUCCESS);
            }
        }
        (_, n) = signals.recv() => std::process::exit(128 + n),
    }
    Ok(std::process::ExitCode::from(
        u8::try_from(128 + number).unwrap_or(1),
    ))
}

/// Copies the store of `dir` into `dest`; what was copied, in one line. On failure, what it
/// wrote is removed ([`Written::remove`]).
fn backup(dir: &Path, dest: &Path, interrupt: &Interrupt) -> anyhow::Result<String> {
    let db = dir.join("runyard.db");
    if !db.is_file() {
        bail!(
            "{} holds no embedded store (no runyard.db): nothing to back up (a Redis \
             deployment is backed up by Redis's own means: docs/redis.md)",
            dir.display()
        );
    }
    if inside(dir, dest)? {
        bail!(
            "{} is inside the data dir {}: a backup there would be copied into the later ones \
             (as job files) and live on the store's own disk; give a directory outside it",
            dest.display(),
            dir.display()
        );
    }
    let written = Written {
        dest: dest.to_path_buf(),
        made: make_dest(dest)?,
    };
    match copy_into(dir, &db, dest, interrupt) {
        Ok(done) => Ok(done),
        Err(e) => {
            written.remove();
            Err(e)
        }
    }
}

/// What [`backup`] writes into DEST: all of it is removed when the backup fails.
struct Written {
    dest: PathBuf,
    /// DEST did not exist: it was made here.
    made: bool,
}

impl Written {
    /// Removes what the backup wrote (DEST was new or empty: everything in it by these names is
    /// its own), and DEST itself when it made it.
    fn remove(&self) {
        let _ = std::fs::remove_dir_all(self.dest.join("files"));
        for name in [
            "runyard.db.partial",
            "runyard.db.partial-journal",
            "runyard.db.partial-wal",
            "runyard.db.partial-shm",
            "master.key",
        ] {
            let _ = std::fs::remove_file(self.dest.join(name));
        }
        if self.made {
            let _ = std::fs::remove_dir(&self.dest);
        }
    }
}

/// Whether `dest` is `dir` or inside it, symlinks resolved: from the nearest ancestor of
/// `dest` that exists on, its names are taken as they are (none of them exists).
fn inside(dir: &Path, dest: &Path) -> anyhow::Result<bool> {
    let dir =
        std::fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let dest =
        std::path::absolute(dest).with_context(|| format!("cannot resolve {}", dest.display()))?;
    let parts: Vec<Component<'_>> = dest.components().collect();
    for k in (1..=parts.len()).rev() {
        let Ok(mut p) = std::fs::canonicalize(parts[..k].iter().collect::<PathBuf>()) else {
            continue;
        };
        for part in &parts[k..] {
            match part {
                Component::ParentDir => {
                    p.pop();
                }
                Component::Normal(n) => p.push(n),
                _ => {}
            }
        }
        return Ok(p.starts_with(&dir));
    }
    Ok(false)
}

/// Waits for a lock on the database (a writer of another kind than the server's WAL writes,
/// which never block this reader) for up to 30 s, unless the backup is stopped.
fn busy(tries: i32) -> bool {
    if CANCELLED.load(Ordering::SeqCst) || tries >= 3000 {
        return false;
    }
    std::thread::sleep(std::time::Duration::from_millis(10));
    true
}

/// Gives up when a stop signal came.
fn check_cancelled() -> anyhow::Result<()> {
    if CANCELLED.load(Ordering::SeqCst) {
        bail!("stopped by a signal");
    }
    Ok(())
}

/// The store's database, read-only, waiting for others' locks ([`busy`]).
fn open_source(db: &Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", db.display()))?;
    conn.busy_handler(Some(busy))?;
    Ok(conn)
}

/// The copy itself, into `dest` made ready.
fn copy_into(dir: &Path, db: &Path, dest: &Path, interrupt: &Interrupt) -> anyhow::Result<String> {
    // Another program's file, or a newer build's database (its format mark, which the copy
    // keeps): refused before the job files are copied, and what was written removed.
    let conn = open_source(db)?;
    let fit = crate::store::sqlite::refuse_unopenable(&conn, db);
    drop(conn);
    check_cancelled()?;
    fit?;
    let files = copy_files(&dir.join("files"), &dest.join("files"))?;
    let partial = dest.join("runyard.db.partial");
    let target = dest.join("runyard.db");
    // Made here, empty and owner-only, before SQLite writes into it (`VACUUM INTO` takes an
    // existing empty file).
    create_new(&partial)?;
    let conn = open_source(db)?;
    *interrupt.lock() = Some(conn.get_interrupt_handle());
    check_cancelled()?;
    let partial_text = partial
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", partial.display()))?;
    let copied = conn.execute("VACUUM INTO ?1", [partial_text]);
    *interrupt.lock() = None;
    drop(conn);
    check_cancelled()?;
    copied.with_context(|| format!("cannot copy {} into {}", db.display(), partial.display()))?;
    crate::store::sqlite::mark_copy(&partial)
        .with_context(|| format!("cannot make {} a store of its own", partial.display()))?;
    let mut said = vec![format!("database {}", target.display())];
    let key = dir.join("master.key");
    if key.is_file() {
        copy_new(&key, &dest.join("master.key"))?;
        said.push("master.key".into());
    } else {
        said.push(
            "no master.key in the data dir (the key comes from `master_key` / \
             RUNYARD_MASTER_KEY: keep it with this backup, or the restored jobs' secrets, signed \
             URLs and webhook keys will not verify)"
                .into(),
        );
    }
    let files = files + copy_files(&dir.join("files"), &dest.join("files"))?;
    said.push(format!("{files} files"));
    check_cancelled()?;
    // Last: a DEST with a `runyard.db` holds a whole backup. DEST is this user's alone (made
    // here, or empty and closed to others): nothing else puts a `runyard.db` there meanwhile.
    if std::fs::symlink_metadata(&target).is_ok() {
        bail!("{} appeared during the backup", target.display());
    }
    std::fs::rename(&partial, &target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    Ok(format!("backed up {}: {}", dir.display(), said.join(", ")))
}

/// `dest` made 0700 (true), or an existing empty directory of this user's that no one else may
/// use (group and others without rights: false); anything else is refused.
fn make_dest(dest: &Path) -> anyhow::Result<bool> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::symlink_metadata(dest) {
        Ok(meta) => {
            // Safety: plain syscall, no arguments.
            let me = unsafe { libc::geteuid() };
            if !meta.is_dir() || meta.uid() != me || meta.permissions().mode() & 0o077 != 0 {
                bail!(
                    "{} exists and is not a directory of this user's closed to others (mode \
                     0700): give a new directory",
                    dest.display()
                );
            }
            if std::fs::read_dir(dest)?.next().is_some() {
                bail!(
                    "{} is not empty: give a new or empty directory",
                    dest.display()
                );
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dest)
            .map(|()| true)
            .with_context(|| format!("cannot create {}", dest.display())),
        Err(e) => Err(e).with_context(|| format!("{} is not a usable directory", dest.display())),
    }
}

/// A new empty file at `path`, 0600: never an existing one, never through a symlink.
fn create_new(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Copies `from` into a new file `to` ([`create_new`]).
fn copy_new(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut src =
        std::fs::File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
    let mut dst = create_new(to)?;
    std::io::copy(&mut src, &mut dst).with_context(|| format!("cannot copy {}", from.display()))?;
    Ok(())
}

/// Copies the file store's blobs (`files/<2 hex>/<md5>`: nothing else, not `tmp/`, uploads under
/// way) from `from` into `to`, but those `to` holds already; how many it copied.
fn copy_files(from: &Path, to: &Path) -> anyhow::Result<usize> {
    use std::os::unix::fs::DirBuilderExt;
    let mut n = 0;
    let Ok(shards) = std::fs::read_dir(from) else {
        return Ok(0); // no file was ever stored
    };
    let dir = |path: &Path| match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(e).with_context(|| format!("cannot create {}", path.display()))
        }
        _ => Ok(()),
    };
    dir(to)?;
    for shard in shards {
        let shard = shard?;
        let name = shard.file_name();
        let Some(prefix) = name
            .to_str()
            .filter(|n| n.len() == 2 && crate::files::is_lower_hex(n))
        else {
            continue;
        };
        if !shard.file_type()?.is_dir() {
            continue;
        }
        let into = to.join(&name);
        dir(&into)?;
        for blob in std::fs::read_dir(shard.path())? {
            let blob = blob?;
            check_cancelled()?;
            let hash = blob.file_name();
            let blob_name = hash
                .to_str()
                .filter(|h| crate::files::valid_hash(h) && h.starts_with(prefix));
            let target = into.join(&hash);
            if blob_name.is_none() || !blob.file_type()?.is_file() || target.exists() {
                continue;
            }
            match copy_new(&blob.path(), &target) {
                Ok(()) => n += 1,
                // Collected since it was listed (the pass before the snapshot has it if the
                // snapshot refers to it).
                Err(e)
                    if e.downcast_ref::<std::io::Error>().map(std::io::Error::kind)
                        == Some(std::io::ErrorKind::NotFound) =>
                {
                    let _ = std::fs::remove_file(&target);
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(n)
}
