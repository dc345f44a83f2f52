//! What the store says about the Redis server it connects to: its version (refused below 7.0)
//! and its URL without the password, for messages.

use ::redis::aio::ConnectionManager;

use super::*;

/// The server's version, refused below Redis 7.
pub(super) async fn server_version(conn: &mut ConnectionManager) -> Result<String> {
    let info: String = ::redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .map_err(|e| StoreError::Unavailable(format!("redis INFO: {e}")))?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("0")
        .trim()
        .to_string();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        return Err(StoreError::Unavailable(format!(
            "redis {version} is too old: runyard needs Redis 7.0 or later (stream trimming \
                 metadata used to detect gaps in event streams)"
        )));
    }
    Ok(version)
}

/// A URL without its password, for messages.
pub(super) fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
