//! `Config::validate`: the checks types cannot make, one function a section, in the order a
//! reader meets the keys (the first bad key is the one reported).

use std::time::Duration;

use super::{Config, ConfigError, RunnerConfig, RunnerKind, MAX_DURATION, MIN_JWT_SECRET_BYTES};

/// The error for `key`: "`key`: message".
fn err(k: String, m: &str) -> Result<(), ConfigError> {
    Err(ConfigError(format!("`{k}`: {m}")))
}

impl Config {
    /// Checks values that types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_durations()?;
        self.check_urls()?;
        self.check_api()?;
        self.check_auth()?;
        self.check_events()?;
        self.check_runners()
    }

    /// Every duration key is at most [`MAX_DURATION`].
    fn check_durations(&self) -> Result<(), ConfigError> {
        // Durations are added to clocks (`Instant`, µs since the epoch): a bound keeps every such
        // sum in range (found by the `durations` fuzz target: "5222222222222222s" was accepted).
        for (i, r) in self.runners.iter().enumerate() {
            if r.ttl_after_finished.is_some_and(|d| d > MAX_DURATION) {
                return err(
                    format!("runners[{i}].ttl_after_finished"),
                    "must be at most 100 years",
                );
            }
        }
        // Every claim of a busy worker can wait this long: seconds would hold jobs for seconds.
        if self.worker.claim_interval > Some(Duration::from_secs(1)) {
            return err("worker.claim_interval".into(), "must be at most 1s");
        }
        for (k, d) in [
            ("worker.lease_ttl", self.worker.lease_ttl),
            ("worker.shutdown_grace", self.worker.shutdown_grace),
            ("worker.kill_grace", self.worker.kill_grace),
            ("worker.poll_interval", self.worker.poll_interval),
            ("worker.exit_grace", self.worker.exit_grace),
            ("worker.quick_exit_wait", self.worker.quick_exit_wait),
            ("worker.sweep_interval", self.worker.sweep_interval),
            ("events.progress_interval", self.events.progress_interval),
            ("events.ping_interval", self.events.ping_interval),
            ("retention.finished", self.retention.finished),
            ("retention.interval", self.retention.interval),
            ("retention.events", self.retention.events),
            ("store.retry", self.store.retry),
        ] {
            if d > MAX_DURATION {
                return err(k.into(), "must be at most 100 years");
            }
        }
        Ok(())
    }

    /// `public_url`, `data_dir`, `master_key`'s length, and with `redis`: its URL, the master key and the
    /// key prefix.
    fn check_urls(&self) -> Result<(), ConfigError> {
        // Here, before anything is created (`load_master_key` checks it again).
        if self.master_key.as_ref().is_some_and(|k| k.len() < 16) {
            return err("master_key".into(), "must be at least 16 characters");
        }
        if let Some(u) = &self.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return err("public_url".into(), "must start with http:// or https://");
            }
            // Every JOB_HOOK is this URL with a path appended: after a query or a fragment
            // that path would not reach the server.
            if u.contains(['?', '#']) {
                return err(
                    "public_url".into(),
                    "must be a base URL without `?query` or `#fragment` (each job's JOB_HOOK \
                     is this URL followed by a path)",
                );
            }
        }
        // `~` is a shell's: here it would be a directory named `~`.
        if self
            .data_dir
            .components()
            .next()
            .is_some_and(|c| c.as_os_str().to_string_lossy().starts_with('~'))
        {
            return err(
                "data_dir".into(),
                "must not start with `~` (it is not expanded to a home directory): give an \
                 absolute path, or one relative to the working directory",
            );
        }
        if let Some(r) = &self.redis {
            if !(r.starts_with("redis://")
                || r.starts_with("rediss://")
                || r.starts_with("unix://"))
            {
                return err(
                    "redis".into(),
                    "must be a redis://, rediss:// (TLS) or unix:// URL",
                );
            }
            if self.master_key.is_none() {
                return err(
                    "master_key".into(),
                    "required with `redis`: every runyard process sharing the Redis must derive \
                     the same job secrets, so set the same `master_key` (or RUNYARD_MASTER_KEY, \
                     16+ characters) on all of them",
                );
            }
            if !valid_key_prefix(&self.store.prefix) {
                return err(
                    "store.prefix".into(),
                    "must be letters, digits, '.', '_', '-' or ':', with at most one hash tag \
                     `{name}` (e.g. `{runyard}`: every key in one Redis Cluster hash slot)",
                );
            }
        }
        // The CA of a TLS connection: without `rediss://` it would be ignored without a word.
        if self.store.redis_ca.is_some()
            && !self
                .redis
                .as_deref()
                .is_some_and(|r| r.starts_with("rediss://"))
        {
            return err(
                "store.redis_ca".into(),
                "is for a TLS connection to Redis: set `redis` to a rediss:// URL, or remove it",
            );
        }
        Ok(())
    }

    /// `worker.lease_ttl`, `worker.spawners` and the `[api]` limits.
    fn check_api(&self) -> Result<(), ConfigError> {
        if self.worker.lease_ttl < Duration::from_millis(300) {
            return err("worker.lease_ttl".into(), "must be at least 300ms");
        }
        use runyard_runners::spawn::{MAX_AUTO_SPAWNERS, MAX_SPAWNERS};
        if self.worker.spawners > MAX_SPAWNERS {
            return err(
                "worker.spawners".into(),
                &format!(
                    "must be at most {MAX_SPAWNERS} (0: one per CPU, at most {MAX_AUTO_SPAWNERS})"
                ),
            );
        }
        if self.api.max_body_bytes < 1024 {
            return err("api.max_body_bytes".into(), "must be at least 1024");
        }
        if self.api.max_page == 0 {
            return err("api.max_page".into(), "must be at least 1");
        }
        if self.hooks.max_file_bytes == 0 {
            return err("hooks.max_file_bytes".into(), "must be at least 1");
        }
        // Loops that run this often when idle: zero would spin a core.
        for (key, d, least, shown) in [
            (
                "worker.poll_interval",
                self.worker.poll_interval,
                10,
                "10ms",
            ),
            ("retention.interval", self.retention.interval, 10, "10ms"),
            (
                "worker.sweep_interval",
                self.worker.sweep_interval,
                100,
                "100ms",
            ),
            ("retention.events", self.retention.events, 1000, "1s"),
        ] {
            if d < Duration::from_millis(least) {
                return err(key.into(), &format!("must be at least {shown}"));
            }
        }
        if self.api.max_connections == 0 {
            return err("api.max_connections".into(), "must be at least 1");
        }
        for (key, d) in [
            ("api.header_timeout", self.api.header_timeout),
            ("api.idle_timeout", self.api.idle_timeout),
            ("api.request_timeout", self.api.request_timeout),
            ("api.body_timeout", self.api.body_timeout),
        ] {
            if d < Duration::from_millis(10) || d > Duration::from_secs(24 * 3600) {
                return err(key.into(), "must be between 10ms and 24h");
            }
        }
        for (i, o) in self.api.cors_origins.iter().enumerate() {
            if !super::valid_origin(o) {
                return err(
                    format!("api.cors_origins[{i}]"),
                    "must be an origin: scheme://host[:port], no path or trailing slash",
                );
            }
        }
        for (i, h) in self.api.allowed_hosts.iter().enumerate() {
            let name_ok = !h.is_empty()
                && h.len() <= 253
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
            if h != "*" && !name_ok {
                return err(
                    format!("api.allowed_hosts[{i}]"),
                    "must be a host name (letters, digits, `-`, `.`, `_`; no scheme, port or \
                     path), or `*` for any",
                );
            }
        }
        Ok(())
    }

    /// `[auth]` and `[notify]`.
    fn check_auth(&self) -> Result<(), ConfigError> {
        if let Some(secret) = &self.auth.jwt_secret {
            if secret.len() < MIN_JWT_SECRET_BYTES {
                return err(
                    "auth.jwt_secret".into(),
                    &format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
                );
            }
            // Long enough but no secret: blanks (an unset variable padded), one character over
            // and over (a placeholder).
            let mut chars = secret.chars();
            let first = chars.next();
            if secret.trim().is_empty() || chars.all(|c| Some(c) == first) {
                return err(
                    "auth.jwt_secret".into(),
                    "is blank or one character repeated: use a random secret \
                     (e.g. `openssl rand -hex 32`)",
                );
            }
        }
        let cookie = &self.auth.jwt_cookie;
        if cookie.is_empty()
            || !cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return err(
                "auth.jwt_cookie".into(),
                "must be a cookie name (letters, digits, and !#$%&'*+-.^_`|~)",
            );
        }
        if self.auth.jwt_leeway > Duration::from_secs(3600) {
            return err("auth.jwt_leeway".into(), "must be at most 1h");
        }
        for (i, o) in self.auth.allowed_origins.iter().enumerate() {
            if !super::valid_origin(o) {
                return err(
                    format!("auth.allowed_origins[{i}]"),
                    "must be an origin: scheme://host[:port], no path or trailing slash",
                );
            }
        }
        if let Err((k, m)) = self.notify.validate() {
            return err(k, &m);
        }
        if let Err((key, message)) = crate::auth::tokens::Authenticator::new(&self.auth) {
            return err(key, &message);
        }
        Ok(())
    }

    /// `[events]` limits.
    fn check_events(&self) -> Result<(), ConfigError> {
        if self.events.global_limit == 0 || self.events.channel_limit == 0 {
            return err("events".into(), "limits must be positive");
        }
        for (k, v) in [
            ("events.max_connections", self.events.max_connections),
            ("events.max_per_channel", self.events.max_per_channel),
            ("events.send_buffer", self.events.send_buffer),
        ] {
            if v == 0 {
                return err(k.into(), "must be positive");
            }
        }
        if self.events.send_buffer > 1 << 20 {
            return err("events.send_buffer".into(), "must be at most 1048576");
        }
        if self.events.ping_interval < Duration::from_millis(100) {
            return err("events.ping_interval".into(), "must be at least 100ms");
        }
        Ok(())
    }

    /// Every `[[runners]]` entry, and their names are distinct.
    fn check_runners(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.runners.iter().enumerate() {
            check_runner(r, i)?;
            let name = r.name_at(i);
            if name.is_empty()
                || name.chars().count() > 200
                || name.chars().any(char::is_control)
                || name.trim() != name
            {
                return err(
                    format!("runners[{i}].name"),
                    "must be 1-200 characters, no control characters, no white space at either end",
                );
            }
            if name == super::PARKED_RUNNER {
                return err(
                    format!("runners[{i}].name"),
                    "`(no runner)` is reserved (the runner of parked jobs)",
                );
            }
            if !names.insert(name) {
                return err(format!("runners[{i}].name"), "duplicate runner name");
            }
        }
        Ok(())
    }
}

/// One `[[runners]]` entry at `index`: the keys every kind takes, then its kind's own.
fn check_runner(r: &RunnerConfig, i: usize) -> Result<(), ConfigError> {
    let k = |f: &str| format!("runners[{i}].{f}");
    if r.types.is_empty() {
        return err(k("types"), "must list at least one type glob");
    }
    for t in &r.types {
        if t.is_empty()
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-:*?".contains(c))
        {
            return err(k("types"), &format!("`{t}` is not a valid type glob"));
        }
    }
    if r.concurrency == 0 {
        return err(k("concurrency"), "must be at least 1");
    }
    if r.max_attempts == 0 || r.max_attempts > 100 {
        return err(k("max_attempts"), "must be between 1 and 100");
    }
    if let Some(b) = &r.backoff {
        if let Err(m) = b.validate() {
            return err(k("backoff"), &m);
        }
    }
    if r.timeout
        .is_some_and(|t| t.is_zero() || t > Duration::from_secs(365 * 24 * 3600))
    {
        return err(k("timeout"), "must be between 1ms and 365 days");
    }
    // A key of another kind's would be ignored: refused (docs/configuration.md, "kinds").
    if let Some((key, kinds)) = foreign_key(r) {
        return err(k(key), &format!("only {kinds} runners take it"));
    }
    match r.kind {
        RunnerKind::Local => check_local(r, &k),
        RunnerKind::Service => Ok(()),
        RunnerKind::Kube => check_kube(r, &k),
        RunnerKind::Docker => check_docker(r, &k),
    }
}

/// The first key `r` sets that its kind does not take, with the kinds that take it.
fn foreign_key(r: &RunnerConfig) -> Option<(&'static str, &'static str)> {
    use RunnerKind::{Docker, Kube, Local, Service};
    // The kinds that run a process (or a container): not an in-process `service` call.
    const PROCESS: &[RunnerKind] = &[Local, Docker, Kube];
    const PROCESS_NAMES: &str = "local, docker and kube";
    let keys: &[(&'static str, bool, &[RunnerKind], &'static str)] = &[
        ("command", !r.command.is_empty(), PROCESS, PROCESS_NAMES),
        ("env", !r.env.is_empty(), PROCESS, PROCESS_NAMES),
        // In-process: a service operation takes its args whatever their size.
        ("large_args", r.large_args.is_some(), PROCESS, PROCESS_NAMES),
        ("env_allow", r.env_allow.is_some(), &[Local], "local"),
        ("cwd", r.cwd.is_some(), &[Local], "local"),
        ("user", r.user.is_some(), &[Local], "local"),
        ("group", r.group.is_some(), &[Local], "local"),
        ("rlimits", !r.rlimits.is_empty(), &[Local], "local"),
        ("operation", r.operation.is_some(), &[Service], "service"),
        (
            "image",
            r.image.is_some(),
            &[Docker, Kube],
            "docker and kube",
        ),
        (
            "allowed_images",
            !r.allowed_images.is_empty(),
            &[Docker],
            "docker",
        ),
        ("network", r.network.is_some(), &[Docker], "docker"),
        ("memory", r.memory.is_some(), &[Docker], "docker"),
        ("cpus", r.cpus.is_some(), &[Docker], "docker"),
        ("labels", !r.labels.is_empty(), &[Docker], "docker"),
        ("docker_host", r.docker_host.is_some(), &[Docker], "docker"),
        ("namespace", r.namespace.is_some(), &[Kube], "kube"),
        (
            "service_account",
            r.service_account.is_some(),
            &[Kube],
            "kube",
        ),
        (
            "ttl_after_finished",
            r.ttl_after_finished.is_some(),
            &[Kube],
            "kube",
        ),
        ("kubeconfig", r.kubeconfig.is_some(), &[Kube], "kube"),
        ("kube", r.kube.is_some(), &[Kube], "kube"),
    ];
    keys.iter()
        .find(|(_, set, kinds, _)| *set && !kinds.contains(&r.kind))
        .map(|&(key, _, _, kinds)| (key, kinds))
}

fn check_local(r: &RunnerConfig, k: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    if r.command.is_empty() {
        return err(k("command"), "a local runner needs a command");
    }
    if let Err(e) = runyard_runners::isolation::Isolation::resolve(
        r.user.as_ref(),
        r.group.as_ref(),
        &r.rlimits,
    ) {
        return err(k(&e.key), &e.message);
    }
    Ok(())
}

fn check_kube(r: &RunnerConfig, k: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    if r.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        return err(k("image"), "a kube runner needs an image");
    }
    if let Some(ns) = &r.namespace {
        if !runyard_runners::kube::is_dns_label(ns) {
            return err(k("namespace"), "must be a valid namespace name");
        }
    }
    if r.ttl_after_finished
        .is_some_and(|t| t.as_secs() > i32::MAX as u64)
    {
        return err(k("ttl_after_finished"), "is too long");
    }
    // kube: env names by Kubernetes' C_IDENTIFIER rule; the pod options.
    if let Some(bad) = r
        .env
        .keys()
        .find(|n| !runyard_runners::kube::is_env_name(n))
    {
        return err(
            format!("{}.{bad}", k("env")),
            "is not a valid environment variable name (letters, digits and `_`, \
             not starting with a digit)",
        );
    }
    if let Some(Err(e)) = r.kube.as_ref().map(|o| o.validate()) {
        return err(format!("{}.{}", k("kube"), e.key), &e.message);
    }
    Ok(())
}

fn check_docker(r: &RunnerConfig, k: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    if r.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        return err(k("image"), "a docker runner needs an image");
    }
    if let Some(m) = &r.memory {
        if let Err(e) = runyard_runners::docker::parse_memory(m) {
            return err(k("memory"), &e);
        }
    }
    if let Some(c) = r.cpus {
        if let Err(e) = runyard_runners::docker::nano_cpus(c) {
            return err(k("cpus"), &e);
        }
    }
    if r.network.as_deref().is_some_and(str::is_empty) {
        return err(k("network"), "must not be empty");
    }
    Ok(())
}

/// A Redis key prefix: letters, digits, `.`, `_`, `-`, `:`, and at most one hash tag `{name}`
/// (non-empty, of the same characters). The scripts build the keys they only learn at run time
/// (a job named in an index, a delivery's number) from the prefix: with a hash tag every key of
/// the deployment hashes to one slot, as Redis Cluster needs (docs/redis.md). A brace that does
/// not form a tag would make Redis hash the whole key instead, scattering them: refused.
pub(crate) fn valid_key_prefix(p: &str) -> bool {
    let plain = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
    };
    match p.split_once('{') {
        None => !p.is_empty() && plain(p),
        Some((before, rest)) => match rest.split_once('}') {
            Some((tag, after)) => !tag.is_empty() && plain(before) && plain(tag) && plain(after),
            None => false,
        },
    }
}

#[cfg(test)]
mod prefix_tests {
    use super::super::Config;

    #[test]
    fn a_key_prefix_may_carry_one_hash_tag_and_nothing_else_with_braces() {
        let with = |p: &str| {
            Config::from_toml(&format!(
                "redis = \"redis://127.0.0.1:6379\"\nmaster_key = \"0123456789abcdef\"\n\
                 [store]\nprefix = \"{p}\""
            ))
        };
        for ok in ["runyard", "{runyard}", "app:{runyard}", "{a}:b", "x.y-z_1:"] {
            assert!(with(ok).is_ok(), "{ok}: {:?}", with(ok).err());
        }
        for bad in [
            "", "{}", "{runyard", "runyard}", "{a}{b}", "{a}}", "a b", "{a b}",
        ] {
            let e = with(bad).expect_err(bad).to_string();
            assert!(
                e.contains("store.prefix") && e.contains("hash tag"),
                "{bad}: {e}"
            );
        }
    }
}
