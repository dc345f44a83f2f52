//! `GET /async/jobs` for a caller confined by its grant (docs/auth.md, "Listings"): a real server
//! on port 0 (no worker, so every job stays QUEUED) with `[auth]`, on the embedded store and on
//! Redis (a private redis-server, or `RUNYARD_TEST_REDIS`). An admin submits jobs of two tenants
//! interleaved; a token confined to a channel, one confined to a type glob and a channel JWT page
//! with `limit=1`, with no filter and with filters naming the other tenant (`channel`, `type`,
//! `status`, `text` in its args), and get their own jobs only: every `next_cursor` the id of a
//! job of theirs (or null), and the same answers for a `text` that matches the other tenant's
//! args and one that does not. An unconfined token pages every job, as an admin does. On Redis
//! the walks start once the channel index holds every job, so the channel-confined ones read it.
//!
//! The hole this closes: the store paged every job and the handler dropped the ones outside the
//! grant afterwards, so `next_cursor` (and whether there was one) told a confined caller other
//! tenants' job ids, counts and, through `text`, their args a character at a time.

mod redis_support;

use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use runyard::auth::tokens::token_sha256;
use runyard::config::Config;
use runyard::server::{RunningServer, ServerBuilder};
use serde_json::{json, Value};

use redis_support::TestRedis;

const SECRET: &str = "list-visibility-secret-0123456789abcdef";
const MASTER_KEY: &str = "list-visibility-master-key-0123456789";
const ADMIN: &str = "ry_list_admin";
const CHANNEL_A: &str = "ry_list_channel_a";
const TYPE_A: &str = "ry_list_type_a";
const READER: &str = "ry_list_reader";
/// Confined to literal channels, one of them twice (the embedded store reads them by index).
const CHANNELS_A: &str = "ry_list_channels_a";
const SECRET_ARGS: &str = "s3cret-XYZ";

fn config(dir: &std::path::Path, redis: Option<&TestRedis>) -> String {
    let mut t = String::new();
    if let Some(r) = redis {
        t.push_str(&format!(
            "redis = {:?}\nmaster_key = {MASTER_KEY:?}\n",
            r.url
        ));
    }
    t.push_str(&format!(
        "data_dir = \"{}\"\n[auth]\njwt_secret = \"{SECRET}\"\n",
        dir.join("data").display()
    ));
    for (name, tok, extra) in [
        ("admin", ADMIN, "scopes = [\"admin\"]"),
        (
            "channel-a",
            CHANNEL_A,
            "scopes = [\"jobs:read\"]\nchannels = [\"tenant-a\"]",
        ),
        (
            "type-a",
            TYPE_A,
            "scopes = [\"jobs:read\"]\ntypes = [\"a.*\"]",
        ),
        ("reader", READER, "scopes = [\"jobs:read\"]"),
        (
            "channels-a",
            CHANNELS_A,
            "scopes = [\"jobs:read\"]\nchannels = [\"tenant-a\", \"tenant-c\", \"tenant-a\"]",
        ),
    ] {
        t.push_str(&format!(
            "[[auth.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\n{extra}\n",
            token_sha256(tok)
        ));
    }
    if let Some(r) = redis {
        t.push_str(&format!(
            "[store]\nprefix = {:?}\nretry = \"5s\"\n",
            r.prefix
        ));
    }
    t.push_str("[[runners]]\nkind = \"local\"\ntypes = [\"a.*\", \"b.*\"]\ncommand = [\"true\"]\n");
    t
}

fn channel_jwt(channel: &str) -> String {
    let claims = json!({"scope": "jobs:read", "channel": channel, "sub": "tenant",
                        "exp": jsonwebtoken::get_current_timestamp() + 600});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode")
}

struct Server {
    server: Option<RunningServer>,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// A stored job: its id, type, channel, whether its args hold the other tenant's secret.
#[derive(Debug, Clone)]
struct Fixture {
    id: String,
    job_type: &'static str,
    channel: &'static str,
    secret: bool,
}

/// One page walk: the ids listed, page by page, and every answer as it came.
struct Walk {
    ids: Vec<String>,
    cursors: Vec<Option<String>>,
    answers: Vec<Value>,
}

impl Server {
    async fn start(redis: Option<&TestRedis>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::from_toml(&config(dir.path(), redis)).expect("config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = ServerBuilder::new(config)
            .worker(false)
            .start(listener)
            .await
            .expect("start");
        Self {
            url: server.url(),
            server: Some(server),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        self.server
            .take()
            .expect("running")
            .stop()
            .await
            .expect("stop");
    }

    async fn submit(&self, job_type: &'static str, channel: &'static str, secret: bool) -> Fixture {
        let args = if secret {
            json!({"api_key": SECRET_ARGS})
        } else {
            json!({"k": "plain"})
        };
        let res = self
            .http
            .post(format!("{}/async/jobs", self.url))
            .bearer_auth(ADMIN)
            .json(&json!({"type": job_type, "channel": channel, "args": args}))
            .send()
            .await
            .expect("submit");
        let status = res.status().as_u16();
        let v: Value = res.json().await.expect("json");
        assert_eq!(status, 202, "{v}");
        Fixture {
            id: v["job_id"].as_str().expect("job_id").to_string(),
            job_type,
            channel,
            secret,
        }
    }

    /// Pages `GET /async/jobs?limit=1&{filters}` as `bearer` to the end.
    async fn walk(&self, bearer: &str, filters: &[(&str, &str)]) -> Walk {
        let mut w = Walk {
            ids: vec![],
            cursors: vec![],
            answers: vec![],
        };
        let mut cursor: Option<String> = None;
        for _ in 0..50 {
            let mut q: Vec<(&str, &str)> = vec![("limit", "1")];
            q.extend_from_slice(filters);
            if let Some(c) = &cursor {
                q.push(("cursor", c));
            }
            let res = self
                .http
                .get(format!("{}/async/jobs", self.url))
                .bearer_auth(bearer)
                .query(&q)
                .send()
                .await
                .expect("list");
            let status = res.status().as_u16();
            let v: Value = res.json().await.expect("json");
            assert_eq!(status, 200, "{filters:?}: {v}");
            let jobs = v["jobs"].as_array().unwrap_or_else(|| panic!("{v}"));
            assert!(jobs.len() <= 1, "{v}");
            w.ids.extend(
                jobs.iter()
                    .map(|j| j["id"].as_str().expect("id").to_string()),
            );
            let next = v["next_cursor"].as_str().map(str::to_string);
            w.cursors.push(next.clone());
            w.answers.push(v);
            match next {
                Some(c) => cursor = Some(c),
                None => return w,
            }
        }
        panic!("paging {filters:?} did not end");
    }
}

/// Filters of a listing, as query parameters.
type Query = Vec<(&'static str, &'static str)>;
/// Which fixtures a listing keeps.
type Keep = fn(&Fixture) -> bool;

fn keep(f: Keep) -> Keep {
    f
}

/// The jobs of `all` that `sees` and `filter` keep, newest first (ids are UUID v7).
fn expected(all: &[Fixture], sees: fn(&Fixture) -> bool, filter: Keep) -> Vec<String> {
    let mut ids: Vec<String> = all
        .iter()
        .filter(|f| sees(f) && filter(f))
        .map(|f| f.id.clone())
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

/// Waits (bounded) until the Redis channel index holds every event: the walks below of the
/// channel-confined callers and of `channel=` then read it (docs/redis.md "Channel index").
async fn channel_index_caught_up(r: &TestRedis) {
    let mut c = redis::Client::open(r.url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let start = std::time::Instant::now();
    loop {
        let (state, n): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(format!("{}:jchidx", r.prefix))
            .arg("state")
            .arg("n")
            .query_async(&mut c)
            .await
            .expect("HMGET");
        let info: redis::Value = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(format!("{}:ev", r.prefix))
            .query_async(&mut c)
            .await
            .expect("XINFO");
        let added = match info {
            redis::Value::Array(a) => a
                .chunks(2)
                .find(|p| {
                    redis::from_redis_value::<String>(&p[0]).ok().as_deref()
                        == Some("entries-added")
                })
                .and_then(|p| redis::from_redis_value::<u64>(&p[1]).ok()),
            _ => None,
        };
        if state.as_deref() == Some("ok") && n.is_some() && n == added {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "channel index not caught up: {state:?} {n:?} {added:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn confined_callers_page_their_own_jobs_only(redis: Option<TestRedis>) {
    let s = Server::start(redis.as_ref()).await;
    // Interleaved, so that the other tenant's jobs are newest, oldest and in between. `a.job` on
    // tenant-b is seen by the type-confined token only, `b.job` on tenant-a by the channel one.
    let mut all = Vec::new();
    for (t, c, secret) in [
        ("b.job", "tenant-b", true),
        ("a.job", "tenant-a", false),
        ("a.job", "tenant-b", true),
        ("b.job", "tenant-b", true),
        ("b.job", "tenant-a", false),
        ("a.job", "tenant-a", false),
        ("b.job", "tenant-b", true),
    ] {
        all.push(s.submit(t, c, secret).await);
    }
    if let Some(r) = &redis {
        channel_index_caught_up(r).await;
    }
    let on_a: fn(&Fixture) -> bool = |f| f.channel == "tenant-a";
    let type_a: fn(&Fixture) -> bool = |f| f.job_type.starts_with("a.");
    let everyone: fn(&Fixture) -> bool = |_| true;
    let jwt = channel_jwt("tenant-a");
    // The other tenant's secret: the channel-confined callers' hidden jobs all hold it; the
    // type-confined token sees one that does (a.job on tenant-b), so it is asked about b.*'s.
    let filters: Vec<(Query, Keep)> = vec![
        (vec![], keep(|_| true)),
        (
            vec![("channel", "tenant-b")],
            keep(|f| f.channel == "tenant-b"),
        ),
        (vec![("type", "b.job")], keep(|f| f.job_type == "b.job")),
        (
            vec![("type", "b.*")],
            keep(|f| f.job_type.starts_with("b.")),
        ),
        (vec![("status", "QUEUED")], keep(|_| true)),
        (vec![("text", "\"api_key\":\"s3c")], keep(|f| f.secret)),
        (
            vec![("channel", "tenant-b"), ("text", "s3cret")],
            keep(|f| f.secret && f.channel == "tenant-b"),
        ),
    ];
    for (who, bearer, sees) in [
        ("channel token", CHANNEL_A, on_a),
        ("channel JWT", jwt.as_str(), on_a),
        ("literal channels token", CHANNELS_A, on_a),
        ("type token", TYPE_A, type_a),
        ("unconfined token", READER, everyone),
        ("admin", ADMIN, everyone),
    ] {
        let mine: Vec<&str> = all
            .iter()
            .filter(|f| sees(f))
            .map(|f| f.id.as_str())
            .collect();
        for (q, keep) in &filters {
            let w = s.walk(bearer, q).await;
            let want = expected(&all, sees, *keep);
            assert_eq!(w.ids, want, "{who} {q:?}: {:?}", w.answers);
            for c in w.cursors.iter().flatten() {
                assert!(
                    mine.contains(&c.as_str()),
                    "{who} {q:?}: next_cursor {c} is not one of its jobs: {:?}",
                    w.answers
                );
            }
            // limit=1: each page's cursor is its job, the last page's none.
            let mut cursors: Vec<Option<String>> = want.iter().cloned().map(Some).collect();
            if let Some(last) = cursors.last_mut() {
                *last = None;
            }
            if cursors.is_empty() {
                cursors.push(None);
            }
            assert_eq!(w.cursors, cursors, "{who} {q:?}: {:?}", w.answers);
        }
    }
    // The text oracle: about args the caller does not see, a matching text and one that matches
    // nothing get the same answers.
    for (who, bearer, other) in [
        ("channel token", CHANNEL_A, vec![]),
        ("channel JWT", jwt.as_str(), vec![]),
        ("type token", TYPE_A, vec![("type", "b.*")]),
    ] {
        let mut hit = other.clone();
        hit.push(("text", "\"api_key\":\"s3c"));
        let mut miss = other.clone();
        miss.push(("text", "\"api_key\":\"zzz"));
        let (hit, miss) = (s.walk(bearer, &hit).await, s.walk(bearer, &miss).await);
        assert_eq!(hit.answers, miss.answers, "{who}");
        assert_eq!(
            hit.answers,
            vec![json!({"jobs": [], "next_cursor": null})],
            "{who}"
        );
    }
    s.stop().await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_confined_callers_page_their_own_jobs_only() {
    confined_callers_page_their_own_jobs_only(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_confined_callers_page_their_own_jobs_only() {
    confined_callers_page_their_own_jobs_only(Some(TestRedis::start())).await;
}
