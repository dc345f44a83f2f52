//! The master key that job secrets, signed URLs and webhook keys derive from: from the config
//! (`master_key` / `RUNYARD_MASTER_KEY`), else `data_dir/master.key`, made on the first start
//! (written whole or not at all, never anew next to an existing database).

use std::path::Path;

use anyhow::Context;

use crate::config::Config;
use crate::security::MasterKey;

/// The master key: from config (`master_key` / `RUNYARD_MASTER_KEY`), which is taken out of
/// `config` (and zeroed), else `data_dir/master.key`, created on first run with mode 0600.
pub fn load_master_key(config: &mut Config) -> anyhow::Result<MasterKey> {
    if let Some(k) = config.master_key.take() {
        let k = zeroize::Zeroizing::new(k);
        if k.len() < 16 {
            anyhow::bail!("`master_key` must be at least 16 characters");
        }
        return Ok(MasterKey::new(k.as_bytes().to_vec()));
    }
    let path = config.data_dir.join("master.key");
    let db = config.data_dir.join("runyard.db");
    let fresh_store = config.redis.is_none() && !std::fs::metadata(&db).is_ok_and(|m| m.len() > 0);
    if fresh_store && path.exists() {
        // The key of an earlier run without its database: moved, deleted or emptied by hand?
        tracing::warn!(
            data_dir = %config.data_dir.display(),
            "the data dir holds a master.key but no database: starting with an empty store (was \
             runyard.db moved or deleted?)"
        );
    }
    read_or_create_key(&path).map(MasterKey::new)
}

fn read_or_create_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(k) = std::fs::read_to_string(path) {
        let k = zeroize::Zeroizing::new(k);
        let k = k.trim();
        if k.len() >= 32 {
            return Ok(k.as_bytes().to_vec());
        }
        anyhow::bail!("{} is too short to be a master key", path.display());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // A database without its key: the key it was made with is lost or moved. A new one would
    // silently change every job secret, signed URL and webhook signature derived from it.
    let db = dir.join("runyard.db");
    if std::fs::metadata(&db).is_ok_and(|m| m.len() > 0) {
        anyhow::bail!(
            "{} holds a database but no master.key: restore {} (or set `master_key` to the key \
             it was made with); a new key would make every job secret, signed URL and webhook \
             signature made before stop verifying. To start afresh, move the database away",
            dir.display(),
            path.display()
        );
    }
    // Written whole to a file of its own, then linked into place (never over a key): a failed
    // write (a full disk) leaves no empty or partial master.key behind. A file system without
    // hard links gets the key written in place.
    let key = hex::encode(rand::random::<[u8; 32]>());
    let write_to = |p: &Path, create_new: bool| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(create_new)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(p)?;
        f.write_all(key.as_bytes())?;
        f.sync_all()
    };
    // A part left by a start killed midway is written over (it never was the key).
    let tmp = dir.join(format!("master.key.new-{}", std::process::id()));
    let linked = write_to(&tmp, false).map(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    let cannot = || format!("cannot create {}", path.display());
    match linked {
        Err(e) => return Err(e).with_context(cannot),
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(e).with_context(cannot)
        }
        // No hard links here: in place, and removed again if it could not be written whole.
        Ok(Err(_)) => {
            if let Err(e) = write_to(path, true) {
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e).with_context(cannot);
            }
        }
    }
    // The key's name must survive a power cut as surely as the database made next.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(key.into_bytes())
}
