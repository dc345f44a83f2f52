//! Short-lived signed URLs for file bytes (the hook's `Location` and upload `url`). They carry
//! their own HMAC token (key derived from the master key), so the job sends no headers to them,
//! as the webda clients expect.

use runyard_hooks::hmac_sha256_parts;
use subtle::ConstantTimeEq;

/// How long a signed URL works.
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

    /// Checks a token (constant time) and its expiry (`exp`, seconds since the epoch).
    pub fn check(&self, parts: &[&str], exp: i64, sig: &str) -> bool {
        let now = crate::job::now_us() / 1_000_000;
        if exp < now || exp > now + URL_TTL_SECS + 60 {
            return false;
        }
        let want = self.sign(parts);
        want.as_bytes().ct_eq(sig.as_bytes()).into()
    }
}
