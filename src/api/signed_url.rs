//! Short-lived signed URLs for file bytes (the hook's `Location` and upload `url`). They carry
//! their own HMAC token (key derived from the master key), so the job sends no headers to them,
//! as the webda clients expect.

use runyard_hooks::hmac_sha256_parts;
use subtle::ConstantTimeEq;

/// How long a signed URL works, by the store's clock (stamped and checked by it: a node whose
/// wall clock is off hands out and takes the same URLs as the others, and a used upload URL has
/// expired on every node before the store forgets its use).
pub const URL_TTL_SECS: i64 = 300;

/// Signs and checks URL tokens.
pub struct UrlSigner {
    /// Derived from the master key: zeroed when dropped, never printed.
    key: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(***)")
    }
}

impl UrlSigner {
    /// A signer whose key is derived from the master key.
    pub fn new(master_key: &[u8]) -> Self {
        let key = hmac_sha256_parts(master_key, &[b"runyard/signed-url/v1"]);
        Self {
            key: zeroize::Zeroizing::new(key.to_vec()),
        }
    }

    /// The hex token of these parts.
    pub fn sign(&self, parts: &[&str]) -> String {
        let fed: Vec<&[u8]> = parts.iter().flat_map(|p| [p.as_bytes(), b"\n"]).collect();
        hex::encode(hmac_sha256_parts(&self.key, &fed))
    }

    /// Checks a token (constant time) and its expiry (`exp`, seconds since the epoch) at `now`
    /// (seconds since the epoch, by the store's clock: `App::signed_url_now`). An `exp` more
    /// than [`URL_TTL_SECS`] ahead is accepted up to a minute more: a node of an older build
    /// stamped its URLs by its own wall clock.
    pub fn check(&self, parts: &[&str], exp: i64, sig: &str, now: i64) -> bool {
        if exp < now || exp > now + URL_TTL_SECS + 60 {
            return false;
        }
        let want = self.sign(parts);
        want.as_bytes().ct_eq(sig.as_bytes()).into()
    }
}

/// `meta` (the metadata's JSON) followed by 96 random bits written as JSON whitespace (space,
/// tab, newline, carriage return: two bits each). Each URL is used once (its signature is the
/// key), so one asked again within the same second after a failed send must differ from the
/// spent one; the nonce rides in the signed `meta` rather than a field of its own, so that a
/// node of an older build, which signs only the fields it knows, verifies it too and reads the
/// same metadata (JSON ignores trailing whitespace).
pub fn with_nonce(mut meta: String) -> String {
    const WS: [char; 4] = [' ', '\t', '\n', '\r'];
    for b in rand::random::<[u8; 12]>() {
        for shift in [0, 2, 4, 6] {
            meta.push(WS[usize::from((b >> shift) & 3)]);
        }
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A URL works until its `exp` by the `now` it is checked at, and not with another token.
    #[test]
    fn a_url_is_judged_at_the_time_given() {
        let signer = UrlSigner::new(b"signed-url-test-master-key");
        let exp = 1_800_000_000;
        let sig = signer.sign(&["get", "h", &exp.to_string()]);
        let check =
            |sig: &str, now: i64| signer.check(&["get", "h", &exp.to_string()], exp, sig, now);
        assert!(check(&sig, exp - URL_TTL_SECS));
        assert!(check(&sig, exp));
        assert!(!check(&sig, exp + 1), "expired");
        assert!(!check(&sig, exp - URL_TTL_SECS - 61), "too far ahead");
        assert!(!check(
            &signer.sign(&["get", "other", &exp.to_string()]),
            exp
        ));
    }

    /// The nonce changes the signed text every time and the metadata it decodes to never.
    #[test]
    fn a_nonce_changes_the_text_not_the_metadata() {
        let meta = r#"{"name":"out.csv","rows":3}"#.to_string();
        let a = with_nonce(meta.clone());
        let b = with_nonce(meta.clone());
        assert_ne!(a, b);
        assert_eq!(a.len(), meta.len() + 48);
        let want: serde_json::Value = serde_json::from_str(&meta).unwrap();
        for m in [a, b] {
            assert_eq!(serde_json::from_str::<serde_json::Value>(&m).unwrap(), want);
        }
    }
}
