//! Signing hook requests (the job side of the protocol).
//!
//! A job proves who it is with three headers: `X-Job-Id` (its id), `X-Job-Time` (milliseconds since
//! the Unix epoch, in decimal) and `X-Job-Hash` (a lowercase hex HMAC-SHA256 keyed with the job's
//! secret). Two signature versions exist:
//!
//! - **v1**, what the webda Python primitives send: `hex(HMAC-SHA256(secret, time))`. It binds the
//!   signature to the job and the instant, not to the request.
//! - **v2**, what runyard's own clients send, marked by `X-Job-Signature: v2`:
//!   `hex(HMAC-SHA256(secret, time + "\n" + METHOD + "\n" + path_and_query + "\n" + hex(SHA256(body))))`.
//!   It also binds the method, the exact path and query, and the body. With the optional
//!   `X-Job-Nonce` header (1-64 letters, digits, `-` or `_`), `"\n" + nonce` is added at the end
//!   of the signed message: two otherwise identical requests signed in the same millisecond (two
//!   clients, or two processes, of one job) then differ, and neither is taken for a replay of the
//!   other. Runyard's clients send a random one with every request (a re-send of the same
//!   request keeps it, so it is still recognised as the same request).
//!
//! The HMAC key is the secret's bytes. Runyard secrets are ASCII (lowercase hex), so the encoding
//! does not matter for them; for any other secret the key is its ISO-8859-1 (latin-1) bytes when
//! every character fits, exactly as the webda Python client computes it, and its UTF-8 bytes
//! otherwise.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// Name of the header carrying the job id, as spelled on the wire.
pub const JOB_ID_HEADER: &str = "X-Job-Id";
/// Name of the header carrying the signing time in ms since the Unix epoch.
pub const JOB_TIME_HEADER: &str = "X-Job-Time";
/// Name of the header carrying the hex HMAC-SHA256 signature.
pub const JOB_HASH_HEADER: &str = "X-Job-Hash";
/// Name of the header selecting the signature version (`v2`; absent means v1).
pub const JOB_SIGNATURE_HEADER: &str = "X-Job-Signature";
/// Name of the optional header carrying a v2 request's nonce ([`valid_nonce`]).
pub const JOB_NONCE_HEADER: &str = "X-Job-Nonce";
/// Longest accepted `X-Job-Nonce`.
pub const MAX_NONCE_LEN: usize = 64;

/// [`JOB_ID_HEADER`] as a [`HeaderName`] (header names are case-insensitive).
pub const X_JOB_ID: HeaderName = HeaderName::from_static("x-job-id");
/// [`JOB_TIME_HEADER`] as a [`HeaderName`].
pub const X_JOB_TIME: HeaderName = HeaderName::from_static("x-job-time");
/// [`JOB_HASH_HEADER`] as a [`HeaderName`].
pub const X_JOB_HASH: HeaderName = HeaderName::from_static("x-job-hash");
/// [`JOB_SIGNATURE_HEADER`] as a [`HeaderName`].
pub const X_JOB_SIGNATURE: HeaderName = HeaderName::from_static("x-job-signature");
/// [`JOB_NONCE_HEADER`] as a [`HeaderName`].
pub const X_JOB_NONCE: HeaderName = HeaderName::from_static("x-job-nonce");

/// The value of `X-Job-Signature` for v2 signatures.
pub const V2_MARKER: &str = "v2";

/// Version of a hook signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SigVersion {
    /// `hex(HMAC-SHA256(secret, time))`: the webda-compatible form, no `X-Job-Signature` header.
    V1,
    /// The request-bound form, sent with `X-Job-Signature: v2`. Runyard's clients default to it.
    #[default]
    V2,
}

impl SigVersion {
    /// `"v1"` or `"v2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SigVersion::V1 => "v1",
            SigVersion::V2 => "v2",
        }
    }
}

/// Errors while building signed headers.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The job id cannot be sent as an HTTP header value (control characters, non-ASCII...).
    #[error("the job id is not a valid HTTP header value")]
    InvalidJobId,
    /// A nonce that is not 1-64 letters, digits, `-` or `_`, or one asked for a v1 signature.
    #[error("a nonce is 1-64 letters, digits, '-' or '_', and goes with v2 signatures only")]
    InvalidNonce,
}

/// The HMAC key bytes for a secret: latin-1 when every character fits (what the webda Python
/// client does), UTF-8 otherwise. ASCII secrets, which is all runyard issues, are used as is.
pub(crate) fn secret_key_bytes(secret: &str) -> Cow<'_, [u8]> {
    if secret.is_ascii() {
        return Cow::Borrowed(secret.as_bytes());
    }
    let latin1: Option<Vec<u8>> = secret
        .chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect();
    match latin1 {
        Some(bytes) => Cow::Owned(bytes),
        None => Cow::Borrowed(secret.as_bytes()),
    }
}

/// Raw HMAC-SHA256 of `message` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    hmac_sha256_parts(key, &[message])
}

/// Raw HMAC-SHA256 under `key` of the concatenation of `parts` (fed in order, nothing added
/// between them): the one HMAC of runyard (hook signatures, job secrets, webhook signatures and
/// endpoint keys, signed blob URLs).
pub fn hmac_sha256_parts(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC is defined for keys of any length (long keys are hashed, short ones padded), so
    // `new_from_slice` cannot fail for it; the error type only exists for fixed-key MACs.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC-SHA256 accepts keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Whether `nonce` may be sent as `X-Job-Nonce`: 1 to [`MAX_NONCE_LEN`] characters, each an
/// ASCII letter, digit, `-` or `_` (so no newline can make two signed messages alike).
pub fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce.len() <= MAX_NONCE_LEN
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A fresh random nonce: 32 lowercase hex characters (128 random bits).
pub fn random_nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The exact string signed by v2 (before the HMAC); with a nonce, `"\n" + nonce` at its end.
pub(crate) fn v2_message(
    time: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    nonce: Option<&str>,
) -> String {
    let body_hash = hex::encode(Sha256::digest(body));
    let mut message = format!(
        "{time}\n{}\n{path_and_query}\n{body_hash}",
        method.to_ascii_uppercase()
    );
    if let Some(nonce) = nonce {
        message.push('\n');
        message.push_str(nonce);
    }
    message
}

/// Raw v1 MAC bytes.
pub(crate) fn mac_v1(secret: &str, time: &str) -> [u8; 32] {
    hmac_sha256(&secret_key_bytes(secret), time.as_bytes())
}

/// Raw v2 MAC bytes (`nonce`: the `X-Job-Nonce` sent, if any).
pub(crate) fn mac_v2(
    secret: &str,
    time: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    nonce: Option<&str>,
) -> [u8; 32] {
    let message = v2_message(time, method, path_and_query, body, nonce);
    hmac_sha256(&secret_key_bytes(secret), message.as_bytes())
}

/// The v1 signature: lowercase `hex(HMAC-SHA256(secret, time))`.
///
/// `time` is the `X-Job-Time` string exactly as sent (ms since the epoch, decimal). This is what
/// the webda Python `job_headers()` computes.
pub fn sign_v1(secret: &str, time: &str) -> String {
    hex::encode(mac_v1(secret, time))
}

/// The v2 signature: lowercase hex of
/// `HMAC-SHA256(secret, time + "\n" + METHOD + "\n" + path_and_query + "\n" + hex(SHA256(body)))`.
///
/// `method` is upper-cased here; `path_and_query` is the request target exactly as sent on the
/// request line (`/async/status`, or `/a/b?x=1`), percent-encoding included; `body` is the raw body
/// bytes (empty for a GET).
pub fn sign_v2(
    secret: &str,
    time: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> String {
    hex::encode(mac_v2(secret, time, method, path_and_query, body, None))
}

/// The v2 signature of a request sent with `X-Job-Nonce: nonce`: as [`sign_v2`], with
/// `"\n" + nonce` at the end of the signed message.
pub fn sign_v2_with_nonce(
    secret: &str,
    time: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    nonce: &str,
) -> String {
    hex::encode(mac_v2(
        secret,
        time,
        method,
        path_and_query,
        body,
        Some(nonce),
    ))
}

/// Milliseconds since the Unix epoch, from the system clock (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Builds the full set of hook headers for one request signed at `time_ms`.
///
/// The result holds `X-Job-Id`, `X-Job-Time`, `X-Job-Hash` and, for v2, `X-Job-Signature: v2`.
/// For v1, `method`, `path_and_query` and `body` are not used. No nonce: see
/// [`signed_headers_with_nonce`]. See [`signed_headers_now`] for the usual case.
pub fn signed_headers(
    job_id: &str,
    secret: &Secret,
    version: SigVersion,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    time_ms: i64,
) -> Result<HeaderMap, SignError> {
    let request = (method, path_and_query, body);
    signed_headers_with_nonce(job_id, secret, version, request, time_ms, None)
}

/// [`signed_headers`] for `request` (method, path and query, body), with `X-Job-Nonce: nonce`
/// when `nonce` is given (v2 only: a v1 signature cannot cover it, and the server refuses it).
pub fn signed_headers_with_nonce(
    job_id: &str,
    secret: &Secret,
    version: SigVersion,
    request: (&str, &str, &[u8]),
    time_ms: i64,
    nonce: Option<&str>,
) -> Result<HeaderMap, SignError> {
    let (method, path_and_query, body) = request;
    let id_value = HeaderValue::from_str(job_id).map_err(|_| SignError::InvalidJobId)?;
    let time = time_ms.to_string();
    let nonce = match (version, nonce) {
        (SigVersion::V2, Some(n)) if valid_nonce(n) => Some(n),
        (_, None) => None,
        _ => return Err(SignError::InvalidNonce),
    };
    let hash = match version {
        SigVersion::V1 => sign_v1(secret.expose(), &time),
        SigVersion::V2 => hex::encode(mac_v2(
            secret.expose(),
            &time,
            method,
            path_and_query,
            body,
            nonce,
        )),
    };
    let mut headers = HeaderMap::with_capacity(5);
    headers.insert(X_JOB_ID, id_value);
    headers.insert(X_JOB_TIME, HeaderValue::from(time_ms));
    // Lowercase hex only: always a valid header value.
    headers.insert(
        X_JOB_HASH,
        HeaderValue::from_str(&hash).map_err(|_| SignError::InvalidJobId)?,
    );
    if version == SigVersion::V2 {
        headers.insert(X_JOB_SIGNATURE, HeaderValue::from_static(V2_MARKER));
    }
    if let Some(nonce) = nonce {
        // Letters, digits, `-` and `_` only (valid_nonce): always a valid header value.
        headers.insert(
            X_JOB_NONCE,
            HeaderValue::from_str(nonce).map_err(|_| SignError::InvalidNonce)?,
        );
    }
    Ok(headers)
}

/// [`signed_headers`] at the current time ([`now_ms`]).
pub fn signed_headers_now(
    job_id: &str,
    secret: &Secret,
    version: SigVersion,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Result<HeaderMap, SignError> {
    signed_headers(
        job_id,
        secret,
        version,
        method,
        path_and_query,
        body,
        now_ms(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Secret of attempt 1 of job 0190a5e0-7c3a-7000-8000-00000000abcd under master key
    /// `runyard-test-master-key` (see the secret module's known-answer test).
    const SECRET: &str = "f61b0c92cd4100fe87c7d02bb64aedf228570ebb5bafd1ff015e63e3447b1cbd";
    const TIME: &str = "1700000000000";
    const BODY: &[u8] = br#"{"status":"RUNNING"}"#;

    #[test]
    fn v1_known_answer_short_key() {
        // python3 -c "import hmac,hashlib;print(hmac.new(b'k',b'1700000000000',hashlib.sha256).hexdigest())"
        assert_eq!(
            sign_v1("k", TIME),
            "8cbac3fa8741a4e7e6081cb3f491d2cd1dd8a7f1395bac0a1f832ceba350a2b3"
        );
    }

    #[test]
    fn v1_known_answer_runyard_secret() {
        // The seed's job_headers(), in Python:
        // hmac.new(bytes(SECRET,'latin-1'), msg=bytes('1700000000000','latin-1'),
        //          digestmod=hashlib.sha256).hexdigest().lower()
        assert_eq!(
            sign_v1(SECRET, TIME),
            "d7cea75af73a95e87ee482a8b8c5f7c9bbc7a7427e7f6e18263da9a11ce8ac88"
        );
    }

    #[test]
    fn v1_latin1_key_like_python() {
        // python3 -c "import hmac,hashlib;print(hmac.new(bytes('clé','latin-1'),b'1700000000000',
        //   hashlib.sha256).hexdigest())"
        assert_eq!(
            sign_v1("clé", TIME),
            "f2f97b270deee3566f6fe431c0acad26041119a1157ced16ea9f440f6e246b53"
        );
    }

    #[test]
    fn v2_known_answers() {
        // python3: bh = hashlib.sha256(b'{"status":"RUNNING"}').hexdigest()
        assert_eq!(
            v2_message(TIME, "post", "/async/status", BODY, None),
            "1700000000000\nPOST\n/async/status\n\
             8a320f75d49b24da756707eb933391ebbd38a94fbad259c43663a4626c585475"
        );
        // hmac.new(b'k', ('1700000000000\nPOST\n/async/status\n' + bh).encode(),
        //          hashlib.sha256).hexdigest()
        assert_eq!(
            sign_v2("k", TIME, "POST", "/async/status", BODY),
            "f5488a8864178600f14e7a7e0c5efee176717a16b5666f9bb52c585f013f27ee"
        );
        // Same message keyed with SECRET.
        assert_eq!(
            sign_v2(SECRET, TIME, "POST", "/async/status", BODY),
            "4acb3e3b5db2db14fa958b8d99a7d3a4eb722081ce84452256fc508dd315587b"
        );
        // GET /async/job with an empty body: bh = sha256(b'') =
        // e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
        assert_eq!(
            sign_v2(SECRET, TIME, "GET", "/async/job", b""),
            "dee303437c275b9577dfdedbfd7ab574b4bee9c87faea2c585f314f3efb1b354"
        );
        // PUT of an upload request (the worked example of docs/hooks.md), Python:
        // body = b'{"hash":"5d41402abc4b2a76b9719d911017c592","challenge":"2b03dabe69fdf9eaff35009811c22b22","metadata":{}}'
        // bh = hashlib.sha256(body).hexdigest()  # 19f47125...
        // hmac.new(SECRET.encode(), ('1700000000000\nPUT\n' + path + '\n' + bh).encode(),
        //          hashlib.sha256).hexdigest()
        let upload_body = br#"{"hash":"5d41402abc4b2a76b9719d911017c592","challenge":"2b03dabe69fdf9eaff35009811c22b22","metadata":{}}"#;
        let upload_path = "/async/upload/jobs/0190a5e0-7c3a-7000-8000-00000000abcd/outputs";
        assert!(v2_message(TIME, "PUT", upload_path, upload_body, None)
            .ends_with("\n19f471255adcaabfcbed3298e1456edbd0149d0333faa3bc553ece36977e12d9"));
        assert_eq!(
            sign_v2(SECRET, TIME, "PUT", upload_path, upload_body),
            "0fca7da80ff9f484cea0bad998c12c636ac11cd2caba1b9a005ee27e4fbfd533"
        );
        // The method is upper-cased.
        assert_eq!(
            sign_v2(SECRET, TIME, "get", "/async/job", b""),
            sign_v2(SECRET, TIME, "GET", "/async/job", b"")
        );
    }

    #[test]
    fn headers_v1_and_v2() {
        let secret = Secret::from_string(SECRET.to_owned());
        let job = "0190a5e0-7c3a-7000-8000-00000000abcd";
        let v1 = signed_headers(
            job,
            &secret,
            SigVersion::V1,
            "POST",
            "/x",
            b"",
            1_700_000_000_000,
        )
        .expect("valid headers");
        assert_eq!(v1.len(), 3);
        assert_eq!(v1[JOB_ID_HEADER], job);
        assert_eq!(v1[JOB_TIME_HEADER], TIME);
        assert_eq!(
            v1[JOB_HASH_HEADER],
            "d7cea75af73a95e87ee482a8b8c5f7c9bbc7a7427e7f6e18263da9a11ce8ac88"
        );
        assert!(v1.get(JOB_SIGNATURE_HEADER).is_none());

        let v2 = signed_headers(
            job,
            &secret,
            SigVersion::V2,
            "POST",
            "/async/status",
            BODY,
            1_700_000_000_000,
        )
        .expect("valid headers");
        assert_eq!(v2.len(), 4);
        assert_eq!(v2[JOB_SIGNATURE_HEADER], "v2");
        assert_eq!(
            v2[JOB_HASH_HEADER],
            "4acb3e3b5db2db14fa958b8d99a7d3a4eb722081ce84452256fc508dd315587b"
        );
        // Nothing in the headers is the secret.
        assert!(v2.values().all(|v| v.as_bytes() != SECRET.as_bytes()));
    }

    #[test]
    fn v2_with_a_nonce_known_answer() {
        // python3: bh as above; m = '1700000000000\nPOST\n/async/status\n' + bh + '\n' + nonce
        // hmac.new(SECRET.encode(), m.encode(), hashlib.sha256).hexdigest()
        let nonce = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            sign_v2_with_nonce(SECRET, TIME, "POST", "/async/status", BODY, nonce),
            "605d75829e8af137532e5016e552301819c58ece9bbc0dd3a87fb14b346ca19c"
        );
        let secret = Secret::from_string(SECRET.to_owned());
        let request = ("POST", "/async/status", BODY);
        let t = 1_700_000_000_000;
        let h = signed_headers_with_nonce("j", &secret, SigVersion::V2, request, t, Some(nonce))
            .expect("valid headers");
        assert_eq!(h.len(), 5);
        assert_eq!(h[JOB_NONCE_HEADER], nonce);
        assert_eq!(
            h[JOB_HASH_HEADER],
            "605d75829e8af137532e5016e552301819c58ece9bbc0dd3a87fb14b346ca19c"
        );
        // No nonce: the v2 signature of before, no header.
        let h = signed_headers_with_nonce("j", &secret, SigVersion::V2, request, t, None)
            .expect("valid headers");
        assert!(h.get(JOB_NONCE_HEADER).is_none());
        assert_eq!(
            h[JOB_HASH_HEADER],
            "4acb3e3b5db2db14fa958b8d99a7d3a4eb722081ce84452256fc508dd315587b"
        );
        // v1 cannot cover a nonce; a malformed one is refused.
        for (version, bad) in [
            (SigVersion::V1, nonce),
            (SigVersion::V2, "a\nb"),
            (SigVersion::V2, ""),
        ] {
            let err = signed_headers_with_nonce("j", &secret, version, request, t, Some(bad))
                .expect_err("refused");
            assert!(matches!(err, SignError::InvalidNonce));
        }
        // Random nonces are valid, and differ.
        let (a, b) = (random_nonce(), random_nonce());
        assert!(valid_nonce(&a) && a.len() == 32 && a != b);
    }

    #[test]
    fn headers_now_uses_the_clock() {
        let secret = Secret::from_string("k".to_owned());
        let before = now_ms();
        let h = signed_headers_now("job", &secret, SigVersion::V2, "GET", "/async/job", b"")
            .expect("valid headers");
        let after = now_ms();
        let t: i64 = h[JOB_TIME_HEADER]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("integer");
        assert!(before <= t && t <= after);
        assert!(before > 1_600_000_000_000);
    }

    #[test]
    fn bad_job_id_is_an_error() {
        let secret = Secret::from_string("k".to_owned());
        let err = signed_headers("bad\nid", &secret, SigVersion::V1, "GET", "/", b"", 1)
            .expect_err("newline is not allowed in a header");
        assert!(matches!(err, SignError::InvalidJobId));
    }
}
