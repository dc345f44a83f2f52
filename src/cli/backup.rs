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
//! user's, empty and closed to others.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use crate::config::{Config, Overrides};

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
                return Err(crate::cli::exit::Failure::usage(
                    "this configuration uses Redis: back Redis up by its own means, and the API \
                     nodes' `data_dir/files` (job files, content-addressed: a plain copy is \
                     consistent) with them (docs/reliability.md)",
                ));
            }
            config.data_dir
        }
    };
    let dest = a.dest.clone();
    let done = tokio::task::spawn_blocking(move || backup(&dir, &dest))
        .await
        .context("the backup's thread")??;
    println!("{done}");
    Ok(std::process::ExitCode::SUCCESS)
}

/// Copies the store of `dir` into `dest`; what was copied, in one line.
fn backup(dir: &Path, dest: &Path) -> anyhow::Result<String> {
    let db = dir.join("runyard.db");
    if !db.is_file() {
        bail!(
            "{} holds no embedded store (no runyard.db): nothing to back up (a Redis \
             deployment is backed up by Redis's own means: docs/redis.md)",
            dir.display()
        );
    }
    make_dest(dest)?;
    let files = copy_files(&dir.join("files"), &dest.join("files"))?;
    let target = dest.join("runyard.db");
    // Made here, empty and owner-only, before SQLite writes into it (`VACUUM INTO` takes an
    // existing empty file).
    create_new(&target)?;
    let conn = rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    let target_text = target
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", target.display()))?;
    conn.execute("VACUUM INTO ?1", [target_text])
        .with_context(|| format!("cannot copy {} into {}", db.display(), target.display()))?;
    drop(conn);
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
    Ok(format!("backed up {}: {}", dir.display(), said.join(", ")))
}

/// `dest` made 0700, or an existing empty directory of this user's that no one else may use
/// (group and others without rights); anything else is refused.
fn make_dest(dest: &Path) -> anyhow::Result<()> {
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
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dest)
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

/// Copies the file store's blobs (`files/<2 hex>/<md5>`; not `tmp/`, uploads under way) from
/// `from` into `to`, but those `to` holds already; how many it copied.
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
        if name == "tmp" || !shard.file_type()?.is_dir() {
            continue;
        }
        let into = to.join(&name);
        dir(&into)?;
        for blob in std::fs::read_dir(shard.path())? {
            let blob = blob?;
            let target = into.join(blob.file_name());
            if !blob.file_type()?.is_file() || target.exists() {
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
