//! HS256 channel tokens as Superset's `AsyncQueryManager` mints them:
//! `jwt.encode({"channel": ch, "sub": user_id, "exp": ...}, secret, algorithm="HS256")`.
//! Verified with the `jsonwebtoken` crate; only HS256 is accepted (`alg: none` and every other
//! algorithm are refused), `exp` is required, `nbf` is checked when present. A token whose header
//! or claims name a member twice is refused (which of the two counts is up to the reader).

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::job::{valid_name, CHANNEL_RULE};

/// What a valid channel token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelClaims {
    /// The one channel the token may read.
    pub channel: String,
    /// The user (`sub`), when the token names one: Superset's guests have none (or `null`), and
    /// Superset writes user ids as numbers or strings.
    pub sub: Option<String>,
}

/// Verifies channel tokens with one secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// 9999-12-31T23:59:59Z: the largest `exp` taken as a time in seconds.
const MAX_EXP: u64 = 253_402_300_799;

impl Verifier {
    /// A verifier for `secret`, tolerating `leeway` of clock skew on `exp` and `nbf`; tokens
    /// without `exp` are refused when `require_exp`.
    pub fn new(secret: &str, leeway: Duration, require_exp: bool) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway.as_secs();
        validation.validate_nbf = true;
        let required: &[&str] = if require_exp { &["exp"] } else { &[] };
        validation.set_required_spec_claims(required);
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// The claims of a channel token (its `channel` is required), or why it is refused (a
    /// message for the client; it never contains the token or the secret).
    pub fn verify(&self, token: &str) -> Result<ChannelClaims, String> {
        let c = self.verify_claims(token)?;
        match c.channel {
            Some(channel) => Ok(ChannelClaims {
                channel,
                sub: c.sub,
            }),
            None => Err("the token has no `channel` claim".into()),
        }
    }

    /// The claims of any token: a channel token (`channel`), an API token (`scope`), or both.
    pub fn verify_claims(&self, token: &str) -> Result<Claims, String> {
        // A member named twice is ambiguous (jsonwebtoken keeps the last `channel`, another
        // reader may keep the first): refused, whatever else the token says.
        repeated_member(token)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| refusal(token, e.kind()))?;
        let claims = data.claims;
        // RFC 7515 4.1.11: a header listing `crit` extensions the verifier does not understand
        // (runyard understands none) makes the token invalid.
        // A header jsonwebtoken read but serde_json's `Value` cannot (an unpaired surrogate in
        // a field it skipped) is refused too: its `crit` could not be checked.
        match header_json(token) {
            None => return Err("the token is malformed (its header)".into()),
            Some(h) if h.get("crit").is_some() => {
                return Err(
                    "the token's header lists `crit` extensions runyard does not know".into(),
                )
            }
            Some(_) => {}
        }
        // jsonwebtoken checks an `nbf` that fits a u64 and lets any other value through (a
        // string, 1e20): not a time.
        let time = |n: &serde_json::Number| {
            n.as_f64()
                .is_some_and(|f| (0.0..=MAX_EXP as f64).contains(&f))
        };
        match claims.get("nbf") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if time(n) => {}
            Some(_) => {
                return Err(
                    "the token's `nbf` claim must be a time (seconds, up to the year 9999)".into(),
                )
            }
        }
        let channel = channel_claim(claims.get("channel"))?;
        let sub = match claims.get("sub") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => return Err("the token's `sub` claim must be a string or a number".into()),
        };
        let scope = match claims.get("scope") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.split_whitespace().map(str::to_string).collect()),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => Some(
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            ),
            Some(_) => {
                return Err(
                    "the token's `scope` claim must be a space-separated string of scopes".into(),
                )
            }
        };
        // Until when it verifies: jsonwebtoken refuses it once `exp < now - leeway` in whole
        // seconds (a fractional `exp` rounded), so through `exp + leeway + 1`. A present `exp`
        // must be a time (without `require_exp` the library lets any other value through).
        let valid_until = match claims.get("exp") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => {
                let exp = match n.as_u64() {
                    Some(e) => e,
                    None => match n.as_f64() {
                        Some(f) if f.is_finite() && f >= 0.0 => f.round() as u64,
                        _ => return Err("the token's `exp` claim must be a time (seconds)".into()),
                    },
                };
                // Past the year 9999: milliseconds taken for seconds (a token that would
                // never expire), not a time.
                if exp > MAX_EXP {
                    return Err(
                        "the token's `exp` claim must be a time in seconds since the \
                                epoch (this one is past the year 9999: milliseconds?)"
                            .into(),
                    );
                }
                Some(exp.saturating_add(self.validation.leeway).saturating_add(1))
            }
            Some(_) => return Err("the token's `exp` claim must be a time (seconds)".into()),
        };
        Ok(Claims {
            channel,
            sub,
            scope,
            valid_until,
        })
    }
}

/// The `channel` claim: a channel name as a job's `channel` must be (a number is taken as its
/// digits), none when absent; a `null` is refused.
fn channel_claim(claim: Option<&Value>) -> Result<Option<String>, String> {
    match claim {
        None => Ok(None),
        // Not "no channel": with a `scope` that would be a token for every channel, minted by an
        // issuer whose channel was missing (Python's None).
        Some(Value::Null) => Err(
            "the token's `channel` claim is null: give a channel, or leave \
                                  the claim out for a token not confined to one"
                .into(),
        ),
        // A token for a name no job can carry would open a stream that never speaks.
        Some(Value::String(c)) if valid_name(c, 256) => Ok(Some(c.clone())),
        Some(Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
        Some(_) => Err(format!("the token's {CHANNEL_RULE}")),
    }
}

/// Everything a valid token may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `channel`: the one channel it may read (and, with `scope`, the one it is confined to).
    pub channel: Option<String>,
    /// `sub`, as [`ChannelClaims::sub`].
    pub sub: Option<String>,
    /// `scope` (space-separated in the token): the API scopes it grants.
    pub scope: Option<Vec<String>>,
    /// Until when it verifies (unix seconds): its `exp` plus the leeway plus 1 (jsonwebtoken
    /// compares whole seconds); `None` without `exp`.
    pub valid_until: Option<u64>,
}

/// A clear message for a refused token.
fn refusal(token: &str, kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired (`exp`)".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (`nbf`)".into(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::InvalidAlgorithm => "the token must be signed with HS256".into(),
        // jsonwebtoken reads an `exp` that is not a u64 (-1, 1e300, 2^64) as missing.
        ErrorKind::MissingRequiredClaim(c) => {
            match payload_json(token).and_then(|p| p.get(c).cloned()) {
                Some(v) if !v.is_null() => {
                    format!("the token's `{c}` claim must be a time (seconds, up to the year 9999)")
                }
                _ => format!("the token has no numeric `{c}` claim"),
            }
        }
        ErrorKind::InvalidAudience => "the token's `aud` claim is not accepted".into(),
        _ => match header_alg(token) {
            Some(alg) if alg != "HS256" => {
                format!("the token's algorithm `{alg}` is not accepted: HS256 only")
            }
            _ => "the token is malformed".into(),
        },
    }
}

/// A token's header as JSON, when it is readable.
fn header_json(token: &str) -> Option<Value> {
    segment_json(token.split('.').next()?)
}

/// A token's claims as JSON, when they are readable (for a message only).
fn payload_json(token: &str) -> Option<Value> {
    segment_json(token.split('.').nth(1)?)
}

fn segment_json(segment: &str) -> Option<Value> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Refuses a token whose header or claims name a member twice at their top level
/// (`{"channel": "a", "channel": "b"}`). A segment that is not a readable JSON object passes:
/// the decoding refuses it.
fn repeated_member(token: &str) -> Result<(), String> {
    // The segments as jsonwebtoken splits them: the claims are the one before the signature.
    let mut parts = token.rsplitn(3, '.').skip(1);
    let (claims, header) = (parts.next(), parts.next());
    for (segment, what) in [(header, "header names"), (claims, "claims name")] {
        let Some(bytes) = segment.and_then(|s| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .ok()
        }) else {
            continue;
        };
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        if let Ok(Some(name)) = serde::Deserializer::deserialize_map(&mut de, FirstRepeated) {
            let name: String = name.chars().filter(|c| !c.is_control()).take(40).collect();
            return Err(format!(
                "the token's {what} `{name}` twice: an ambiguous token is refused"
            ));
        }
    }
    Ok(())
}

/// Reads a JSON object to its end: the first member name it repeats, if any.
struct FirstRepeated;

impl<'de> serde::de::Visitor<'de> for FirstRepeated {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = std::collections::HashSet::new();
        let mut repeated = None;
        while let Some(name) = map.next_key::<String>()? {
            map.next_value::<serde::de::IgnoredAny>()?;
            if repeated.is_none() && !seen.insert(name.clone()) {
                repeated = Some(name);
            }
        }
        Ok(repeated)
    }
}

/// The `alg` of a token's header, when the header is readable JSON (for the message only).
fn header_alg(token: &str) -> Option<String> {
    let v = header_json(token)?;
    let alg = v.get("alg")?.as_str()?;
    Some(alg.chars().take(20).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "test-secret-test-secret-test-secret!";

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn mint(alg: Algorithm, claims: Value, secret: &str) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn accepts_superset_tokens_and_refuses_the_rest() {
        let v = Verifier::new(SECRET, Duration::from_secs(0), true);
        let exp = now() + 300;
        let ok = v
            .verify(&mint(
                Algorithm::HS256,
                json!({"channel": "c1", "sub": 7, "exp": exp}),
                SECRET,
            ))
            .unwrap();
        assert_eq!(ok.channel, "c1");
        assert_eq!(ok.sub.as_deref(), Some("7"));
        for sub in [json!(null), json!("guest")] {
            v.verify(&mint(
                Algorithm::HS256,
                json!({"channel": "c1", "sub": sub, "exp": exp}),
                SECRET,
            ))
            .unwrap();
        }
        v.verify(&mint(
            Algorithm::HS256,
            json!({"channel": "c1", "exp": exp}),
            SECRET,
        ))
        .unwrap();

        let refused = |t: &str, needle: &str| {
            let e = v.verify(t).unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
            assert!(!e.contains(SECRET));
        };
        refused(
            &mint(
                Algorithm::HS256,
                json!({"channel": "c1", "exp": now() - 100}),
                SECRET,
            ),
            "expired",
        );
        refused(
            &mint(
                Algorithm::HS256,
                json!({"channel": "c1", "exp": exp, "nbf": now() + 100}),
                SECRET,
            ),
            "nbf",
        );
        refused(
            &mint(Algorithm::HS256, json!({"exp": exp}), SECRET),
            "channel",
        );
        // A null channel is not "every channel" (a probe: a scoped token minted with
        // `"channel": None` cancelled another channel's job).
        for claims in [
            json!({"channel": null, "exp": exp}),
            json!({"channel": null, "scope": "jobs:read jobs:cancel", "exp": exp}),
        ] {
            refused(
                &mint(Algorithm::HS256, claims, SECRET),
                "`channel` claim is null",
            );
        }
        refused(
            &mint(Algorithm::HS256, json!({"channel": "c1"}), SECRET),
            "exp",
        );
        // An `exp` in milliseconds would never expire: refused, as past the year 9999.
        refused(
            &mint(
                Algorithm::HS256,
                json!({"channel": "c1", "exp": exp * 1000}),
                SECRET,
            ),
            "milliseconds",
        );
        v.verify(&mint(
            Algorithm::HS256,
            json!({"channel": "c1", "exp": MAX_EXP}),
            SECRET,
        ))
        .unwrap();
        refused(
            &mint(
                Algorithm::HS256,
                json!({"channel": "c1", "exp": exp}),
                "another-secret-another-secret-another",
            ),
            "signature",
        );
        refused(
            &mint(
                Algorithm::HS512,
                json!({"channel": "c1", "exp": exp}),
                SECRET,
            ),
            "HS256",
        );
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&json!({"channel": "c1", "exp": exp}))
        );
        refused(&none, "`none`");
        // The channel claim is a channel name, as a job's: a whole number is taken as its digits.
        let numbered = mint(Algorithm::HS256, json!({"channel": 42, "exp": exp}), SECRET);
        assert_eq!(v.verify(&numbered).unwrap().channel, "42");
        for channel in [
            json!(""),
            json!("two words"),
            json!("a/b"),
            json!("x".repeat(257)),
            json!(-1),
            json!(1.5),
            json!(["c1"]),
            json!(true),
        ] {
            refused(
                &mint(
                    Algorithm::HS256,
                    json!({"channel": channel, "exp": exp}),
                    SECRET,
                ),
                "`channel` must be 1-256 characters of ASCII letters, digits",
            );
        }
        refused("not a token", "malformed");
        refused("", "malformed");
    }

    #[test]
    fn exp_may_be_optional_but_is_checked_when_present() {
        let v = Verifier::new(SECRET, Duration::from_secs(0), false);
        let stock = mint(
            Algorithm::HS256,
            json!({"channel": "c1", "sub": null}),
            SECRET,
        );
        assert_eq!(v.verify(&stock).unwrap().channel, "c1");
        let e = Verifier::new(SECRET, Duration::from_secs(0), true)
            .verify(&stock)
            .unwrap_err();
        assert!(e.contains("exp"), "{e}");
        let old = mint(
            Algorithm::HS256,
            json!({"channel": "c1", "exp": now() - 100}),
            SECRET,
        );
        assert!(v.verify(&old).unwrap_err().contains("expired"));
    }

    #[test]
    fn an_exp_that_is_no_time_is_said_to_be_one() {
        let v = Verifier::new(SECRET, Duration::from_secs(0), true);
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        for exp in ["-1", "1e300", "18446744073709551616", "\"soon\"", "true"] {
            let claims = format!(r#"{{"channel":"c1","exp":{exp}}}"#);
            let head = b64(&json!({"alg": "HS256", "typ": "JWT"}));
            let msg = format!(
                "{head}.{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims)
            );
            let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &key, Algorithm::HS256).unwrap();
            let e = v.verify(&format!("{msg}.{sig}")).unwrap_err();
            assert!(
                e.contains("`exp` claim must be a time (seconds"),
                "exp {exp}: {e}"
            );
        }
        let none = mint(Algorithm::HS256, json!({"channel": "c1"}), SECRET);
        let e = v.verify(&none).unwrap_err();
        assert!(e.contains("no numeric `exp` claim"), "{e}");
    }

    #[test]
    fn crit_headers_and_non_numeric_nbf_are_refused() {
        let v = Verifier::new(SECRET, Duration::from_secs(0), true);
        let exp = now() + 300;
        let signed = |header: Value, claims: Value| {
            let msg = format!("{}.{}", b64(&header), b64(&claims));
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &key, Algorithm::HS256).unwrap();
            format!("{msg}.{sig}")
        };
        let claims = json!({"channel": "c1", "exp": exp});
        let plain = signed(json!({"alg": "HS256", "typ": "JWT"}), claims.clone());
        assert_eq!(v.verify(&plain).unwrap().channel, "c1");
        let crit = signed(
            json!({"alg": "HS256", "typ": "JWT", "crit": ["exp-ext"], "exp-ext": 1}),
            claims,
        );
        assert!(v.verify(&crit).unwrap_err().contains("crit"));
        // A header jsonwebtoken reads (it skips the field) and serde_json's Value does not.
        let head = r#"{"alg":"HS256","crit":["x"],"x":"\ud800"}"#;
        let head = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(head);
        let msg = format!("{head}.{}", b64(&json!({"channel": "c1", "exp": exp})));
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &key, Algorithm::HS256).unwrap();
        let e = v.verify(&format!("{msg}.{sig}")).unwrap_err();
        assert!(e.contains("its header"), "{e}");
        for nbf in [json!("2020-01-01"), json!(true), json!(1e20), json!(-5)] {
            let t = signed(
                json!({"alg": "HS256"}),
                json!({"channel": "c1", "exp": exp, "nbf": nbf}),
            );
            let e = v.verify(&t).unwrap_err();
            assert!(e.contains("`nbf`"), "{nbf}: {e}");
        }
        let later = mint(
            Algorithm::HS256,
            json!({"channel": "c1", "exp": exp, "nbf": now() + 200}),
            SECRET,
        );
        assert!(v.verify(&later).unwrap_err().contains("not valid yet"));
        let past = mint(
            Algorithm::HS256,
            json!({"channel": "c1", "exp": exp, "nbf": now() - 10}),
            SECRET,
        );
        assert!(v.verify(&past).is_ok());
    }

    #[test]
    fn a_member_named_twice_is_refused_in_the_claims_and_in_the_header() {
        let v = Verifier::new(SECRET, Duration::ZERO, true);
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let signed = |header: &str, claims: &str| {
            let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
            let message = format!("{}.{}", b(header), b(claims));
            let sig =
                jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
            format!("{message}.{sig}")
        };
        let exp = now() + 600;
        let header = r#"{"alg":"HS256","typ":"JWT"}"#;
        let once = format!(r#"{{"channel":"c1","exp":{exp},"nested":{{"a":1,"b":{{"a":2}}}}}}"#);
        assert_eq!(v.verify(&signed(header, &once)).unwrap().channel, "c1");
        for (header, claims, name) in [
            (
                header,
                format!(r#"{{"channel":"c2","exp":{exp},"channel":"c1"}}"#),
                "channel",
            ),
            // The same name however it is escaped.
            (
                header,
                format!(r#"{{"channel":"c2","exp":{exp},"chan\u006eel":"c1"}}"#),
                "channel",
            ),
            (
                header,
                format!(r#"{{"channel":"c1","exp":1,"exp":{exp}}}"#),
                "exp",
            ),
            (
                r#"{"alg":"HS256","typ":"JWT","typ":"x"}"#,
                once.clone(),
                "typ",
            ),
        ] {
            let e = v.verify(&signed(header, &claims)).unwrap_err();
            assert!(
                e.contains("twice") && e.contains(&format!("`{name}`")),
                "{claims}: {e}"
            );
        }
    }

    #[test]
    fn leeway_tolerates_small_skew() {
        let t = mint(
            Algorithm::HS256,
            json!({"channel": "c1", "exp": now() - 5}),
            SECRET,
        );
        assert!(Verifier::new(SECRET, Duration::from_secs(0), true)
            .verify(&t)
            .is_err());
        assert!(Verifier::new(SECRET, Duration::from_secs(30), true)
            .verify(&t)
            .is_ok());
    }
}
