//! The browser `Origin` checks: [`same_origin_or_listed`], the rule of the API's cross-origin
//! check of unsafe requests (`crate::api::gate`), and [`StreamOrigin`], the check of the
//! WebSocket and SSE endpoints, before any upgrade (CORS does not protect a WebSocket: a browser
//! opens one from any page and lets the page read it).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use super::{AuthConfig, AuthSettings, Refusal};

/// True when a browser request is from this server's own origin or from a `listed` one (the way
/// Go's `CrossOriginProtection` decides): `Sec-Fetch-Site` when the browser sends it
/// (`same-origin` and `none` pass), else `Origin` against the request's `Host`. A request with
/// neither header comes from a program, not a page: true.
pub fn same_origin_or_listed(headers: &HeaderMap, listed: impl Fn(&str) -> bool) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    // An `Origin` that is not text is no origin anyone listed.
    let unreadable = headers.get(header::ORIGIN).is_some() && origin.is_none();
    let is_listed = origin.is_some_and(&listed);
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("same-origin" | "none") => true,
        Some(_) => is_listed,
        None if unreadable => false,
        None => match origin {
            None => true,
            Some(o) => {
                is_listed
                    || headers
                        .get(header::HOST)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|host| is_own_origin(o, host))
            }
        },
    }
}

/// True when the origin `o` (`scheme://host[:port]`) names the host and port of the request's
/// `Host` header. A port left out is the scheme's default (RFC 6454 elides it in an origin, a
/// client may name it in `Host`): `http://example.com` is `example.com:80`'s own. Host names
/// compare case-insensitively.
fn is_own_origin(o: &str, host: &str) -> bool {
    let Some((scheme, authority)) = o.split_once("://") else {
        return false;
    };
    let default = if scheme.eq_ignore_ascii_case("http") {
        Some("80")
    } else if scheme.eq_ignore_ascii_case("https") {
        Some("443")
    } else {
        None
    };
    let (o_name, o_port) = split_port(authority);
    let (h_name, h_port) = split_port(host);
    o_name.eq_ignore_ascii_case(h_name) && o_port.or(default) == h_port.or(default)
}

/// `host[:port]` (an IPv6 literal in brackets) split into the host and the port, if named.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            (name, Some(port))
        }
        _ => (authority, None),
    }
}

/// The `Origin` check of the WebSocket and SSE endpoints (403 before any upgrade); requests
/// without `Origin` (not from a browser) pass. With `[auth]` in force (a secret, tokens or
/// `allowed_origins` set), a browser `Origin` must be in `auth.allowed_origins` (403
/// `cross_origin`, as without `[auth]`). Without it, a
/// browser request must come from the server's own origin or one in `api.cors_origins`
/// ([`same_origin_or_listed`]): else any page the user visits could read every job's events.
#[derive(Debug, Clone, Copy)]
pub struct StreamOrigin;

impl<S: AuthSettings + Send + Sync> FromRequestParts<S> for StreamOrigin {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, st: &S) -> Result<Self, Refusal> {
        check_origin(&parts.headers, st.auth_config(), st.cors_origins()).map(|()| StreamOrigin)
    }
}

/// See [`StreamOrigin`].
pub fn check_origin(headers: &HeaderMap, cfg: &AuthConfig, cors: &[String]) -> Result<(), Refusal> {
    if !cfg.enabled() && cfg.allowed_origins.is_empty() {
        if same_origin_or_listed(headers, |o| cors.iter().any(|a| a.eq_ignore_ascii_case(o))) {
            return Ok(());
        }
        let origin = headers
            .get(header::ORIGIN)
            .map(|v| String::from_utf8_lossy(v.as_bytes()));
        return Err(Refusal::CrossOrigin(format!(
            "a browser page on origin `{}` may not read the event streams of another origin: \
             list it in `api.cors_origins` (or in `auth.allowed_origins`, with `[auth]`)",
            origin.as_deref().unwrap_or("(unknown)").escape_debug()
        )));
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
        Err(Refusal::CrossOrigin(format!(
            "a browser page on origin `{}` may not read the event streams: list it in \
             `auth.allowed_origins`",
            String::from_utf8_lossy(origin.as_bytes()).escape_debug()
        )))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::same_origin_or_listed;

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:7070"));
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn own_origin_listed_origins_and_programs_pass() {
        let listed = |o: &str| o == "https://dash.example";
        let pass = |pairs: &[(&'static str, &[u8])]| same_origin_or_listed(&headers(pairs), listed);
        assert!(pass(&[]), "no Origin: a program");
        assert!(pass(&[("origin", b"http://127.0.0.1:7070")]));
        assert!(pass(&[("origin", b"https://dash.example")]));
        assert!(!pass(&[("origin", b"https://attacker.example")]));
        assert!(!pass(&[("origin", b"http://127.0.0.1:7071")]));
        assert!(!pass(&[("origin", b"\xff")]), "an Origin that is not text");
        let own = b"http://127.0.0.1:7070".as_slice();
        assert!(!pass(&[("origin", own), ("sec-fetch-site", b"cross-site")]));
        assert!(pass(&[
            ("origin", b"https://x.example"),
            ("sec-fetch-site", b"same-origin")
        ]));
    }

    /// An origin leaves the default port out (RFC 6454); a `Host` may name it: the same origin.
    #[test]
    fn a_host_naming_the_default_port_is_the_origin_without_it() {
        let own = |origin: &'static str, host: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("host", HeaderValue::from_static(host));
            h.insert("origin", HeaderValue::from_static(origin));
            same_origin_or_listed(&h, |_| false)
        };
        assert!(own("http://example.com", "example.com:80"));
        assert!(own("https://example.com", "example.com:443"));
        assert!(own("http://example.com:80", "example.com"));
        assert!(own("http://example.com", "example.com"));
        assert!(
            own("http://Example.COM", "example.com:80"),
            "case of the name"
        );
        assert!(own("http://[::1]", "[::1]:80"), "an IPv6 literal");
        assert!(own("http://[::1]:7070", "[::1]:7070"));
        // Another port, or the other scheme's default, is another origin.
        assert!(!own("http://example.com", "example.com:443"));
        assert!(!own("https://example.com", "example.com:80"));
        assert!(!own("http://example.com", "example.com:8080"));
        assert!(!own("http://example.com:8080", "example.com"));
        assert!(!own("http://[::1]", "[::1]:7070"));
        assert!(!own("http://example.com", "example.com.evil:80"));
        assert!(!own("null", "example.com"));
    }
}
