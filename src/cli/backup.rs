//! `runyard backup DEST`: a consistent copy of an embedded store's data dir, taken while its
//! server runs (docs/reliability.md "Backups").
//!
//! A plain copy of a running data dir is not a backup: the database and its write-ahead log are
//! read at different moments, and the copy may not open (`database disk image is malformed`).
//! Here the database is copied by SQLite itself, `VACUUM INTO`, inside one read transaction: a
//! snapshot of one moment, taken beside the server's writer (readers never block it in WAL mode,
//! and the server's lock on the data dir is for servers, not readers). Then `master.key` (every
//! job secret, signed URL and webhook key derives from it) and the job files, which are
//! content-addressed and never rewritten: every file the snapshot refers to was stored before
//! it, and the file collector leaves unreferenced files for at least 10 minutes.

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
            Config::load(&path, required, &Overrides::default())
                .map_err(|e| crate::cli::exit::Failure::usage(e.to_string()))?
                .data_dir
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
    let target = dest.join("runyard.db");
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
    set_mode(&target, 0o600)?;
    let mut said = vec![format!("database {}", target.display())];
    let key = dir.join("master.key");
    if key.is_file() {
        let to = dest.join("master.key");
        std::fs::copy(&key, &to).with_context(|| format!("cannot copy {}", key.display()))?;
        set_mode(&to, 0o600)?;
        said.push("master.key".into());
    } else {
        said.push(
            "no master.key in the data dir (the key comes from `master_key` / \
             RUNYARD_MASTER_KEY: keep it with this backup, or the restored jobs' secrets, signed \
             URLs and webhook keys will not verify)"
                .into(),
        );
    }
    let files = copy_files(&dir.join("files"), &dest.join("files"))?;
    said.push(format!("{files} files"));
    Ok(format!("backed up {}: {}", dir.display(), said.join(", ")))
}

/// `dest` made 0700, or an existing empty directory; anything else is refused.
fn make_dest(dest: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty: give a new or empty directory",
                    dest.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dest)
                .with_context(|| format!("cannot create {}", dest.display()))
        }
        Err(e) => Err(e).with_context(|| format!("{} is not a usable directory", dest.display())),
    }
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// Copies the file store's blobs (`files/<2 hex>/<md5>`; not `tmp/`, uploads under way) from
/// `from` into `to`; how many.
fn copy_files(from: &Path, to: &Path) -> anyhow::Result<usize> {
    let mut n = 0;
    let Ok(shards) = std::fs::read_dir(from) else {
        return Ok(0); // no file was ever stored
    };
    for shard in shards {
        let shard = shard?;
        let name = shard.file_name();
        if name == "tmp" || !shard.file_type()?.is_dir() {
            continue;
        }
        let into = to.join(&name);
        std::fs::create_dir_all(&into)
            .with_context(|| format!("cannot create {}", into.display()))?;
        for blob in std::fs::read_dir(shard.path())? {
            let blob = blob?;
            if !blob.file_type()?.is_file() {
                continue;
            }
            let path = blob.path();
            match std::fs::copy(&path, into.join(blob.file_name())) {
                Ok(_) => n += 1,
                // Collected since it was listed: no longer referenced by any job.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("cannot copy {}", path.display())),
            }
        }
    }
    Ok(n)
}
