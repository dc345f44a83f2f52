//! Verifying hook requests (the server side of the protocol).
//!
//! Use [`HookHeaders::from_headers`] on the request's headers, look up the job named by
//! [`HookHeaders::job_id`] and derive its current secret, then call [`Verifier::verify`] with the
//! method, the path and query exactly as received, the raw body and the server's clock.
//!
//! The checks, in order: the time parses; it is within the window (default 5 minutes) of the
//! server's clock; v1 is allowed (unless `require_v2`); the signature matches, compared in constant
//! time; and only then, so that forged requests cannot fill it, the (job, time, hash) triple has not
//! been accepted before. A v2 hash covers the request's `X-Job-Nonce` when it has one, so two
//! requests alike but for their nonces are two triples: both taken.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use subtle::ConstantTimeEq;

use crate::replay::{ReplayError, ReplayGuard, ReplayStore};
use crate::secret::Secret;
use crate::sign::{
    mac_v1, mac_v2, valid_nonce, SigVersion, JOB_HASH_HEADER, JOB_ID_HEADER, JOB_NONCE_HEADER,
    JOB_SIGNATURE_HEADER, JOB_TIME_HEADER,
};

/// The default accepted distance between `X-Job-Time` and the server's clock.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Longest accepted `X-Job-Id`.
const MAX_JOB_ID_LEN: usize = 256;

/// Why a hook request was refused.
///
/// Every variant is an authentication failure: answer it with **HTTP 401** and the body
/// `{"error": {"code": err.code(), "message": err.to_string()}}`, except
/// [`VerifyError::ReplayUnavailable`], a server-side capacity or backend problem, which is
/// **503** (see [`VerifyError::http_status`]). Messages never contain the secret or a signature.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A required header (`X-Job-Id`, `X-Job-Time` or `X-Job-Hash`) is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A header is present but malformed (repeated, not ASCII, time not an integer, hash not 64
    /// hex characters, unknown `X-Job-Signature` version, `X-Job-Nonce` not 1-64 letters, digits,
    /// `-` or `_` or sent with a v1 signature...).
    #[error("invalid header {0}")]
    InvalidHeader(&'static str),
    /// `X-Job-Time` is further from the server's clock than the window.
    #[error("X-Job-Time is more than {window_secs} s away from the server's clock")]
    Expired {
        /// The window, in seconds.
        window_secs: u64,
    },
    /// The signature does not match (wrong secret, or a tampered request).
    #[error("bad signature")]
    BadSignature,
    /// A v1 signature was sent but the server requires v2 (`hooks.require_v2`).
    #[error("v1 signatures are refused, sign with v2 (X-Job-Signature: v2)")]
    V1Refused,
    /// This exact (job, time, signature) was already accepted.
    #[error("replayed request")]
    Replay,
    /// The replay store could not record the request (full, or its backend failed). HTTP 503.
    #[error("cannot check for replays: {0}")]
    ReplayUnavailable(#[from] ReplayError),
}

impl VerifyError {
    /// A stable machine-readable code for the error body: `missing_header`, `invalid_header`,
    /// `expired`, `bad_signature`, `v1_refused`, `replay` or `replay_unavailable`.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::InvalidHeader(_) => "invalid_header",
            VerifyError::Expired { .. } => "expired",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::V1Refused => "v1_refused",
            VerifyError::Replay => "replay",
            VerifyError::ReplayUnavailable(_) => "replay_unavailable",
        }
    }

    /// The HTTP status to answer with: 401, or 503 for [`VerifyError::ReplayUnavailable`].
    pub fn http_status(&self) -> u16 {
        match self {
            VerifyError::ReplayUnavailable(_) => 503,
            _ => 401,
        }
    }
}

/// The signature headers of a hook request, syntactically checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookHeaders {
    /// `X-Job-Id`, as sent (the caller looks the job up with it; a caller that canonicalises ids
    /// may overwrite it with the canonical form before [`Verifier::verify`]).
    pub job_id: String,
    /// `X-Job-Time`, exactly as sent (the signature covers this string): decimal ms since the epoch.
    pub time: String,
    /// `X-Job-Hash`, lowercased: 64 hex characters.
    pub hash: String,
    /// v2 when `X-Job-Signature: v2` is present, v1 when it is absent (or `v1`).
    pub version: SigVersion,
    /// `X-Job-Nonce`, as sent (v2 only; its signature covers it), or `None` without one.
    pub nonce: Option<String>,
}

/// The single value of header `name`, as trimmed ASCII, or `None` when absent.
fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a str>, VerifyError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(VerifyError::InvalidHeader(name));
    }
    let value = value
        .to_str()
        .map_err(|_| VerifyError::InvalidHeader(name))?
        .trim();
    Ok(Some(value))
}

fn required_header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, VerifyError> {
    match single_header(headers, name)? {
        Some("") | None => Err(VerifyError::MissingHeader(name)),
        Some(value) => Ok(value),
    }
}

/// Parses `X-Job-Time`: ASCII digits only (no sign, no spaces), fitting an `i64`.
fn parse_time(time: &str) -> Result<i64, VerifyError> {
    if time.is_empty() || !time.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::InvalidHeader(JOB_TIME_HEADER));
    }
    time.parse::<i64>()
        .map_err(|_| VerifyError::InvalidHeader(JOB_TIME_HEADER))
}

impl HookHeaders {
    /// Reads and checks the hook headers. Header names are case-insensitive; each header must
    /// appear at most once.
    pub fn from_headers(headers: &HeaderMap) -> Result<HookHeaders, VerifyError> {
        let job_id = required_header(headers, JOB_ID_HEADER)?;
        if job_id.len() > MAX_JOB_ID_LEN {
            return Err(VerifyError::InvalidHeader(JOB_ID_HEADER));
        }
        let time = required_header(headers, JOB_TIME_HEADER)?;
        parse_time(time)?;
        let hash = required_header(headers, JOB_HASH_HEADER)?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(VerifyError::InvalidHeader(JOB_HASH_HEADER));
        }
        let version = match single_header(headers, JOB_SIGNATURE_HEADER)? {
            None | Some("") => SigVersion::V1,
            Some(v) if v.eq_ignore_ascii_case("v1") => SigVersion::V1,
            Some(v) if v.eq_ignore_ascii_case("v2") => SigVersion::V2,
            Some(_) => return Err(VerifyError::InvalidHeader(JOB_SIGNATURE_HEADER)),
        };
        // Only v2 covers a nonce: with v1 it would make nothing unique, so it is refused. An
        // empty one too (1-64 characters): the signed message would be ambiguous.
        let nonce = match single_header(headers, JOB_NONCE_HEADER)? {
            None => None,
            Some(n) if version == SigVersion::V2 && valid_nonce(n) => Some(n.to_owned()),
            Some(_) => return Err(VerifyError::InvalidHeader(JOB_NONCE_HEADER)),
        };
        Ok(HookHeaders {
            job_id: job_id.to_owned(),
            time: time.to_owned(),
            hash: hash.to_ascii_lowercase(),
            version,
            nonce,
        })
    }

    /// The key under which a verified request is remembered against replays: job id (lowercased,
    /// job ids being case-insensitive UUIDs), time and hash, newline-separated. The nonce is in it
    /// through the hash (a v2 hash covers it), so keys keep the form older nodes remember.
    pub fn replay_key(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.job_id.to_ascii_lowercase(),
            self.time,
            self.hash
        )
    }
}

/// A request whose signature is valid, not yet checked against replays: see
/// [`Verifier::verify_signature`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// Key to remember in a [`ReplayStore`] ([`HookHeaders::replay_key`]).
    pub replay_key: String,
    /// Until when the key must be remembered: request time + window, ms since the epoch.
    pub expires_at_ms: i64,
    /// When the request says it was signed (`X-Job-Time`), ms since the epoch.
    pub signed_at_ms: i64,
}

/// Checks hook signatures: time window, v1/v2 signature, replays.
///
/// Cheap to share: put it in the server state (it is `Send + Sync`) and use one instance for all
/// requests, since it holds the replay memory. Clones share the same replay store.
#[derive(Clone)]
pub struct Verifier {
    window: Duration,
    require_v2: bool,
    replay: Arc<dyn ReplayStore>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("window", &self.window)
            .field("require_v2", &self.require_v2)
            .finish_non_exhaustive()
    }
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// A verifier with the 5-minute window, v1 allowed, and an in-memory [`ReplayGuard`].
    pub fn new() -> Self {
        Verifier {
            window: DEFAULT_WINDOW,
            require_v2: false,
            replay: Arc::new(ReplayGuard::new()),
        }
    }

    /// Sets the accepted distance between `X-Job-Time` and the server's clock.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Refuses v1 signatures when `require_v2` is true (config `hooks.require_v2`).
    pub fn with_require_v2(mut self, require_v2: bool) -> Self {
        self.require_v2 = require_v2;
        self
    }

    /// Uses another replay store (e.g. one shared by several API processes).
    pub fn with_replay_store(mut self, store: Arc<dyn ReplayStore>) -> Self {
        self.replay = store;
        self
    }

    /// The accepted distance between `X-Job-Time` and the server's clock.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether v1 signatures are refused.
    pub fn require_v2(&self) -> bool {
        self.require_v2
    }

    fn window_ms(&self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }

    /// Verifies a request completely: [`Verifier::verify_signature`], then the replay check.
    ///
    /// `method` is the request method, `path_and_query` the request target exactly as received
    /// (path as on the request line, plus `?` and the query when there is one; with axum, take it
    /// from `OriginalUri`, not from a nested router's `Uri`), `body` the raw body bytes and `now_ms`
    /// the server's clock in ms since the epoch.
    pub fn verify(
        &self,
        headers: &HookHeaders,
        secret: &Secret,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        now_ms: i64,
    ) -> Result<(), VerifyError> {
        let verified =
            self.verify_signature(headers, secret, method, path_and_query, body, now_ms)?;
        if self
            .replay
            .check_and_remember(&verified.replay_key, verified.expires_at_ms, now_ms)?
        {
            Ok(())
        } else {
            Err(VerifyError::Replay)
        }
    }

    /// The checks that need neither the secret nor the body: the time within the window, the
    /// version taken. A server makes them before it reads a request's body, so that a request
    /// that cannot pass never holds a connection while its body arrives. The signed time (ms).
    pub fn precheck(&self, headers: &HookHeaders, now_ms: i64) -> Result<i64, VerifyError> {
        let time_ms = parse_time(&headers.time)?;
        if now_ms.abs_diff(time_ms) > self.window_ms().unsigned_abs() {
            return Err(VerifyError::Expired {
                window_secs: self.window.as_secs(),
            });
        }
        if headers.version == SigVersion::V1 && self.require_v2 {
            return Err(VerifyError::V1Refused);
        }
        Ok(time_ms)
    }

    /// Every check except the replay one. For callers with their own (e.g. asynchronous) replay
    /// store: remember [`VerifiedSignature::replay_key`] until
    /// [`VerifiedSignature::expires_at_ms`] and refuse the request with [`VerifyError::Replay`]
    /// if it was already there.
    pub fn verify_signature(
        &self,
        headers: &HookHeaders,
        secret: &Secret,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        now_ms: i64,
    ) -> Result<VerifiedSignature, VerifyError> {
        let time_ms = self.precheck(headers, now_ms)?;
        let window_ms = self.window_ms();
        let mut provided = [0u8; 32];
        hex::decode_to_slice(&headers.hash, &mut provided)
            .map_err(|_| VerifyError::InvalidHeader(JOB_HASH_HEADER))?;
        let expected = match headers.version {
            SigVersion::V1 => mac_v1(secret.expose(), &headers.time),
            SigVersion::V2 => mac_v2(
                secret.expose(),
                &headers.time,
                method,
                path_and_query,
                body,
                headers.nonce.as_deref(),
            ),
        };
        if !bool::from(expected.ct_eq(&provided)) {
            return Err(VerifyError::BadSignature);
        }
        Ok(VerifiedSignature {
            replay_key: headers.replay_key(),
            expires_at_ms: time_ms.saturating_add(window_ms),
            signed_at_ms: time_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::{signed_headers, X_JOB_HASH, X_JOB_ID, X_JOB_SIGNATURE, X_JOB_TIME};
    use reqwest::header::HeaderValue;

    const JOB: &str = "0190a5e0-7c3a-7000-8000-00000000abcd";
    const SECRET: &str = "f61b0c92cd4100fe87c7d02bb64aedf228570ebb5bafd1ff015e63e3447b1cbd";
    const T: i64 = 1_700_000_000_000;
    const BODY: &[u8] = br#"{"status":"RUNNING"}"#;
    const PATH: &str = "/async/status";

    fn secret() -> Secret {
        Secret::from_string(SECRET.to_owned())
    }

    fn headers(version: SigVersion, time_ms: i64) -> HookHeaders {
        let map = signed_headers(JOB, &secret(), version, "POST", PATH, BODY, time_ms)
            .expect("valid headers");
        HookHeaders::from_headers(&map).expect("parse")
    }

    #[test]
    fn parses_headers_case_insensitively() {
        let mut map = HeaderMap::new();
        map.insert(X_JOB_ID, HeaderValue::from_static(JOB));
        map.insert(X_JOB_TIME, HeaderValue::from_static("1700000000000"));
        map.insert(
            X_JOB_HASH,
            HeaderValue::from_static(
                "D7CEA75AF73A95E87EE482A8B8C5F7C9BBC7A7427E7F6E18263DA9A11CE8AC88",
            ),
        );
        let h = HookHeaders::from_headers(&map).expect("parse");
        assert_eq!(h.job_id, JOB);
        assert_eq!(h.time, "1700000000000");
        assert_eq!(
            h.hash,
            "d7cea75af73a95e87ee482a8b8c5f7c9bbc7a7427e7f6e18263da9a11ce8ac88"
        );
        assert_eq!(h.version, SigVersion::V1);
        // Upper-case hex from a client verifies like lower-case (it is the same signature).
        Verifier::new()
            .verify(&h, &secret(), "POST", PATH, b"", T)
            .expect("valid v1");

        map.insert(X_JOB_SIGNATURE, HeaderValue::from_static("V2"));
        assert_eq!(
            HookHeaders::from_headers(&map).expect("parse").version,
            SigVersion::V2
        );
    }

    #[test]
    fn missing_and_invalid_headers() {
        let good = signed_headers(JOB, &secret(), SigVersion::V2, "POST", PATH, BODY, T)
            .expect("valid headers");
        for name in [JOB_ID_HEADER, JOB_TIME_HEADER, JOB_HASH_HEADER] {
            let mut map = good.clone();
            map.remove(name);
            let err = HookHeaders::from_headers(&map).expect_err("missing");
            assert!(matches!(err, VerifyError::MissingHeader(n) if n == name));
            assert_eq!(err.code(), "missing_header");
            assert_eq!(err.http_status(), 401);
        }
        let cases: [(HeaderName, &'static str); 6] = [
            (X_JOB_TIME, "-1700000000000"),
            (X_JOB_TIME, "1700000000000.5"),
            (X_JOB_TIME, "99999999999999999999999"),
            (X_JOB_HASH, "abc"),
            (
                X_JOB_HASH,
                "zz00000000000000000000000000000000000000000000000000000000000000",
            ),
            (X_JOB_SIGNATURE, "v3"),
        ];
        for (name, value) in cases {
            let mut map = good.clone();
            map.insert(name.clone(), HeaderValue::from_static(value));
            let err = HookHeaders::from_headers(&map).expect_err(value);
            assert_eq!(err.code(), "invalid_header", "{name}: {value}");
        }
        // A repeated header is ambiguous.
        let mut map = good.clone();
        map.append(X_JOB_ID, HeaderValue::from_static("other"));
        assert_eq!(
            HookHeaders::from_headers(&map).expect_err("dup").code(),
            "invalid_header"
        );
    }

    use reqwest::header::HeaderName;

    #[test]
    fn accepts_good_v1_and_v2() {
        let verifier = Verifier::new();
        verifier
            .verify(
                &headers(SigVersion::V1, T),
                &secret(),
                "POST",
                PATH,
                BODY,
                T,
            )
            .expect("v1");
        verifier
            .verify(
                &headers(SigVersion::V2, T),
                &secret(),
                "POST",
                PATH,
                BODY,
                T,
            )
            .expect("v2");
        // v1 does not cover method, path or body.
        verifier
            .verify(
                &headers(SigVersion::V1, T + 1),
                &secret(),
                "GET",
                "/elsewhere",
                b"",
                T,
            )
            .expect("v1 anywhere");
        // The method is case-insensitive.
        verifier
            .verify(
                &headers(SigVersion::V2, T + 2),
                &secret(),
                "post",
                PATH,
                BODY,
                T,
            )
            .expect("v2 lowercase method");
    }

    #[test]
    fn accepts_the_webda_python_headers() {
        // What the seed's job_headers() sends at 1700000000000 with this secret.
        let mut map = HeaderMap::new();
        map.insert("X-Job-Id", HeaderValue::from_static(JOB));
        map.insert("X-Job-Time", HeaderValue::from_static("1700000000000"));
        map.insert(
            "X-Job-Hash",
            HeaderValue::from_static(
                "d7cea75af73a95e87ee482a8b8c5f7c9bbc7a7427e7f6e18263da9a11ce8ac88",
            ),
        );
        let h = HookHeaders::from_headers(&map).expect("parse");
        Verifier::new()
            .verify(
                &h,
                &secret(),
                "POST",
                PATH,
                br#"{"progress": 50}"#,
                T + 1000,
            )
            .expect("python v1");
    }

    #[test]
    fn rejects_wrong_key() {
        let wrong = Secret::from_string(SECRET.replace('f', "e"));
        for version in [SigVersion::V1, SigVersion::V2] {
            let err = Verifier::new()
                .verify(&headers(version, T), &wrong, "POST", PATH, BODY, T)
                .expect_err("wrong key");
            assert!(matches!(err, VerifyError::BadSignature));
            assert_eq!(err.code(), "bad_signature");
            assert_eq!(err.http_status(), 401);
        }
    }

    #[test]
    fn v2_rejects_tampering() {
        let verifier = Verifier::new();
        let h = headers(SigVersion::V2, T);
        let tampered: [(&str, &str, &[u8]); 4] = [
            ("POST", PATH, br#"{"status":"SUCCESS"}"#),
            ("POST", "/async/status?x=1", BODY),
            ("POST", "/async/upload/jobs/other/out", BODY),
            ("PUT", PATH, BODY),
        ];
        for (method, path, body) in tampered {
            let err = verifier
                .verify(&h, &secret(), method, path, body, T)
                .expect_err("tampered");
            assert!(matches!(err, VerifyError::BadSignature), "{method} {path}");
        }
        // The untampered request still passes (the failures were not remembered as replays).
        verifier
            .verify(&h, &secret(), "POST", PATH, BODY, T)
            .expect("original");
    }

    /// The probe's finding: two clients of one job sending the same v2 request in the same
    /// millisecond made the same triple, the second refused as a replay. With a nonce each, both
    /// are taken; the same nonce again is still a replay, and a nonce cannot be swapped.
    #[test]
    fn requests_alike_but_for_their_nonces_are_both_taken() {
        use crate::sign::{signed_headers_with_nonce, X_JOB_NONCE};
        let verifier = Verifier::new();
        let with_nonce = |nonce: Option<&str>| {
            let request = ("POST", PATH, BODY);
            let map = signed_headers_with_nonce(JOB, &secret(), SigVersion::V2, request, T, nonce)
                .expect("valid headers");
            HookHeaders::from_headers(&map).expect("parse")
        };
        let check = |h: &HookHeaders| verifier.verify(h, &secret(), "POST", PATH, BODY, T);
        let (a, b) = (with_nonce(Some("client-a")), with_nonce(Some("client-b")));
        check(&a).expect("first client");
        check(&b).expect("second client, same millisecond and body");
        // Without a nonce, as before: taken once, then a replay.
        check(&with_nonce(None)).expect("no nonce");
        assert!(matches!(check(&with_nonce(None)), Err(VerifyError::Replay)));
        // The same nonce again (a re-send of the same request) is a replay.
        assert!(matches!(check(&a), Err(VerifyError::Replay)));
        // A nonce is signed: another one on a's signature does not verify.
        let swapped = HookHeaders {
            nonce: Some("client-c".to_owned()),
            ..a.clone()
        };
        assert!(matches!(check(&swapped), Err(VerifyError::BadSignature)));
        // Nor does a's signature without its nonce.
        let dropped = HookHeaders { nonce: None, ..a };
        assert!(matches!(check(&dropped), Err(VerifyError::BadSignature)));

        // Malformed nonces (an empty one too), and a nonce with v1 (which cannot cover it), are refused.
        let good = signed_headers(JOB, &secret(), SigVersion::V2, "POST", PATH, BODY, T)
            .expect("valid headers");
        let long = "n".repeat(65);
        for bad in ["", "a b", "a.b", "é", long.as_str()] {
            let mut map = good.clone();
            map.insert(X_JOB_NONCE, HeaderValue::from_str(bad).expect("header"));
            let err = HookHeaders::from_headers(&map).expect_err(bad);
            assert!(
                matches!(err, VerifyError::InvalidHeader(JOB_NONCE_HEADER)),
                "{bad}"
            );
        }
        let mut map = good.clone();
        map.insert(X_JOB_NONCE, HeaderValue::from_static("client-a"));
        map.insert(X_JOB_SIGNATURE, HeaderValue::from_static("v1"));
        let err = HookHeaders::from_headers(&map).expect_err("v1 with a nonce");
        assert!(matches!(err, VerifyError::InvalidHeader(JOB_NONCE_HEADER)));
    }

    #[test]
    fn rejects_time_outside_the_window() {
        let verifier = Verifier::new();
        let six_minutes = 6 * 60 * 1000;
        for time in [T - six_minutes, T + six_minutes] {
            let err = verifier
                .verify(
                    &headers(SigVersion::V2, time),
                    &secret(),
                    "POST",
                    PATH,
                    BODY,
                    T,
                )
                .expect_err("expired");
            assert!(matches!(err, VerifyError::Expired { window_secs: 300 }));
            assert_eq!(err.code(), "expired");
        }
        // Exactly at the edge of the window is still accepted.
        let edge = 5 * 60 * 1000;
        verifier
            .verify(
                &headers(SigVersion::V2, T - edge),
                &secret(),
                "POST",
                PATH,
                BODY,
                T,
            )
            .expect("edge");
        // A custom window.
        let short = Verifier::new().with_window(Duration::from_secs(10));
        let err = short
            .verify(
                &headers(SigVersion::V2, T - 11_000),
                &secret(),
                "POST",
                PATH,
                BODY,
                T,
            )
            .expect_err("expired");
        assert_eq!(err.code(), "expired");
    }

    #[test]
    fn rejects_replay_of_the_same_triple() {
        let verifier = Verifier::new();
        for version in [SigVersion::V1, SigVersion::V2] {
            let h = headers(version, T);
            verifier
                .verify(&h, &secret(), "POST", PATH, BODY, T)
                .expect("first");
            let err = verifier
                .verify(&h, &secret(), "POST", PATH, BODY, T + 1000)
                .expect_err("replay");
            assert!(matches!(err, VerifyError::Replay));
            assert_eq!(err.code(), "replay");
            // Changing the case of the hash or of the job id does not get around it.
            let mut upper = h.clone();
            upper.hash = h.hash.to_ascii_uppercase();
            upper.job_id = h.job_id.to_ascii_uppercase();
            let reparsed = HookHeaders::from_headers(
                &[
                    (X_JOB_ID, upper.job_id.as_str()),
                    (X_JOB_TIME, upper.time.as_str()),
                    (X_JOB_HASH, upper.hash.as_str()),
                ]
                .into_iter()
                .chain((version == SigVersion::V2).then_some((X_JOB_SIGNATURE, "v2")))
                .map(|(n, v)| (n, HeaderValue::from_str(v).expect("header")))
                .collect(),
            )
            .expect("parse");
            let err = verifier
                .verify(&reparsed, &secret(), "POST", PATH, BODY, T + 2000)
                .expect_err("replay");
            assert!(matches!(err, VerifyError::Replay));
        }
        // A new time is a new request.
        verifier
            .verify(
                &headers(SigVersion::V2, T + 1),
                &secret(),
                "POST",
                PATH,
                BODY,
                T,
            )
            .expect("new time");
    }

    #[test]
    fn forged_requests_are_not_remembered() {
        let guard = Arc::new(ReplayGuard::new());
        let verifier = Verifier::new().with_replay_store(guard.clone());
        let wrong = Secret::from_string("nope".to_owned());
        for i in 0..10 {
            let _ = verifier.verify(
                &headers(SigVersion::V2, T + i),
                &wrong,
                "POST",
                PATH,
                BODY,
                T,
            );
        }
        assert!(guard.is_empty());
    }

    #[test]
    fn v1_refused_when_v2_required() {
        let verifier = Verifier::new().with_require_v2(true);
        let err = verifier
            .verify(
                &headers(SigVersion::V1, T),
                &secret(),
                "POST",
                PATH,
                BODY,
                T,
            )
            .expect_err("v1 refused");
        assert!(matches!(err, VerifyError::V1Refused));
        assert_eq!(err.code(), "v1_refused");
        verifier
            .verify(
                &headers(SigVersion::V2, T),
                &secret(),
                "POST",
                PATH,
                BODY,
                T,
            )
            .expect("v2 ok");
    }

    #[test]
    fn full_replay_store_is_503() {
        let verifier = Verifier::new().with_replay_store(Arc::new(ReplayGuard::with_capacity(1)));
        verifier
            .verify(
                &headers(SigVersion::V2, T),
                &secret(),
                "POST",
                PATH,
                BODY,
                T,
            )
            .expect("first");
        let err = verifier
            .verify(
                &headers(SigVersion::V2, T + 1),
                &secret(),
                "POST",
                PATH,
                BODY,
                T,
            )
            .expect_err("full");
        assert_eq!(err.code(), "replay_unavailable");
        assert_eq!(err.http_status(), 503);
    }

    #[test]
    fn verify_signature_reports_key_and_expiry() {
        let h = headers(SigVersion::V2, T);
        let v = Verifier::new()
            .verify_signature(&h, &secret(), "POST", PATH, BODY, T)
            .expect("valid");
        assert_eq!(v.expires_at_ms, T + 300_000);
        assert_eq!(v.signed_at_ms, T);
        assert_eq!(v.replay_key, format!("{JOB}\n{T}\n{}", h.hash));
    }

    #[test]
    fn errors_do_not_leak_the_secret_or_hash() {
        let h = headers(SigVersion::V2, T);
        let wrong = Secret::from_string("nope".to_owned());
        let err = Verifier::new()
            .verify(&h, &wrong, "POST", PATH, BODY, T)
            .expect_err("bad");
        let text = format!("{err} {err:?}");
        assert!(!text.contains(&h.hash) && !text.contains(SECRET) && !text.contains("nope"));
        let verifier_debug = format!("{:?}", Verifier::new());
        assert!(verifier_debug.contains("require_v2"));
    }
}
