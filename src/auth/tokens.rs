//! API tokens and scopes (docs/auth.md): `[[auth.tokens]]` (the SHA-256 of a bearer token and
//! what it grants) and JWTs signed with `auth.jwt_secret` carrying a `scope` claim. Both become a
//! [`Grant`]: scopes, plus the job types and channels it is confined to.
//!
//! Tokens are compared by their SHA-256 in constant time; neither a token nor its hash is ever
//! put in a message, a log line or a response (a grant names its token by `name`).

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::config::AuthConfig;
use super::jwt::{Claims, Verifier};
use super::Refusal;

/// A scope a token or a JWT grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Submit jobs, attach their input files, retry them.
    JobsSubmit,
    /// Read jobs, logs, results, files, schedules, signals; follow events.
    JobsRead,
    /// Cancel jobs.
    JobsCancel,
    /// Create, replace, delete, pause, resume, trigger and backfill schedules.
    SchedulesWrite,
    /// Write readiness signals.
    SignalsWrite,
    /// Every scope.
    Admin,
}

impl Scope {
    /// Every scope, in the order of the docs.
    pub const ALL: [Scope; 6] = [
        Scope::JobsSubmit,
        Scope::JobsRead,
        Scope::JobsCancel,
        Scope::SchedulesWrite,
        Scope::SignalsWrite,
        Scope::Admin,
    ];

    /// Its name in the config and in a JWT's `scope` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JobsSubmit => "jobs:submit",
            Scope::JobsRead => "jobs:read",
            Scope::JobsCancel => "jobs:cancel",
            Scope::SchedulesWrite => "schedules:write",
            Scope::SignalsWrite => "signals:write",
            Scope::Admin => "admin",
        }
    }

    /// The scope named `s`.
    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    fn bit(self) -> u8 {
        match self {
            Scope::JobsSubmit => 1,
            Scope::JobsRead => 2,
            Scope::JobsCancel => 4,
            Scope::SchedulesWrite => 8,
            Scope::SignalsWrite => 16,
            Scope::Admin => ALL_BITS,
        }
    }

    /// The known scope names, for messages.
    pub fn names() -> String {
        Scope::ALL.map(Scope::as_str).join(", ")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const ALL_BITS: u8 = 31;
/// Reading event streams: `jobs:read` grants it, and so does a channel JWT (its channel only).
const EVENTS_BIT: u8 = 32;

/// Globs a grant is confined to, with their text for messages. They mean what every glob of
/// runyard means ([`runyard_runners::glob_match`]: runner types, webhook defaults, the store's
/// listings): `*` any run of characters (`/` and `.` included), `?` one character, nothing
/// else special. Brackets, braces and backslashes, which other glob dialects read as classes,
/// alternatives or escapes, are refused in the config rather than taken literally.
/// The store's [`Names`](crate::store::Names) (with `exact`: one name compared as it is, a
/// JWT's `channel` claim, wildcards included), so that a grant and a listing's visibility match
/// names the same way.
#[derive(Clone)]
struct Patterns(crate::store::Names);

impl std::ops::Deref for Patterns {
    type Target = crate::store::Names;

    fn deref(&self) -> &crate::store::Names {
        &self.0
    }
}

impl Patterns {
    fn new(list: &[String]) -> Result<Self, String> {
        for g in list {
            if g.is_empty() {
                return Err("a glob must not be empty".into());
            }
            if let Some(e) = crate::store::Names::glob_error(g) {
                return Err(e);
            }
        }
        Ok(Self(crate::store::Names {
            list: list.to_vec(),
            exact: false,
        }))
    }

    fn literal(s: &str) -> Self {
        Self(crate::store::Names {
            list: vec![s.to_string()],
            exact: true,
        })
    }

    /// The single channel a grant names without wildcards, if it names exactly one.
    fn single_literal(&self) -> Option<&str> {
        match self.list.as_slice() {
            [one] if !one.contains(['*', '?', '[', '{', '\\']) => Some(one),
            _ => None,
        }
    }
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.list.fmt(f)
    }
}

/// Whether a job type is within a grant's types ([`Grant::type_rule`]).
pub type TypeRule = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// What the caller of a request may do: its scopes, and the job types and channels it is
/// confined to (`None`: all).
#[derive(Clone, Debug)]
pub struct Grant {
    /// Who, for messages and logs: `token \`ci\`` or `JWT (sub 42)`; never the credential.
    pub who: String,
    /// The user it speaks for, a job's `user_id` when it submits (its events show it): a JWT's
    /// `sub`, an API token's `name`; `None` for a JWT without `sub` and without auth.
    pub user: Option<String>,
    bits: u8,
    types: Option<Arc<Patterns>>,
    channels: Option<Arc<Patterns>>,
    /// When the credential stops verifying (a JWT's `exp` plus the leeway plus 1; unix seconds).
    valid_until: Option<u64>,
}

impl Grant {
    /// Everything, everywhere: the grant of every request when auth is not configured.
    pub fn open() -> Self {
        Self {
            who: "anyone (auth is not configured)".into(),
            user: None,
            bits: ALL_BITS | EVENTS_BIT,
            types: None,
            channels: None,
            valid_until: None,
        }
    }

    fn from_scopes(who: String, scopes: &[Scope]) -> Self {
        let mut bits = scopes.iter().fold(0, |b, s| b | s.bit());
        if bits & Scope::JobsRead.bit() != 0 {
            bits |= EVENTS_BIT;
        }
        Self {
            who,
            user: None,
            bits,
            types: None,
            channels: None,
            valid_until: None,
        }
    }

    /// How long the credential still verifies (a JWT with `exp`: until `exp` + leeway + 1 s);
    /// `None` for one that does not expire (or whose `exp` is past what the clock can hold). A
    /// stream opened with it ends then.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        let until =
            std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(self.valid_until?))?;
        Some(
            until
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default(),
        )
    }

    /// Grants `scope` (`admin` grants every scope).
    pub fn allows(&self, scope: Scope) -> bool {
        let b = scope.bit();
        self.bits & b == b
    }

    /// The names of the scopes it grants (all of them, `admin` included, for an admin).
    pub fn scope_names(&self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.allows(*s))
            .map(Scope::as_str)
            .collect()
    }

    /// May follow event streams (`jobs:read`, or a channel JWT).
    pub fn reads_events(&self) -> bool {
        self.bits & EVENTS_BIT != 0
    }

    /// Confined to some channels (counts over every channel would tell it about others' jobs).
    pub fn confined_to_channels(&self) -> bool {
        self.channels.is_some()
    }

    /// Whether a job type is within the grant's types, for a grant confined to types (`None`:
    /// every type): what an event stream, whose events do not say their job's type, filters by.
    pub fn type_rule(&self) -> Option<TypeRule> {
        let t = self.types.clone()?;
        Some(Arc::new(move |job_type: &str| t.matches(job_type)))
    }

    /// The job type is within the grant's types (channels aside).
    pub fn sees_type(&self, job_type: &str) -> bool {
        self.types.as_ref().is_none_or(|t| t.matches(job_type))
    }

    /// Confined to some types or channels (its resources must be checked).
    pub fn is_confined(&self) -> bool {
        self.types.is_some() || self.channels.is_some()
    }

    /// The jobs a listing may show it, in the store's terms (`None`: every job, for a grant
    /// not confined).
    pub fn visibility(&self) -> Option<crate::store::Visibility> {
        if !self.is_confined() {
            return None;
        }
        let names = |p: &Arc<Patterns>| p.0.clone();
        Some(crate::store::Visibility {
            types: self.types.as_ref().map(names),
            channels: self.channels.as_ref().map(names),
        })
    }

    /// The job (of `job_type`, on `channel`) is within the grant's types and channels. A job
    /// without a channel is outside a grant confined to channels.
    pub fn sees(&self, job_type: &str, channel: Option<&str>) -> bool {
        self.types.as_ref().is_none_or(|t| t.matches(job_type))
            && self
                .channels
                .as_ref()
                .is_none_or(|c| channel.is_some_and(|ch| c.matches(ch)))
    }

    /// [`Grant::sees`], or 403 saying which confinement refuses it.
    pub fn check_job(&self, job_type: &str, channel: Option<&str>) -> Result<(), Refusal> {
        if let Some(t) = &self.types {
            if !t.matches(job_type) {
                return Err(Refusal::Forbidden(format!(
                    "{} is confined to job types {:?}: `{job_type}` is not one of them",
                    self.who, t.list
                )));
            }
        }
        if let Some(c) = &self.channels {
            match channel {
                None => {
                    return Err(Refusal::Forbidden(format!(
                        "{} is confined to channels {:?}: the job must name its `channel`",
                        self.who, c.list
                    )))
                }
                Some(ch) if !c.matches(ch) => {
                    return Err(Refusal::Forbidden(format!(
                        "{} is confined to channels {:?}: `{ch}` is not one of them",
                        self.who, c.list
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// [`Grant::sees`] for a job or schedule that exists (named by a path), or a 403 that names
    /// only the grant's own confinement: not the resource's type or channel, which belong to
    /// whoever it is (the detailed [`Grant::check_job`] is for the caller's own new bodies).
    pub fn check_existing(&self, job_type: &str, channel: Option<&str>) -> Result<(), Refusal> {
        if self.sees(job_type, channel) {
            return Ok(());
        }
        let mut within = Vec::new();
        if let Some(t) = &self.types {
            within.push(format!("job types {:?}", t.list));
        }
        if let Some(c) = &self.channels {
            within.push(format!("channels {:?}", c.list));
        }
        Err(Refusal::Forbidden(format!(
            "{} is confined to {}: what this path names is outside them",
            self.who,
            within.join(" and ")
        )))
    }

    /// The event channel to serve for a `?channel=` asked (`None`: the global stream). A grant
    /// confined to channels serves only those: no channel asked is its one channel when it names
    /// exactly one, else 403. A grant confined to types reads events only when it is also
    /// confined to channels (events do not say their job's type).
    pub fn event_channel(&self, asked: Option<String>) -> Result<Option<String>, Refusal> {
        let asked = asked.filter(|a| !a.is_empty());
        let Some(c) = &self.channels else {
            if let Some(t) = &self.types {
                return Err(Refusal::Forbidden(format!(
                    "{} is confined to job types {:?} and events do not say their job's type: \
                     give it `channels` to read events",
                    self.who, t.list
                )));
            }
            return Ok(asked);
        };
        match asked {
            Some(a) if c.matches(&a) => Ok(Some(a)),
            Some(_) => Err(Refusal::Forbidden(format!(
                "{} grants channels {:?} only; `channel` names another",
                self.who, c.list
            ))),
            None => match c.single_literal() {
                Some(one) => Ok(Some(one.to_string())),
                None => Err(Refusal::Forbidden(format!(
                    "{} grants channels {:?} only: name one with `channel`",
                    self.who, c.list
                ))),
            },
        }
    }
}

struct StaticToken {
    digest: [u8; 32],
    grant: Grant,
}

/// Checks bearer credentials against `[auth]`: the configured tokens and, with `jwt_secret`,
/// JWTs.
pub struct Authenticator {
    tokens: Vec<StaticToken>,
    jwt: Option<Verifier>,
    enabled: bool,
}

/// The SHA-256 of a token, in hex: what `[[auth.tokens]] sha256` holds.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compiles `auth.tokens[i]`: its name unique among `names`, its hash unlike those of `earlier`.
fn compile_token(
    i: usize,
    t: &super::config::TokenConfig,
    earlier: &[StaticToken],
    names: &mut std::collections::HashSet<String>,
) -> Result<StaticToken, (String, String)> {
    let key = |f: &str| format!("auth.tokens[{i}].{f}");
    let name = t.name.trim();
    if name.is_empty()
        || name.len() > 100
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:@".contains(c))
    {
        return Err((
            key("name"),
            "must be 1-100 letters, digits, '.', '_', '-', ':' or '@'".into(),
        ));
    }
    if !names.insert(name.to_string()) {
        return Err((key("name"), format!("`{name}` is used by another token")));
    }
    let mut digest = [0u8; 32];
    if t.sha256.len() != 64 || hex::decode_to_slice(&t.sha256, &mut digest).is_err() {
        return Err((
            key("sha256"),
            format!(
                "the SHA-256 of token `{name}` must be 64 hex characters (`runyard token \
                 new` prints it; the token itself never goes in the file)"
            ),
        ));
    }
    if earlier.iter().any(|o| bool::from(o.digest.ct_eq(&digest))) {
        return Err((
            key("sha256"),
            format!("token `{name}` has the same sha256 as another token"),
        ));
    }
    if t.scopes.is_empty() {
        return Err((
            key("scopes"),
            format!(
                "token `{name}` needs at least one scope of: {}",
                Scope::names()
            ),
        ));
    }
    let mut scopes = Vec::new();
    for s in &t.scopes {
        match Scope::parse(s) {
            Some(x) => scopes.push(x),
            None => {
                return Err((
                    key("scopes"),
                    format!(
                        "token `{name}` has the unknown scope `{s}` (known: {})",
                        Scope::names()
                    ),
                ))
            }
        }
    }
    let mut grant = Grant::from_scopes(format!("token `{name}`"), &scopes);
    grant.user = Some(name.to_string());
    for (field, list, slot) in [
        ("types", &t.types, &mut grant.types),
        ("channels", &t.channels, &mut grant.channels),
    ] {
        if let Some(list) = list {
            if list.is_empty() {
                return Err((
                    key(field),
                    format!(
                        "token `{name}`: list at least one glob, or leave `{field}` out \
                         for all"
                    ),
                ));
            }
            let p =
                Patterns::new(list).map_err(|m| (key(field), format!("token `{name}`: {m}")))?;
            *slot = Some(Arc::new(p));
        }
    }
    Ok(StaticToken { digest, grant })
}

impl Authenticator {
    /// Compiles `[auth]`; an error names the key (`auth.tokens[1].scopes`) and never repeats a
    /// hash.
    pub fn new(cfg: &AuthConfig) -> Result<Self, (String, String)> {
        let mut tokens: Vec<StaticToken> = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, t) in cfg.tokens.iter().enumerate() {
            let token = compile_token(i, t, &tokens, &mut names)?;
            tokens.push(token);
        }
        Ok(Self {
            tokens,
            jwt: cfg
                .jwt_secret
                .as_deref()
                .map(|s| Verifier::new(s, cfg.jwt_leeway, cfg.require_exp)),
            enabled: cfg.enabled(),
        })
    }

    /// Auth in force with no credential valid (a configuration that does not compile).
    pub fn deny_all() -> Self {
        Self {
            tokens: Vec::new(),
            jwt: None,
            enabled: true,
        }
    }

    /// Auth is in force (a JWT secret or tokens are configured).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The grant of a bearer credential (an API token or a JWT), or why it is refused (401).
    pub fn authenticate(&self, bearer: &str) -> Result<Grant, String> {
        if bearer.split('.').count() == 3 {
            let Some(v) = &self.jwt else {
                return Err("JWTs are not accepted: `auth.jwt_secret` is not set".into());
            };
            return grant_of_claims(v.verify_claims(bearer)?);
        }
        let digest: [u8; 32] = Sha256::digest(bearer.as_bytes()).into();
        // Every configured hash is compared, each in constant time.
        let mut found = None;
        for t in &self.tokens {
            let eq = bool::from(digest.ct_eq(&t.digest));
            if eq && found.is_none() {
                found = Some(&t.grant);
            }
        }
        found.cloned().ok_or_else(|| match &self.jwt {
            Some(_) => "the token is neither a valid API token nor a JWT (malformed)".to_string(),
            None => "the token is not a valid API token".to_string(),
        })
    }
}

/// What a JWT grants: its `scope` claim (unknown scopes are ignored), confined to its `channel`
/// when it has one; a JWT with a `channel` and no `scope` reads that channel's events only.
fn grant_of_claims(c: Claims) -> Result<Grant, String> {
    let who = match &c.sub {
        Some(s) => format!("JWT (sub `{}`)", s.chars().take(64).collect::<String>()),
        None => "JWT".to_string(),
    };
    let scopes: Vec<Scope> = c
        .scope
        .iter()
        .flatten()
        .filter_map(|s| Scope::parse(s))
        .collect();
    let mut grant = Grant::from_scopes(who, &scopes);
    grant.valid_until = c.valid_until;
    // Copied into every job it submits and every event of those: bounded.
    grant.user = c.sub.map(|s| cap_user(s, MAX_USER_BYTES));
    match c.channel {
        Some(ch) => {
            // A channel without `scope` is a browser's channel token: its channel's events. With
            // a `scope` (even an empty one), the channel only confines: the events need
            // `jobs:read` as for any other credential (a submit-only token read them).
            if c.scope.is_none() {
                grant.bits |= EVENTS_BIT;
            }
            grant.channels = Some(Arc::new(Patterns::literal(&ch)));
        }
        None if c.scope.is_none() => {
            return Err("the token has no `channel` claim (nor a `scope` claim)".into());
        }
        None => {}
    }
    Ok(grant)
}

/// The most bytes of a JWT's `sub` a job keeps as its `user_id`.
const MAX_USER_BYTES: usize = 256;

/// `s` cut to at most `max` bytes, at a character boundary.
fn cap_user(mut s: String, max: usize) -> String {
    if s.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_sub_is_cut_at_a_character_boundary() {
        let long = "é".repeat(200);
        let cut = cap_user(long.clone(), MAX_USER_BYTES);
        assert_eq!(cut.len(), 256);
        assert!(long.starts_with(&cut));
        assert_eq!(cap_user("alice".into(), MAX_USER_BYTES), "alice");
        assert_eq!(cap_user("ab".repeat(200), 255).len(), 255);
    }

    fn auth(toml: &str) -> Result<Authenticator, (String, String)> {
        let cfg: AuthConfig = toml::from_str(toml).expect("toml");
        Authenticator::new(&cfg)
    }

    #[test]
    fn config_errors_name_the_token_and_never_the_hash() {
        let h = token_sha256("t1");
        let e = auth(&format!(
            "[[tokens]]\nname = \"ci\"\nsha256 = \"{h}\"\nscopes = [\"jobs:write\"]"
        ))
        .err()
        .unwrap();
        assert_eq!(e.0, "auth.tokens[0].scopes");
        assert!(e.1.contains("ci") && e.1.contains("jobs:write"), "{e:?}");
        let e =
            auth("[[tokens]]\nname = \"ci\"\nsha256 = \"ry_secret_token\"\nscopes = [\"admin\"]")
                .err()
                .unwrap();
        assert_eq!(e.0, "auth.tokens[0].sha256");
        assert!(!e.1.contains("ry_secret_token"), "{e:?}");
        let e = auth(&format!(
            "[[tokens]]\nname = \"a\"\nsha256 = \"{h}\"\nscopes = [\"admin\"]\n\
             [[tokens]]\nname = \"b\"\nsha256 = \"{h}\"\nscopes = [\"admin\"]"
        ))
        .err()
        .unwrap();
        assert_eq!(e.0, "auth.tokens[1].sha256");
        assert!(!e.1.contains(&h));
        let e = auth(&format!(
            "[[tokens]]\nname = \"a\"\nsha256 = \"{h}\"\nscopes = [\"admin\"]\ntypes = []"
        ))
        .err()
        .unwrap();
        assert_eq!(e.0, "auth.tokens[0].types");
    }

    #[test]
    fn tokens_grant_their_scopes_types_and_channels() {
        let a = auth(&format!(
            "[[tokens]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"jobs:submit\", \"jobs:read\"]\n\
             types = [\"report.*\"]\nchannels = [\"tenant-a\"]\n\
             [[tokens]]\nname = \"root\"\nsha256 = \"{}\"\nscopes = [\"admin\"]",
            token_sha256("tok-ci"),
            token_sha256("tok-root")
        ))
        .unwrap();
        let g = a.authenticate("tok-ci").unwrap();
        assert!(g.allows(Scope::JobsSubmit) && g.allows(Scope::JobsRead));
        assert!(!g.allows(Scope::JobsCancel) && !g.allows(Scope::Admin));
        assert!(g.sees("report.daily", Some("tenant-a")));
        assert!(!g.sees("mail.send", Some("tenant-a")));
        assert!(!g.sees("report.daily", Some("tenant-b")));
        assert!(!g.sees("report.daily", None));
        assert_eq!(g.event_channel(None).unwrap().as_deref(), Some("tenant-a"));
        assert!(g.event_channel(Some("tenant-b".into())).is_err());
        let root = a.authenticate("tok-root").unwrap();
        assert!(Scope::ALL.iter().all(|s| root.allows(*s)));
        assert!(root.sees("x", None));
        assert!(a.authenticate("tok-other").is_err());
        assert!(a.authenticate("").is_err());
        assert!(a.authenticate("a.b.c").unwrap_err().contains("jwt_secret"));
    }

    /// How long a JWT's grant lasts: through `exp + leeway + 1` (when jsonwebtoken starts to
    /// refuse it), none for an API token; an `exp` that is not a time (a string, negative, past
    /// the year 9999: `i64::MAX`, milliseconds) is refused, and never a panic.
    #[test]
    fn a_jwt_grant_lasts_until_its_token_stops_verifying() {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let secret = "a-jwt-secret-a-jwt-secret-a-jwt-secret";
        let a = auth(&format!(
            "jwt_secret = \"{secret}\"\njwt_leeway = \"30s\"\nrequire_exp = false\n\
             [[tokens]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"admin\"]",
            token_sha256("tok-ci")
        ))
        .unwrap();
        let mint = |exp: serde_json::Value| {
            let claims = serde_json::json!({"scope": "jobs:read", "exp": exp});
            let key = EncodingKey::from_secret(secret.as_bytes());
            encode(&Header::default(), &claims, &key).unwrap()
        };
        let now = jsonwebtoken::get_current_timestamp();
        let left = a
            .authenticate(&mint(serde_json::json!(now + 300)))
            .unwrap()
            .remaining()
            .expect("an end");
        assert!((329..=331).contains(&left.as_secs()), "{left:?}");
        // "Never" (`i64::MAX`) or milliseconds taken for seconds: past the year 9999, refused
        // as not a time (a token that never expires is what `require_exp` refuses), no panic.
        for never in [
            serde_json::json!(i64::MAX),
            serde_json::json!(u64::MAX),
            serde_json::json!((now + 300) * 1000),
        ] {
            let e = a.authenticate(&mint(never.clone())).unwrap_err();
            assert!(e.contains("year 9999"), "{never}: {e}");
        }
        assert_eq!(a.authenticate("tok-ci").unwrap().remaining(), None);
        for bad in [serde_json::json!("123"), serde_json::json!(-5)] {
            let e = a.authenticate(&mint(bad.clone())).unwrap_err();
            assert!(e.contains("`exp`"), "{bad}: {e}");
        }
    }

    #[test]
    fn token_globs_mean_what_every_runyard_glob_means() {
        let p = Patterns::new(&["report.*".into(), "t?".into()]).unwrap();
        for (text, want) in [
            ("report.a/b", true),
            ("report.", true),
            ("tx", true),
            ("t", false),
        ] {
            assert_eq!(p.matches(text), want, "{text}");
            assert_eq!(
                runyard_runners::glob_match("report.*", text)
                    || runyard_runners::glob_match("t?", text),
                want,
                "{text}"
            );
        }
        for bad in ["[ab]", "{a,b}", "a\\*"] {
            let e = Patterns::new(&[bad.into()]).expect_err(bad);
            assert!(e.contains(bad) && e.contains("not a valid glob"), "{e}");
        }
        let exact = Patterns::literal("ch*");
        assert!(exact.matches("ch*") && !exact.matches("chx"));
    }
}
