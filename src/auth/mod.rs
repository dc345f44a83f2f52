//! Authentication of the event transports (`[auth]`): an HS256 JWT naming one `channel`, sent as
//! a cookie (`auth.jwt_cookie`, Superset's `async-token`) or `Authorization: Bearer`, and the
//! browser `Origin` check of the streaming endpoints. Without `auth.jwt_secret` nothing is
//! required and every channel is open (local development).

pub mod jwt;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};

use crate::api::error::ApiError;
use crate::api::AppState;
use crate::config::AuthConfig;
pub use jwt::{ChannelClaims, Verifier};

/// The largest credential accepted: all `Cookie` headers together, or the `Authorization`
/// header. Larger requests get 431 without being parsed.
pub const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// The caller of an event endpoint: `None` when `[auth]` has no secret (open), else the claims of
/// its valid token. Extracting it answers 401 for a missing or bad token.
#[derive(Debug, Clone)]
pub struct ChannelAuth(pub Option<ChannelClaims>);

impl ChannelAuth {
    /// The channel to serve, given the `?channel=` asked for: open, the one asked (or the global
    /// stream); with a token, the token's channel only — another channel is 403.
    pub fn channel(&self, asked: Option<String>) -> Result<Option<String>, ApiError> {
        let Some(claims) = &self.0 else {
            return Ok(asked);
        };
        match asked {
            Some(a) if !a.is_empty() && a != claims.channel => Err(ApiError::forbidden(
                "the token grants its own channel only; `channel` names another",
            )),
            _ => Ok(Some(claims.channel.clone())),
        }
    }
}

impl FromRequestParts<AppState> for ChannelAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let cfg = &st.app.config.auth;
        let Some(secret) = cfg.jwt_secret.as_deref() else {
            return Ok(Self(None));
        };
        let token = token(&parts.headers, &cfg.jwt_cookie)?;
        let claims = Verifier::new(secret, cfg.jwt_leeway, cfg.require_exp)
            .verify(&token)
            .map_err(ApiError::unauthorized)?;
        Ok(Self(Some(claims)))
    }
}

/// The token of a request: `Authorization: Bearer` first, else the cookie `cookie_name`.
fn token(headers: &HeaderMap, cookie_name: &str) -> Result<String, ApiError> {
    let too_large = |what: &str| {
        ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header_too_large",
            format!("the {what} header is larger than {MAX_CREDENTIAL_BYTES} bytes"),
        )
    };
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        if v.len() > MAX_CREDENTIAL_BYTES {
            return Err(too_large("Authorization"));
        }
        let v = v.to_str().unwrap_or("");
        return match v.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
                Ok(t.trim().to_string())
            }
            _ => Err(ApiError::unauthorized(
                "the Authorization header must be `Bearer <token>`",
            )),
        };
    }
    let cookies = headers.get_all(header::COOKIE);
    let total: usize = cookies.iter().map(|v| v.len()).sum();
    if total > MAX_CREDENTIAL_BYTES {
        return Err(too_large("Cookie"));
    }
    for v in cookies {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=') {
                if name.trim() == cookie_name {
                    let value = value.trim().trim_matches('"');
                    if !value.is_empty() {
                        return Ok(value.to_string());
                    }
                }
            }
        }
    }
    Err(ApiError::unauthorized(format!(
        "a token is required: the cookie `{cookie_name}` or `Authorization: Bearer <token>`"
    )))
}

/// The `Origin` check of the WebSocket and SSE endpoints: with `[auth]` in force (a secret or
/// `allowed_origins` set), a browser `Origin` not in `auth.allowed_origins` gets 403 before any
/// upgrade. Requests without `Origin` (not from a browser) pass.
#[derive(Debug, Clone, Copy)]
pub struct StreamOrigin;

impl FromRequestParts<AppState> for StreamOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        check_origin(&parts.headers, &st.app.config.auth).map(|()| StreamOrigin)
    }
}

/// See [`StreamOrigin`].
pub fn check_origin(headers: &HeaderMap, cfg: &AuthConfig) -> Result<(), ApiError> {
    if cfg.jwt_secret.is_none() && cfg.allowed_origins.is_empty() {
        return Ok(());
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let allowed = origin.to_str().is_ok_and(|o| {
        cfg.allowed_origins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(o))
    });
    if allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "this Origin is not in `auth.allowed_origins`",
        ))
    }
}
