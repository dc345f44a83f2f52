//! What a browser origin in the configuration looks like (`api.cors_origins`,
//! `auth.allowed_origins`): checked at load here, below the API that uses the lists.

/// Whether `o` is a browser origin: `http(s)://host[:port]`, nothing after.
pub fn valid_origin(o: &str) -> bool {
    let Some(rest) = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        && axum::http::HeaderValue::from_str(o).is_ok()
}
