//! Authentication (`[auth]`, docs/auth.md): API tokens and JWTs with scopes on the client API,
//! checked in one place ([`access::AccessLayer`] over the route table [`access::ROUTES`]); on the event
//! transports also an HS256 JWT naming one `channel`, sent as a cookie (`auth.jwt_cookie`,
//! Superset's `async-token`) or `Authorization: Bearer`; and the browser `Origin` check of the
//! streaming endpoints. Without `[auth]` nothing is required and every channel is open (local
//! development, loopback only unless `--insecure-no-auth`).

pub mod access;
pub mod config;
pub mod jwt;
mod origin;
mod query;
mod refusal;
pub mod target;
pub mod tokens;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

pub use config::AuthConfig;
pub use jwt::{ChannelClaims, Claims, Verifier};
pub use origin::{check_origin, same_origin_or_listed, StreamOrigin};
pub use refusal::Refusal;

/// What the auth extractors need of the router's state: its `[auth]`. The API's state
/// implements it, so that auth never names the API.
pub trait AuthSettings {
    /// `[auth]` in force.
    fn auth_config(&self) -> &AuthConfig;
    /// `api.cors_origins`: without `[auth]`, browser origins the event streams serve besides the
    /// server's own ([`StreamOrigin`]).
    fn cors_origins(&self) -> &[String];
}

/// The largest credential accepted: all `Cookie` headers together, or the `Authorization`
/// header. Larger requests get 431 without being parsed.
pub const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// The caller of an event endpoint, as the access guard decided (open without `[auth]`):
/// which channel it may read.
#[derive(Debug, Clone)]
pub struct ChannelAuth(pub tokens::Grant);

impl ChannelAuth {
    /// The channel to serve, given the `?channel=` asked for: open, the one asked (or the global
    /// stream); a caller confined to channels reads those only — another channel is 403.
    pub fn channel(&self, asked: Option<String>) -> Result<Option<String>, Refusal> {
        self.0.event_channel(asked)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ChannelAuth {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, st: &S) -> Result<Self, Refusal> {
        let access::Caller(grant) = access::Caller::from_request_parts(parts, st).await?;
        Ok(Self(grant))
    }
}

/// Without auth, `serve` listens on loopback only: every route would be open to whoever reaches
/// the port. A non-loopback `listen` needs `[auth]`, or `--insecure-no-auth` /
/// `auth.insecure_no_auth` (a proxy in front authenticates). The error says why and what to do.
pub fn check_exposure(
    listen: std::net::SocketAddr,
    auth: &AuthConfig,
    insecure_no_auth: bool,
) -> Result<(), String> {
    let ip = listen.ip();
    if ip.is_loopback() || auth.enabled() || insecure_no_auth || auth.insecure_no_auth {
        return Ok(());
    }
    Err(format!(
        "`listen`: {} is not a loopback address and no [auth] is configured: anyone who reaches \
         the port could submit, read and cancel jobs. Configure [auth] (API tokens: `runyard \
         token new NAME --scopes ...`; see docs/auth.md), listen on 127.0.0.1, or pass \
         --insecure-no-auth (auth.insecure_no_auth = true) if something in front of runyard \
         authenticates",
        listen
    ))
}

/// The token of a request: `Authorization: Bearer` first, else the cookie `cookie_name` (none
/// when it is empty: the client routes). With a cookie name (the event routes), an
/// `Authorization` header of another scheme (`Basic`, `Negotiate`: what a browser sends on its
/// own behind HTTP authentication) is not runyard's and does not hide the cookie; on the client
/// routes it is refused (401).
pub(crate) fn token(headers: &HeaderMap, cookie_name: &str) -> Result<String, Refusal> {
    let too_large = |what: &str, len: usize, instead: &str| {
        Refusal::HeaderTooLarge(format!(
            "the {what} header is {len} bytes, over the {MAX_CREDENTIAL_BYTES} (8 KiB) runyard \
             reads a credential from{instead}"
        ))
    };
    let mut given = headers.get_all(header::AUTHORIZATION).iter();
    let mut other_scheme = false;
    if let Some(v) = given.next() {
        // Two credentials in one request: which one the caller meant is a guess (a proxy's and
        // the client's, say); refused rather than taking the first.
        if given.next().is_some() {
            return Err(Refusal::Unauthorized(
                "send one Authorization header, not several".into(),
            ));
        }
        if v.len() > MAX_CREDENTIAL_BYTES {
            return Err(too_large("Authorization", v.len(), ""));
        }
        let v = v.to_str().unwrap_or("");
        let scheme = v.split_once(' ').map_or(v, |(s, _)| s).trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return match v.split_once(' ') {
                Some((_, t)) if !t.trim().is_empty() => Ok(t.trim().to_string()),
                _ => Err(Refusal::Unauthorized(
                    "the Authorization header must be `Bearer <token>`".into(),
                )),
            };
        }
        if cookie_name.is_empty() {
            return Err(Refusal::Unauthorized(
                "the Authorization header must be `Bearer <token>`".into(),
            ));
        }
        other_scheme = true;
    }
    let cookies = headers.get_all(header::COOKIE);
    let total: usize = cookies.iter().map(|v| v.len()).sum();
    if total > MAX_CREDENTIAL_BYTES {
        // Usually other sites' cookies of a shared domain, not runyard's own.
        return Err(too_large(
            "Cookie",
            total,
            " (all the cookies the browser sends to this host together): send the token as \
             `Authorization: Bearer <token>` instead (the cookies are not read then), or serve \
             runyard on a host that is sent fewer cookies",
        ));
    }
    for v in cookies {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=') {
                if !cookie_name.is_empty() && name.trim() == cookie_name {
                    let value = value.trim().trim_matches('"');
                    if !value.is_empty() {
                        return Ok(value.to_string());
                    }
                }
            }
        }
    }
    if cookie_name.is_empty() {
        return Err(Refusal::Unauthorized(
            "a token is required: `Authorization: Bearer <token>`".into(),
        ));
    }
    let not_bearer = if other_scheme {
        " (the Authorization header sent is not `Bearer`)"
    } else {
        ""
    };
    Err(Refusal::Unauthorized(format!(
        "a token is required: the cookie `{cookie_name}` or `Authorization: Bearer <token>`\
         {not_bearer}"
    )))
}

#[cfg(test)]
mod exposure_tests {
    use crate::config::Config;

    #[test]
    fn a_public_listen_needs_auth_or_the_insecure_flag() {
        let public = Config::from_toml("listen = \"0.0.0.0:7070\"").unwrap();
        let e = super::check_exposure(public.listen, &public.auth, false).unwrap_err();
        assert!(
            e.contains("0.0.0.0:7070") && e.contains("--insecure-no-auth"),
            "{e}"
        );
        assert!(super::check_exposure(public.listen, &public.auth, true).is_ok());
        let v6 = Config::from_toml("listen = \"[::]:7070\"").unwrap();
        assert!(super::check_exposure(v6.listen, &v6.auth, false).is_err());
        for ok in [
            "listen = \"127.0.0.1:7070\"",
            "listen = \"[::1]:7070\"",
            "listen = \"0.0.0.0:7070\"\n[auth]\ninsecure_no_auth = true",
            "listen = \"0.0.0.0:7070\"\n[auth]\njwt_secret = \"0123456789abcdef0123456789abcdef\"",
        ] {
            let c = Config::from_toml(ok).unwrap();
            assert!(
                super::check_exposure(c.listen, &c.auth, false).is_ok(),
                "{ok}"
            );
        }
    }
}
