//! The master key that job secrets, signed URLs and webhook keys derive from: from the config
//! (`master_key` / `RUNYARD_MASTER_KEY`), else `data_dir/master.key`, made on the first start
//! (written whole or not at all, never anew next to an existing database).
//!
//! A store is only ever started with the key it was made with: it keeps a check value of that
//! key ([`check_value`], recorded at its first start; a store made before the check takes the
//! key in use then), and a start with another key is refused ([`verify_check`]), as is a
//! configured key that differs from the data dir's `master.key`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::security::MasterKey;
use crate::store::redis::RedisStore;

/// Where the master key in use came from, for messages (never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `RUNYARD_MASTER_KEY`.
    Env,
    /// `master_key` in the configuration file (or a configuration made in code).
    Config,
    /// `data_dir/master.key`, at this path.
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env => f.write_str("RUNYARD_MASTER_KEY"),
            KeySource::Config => f.write_str("`master_key` in the configuration"),
            KeySource::File(p) => write!(f, "data_dir/master.key ({})", p.display()),
        }
    }
}

/// What another key breaks, for the refusals.
const BREAKS: &str = "with another key every job secret, signed URL and webhook signature made \
                      before stop verifying (running jobs' hook calls are refused, webhook \
                      receivers reject the deliveries)";

/// The master key: from config (`master_key` / `RUNYARD_MASTER_KEY`), which is taken out of
/// `config` (and zeroed), else `data_dir/master.key`, created on first run with mode 0600; and
/// where it came from. On the embedded store, a configured key that differs from an existing
/// `data_dir/master.key` (the key the store was made with) is refused.
pub fn load_master_key(config: &mut Config) -> anyhow::Result<(MasterKey, KeySource)> {
    if let Some(k) = config.master_key.take() {
        let k = zeroize::Zeroizing::new(k);
        if k.len() < 16 {
            anyhow::bail!("`master_key` must be at least 16 characters");
        }
        let source = if config.master_key_from_env {
            KeySource::Env
        } else {
            KeySource::Config
        };
        // On Redis the data dir holds no store: a `master.key` there is not the store's. On the
        // embedded store, a store keeping a check value decides (`verify_check` at its open);
        // one without (new, or made by an earlier version) has only the file to go by.
        let checked = crate::store::sqlite::SqliteStore::stored_key_check(&config.data_dir)
            .ok()
            .flatten()
            .is_some();
        if config.redis.is_none() && !checked {
            refuse_other_than_file(&config.data_dir.join("master.key"), k.as_bytes(), &source)?;
        }
        return Ok((MasterKey::new(k.as_bytes().to_vec()), source));
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
    let key = read_or_create_key(&path).map(MasterKey::new)?;
    Ok((key, KeySource::File(path)))
}

/// A configured key that is not the one in `path` (when that exists): the store beside it was
/// made with the file's key.
fn refuse_other_than_file(path: &Path, key: &[u8], source: &KeySource) -> anyhow::Result<()> {
    let Ok(file) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let file = zeroize::Zeroizing::new(file);
    let file = file.trim();
    if file.is_empty() || bool::from(file.as_bytes().ct_eq(key)) {
        return Ok(());
    }
    anyhow::bail!(
        "the master key from {source} is not the one in {}, and this store keeps no check value \
         of its key to tell which one it was made with (a store of an earlier version): \
         {BREAKS}. If this store has run with {source} so far (a configured key was used before \
         master.key), keep it and move {} away; if {source} is new, set it to the content of \
         {} (or remove it, and the file is used)",
        path.display(),
        path.display(),
        path.display()
    )
}

/// The check value of `key` a store keeps: `v1:` and the hex of
/// `HMAC-SHA256(key, "runyard master key check v1")`. It tells keys apart, and shows nothing
/// of the key (nor helps guess a random one).
pub fn check_value(key: &MasterKey) -> String {
    let mac = runyard_hooks::sign::hmac_sha256_parts(key, &[b"runyard master key check v1"]);
    format!("v1:{}", hex::encode(mac))
}

/// Whether `kept` is a check value of the form this build writes and reads: `v1:` and 64
/// lower-case hex digits. Any other (a later build's `v2:`, an empty or damaged one, a Redis key
/// of another type) cannot tell which key the store was made with.
fn readable(kept: &str) -> bool {
    kept.strip_prefix("v1:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Where a store keeps its check value, and how to delete it: `redis`, the deployment's key
/// prefix (its `P:master_key_check`), else the embedded store's `meta` row.
fn kept_where(redis: Option<&str>) -> (String, String) {
    match redis {
        Some(p) => (
            format!("`{p}:master_key_check` in Redis"),
            format!("`DEL {p}:master_key_check`"),
        ),
        None => (
            "row `master_key_check` of table `meta` in runyard.db".into(),
            "`DELETE FROM meta WHERE key = 'master_key_check'` in runyard.db".into(),
        ),
    }
}

/// Compares (constant time) the check value a store keeps with `ours`, the key in use's
/// ([`check_value`]); `recorded` says the store had none and keeps `ours` from now on (said at
/// WARN when the store `existed` before: made by an earlier version, it takes the key in use on
/// trust). `redis`: the store is a Redis deployment (shared by every node) with this key prefix,
/// else the embedded store. A kept value of a form this build cannot read is refused as such
/// (whether the key is the store's cannot be told), not as another key's.
pub fn verify_check(
    kept: &str,
    ours: &str,
    recorded: bool,
    source: &KeySource,
    redis: Option<&str>,
    existed: bool,
) -> anyhow::Result<()> {
    if bool::from(kept.as_bytes().ct_eq(ours.as_bytes())) {
        if recorded && !existed {
            tracing::info!(key_from = %source, "the store's master key check value recorded");
        } else if recorded {
            tracing::warn!(
                key_from = %source,
                "the store had no check value of its master key (a new store, or one made by an \
                 earlier version): the key in use is recorded as its key, and a start with \
                 another is refused from now on; if this store existed, make sure it is the \
                 key it was made with (its jobs' secrets and webhook keys derive from it)"
            );
        }
        return Ok(());
    }
    if !readable(kept) {
        let (at, delete) = kept_where(redis);
        anyhow::bail!(
            "the store keeps a master key check value this build cannot read ({at} is not `v1:` \
             and 64 hex digits: written by a newer build of runyard, before a rollback? or \
             changed by hand), so whether the key from {source} is the one the store was made \
             with cannot be told, and the start is refused ({BREAKS}, were it another). Start \
             with the build that wrote it; or, when sure that {source} holds the store's key, \
             stop every node, delete the check value ({delete}) and start again: the key in use \
             is recorded anew"
        );
    }
    let (made, afresh) = if redis.is_some() {
        (
            "the deployment's other nodes use (their `master_key`)",
            "another `store.prefix`",
        )
    } else {
        (
            "the store was made with (its data_dir/master.key, or the `master_key` / \
             RUNYARD_MASTER_KEY it was first started with)",
            "another `data_dir`",
        )
    };
    anyhow::bail!(
        "the master key from {source} is not the one this store was made with (the store keeps a \
         check value of its key, and this key's differs): {BREAKS}. Start with the key {made}; \
         to start afresh with this key, use {afresh}"
    )
}

/// Compares the check value the Redis deployment keeps (under `prefix`) with `check`, the key in
/// use's, recording it when there is none ([`verify_check`]); then keeps it there while this
/// node runs, judged by [`running_verdict`] (`RedisStore::keep_key_check`: Redis may lose it).
pub async fn check_redis(
    r: &Arc<RedisStore>,
    check: String,
    source: &KeySource,
    prefix: &str,
) -> anyhow::Result<()> {
    let (kept, recorded) = r.remember_key_check(&check).await.context("`redis`")?;
    // Whether the deployment existed before cannot be told cheaply: said at INFO.
    verify_check(&kept, &check, recorded, source, Some(prefix), false)?;
    let (source, prefix) = (source.clone(), prefix.to_string());
    r.keep_key_check(
        check.clone(),
        Box::new(move |kept| running_verdict(kept, &check, &source, &prefix)),
    );
    Ok(())
}

/// How a running node on Redis (`prefix`) judges the check value it finds there
/// (`crate::store::redis::RedisStore::keep_key_check`): `None` when it is `ours` (compared in
/// constant time), else why the node refuses the store's work, naming where its key came from
/// and never a key or a check value.
pub fn running_verdict(kept: &str, ours: &str, source: &KeySource, prefix: &str) -> Option<String> {
    if bool::from(kept.as_bytes().ct_eq(ours.as_bytes())) {
        return None;
    }
    let found = if readable(kept) {
        "another key's than this node's: Redis lost its data and a node with another key \
         started first, or the value was changed by hand"
    } else {
        "one this build cannot read: a newer build's, or changed by hand"
    };
    Some(format!(
        "the master key check value the store keeps now (`{prefix}:master_key_check`) is \
         {found}. This node's key (from {source}) cannot be told to be the store's, and jobs of \
         two keys must not mix ({BREAKS}): this node refuses the store's work and is not ready \
         until the value is its key's again or gone. Stop the nodes whose key is not the \
         deployment's; if the value is not the deployment's key's, `DEL \
         {prefix}:master_key_check`: this node then records its own again within seconds and \
         serves again (docs/security.md)"
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn the_check_value_tells_keys_apart_and_shows_none() {
        let a = check_value(&MasterKey::new(KEY.into()));
        assert_eq!(
            a,
            check_value(&MasterKey::new(KEY.into())),
            "the same key, the same value"
        );
        assert_ne!(
            a,
            check_value(&MasterKey::new(b"another key, 16+ chars".to_vec()))
        );
        assert!(a.starts_with("v1:") && a.len() == 3 + 64, "{a}");
        assert!(!a.contains(KEY) && !a.contains(&hex::encode(KEY)));
    }

    #[test]
    fn another_key_than_the_stores_is_refused_naming_where_it_came_from() {
        let ours = check_value(&MasterKey::new(KEY.into()));
        let kept = check_value(&MasterKey::new(b"the key the store was made with".to_vec()));
        assert!(verify_check(&ours, &ours, true, &KeySource::Env, None, false).is_ok());
        for (source, named) in [
            (KeySource::Env, "RUNYARD_MASTER_KEY"),
            (KeySource::Config, "`master_key` in the configuration"),
            (KeySource::File("/d/master.key".into()), "/d/master.key"),
        ] {
            for redis in [None, Some("runyard")] {
                let e = verify_check(&kept, &ours, false, &source, redis, true)
                    .unwrap_err()
                    .to_string();
                assert!(e.contains(named) && e.contains("stop verifying"), "{e}");
                assert!(
                    !e.contains(&kept) && !e.contains(&ours),
                    "no check value: {e}"
                );
            }
        }
    }

    #[test]
    fn a_check_value_of_an_unknown_form_is_refused_as_unreadable_not_as_another_key() {
        let ours = check_value(&MasterKey::new(KEY.into()));
        let other = check_value(&MasterKey::new(b"another key, 16+ chars".to_vec()));
        let upper = format!("v1:{}", ours[3..].to_uppercase());
        for kept in ["v2:abcd", "", "garbage", "v1:", "v1:zz", upper.as_str()] {
            for (redis, named) in [
                (None, "DELETE FROM meta"),
                (Some("pre"), "DEL pre:master_key_check"),
            ] {
                let e = verify_check(kept, &ours, false, &KeySource::Env, redis, true)
                    .unwrap_err()
                    .to_string();
                assert!(
                    e.contains("cannot read") && !e.contains("not the one"),
                    "{e}"
                );
                assert!(e.contains(named) && e.contains("RUNYARD_MASTER_KEY"), "{e}");
                assert!(!e.contains(&ours), "{e}");
            }
        }
        // A readable value of another key is another key.
        let e = verify_check(&other, &ours, false, &KeySource::Env, None, true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not the one") && !e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn a_running_node_judges_the_value_it_finds() {
        let ours = check_value(&MasterKey::new(KEY.into()));
        let other = check_value(&MasterKey::new(b"another key, 16+ chars".to_vec()));
        assert_eq!(running_verdict(&ours, &ours, &KeySource::Env, "p"), None);
        let e = running_verdict(&other, &ours, &KeySource::Config, "p").expect("refused");
        assert!(e.contains("another key's") && e.contains("`master_key` in the configuration"));
        assert!(e.contains("DEL p:master_key_check"), "{e}");
        assert!(
            !e.contains(&ours) && !e.contains(&other),
            "no check value: {e}"
        );
        let e = running_verdict("v2:abcd", &ours, &KeySource::Env, "p").expect("refused");
        assert!(e.contains("cannot read"), "{e}");
        assert!(running_verdict("", &ours, &KeySource::Env, "p").is_some());
    }

    #[test]
    fn a_configured_key_other_than_the_data_dirs_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        // No file: nothing to compare with.
        assert!(refuse_other_than_file(&path, KEY.as_bytes(), &KeySource::Env).is_ok());
        std::fs::write(&path, format!("{KEY}\n")).unwrap();
        assert!(refuse_other_than_file(&path, KEY.as_bytes(), &KeySource::Env).is_ok());
        let e = refuse_other_than_file(&path, b"zz-configured-key-16+", &KeySource::Config)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`master_key` in the configuration") && e.contains("master.key"));
        assert!(
            !e.contains(KEY) && !e.contains("zz-configured"),
            "no key shown: {e}"
        );
    }
}
