//! `[auth]`: API tokens, JWTs for the event transports, `/metrics` and loopback rules. The
//! section's type lives here, with the room that reads it; `crate::config` assembles the file
//! from it (and re-exports it), so auth never imports the config.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The smallest accepted `auth.jwt_secret`, in bytes (HS256 wants a key as long as its hash).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// `[auth]`: JWTs for the event transports (polling, WebSocket, SSE).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 secret (32+ bytes). Set: the event endpoints need a JWT naming its `channel`.
    pub jwt_secret: Option<String>,
    /// The cookie a browser sends the JWT in (Superset's default name).
    pub jwt_cookie: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub jwt_leeway: Duration,
    /// Refuse tokens without an `exp` claim. Stock Superset mints its `async-token` without
    /// `exp` (the cookie lives as long as the session): set `false` to accept those; an `exp`
    /// that is present is always checked.
    pub require_exp: bool,
    /// Browser origins allowed to open a WebSocket or SSE stream. A request without an
    /// `Origin` header (not a browser) is not checked.
    pub allowed_origins: Vec<String>,
    /// API tokens (`[[auth.tokens]]`): each the SHA-256 of a bearer token and what it grants.
    pub tokens: Vec<TokenConfig>,
    /// `/metrics` needs a token (or JWT) with `jobs:read` when auth is in force (the default:
    /// the contract opens `/health` alone; `false` serves it to anyone, for a scrape without a
    /// token).
    pub metrics_require_token: bool,
    /// Serve without auth on a non-loopback address (`serve --insecure-no-auth`).
    pub insecure_no_auth: bool,
}

/// One `[[auth.tokens]]` entry (docs/auth.md). The token itself is never in the file.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in messages and logs instead of the token.
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// `jobs:submit`, `jobs:read`, `jobs:cancel`, `schedules:write`, `signals:write`, `admin`.
    pub scopes: Vec<String>,
    /// Job type globs the token is confined to (absent: every type).
    #[serde(default)]
    pub types: Option<Vec<String>>,
    /// Channel globs the token is confined to (absent: every channel).
    #[serde(default)]
    pub channels: Option<Vec<String>>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("sha256", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("types", &self.types)
            .field("channels", &self.channels)
            .finish()
    }
}

impl AuthConfig {
    /// Auth is in force: a JWT secret or API tokens are configured.
    pub fn enabled(&self) -> bool {
        self.jwt_secret.is_some() || !self.tokens.is_empty()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_cookie: "async-token".into(),
            jwt_leeway: Duration::from_secs(30),
            require_exp: true,
            allowed_origins: Vec::new(),
            tokens: Vec::new(),
            metrics_require_token: true,
            insecure_no_auth: false,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_cookie", &self.jwt_cookie)
            .field("jwt_leeway", &self.jwt_leeway)
            .field("require_exp", &self.require_exp)
            .field("allowed_origins", &self.allowed_origins)
            .field("tokens", &self.tokens)
            .field("metrics_require_token", &self.metrics_require_token)
            .field("insecure_no_auth", &self.insecure_no_auth)
            .finish()
    }
}
