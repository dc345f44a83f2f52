//! Opening the store a config names (Redis or the embedded store), checked against the master
//! key it was made with.

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::master_key::{check_redis, check_value, verify_check, KeySource};
use crate::security::MasterKey;
use crate::store::redis::{RedisSettings, RedisStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreSettings};

/// Opens the store, refusing it when it was made with another master key than `key` (from
/// `key_from`): see `crate::master_key`. With its copy id when `runyard backup` made it.
pub(super) async fn open_store(
    config: &Config,
    key: &MasterKey,
    key_from: &KeySource,
) -> anyhow::Result<(Arc<dyn Store>, Option<u64>)> {
    let check = check_value(key);
    let settings = StoreSettings {
        progress_interval: config.events.progress_interval,
        channel_limit: config.events.channel_limit,
        global_limit: config.events.global_limit,
        log_lines_per_job: config.retention.log_lines_per_job,
    };
    if let Some(url) = &config.redis {
        let r = RedisStore::connect(RedisSettings {
            prefix: config.store.prefix.clone(),
            store: settings,
            channel_ttl: config.retention.events,
            retry: config.store.retry,
            channel_lists: config.store.channel_events == crate::config::ChannelEvents::List,
            compact_records: config.store.records == crate::config::RecordForm::Compact,
            // A diagnostic switch (docs/redis.md "Channel index"): off, this node neither keeps
            // the index nor lists from it.
            channel_index: std::env::var("RUNYARD_REDIS_CHANNEL_INDEX").as_deref() != Ok("off"),
            // Experimental, off by default (docs/redis.md "Hand-over at submit": fewer script
            // calls and a lower submit-to-start latency, but not more jobs/s on this machine).
            handover: std::env::var("RUNYARD_REDIS_HANDOVER").as_deref() == Ok("on"),
            ca: config.store.redis_ca.clone(),
            ..RedisSettings::new(url.clone())
        })
        .await
        .context("`redis`")?;
        check_redis(&r, check, key_from, &config.store.prefix).await?;
        return Ok((r, None));
    }
    // Before the database is opened for writing: a refused start changes nothing.
    if let Some(kept) = SqliteStore::stored_key_check(&config.data_dir)? {
        verify_check(&kept, &check, false, key_from, None, true)?;
    }
    let db = config.data_dir.join("runyard.db");
    let existed = std::fs::metadata(db).is_ok_and(|m| m.len() > 0);
    let full = config.store.synchronous == crate::config::Synchronous::Full;
    let s = SqliteStore::open(&config.data_dir, settings, full)?;
    let (kept, recorded) = s.remember_key_check(check.clone()).await?;
    verify_check(&kept, &check, recorded, key_from, None, existed)?;
    let copy = s.copy_id();
    Ok((Arc::new(s), copy))
}
