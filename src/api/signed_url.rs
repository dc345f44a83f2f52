//! Short-lived signed URLs for file bytes (the hook's `Location` and upload `url`). They carry
//! their own HMAC token (key derived from the master key), so the job sends no headers to them,
//! as the webda clients expect.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How long a signed URL works.
pub const URL_TTL_SECS: i64 = 300;

/// Signs and checks URL tokens.
pub struct UrlSigner {
    key: Vec<u8>,
    /// Upload URLs already used (one API process; with Redis the memory is shared there).
    used: runyard_hooks::ReplayGuard,
}

impl UrlSigner {
    /// A signer whose key is derived from the master key.
    pub fn new(master_key: &[u8]) -> Self {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(master_key).expect("HMAC takes any key length");
        mac.update(b"runyard/signed-url/v1");
        Self {
            key: mac.finalize().into_bytes().to_vec(),
            used: runyard_hooks::ReplayGuard::with_capacity(100_000),
        }
    }

    /// The hex token of these parts.
    pub fn sign(&self, parts: &[&str]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        for p in parts {
            mac.update(p.as_bytes());
            mac.update(b"\n");
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// Remembers a (checked) token until its expiry `exp` (seconds since the epoch): true the
    /// first time, false when it was already used. A full memory refuses (an error).
    pub fn first_use(&self, sig: &str, exp: i64) -> Result<bool, runyard_hooks::ReplayError> {
        use runyard_hooks::ReplayStore;
        let now_ms = crate::job::now_us() / 1000;
        self.used.check_and_remember(
            &format!("url:{sig}"),
            exp.saturating_add(1).saturating_mul(1000),
            now_ms,
        )
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
