//! Hook signature headers and verifier (`runyard-hooks`: sign.rs, verify.rs).
//!
//! 1. Arbitrary header values (several values per name, any bytes), times, bodies, paths,
//!    methods and clocks: `HookHeaders::from_headers` and `Verifier::verify` never panic, and
//!    what they accept is well formed.
//! 2. Differential: a request signed by `signed_headers` with the right secret always verifies
//!    (v1 and v2) at any clock within the window, exactly once (the second time is a replay); the
//!    same request with another secret, or (v2) another body, path or method, never does.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use runyard_hooks::sign::{SigVersion, X_JOB_HASH, X_JOB_ID, X_JOB_SIGNATURE, X_JOB_TIME};
use runyard_hooks::{signed_headers, HookHeaders, Secret, Verifier, VerifyError};
// `http`'s types, as axum re-exports them (runyard-hooks uses reqwest's re-export of the same crate).
use axum::http::{HeaderMap, HeaderName, HeaderValue};

#[derive(Debug, Arbitrary)]
struct Raw {
    /// (which header, value bytes); a name may repeat.
    headers: Vec<(u8, Vec<u8>)>,
    method: String,
    path: String,
    body: Vec<u8>,
    secret: String,
    now_ms: i64,
    window_secs: u16,
    require_v2: bool,
}

#[derive(Debug, Arbitrary)]
struct Signed {
    id: String,
    /// Only ASCII letters and digits are kept (runyard secrets are hex).
    secret: String,
    v2: bool,
    method: String,
    path: String,
    body: Vec<u8>,
    time_ms: u64,
    /// Where the server's clock is, relative to the signing time, within the window.
    skew_ms: i32,
    tamper: u8,
}

#[derive(Debug, Arbitrary)]
enum Input {
    Raw(Raw),
    Signed(Signed),
}

const NAMES: [HeaderName; 5] = [
    X_JOB_ID,
    X_JOB_TIME,
    X_JOB_HASH,
    X_JOB_SIGNATURE,
    HeaderName::from_static("content-type"),
];

fn raw(r: Raw) {
    let mut map = HeaderMap::new();
    for (which, value) in r.headers.into_iter().take(12) {
        let name = NAMES[usize::from(which) % NAMES.len()].clone();
        // Only what a real request can carry: `http` refuses the rest.
        if let Ok(v) = HeaderValue::from_bytes(&value) {
            map.append(name, v);
        }
    }
    let Ok(h) = HookHeaders::from_headers(&map) else {
        return;
    };
    // Accepted headers are well formed.
    assert!(!h.job_id.is_empty() && h.job_id.len() <= 256);
    assert!(h.time.bytes().all(|b| b.is_ascii_digit()) && !h.time.is_empty());
    assert!(
        h.hash.len() == 64
            && h.hash
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    );
    let verifier = Verifier::new()
        .with_window(std::time::Duration::from_secs(u64::from(r.window_secs)))
        .with_require_v2(r.require_v2);
    let secret = Secret::from_string(r.secret);
    match verifier.verify(&h, &secret, &r.method, &r.path, &r.body, r.now_ms) {
        Ok(()) => {
            // Accepted once: the same request again is a replay.
            let again = verifier.verify(&h, &secret, &r.method, &r.path, &r.body, r.now_ms);
            assert!(matches!(again, Err(VerifyError::Replay)), "{again:?}");
        }
        Err(e) => {
            let _ = (e.code(), e.http_status(), e.to_string());
        }
    }
}

fn signed(s: Signed) {
    let id: String =
        s.id.chars()
            .filter(|c| c.is_ascii_graphic())
            .take(256)
            .collect();
    let secret: String = s
        .secret
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    if id.is_empty() || secret.is_empty() {
        return;
    }
    let time_ms = (s.time_ms % (i64::MAX as u64)) as i64;
    let version = if s.v2 { SigVersion::V2 } else { SigVersion::V1 };
    let key = Secret::from_string(secret.clone());
    let map = signed_headers(&id, &key, version, &s.method, &s.path, &s.body, time_ms)
        .expect("a visible-ASCII id is a valid header");
    let h = HookHeaders::from_headers(&map).expect("our own headers parse");
    assert_eq!(h.job_id, id);
    assert_eq!(h.version, version);
    let window_ms = 300_000i64;
    let skew = i64::from(s.skew_ms) % (window_ms + 1);
    let Some(now) = time_ms.checked_add(skew) else {
        return;
    };
    let verifier = Verifier::new();
    // The right key verifies, whatever the method's case.
    let method_case = if s.tamper & 1 == 1 {
        s.method.to_ascii_lowercase()
    } else {
        s.method.to_ascii_uppercase()
    };
    verifier
        .verify_signature(&h, &key, &method_case, &s.path, &s.body, now)
        .unwrap_or_else(|e| panic!("a good signature was refused: {e:?}"));
    verifier
        .verify(&h, &key, &s.method, &s.path, &s.body, now)
        .unwrap_or_else(|e| panic!("a good signature was refused: {e:?}"));
    assert!(matches!(
        verifier.verify(&h, &key, &s.method, &s.path, &s.body, now),
        Err(VerifyError::Replay)
    ));
    // Another (ASCII) secret never verifies: change one character.
    let mut other = secret.into_bytes();
    let i = usize::from(s.tamper) % other.len();
    other[i] = if other[i] == b'a' { b'b' } else { b'a' };
    let other = Secret::from_string(String::from_utf8(other).expect("ascii"));
    assert!(matches!(
        verifier.verify_signature(&h, &other, &s.method, &s.path, &s.body, now),
        Err(VerifyError::BadSignature)
    ));
    // Outside the window: expired.
    if let Some(late) = time_ms.checked_add(window_ms + 1) {
        assert!(matches!(
            verifier.verify_signature(&h, &key, &s.method, &s.path, &s.body, late),
            Err(VerifyError::Expired { .. })
        ));
    }
    if version == SigVersion::V2 {
        // v2 binds the body, the path and the method.
        let mut body = s.body.clone();
        body.push(s.tamper);
        let mut path = s.path.clone();
        path.push('x');
        let method = format!("{}X", s.method);
        for (m, p, b) in [
            (s.method.as_str(), s.path.as_str(), body.as_slice()),
            (s.method.as_str(), path.as_str(), s.body.as_slice()),
            (method.as_str(), s.path.as_str(), s.body.as_slice()),
        ] {
            assert!(matches!(
                verifier.verify_signature(&h, &key, m, p, b, now),
                Err(VerifyError::BadSignature)
            ));
        }
        // And v2 headers relabelled as v1 do not pass either.
        let mut relabelled = map.clone();
        relabelled.remove(X_JOB_SIGNATURE);
        let h1 = HookHeaders::from_headers(&relabelled).expect("parse");
        assert!(verifier
            .verify_signature(&h1, &key, &s.method, &s.path, &s.body, now)
            .is_err());
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw(r) => raw(r),
        Input::Signed(s) => signed(s),
    }
});
