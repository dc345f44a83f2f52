//! Configuration: one typed struct with defaults, loaded from `runyard.toml`, then `RUNYARD_*`
//! environment variables, then command-line flags. Unknown keys and bad values stop the server
//! with a message naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod origin;
mod runner;
mod sections;
mod validate;

// `[auth]` and `[notify]` are owned by their rooms (their types and the checks only they can
// make); this module assembles the file from them and never the other way round.
pub use crate::auth::config::{AuthConfig, TokenConfig, MIN_JWT_SECRET_BYTES};
pub use origin::valid_origin;
pub use runner::{RunnerConfig, RunnerKind};
pub use sections::{
    ApiConfig, ChannelEvents, EventsConfig, HooksConfig, RecordForm, RetentionConfig, StoreConfig,
    Synchronous, WorkerConfig,
};

/// The longest duration any key takes (100 years).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The runner name of a parked job (`worker/reroute.rs`): one no runner may have (refused in a
/// config), so no claim meets it.
pub const PARKED_RUNNER: &str = "(no runner)";

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// The URL jobs use to reach the server (JOB_HOOK is built from it). Defaults to
    /// `http://{listen}`.
    pub public_url: Option<String>,
    /// Where the embedded store and files live.
    pub data_dir: PathBuf,
    /// Redis URL: use Redis for store, queue and events instead of the embedded store.
    pub redis: Option<String>,
    /// Master key that job secrets are derived from; generated into data_dir when absent.
    pub master_key: Option<String>,
    /// Whether `master_key` came from `RUNYARD_MASTER_KEY` (for messages: the variable is gone
    /// from the environment once read).
    #[serde(skip)]
    pub master_key_from_env: bool,
    /// HTTP API limits.
    pub api: ApiConfig,
    /// The worker.
    pub worker: WorkerConfig,
    /// Event streams.
    pub events: EventsConfig,
    /// How long things are kept.
    pub retention: RetentionConfig,
    /// Job hook settings.
    pub hooks: HooksConfig,
    /// Embedded store settings.
    pub store: StoreConfig,
    /// Authentication: API tokens, JWTs (channels and scopes), `/metrics` and loopback rules.
    pub auth: AuthConfig,
    /// Signed webhooks out (`[notify]`, docs/notifications.md).
    pub notify: crate::notify::NotifyConfig,
    /// Runners, first match wins.
    pub runners: Vec<RunnerConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7070".parse().expect("static address"),
            public_url: None,
            data_dir: PathBuf::from("./runyard-data"),
            redis: None,
            master_key: None,
            master_key_from_env: false,
            api: ApiConfig::default(),
            worker: WorkerConfig::default(),
            events: EventsConfig::default(),
            retention: RetentionConfig::default(),
            hooks: HooksConfig::default(),
            store: StoreConfig::default(),
            auth: AuthConfig::default(),
            notify: Default::default(),
            runners: Vec::new(),
        }
    }
}

/// Command-line overrides (highest precedence).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--redis`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// `--public-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// The top-level keys `RUNYARD_*` variables may set (`RUNYARD_WORKER__LEASE_TTL` sets
/// `worker.lease_ttl`). Other `RUNYARD_*` variables are not configuration: client settings
/// (`RUNYARD_SERVER`, `RUNYARD_LOG`) and the ones Kubernetes injects for a Service named
/// `runyard` (`RUNYARD_SERVICE_HOST`, `RUNYARD_PORT_7070_TCP`, ...).
const ENV_KEYS: &[&str] = &[
    "listen",
    "public_url",
    "data_dir",
    "redis",
    "master_key",
    "api",
    "worker",
    "events",
    "retention",
    "hooks",
    "store",
    "auth",
    "notify",
];

/// Secret strings taken from `RUNYARD_*` variables as strings: figment reads other values as
/// TOML-like literals, which refused a secret shaped like a list or a number ("expected a
/// string"). The rest of that reading is kept, so that an upgrade never changes a key without a
/// word: surrounding whitespace is trimmed (as it always was, and as `data_dir/master.key` is:
/// a Secret made from a file ends in a newline), and a value wrapped in double quotes, which
/// that reading unwrapped, is refused naming the variable. (variable after `RUNYARD_`,
/// lowercase; the key's dotted path)
const RAW_ENV_KEYS: [(&str, &str); 2] = [
    ("master_key", "master_key"),
    ("auth__jwt_secret", "auth.jwt_secret"),
];

/// The dotted path of a variable (after `RUNYARD_`) read byte for byte, if it is one.
fn raw_env_key(k: &str) -> Option<&'static str> {
    RAW_ENV_KEYS
        .iter()
        .find(|(v, _)| k.eq_ignore_ascii_case(v))
        .map(|(_, path)| *path)
}

/// The [`RAW_ENV_KEYS`] set in the environment, as strings, trimmed; one that is not UTF-8 or is
/// wrapped in double quotes is refused (named, not shown), never taken as unset or changed.
fn raw_env() -> Result<Figment, ConfigError> {
    let mut fig = Figment::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let Some(path) = name.strip_prefix("RUNYARD_").and_then(raw_env_key) else {
            continue;
        };
        let value = value
            .into_string()
            .map_err(|_| ConfigError(format!("{name} ({path}) is not valid UTF-8")))?;
        let value = value.trim();
        if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            return Err(ConfigError(format!(
                "{name} ({path}) is wrapped in double quotes: remove them (earlier versions \
                 removed them silently; the secret is the text between them)"
            )));
        }
        fig = fig.merge(Serialized::default(path, value.to_string()));
    }
    Ok(fig)
}

fn is_env_key(k: &str) -> bool {
    let top = k.split("__").next().unwrap_or("");
    ENV_KEYS.iter().any(|n| top.eq_ignore_ascii_case(n))
}

impl Config {
    /// Loads `path` (when it exists, or must exist when `required`), then the environment, then
    /// `overrides`; validates the result.
    pub fn load(path: &Path, required: bool, overrides: &Overrides) -> Result<Self, ConfigError> {
        if required && !path.exists() {
            return Err(ConfigError(format!(
                "config file {} not found",
                path.display()
            )));
        }
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        // This path only: `Toml::file` would also search every parent directory for a relative
        // one (a `runyard.toml` planted in /tmp would configure a server started below it).
        if path.exists() {
            fig = fig.merge(Toml::file_exact(path));
        }
        let fig = fig
            .merge(
                Env::prefixed("RUNYARD_")
                    .filter(|k| is_env_key(k.as_str()) && raw_env_key(k.as_str()).is_none())
                    .split("__"),
            )
            .merge(raw_env()?)
            .merge(Serialized::defaults(overrides.clone()));
        let mut cfg: Config = fig.extract().map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(without_secrets).collect();
            ConfigError(msgs.join("; "))
        })?;
        // The environment beats the file (merged after it), as `raw_env` reads it.
        cfg.master_key_from_env = cfg.master_key.is_some()
            && std::env::vars_os().any(|(n, _)| {
                n.to_str()
                    .and_then(|n| n.strip_prefix("RUNYARD_"))
                    .is_some_and(|k| k.eq_ignore_ascii_case("master_key"))
            });
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML string (tests, embedding).
    pub fn from_toml(s: &str) -> Result<Self, ConfigError> {
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(s))
            .extract()
            .map_err(|e| {
                let msgs: Vec<String> = e.into_iter().map(without_secrets).collect();
                ConfigError(msgs.join("; "))
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The URL jobs reach the server at.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_string()
    }
}

/// Keys whose values may be secrets: a message about them never repeats the value.
const SECRET_KEYS: [&str; 3] = ["master_key", "redis", "auth"];
/// Words that make a line of a TOML file's excerpt (in a syntax error) not shown.
const SECRET_WORDS: [&str; 5] = ["master_key", "secret", "redis", "password", "token"];

/// A configuration error as shown (on stderr, in a log): a value of a secret key (a wrong type
/// given to `master_key`, a malformed `RUNYARD_AUTH`) is not repeated, nor a line of the file's
/// excerpt that names one (a syntax error on `master_key = "..." junk`).
fn without_secrets(mut e: figment::Error) -> String {
    use figment::error::Kind;
    let secret = e.path.iter().any(|p| SECRET_KEYS.contains(&p.as_str()));
    let hidden = |expected: &str| {
        format!("invalid value: expected {expected} (the value is not shown: it may be a secret)")
    };
    e.kind = match e.kind {
        Kind::InvalidType(_, x) | Kind::InvalidValue(_, x) if secret => Kind::Message(hidden(&x)),
        Kind::Unsupported(_) | Kind::UnsupportedKey(..) if secret => {
            Kind::Message(hidden("another type"))
        }
        Kind::Message(m) => Kind::Message(
            m.lines()
                .map(|line| match line.split_once(" | ") {
                    Some((n, text))
                        if n.trim().chars().all(|c| c.is_ascii_digit())
                            && SECRET_WORDS.iter().any(|w| text.contains(w)) =>
                    {
                        format!("{n} | (not shown: it may hold a secret)")
                    }
                    _ => line.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        k => k,
    };
    shown(&e)
}

/// `e` as figment shows it, but the key named as the user wrote it: `worker.lease_ttl` in a
/// file (figment says `default.worker.lease_ttl`, its profile first), the variable
/// `RUNYARD_WORKER__LEASE_TTL` in the environment (figment: `WORKER.LEASE_TTL`).
fn shown(e: &figment::Error) -> String {
    let mut s = e.kind.to_string();
    let env = e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment variable"));
    if !e.path.is_empty() {
        let key = if env {
            format!("RUNYARD_{}", e.path.join("__").to_ascii_uppercase())
        } else {
            e.path.join(".")
        };
        s.push_str(&format!(" for key `{key}`"));
    }
    if let Some(md) = &e.metadata {
        match &md.source {
            Some(src) => s.push_str(&format!(" in {src} {}", md.name)),
            None => s.push_str(&format!(" in {}", md.name)),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    /// Probe: a bad value was named `default.worker.lease_ttl` in a file and
    /// `"WORKER.LEASE_TTL" in RUNYARD_ environment variable(s)`: neither is what the user wrote.
    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment's own error
    fn a_bad_value_names_the_key_as_written() {
        let e = super::Config::from_toml("[worker]\nlease_ttl = 5\n").unwrap_err();
        assert!(e.0.contains("for key `worker.lease_ttl`"), "{}", e.0);
        assert!(!e.0.contains("default."), "{}", e.0);
        figment::Jail::expect_with(|jail| {
            jail.set_env("RUNYARD_WORKER__LEASE_TTL", "[1]");
            let e = super::Config::load(
                std::path::Path::new("none.toml"),
                false,
                &Default::default(),
            )
            .unwrap_err();
            assert!(e.0.contains("RUNYARD_WORKER__LEASE_TTL"), "{}", e.0);
            Ok(())
        });
    }

    /// A runner's `backoff` may give some of its fields (as a submit's may): the others are the
    /// defaults.
    #[test]
    fn a_partial_runner_backoff_takes_the_defaults_for_the_rest() {
        let cfg = super::Config::from_toml(
            "[[runners]]\nkind = \"service\"\ntypes = [\"a.*\"]\n\
             backoff = { initial_ms = 2000, max_ms = 2000, jitter = false }\n",
        )
        .expect("a partial backoff");
        let b = cfg.runners[0].backoff.expect("backoff");
        assert_eq!((b.initial_ms, b.max_ms, b.jitter), (2000, 2000, false));
        assert_eq!(b.multiplier, crate::job::Backoff::default().multiplier);
        let e = super::Config::from_toml(
            "[[runners]]\nkind = \"service\"\ntypes = [\"a.*\"]\nbackoff = { initial = 1 }\n",
        )
        .expect_err("an unknown field")
        .to_string();
        assert!(e.contains("initial"), "{e}");
    }

    /// A configuration error names the key, never a secret's value: a wrong type given to a
    /// secret key, a syntax error on its line.
    #[test]
    fn errors_do_not_repeat_a_secrets_value() {
        for (toml, secret, key) in [
            (
                "master_key = 1234567890123456789\n",
                "1234567890123456789",
                "master_key",
            ),
            (
                "master_key = \"SYNTAX-SECRET-abcdefgh\" junk\n",
                "SYNTAX-SECRET",
                "line 1",
            ),
            (
                "[auth]\njwt_secret = 4242424242424242\n",
                "4242424242424242",
                "jwt_secret",
            ),
            (
                "redis = [\"redis://:PASSWORD-xyz@h/0\"]\n",
                "PASSWORD-xyz",
                "redis",
            ),
        ] {
            let e = super::Config::from_toml(toml).expect_err(toml).to_string();
            assert!(!e.contains(secret), "{toml:?}: {e}");
            assert!(e.contains(key), "{toml:?} names {key}: {e}");
        }
        // Other keys' values are still shown: they say what is wrong.
        let e = super::Config::from_toml("listen = 42\n")
            .expect_err("a number")
            .to_string();
        assert!(e.contains("42"), "{e}");
    }

    #[test]
    fn durations_are_bounded() {
        for key in [
            "[worker]\nkill_grace",
            "[worker]\nsweep_interval",
            "[retention]\nevents",
            "[retention]\nfinished",
        ] {
            let e = Config::from_toml(&format!("{key} = \"5222222222222222s\"")).unwrap_err();
            assert!(e.0.contains("at most 100 years"), "{key}: {e}");
            Config::from_toml(&format!("{key} = \"99years\"")).expect("99 years");
        }
    }

    use super::*;

    #[test]
    fn the_claim_interval_is_at_most_a_second() {
        let at = |v: &str| Config::from_toml(&format!("[worker]\nclaim_interval = \"{v}\""));
        let e = at("1001ms").unwrap_err();
        assert!(
            e.0.contains("worker.claim_interval") && e.0.contains("at most 1s"),
            "{e}"
        );
        for ok in ["0s", "2ms", "1s"] {
            assert_eq!(
                at(ok).expect(ok).worker.claim_interval,
                humantime::parse_duration(ok).ok()
            );
        }
        assert_eq!(Config::from_toml("").unwrap().worker.claim_interval, None);
    }

    #[test]
    fn parses_the_contract_example() {
        let c = Config::from_toml(
            r#"
listen = "127.0.0.1:7071"
[[runners]]
kind = "local"
types = ["report.*"]
command = ["python3", "jobs/report.py"]
concurrency = 4
timeout = "10m"
[[runners]]
kind = "service"
types = ["thumbnail"]
"#,
        )
        .unwrap();
        assert_eq!(c.runners.len(), 2);
        assert_eq!(c.runners[0].timeout, Some(Duration::from_secs(600)));
        assert_eq!(c.runners[1].name_at(1), "service-1");
        assert_eq!(c.public_url(), "http://127.0.0.1:7071");
    }

    #[test]
    fn only_config_keys_are_read_from_the_environment() {
        assert!(is_env_key("worker__lease_ttl"));
        assert!(is_env_key("DATA_DIR"));
        assert!(!is_env_key("service_host"));
        assert!(!is_env_key("port_7070_tcp_addr"));
        assert!(!is_env_key("server"));
        assert!(!is_env_key("workers"));
    }

    #[test]
    fn docker_runners_need_an_image_and_valid_limits() {
        let docker = |extra: &str| {
            Config::from_toml(&format!(
                "[[runners]]\nkind = \"docker\"\ntypes = [\"a\"]\n{extra}"
            ))
        };
        let e = docker("").unwrap_err().to_string();
        assert!(e.contains("runners[0].image"), "{e}");
        let e = docker("image = \"x\"\nmemory = \"lots\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("runners[0].memory"), "{e}");
        let e = docker("image = \"x\"\ncpus = 0").unwrap_err().to_string();
        assert!(e.contains("runners[0].cpus"), "{e}");
        let c = docker(
            "image = \"x\"\nmemory = \"512m\"\ncpus = 1.5\nnetwork = \"host\"\n\
             allowed_images = [\"y:*\"]\nlabels = { team = \"t\" }",
        )
        .unwrap();
        assert_eq!(c.runners[0].name_at(0), "docker-0");
    }

    #[test]
    fn local_isolation_keys_are_checked_at_load() {
        let local = |extra: &str| {
            Config::from_toml(&format!(
                "[[runners]]\nkind = \"local\"\ntypes = [\"a\"]\ncommand = [\"true\"]\n{extra}"
            ))
        };
        let e = local("user = \"no-such-user-xyz\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("runners[0].user") && e.contains("no-such-user-xyz"),
            "{e}"
        );
        let e = local("group = \"no-such-group-xyz\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("runners[0].group"), "{e}");
        let e = local("rlimits = { memory = \"lots\" }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("runners[0].rlimits.memory"), "{e}");
        let e = local("rlimits = { stack = 1 }").unwrap_err().to_string();
        assert!(e.contains("stack"), "{e}");
        let c = local(
            "user = \"root\"\ngroup = 0\nrlimits = { cpu = \"10m\", as = \"512MiB\", nofile = 1024, nproc = 256, fsize = \"1GiB\" }",
        )
        .unwrap();
        assert_eq!(c.runners[0].rlimits.nofile, Some(1024));
        let e =
            Config::from_toml("[[runners]]\nkind = \"service\"\ntypes = [\"a\"]\nuser = \"root\"")
                .unwrap_err()
                .to_string();
        assert!(e.contains("runners[0].user"), "{e}");
    }

    #[test]
    fn auth_section_is_checked_and_its_secret_never_shown() {
        let c = Config::from_toml("").unwrap();
        assert!(c.auth.jwt_secret.is_none());
        assert_eq!(c.auth.jwt_cookie, "async-token");
        assert_eq!(c.auth.jwt_leeway, Duration::from_secs(30));
        let e = Config::from_toml("[auth]\njwt_secret = \"short\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.jwt_secret") && e.contains("32"), "{e}");
        assert!(!e.contains("short"), "{e}");
        for weak in [
            " ".repeat(40),
            "\t".repeat(32),
            "a".repeat(64),
            "0".repeat(32),
        ] {
            let toml = format!("[auth]\njwt_secret = {}", toml::Value::String(weak.clone()));
            let e = Config::from_toml(&toml).unwrap_err().to_string();
            assert!(
                e.contains("auth.jwt_secret") && e.contains("repeated"),
                "{e}"
            );
        }
        let e = Config::from_toml("[auth]\nallowed_origins = [\"https://a.example/\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.allowed_origins[0]"), "{e}");
        let e = Config::from_toml("[auth]\njwt_cookie = \"a b\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.jwt_cookie"), "{e}");
        let secret = "0123456789abcdef0123456789abcdef-secret";
        let c = Config::from_toml(&format!(
            "[auth]\njwt_secret = \"{secret}\"\njwt_leeway = \"5s\"\n\
             allowed_origins = [\"https://superset.example.com\"]"
        ))
        .unwrap();
        assert_eq!(c.auth.jwt_leeway, Duration::from_secs(5));
        let shown = format!("{c:?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(is_env_key("AUTH__JWT_SECRET"));
    }

    #[test]
    fn channel_events_is_stream_or_list() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.store.channel_events, ChannelEvents::Stream, "the default");
        let c = Config::from_toml("[store]\nchannel_events = \"list\"").unwrap();
        assert_eq!(c.store.channel_events, ChannelEvents::List);
        let e = Config::from_toml("[store]\nchannel_events = \"lists\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.channel_events"), "{e}");
        assert!(e.contains("`stream`") && e.contains("`list`"), "{e}");
    }

    #[test]
    fn redis_ca_is_taken_with_a_rediss_url_only() {
        let key = "master_key = \"0123456789abcdef0123\"\n";
        let ca = "[store]\nredis_ca = \"/etc/redis/ca.pem\"\n";
        let c = Config::from_toml(&format!("redis = \"rediss://r:6380\"\n{key}{ca}")).unwrap();
        assert_eq!(
            c.store.redis_ca.as_deref(),
            Some(Path::new("/etc/redis/ca.pem"))
        );
        for redis in [
            "",
            "redis = \"redis://r:6379\"\n",
            "redis = \"unix:///r.sock\"\n",
        ] {
            let e = Config::from_toml(&format!("{redis}{key}{ca}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("store.redis_ca") && e.contains("rediss://"),
                "{e}"
            );
        }
    }

    #[test]
    fn records_are_json_or_compact() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.store.records, RecordForm::Json, "the default");
        let c = Config::from_toml("[store]\nrecords = \"compact\"").unwrap();
        assert_eq!(c.store.records, RecordForm::Compact);
        let e = Config::from_toml("[store]\nrecords = \"small\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.records"), "{e}");
        assert!(e.contains("`json`") && e.contains("`compact`"), "{e}");
    }

    #[test]
    fn spawners_default_to_one_per_cpu_and_are_bounded() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.worker.spawners, 0, "the default: one per CPU, at most 4");
        // What 0 becomes: runners/src/spawn.rs, `spawner_count`.
        assert_eq!(runyard_runners::spawn::spawner_count(0, 2), 2);
        let c = Config::from_toml("[worker]\nspawners = 3").unwrap();
        assert_eq!(c.worker.spawners, 3);
        for bad in ["65", "-1", "\"two\""] {
            let e = Config::from_toml(&format!("[worker]\nspawners = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("spawners"), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml("lisen = \"x\"").unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        let e = Config::from_toml("[worker]\nlease_ttl = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lease_ttl"), "{e}");
        let e = Config::from_toml("[[runners]]\nkind = \"local\"\ntypes = [\"a\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("runners[0].command"), "{e}");
        let e = Config::from_toml("[[runners]]\nkind = \"lokal\"\ntypes = [\"a\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("kind"), "{e}");
    }

    #[test]
    fn a_runner_key_of_another_kind_is_refused_not_ignored() {
        let local = "[[runners]]\nkind = \"local\"\ntypes = [\"a\"]\ncommand = [\"true\"]\n";
        let service = "[[runners]]\nkind = \"service\"\ntypes = [\"a\"]\n";
        for (base, extra, key, kinds) in [
            (local, "operation = \"x\"", "operation", "only service"),
            (local, "image = \"x\"", "image", "only docker and kube"),
            (local, "memory = \"1g\"", "memory", "only docker"),
            (local, "namespace = \"x\"", "namespace", "only kube"),
            (
                service,
                "env = {A = \"1\"}",
                "env",
                "only local, docker and kube",
            ),
            (service, "cwd = \"/tmp\"", "cwd", "only local"),
            (
                service,
                "command = [\"true\"]",
                "command",
                "only local, docker and kube",
            ),
        ] {
            let toml = format!("{base}{extra}\n");
            let e = Config::from_toml(&toml).unwrap_err().to_string();
            assert!(
                e.contains(&format!("runners[0].{key}")) && e.contains(kinds),
                "{toml}: {e}"
            );
        }
        Config::from_toml(&format!("{local}env = {{A = \"1\"}}\ncwd = \"/tmp\"\n")).unwrap();
    }

    #[test]
    fn values_that_would_break_the_server_are_refused_naming_the_key() {
        for (toml, key, says) in [
            ("[api]\nmax_page = 0", "api.max_page", "at least 1"),
            (
                "[hooks]\nmax_file_bytes = 0",
                "hooks.max_file_bytes",
                "at least 1",
            ),
            (
                "[worker]\npoll_interval = \"0s\"",
                "worker.poll_interval",
                "10ms",
            ),
            (
                "[worker]\npoll_interval = \"1ns\"",
                "worker.poll_interval",
                "10ms",
            ),
            (
                "[retention]\ninterval = \"0s\"",
                "retention.interval",
                "10ms",
            ),
            ("[retention]\nevents = \"0s\"", "retention.events", "1s"),
            ("[api]\nmax_body_bytes = 10", "api.max_body_bytes", "1024"),
            ("[worker]\nlease_ttl = \"1ms\"", "worker.lease_ttl", "300ms"),
            (
                "[worker]\nsweep_interval = \"0s\"",
                "worker.sweep_interval",
                "100ms",
            ),
            // Refused when read, before `serve` creates anything in `data_dir`.
            ("master_key = \"short\"", "master_key", "16 characters"),
            (
                "public_url = \"https://jobs.example/?tenant=a\"",
                "public_url",
                "without `?query` or `#fragment`",
            ),
            (
                "public_url = \"https://jobs.example/#x\"",
                "public_url",
                "without `?query` or `#fragment`",
            ),
            (
                "data_dir = \"~/runyard\"",
                "data_dir",
                "must not start with `~`",
            ),
            ("data_dir = \"~\"", "data_dir", "must not start with `~`"),
        ] {
            let e = Config::from_toml(toml).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(says), "{toml}: {e}");
        }
        // The smallest accepted values still start.
        Config::from_toml(
            "[api]\nmax_page = 1\n[worker]\npoll_interval = \"10ms\"\n[retention]\n\
             interval = \"10ms\"\nevents = \"1s\"\n[hooks]\nmax_file_bytes = 1",
        )
        .unwrap();
    }
}
