//! Both stores under the same test bodies: [`both!`] turns `async fn name(s: Arc<dyn Store>)`
//! bodies into one test against the embedded store (a temp dir) and one against a real Redis
//! (`redis_support`), each opened with the test file's own `fn settings() -> StoreSettings`.
//! The test file declares `mod redis_support;` and `#[macro_use] mod store_support;`.

use std::sync::Arc;
use std::time::Duration;

use runyard::store::redis::{RedisSettings, RedisStore};
use runyard::store::sqlite::SqliteStore;
use runyard::store::{Store, StoreSettings};

use crate::redis_support::TestRedis;

/// What keeps a backend's data alive for the length of a test.
pub enum Guard {
    Embedded(#[allow(dead_code)] tempfile::TempDir),
    Redis(#[allow(dead_code)] TestRedis),
}

/// The embedded store in a new temp dir.
pub async fn embedded(settings: StoreSettings) -> (Guard, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = SqliteStore::open(dir.path(), settings, false).expect("open");
    (Guard::Embedded(dir), Arc::new(s))
}

/// The Redis store on a new redis-server.
pub async fn redis(settings: StoreSettings) -> (Guard, Arc<dyn Store>) {
    redis_with(settings, false).await
}

/// The Redis store on a new redis-server, writing compact job records (`store.records =
/// "compact"`) with `compact`.
pub async fn redis_with(settings: StoreSettings, compact: bool) -> (Guard, Arc<dyn Store>) {
    let r = TestRedis::start();
    let s = RedisStore::connect(RedisSettings {
        prefix: r.prefix.clone(),
        store: settings,
        retry: Duration::from_secs(5),
        channel_lists: crate::redis_support::channel_lists(),
        compact_records: compact,
        ..RedisSettings::new(r.url.clone())
    })
    .await
    .expect("connect");
    (Guard::Redis(r), s)
}

/// `both!(a, b, ...)`: the modules `embedded`, `redis` and `redis_compact` (Redis writing
/// compact job records), each with one test per body.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (_guard, s) = crate::store_support::embedded(super::settings()).await;
                    super::$name(s).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (_guard, s) = crate::store_support::redis(super::settings()).await;
                    super::$name(s).await;
                }
            )*
        }
        mod redis_compact {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (_guard, s) =
                        crate::store_support::redis_with(super::settings(), true).await;
                    super::$name(s).await;
                }
            )*
        }
    };
}
