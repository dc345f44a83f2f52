//! Request extraction with errors in the API's shape: malformed JSON is a 400, a body that does not
//! fit the schema a 422, a body over the limit a 413, a bad id a 400.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::RequestExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use uuid::Uuid;

use super::error::ApiError;

/// A JSON body.
pub struct ApiJson<T>(pub T);

/// Reads the whole body under the route's limit (`DefaultBodyLimit`), mapping the limit to 413
/// and a stall to 408 ([`super::error::body_error`]). A body whose `Content-Length` is over the
/// limit is refused before any of it is read: a client waiting on `Expect: 100-continue` is not
/// asked to send it.
///
/// A body that comes in more than one piece is copied into one buffer as it comes, so it holds
/// its own size: kept as they come (axum's `Bytes` extractor), each piece keeps alive the read
/// buffer it was cut from, about 4 KiB per TCP segment whatever its size, and a client trickling
/// a 1 MiB body a byte at a time made the server hold 4 KiB per byte (a probe: 90 KB of bodies
/// over 300 connections held 382 MB). A body of one piece is kept as it is (no copy).
pub async fn body_bytes<S: Send + Sync>(req: Request, _state: &S) -> Result<Bytes, ApiError> {
    let req = req.with_limited_body();
    // Under a limit the body's size hint is at most the limit; a declared length over it shows.
    if let Some(max) = http_body::Body::size_hint(req.body()).upper() {
        refuse_declared_over(req.headers(), usize::try_from(max).unwrap_or(usize::MAX))?;
    }
    read_body(req.into_body()).await
}

/// Reads `body` to its end ([`body_bytes`]: a body of many pieces copied into one buffer as they
/// come, one of one piece kept as it is), errors as [`super::error::body_error`] says. Limited by
/// the caller (`with_limited_body`, `http_body_util::Limited`).
pub async fn read_body<B>(mut body: B) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let mut first: Option<Bytes> = None;
    let mut copied: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| super::error::body_error(&*e.into()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if data.is_empty() {
            continue;
        }
        match first.take() {
            None if copied.is_empty() => first = Some(data),
            // Grown as the bytes come, not by the declared length: a client that declares
            // 1 MiB and sends a byte costs a byte.
            kept => {
                if let Some(kept) = kept {
                    copied.extend_from_slice(&kept);
                }
                copied.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(copied)))
}

/// A count in a query (`limit`, `wait_ms`), read saturating: the routes clamp it to their
/// range, so a number past what the type holds is its largest value, not a 400. Anything but
/// digits is refused (400 `bad_query`, naming the text).
pub fn query_count<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr + Saturated,
{
    let s = String::deserialize(d)?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        let shown: String = s.chars().take(40).collect();
        return Err(serde::de::Error::custom(format!(
            "expected a whole number, got `{shown}`"
        )));
    }
    Ok(Some(s.parse().unwrap_or(T::MAX)))
}

/// The largest value of a count type ([`query_count`]).
pub trait Saturated {
    /// Its largest value.
    const MAX: Self;
}

impl Saturated for usize {
    const MAX: Self = usize::MAX;
}

impl Saturated for u64 {
    const MAX: Self = u64::MAX;
}

/// A whole body read by [`body_bytes`].
pub struct BodyBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for BodyBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        body_bytes(req, state).await.map(BodyBytes)
    }
}

/// 413 at once for a body whose `Content-Length` is over `max`, rather than after reading it.
pub fn refuse_declared_over(headers: &axum::http::HeaderMap, max: usize) -> Result<(), ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max as u64 => Err(ApiError::too_large(format!(
            "request body is larger than the limit of {max} bytes (`Content-Length: {n}`)"
        ))),
        _ => Ok(()),
    }
}

/// Parses JSON bytes with the API's error mapping. Every body of the API is a JSON object: an
/// array would otherwise fill a struct by position. `T` may borrow from `bytes` (a batch's items
/// as `&RawValue`).
pub fn parse_json<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ApiError> {
    let v = parse_envelope(bytes)?;
    if let Some(n) = integer_past_64_bits(bytes) {
        let n: String = n.chars().take(40).collect();
        return Err(ApiError::invalid_request(format!(
            "the integer {n} does not fit in 64 bits: it would be stored rounded (send it as a \
             string)"
        )));
    }
    Ok(v)
}

/// [`parse_json`] without its check of integers past 64 bits: for a body whose parts are each
/// parsed again with it (a batch's items, `&RawValue`: one such integer refuses its item, not
/// the batch).
pub fn parse_envelope<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => ApiError::invalid_request("the body must be a JSON object"),
                Err(e) => ApiError::malformed_json(e),
            },
        );
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = serde_path_to_error_free(&mut de)?;
    de.end().map_err(ApiError::malformed_json)?;
    Ok(v)
}

/// The first integer of valid JSON `bytes` out of the range of `i64` and `u64`: serde_json
/// reads one as the nearest `f64` (18446744073709551617 becomes 18446744073709551616), so a
/// job's args, a result or a signal would be stored other than sent, and two submits of one
/// idempotency key differing only there would look alike. Fractions and exponents are floats
/// by their form and are left alone.
pub fn integer_past_64_bits(bytes: &[u8]) -> Option<&str> {
    const U64_MAX: &[u8] = b"18446744073709551615";
    const I64_MIN_ABS: &[u8] = b"9223372036854775808";
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if b != b'-' && !b.is_ascii_digit() {
            i += 1;
            continue;
        }
        // Outside strings, digits are numbers only (valid JSON): the integer part, then maybe a
        // fraction or an exponent.
        let start = i;
        let negative = b == b'-';
        i += usize::from(negative);
        let digits = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let int = &bytes[digits..i];
        let float = matches!(bytes.get(i), Some(b'.' | b'e' | b'E'));
        while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
        {
            i += 1;
        }
        let max = if negative { I64_MIN_ABS } else { U64_MAX };
        // No leading zeros in JSON: more digits is larger, the same number of digits compares
        // as text.
        if !float && (int.len(), int) > (max.len(), max) {
            return std::str::from_utf8(&bytes[start..i]).ok();
        }
    }
    None
}

fn serde_path_to_error_free<'de, T: Deserialize<'de>>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(de).map_err(|e| {
        use serde_json::error::Category;
        let path = e.path().to_string();
        let e = e.into_inner();
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::malformed_json(e),
            // Name the field (`backoff.max_ms`) unless the error is about the whole body.
            Category::Data if path.is_empty() || path == "." => {
                ApiError::invalid_request(e.to_string())
            }
            Category::Data => ApiError::invalid_request(format!("`{path}`: {e}")),
        }
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        super::edge::require_json(req.headers())?;
        let bytes = body_bytes(req, state).await?;
        if bytes.is_empty() {
            return Err(ApiError::json_required());
        }
        parse_json(&bytes).map(ApiJson)
    }
}

/// The body of a route that reads none (cancel, retry, a schedule's pause, resume, trigger,
/// delete): none, or an empty JSON object or `null` (what clients send for "nothing"). Anything
/// else is `422 invalid_request`: `{"args": ...}` on a trigger, say, would otherwise look applied.
pub struct NoBody;

/// The most a body-less route reads before it refuses.
const NO_BODY_READ: usize = 1024;

impl<S: Send + Sync> FromRequest<S> for NoBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let what = format!("`{} {}`", req.method(), req.uri().path());
        let refused = |got: &str| {
            ApiError::invalid_request(format!(
                "{what} reads no body (got {got}): it would be ignored; send none, or `{{}}`"
            ))
        };
        let body = http_body_util::Limited::new(req.into_body(), NO_BODY_READ);
        let bytes = read_body(body).await.map_err(|e| match e {
            // Over the bound: refused as any body is, not as too large for the route.
            over if over.code == "too_large" => refused(&format!("more than {NO_BODY_READ} bytes")),
            other => other,
        })?;
        let text = std::str::from_utf8(&bytes).unwrap_or("?").trim();
        let nothing = text.is_empty()
            || text == "null"
            || (text.starts_with('{')
                && text.ends_with('}')
                && text[1..text.len() - 1].trim().is_empty());
        if nothing {
            Ok(NoBody)
        } else {
            Err(refused(&format!("{} bytes", bytes.len())))
        }
    }
}

/// A job id from the path, validated as a UUID.
pub struct JobIdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for JobIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("bad_id", e.body_text()))?;
        parse_job_id(&raw).map(JobIdPath)
    }
}

/// Parses a job id.
pub fn parse_job_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::bad_request("bad_id", format!("`{raw}` is not a valid job id (a UUID)"))
    })
}

/// A JSON value in which no object gives a key twice: serde_json's `Value` keeps the last one
/// silently, where a body's own fields are refused when repeated (`wait_for: [{"key": "a",
/// "key": "b"}]` would wait on `b` alone).
struct Strict(serde_json::Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(serde_json::Value::Null))
    }
    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict(serde_json::Value::Null))
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Strict, D::Error> {
        Strict::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Strict(out.into()))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.contains_key(&k) {
                return Err(serde::de::Error::custom(format_args!(
                    "`{k}` is given twice in one object"
                )));
            }
            out.insert(k, v);
        }
        Ok(Strict(out.into()))
    }
}

/// For `#[serde(default, deserialize_with = "strict")]`: an optional JSON value in which no
/// object repeats a key (`null` is absent).
pub fn strict<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    let Strict(v) = Strict::deserialize(d)?;
    Ok((!v.is_null()).then_some(v))
}

/// For `#[serde(deserialize_with = "strict_value")]`: a required JSON value in which no object
/// repeats a key (a schedule's `job`, a submit body read later).
pub fn strict_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<serde_json::Value, D::Error> {
    Strict::deserialize(d).map(|Strict(v)| v)
}

/// For `#[serde(default, deserialize_with = "object")]`: an optional struct given as a JSON
/// object (`null` is absent). serde's derive also takes an array, filling the fields by
/// position: `"backoff": [5, 10, 2.0, false]` was stored as if named. The object's fields are
/// read as the derive reads them (an error names `backoff.max_ms`).
pub fn object<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_unit<E>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::integer_past_64_bits as past;

    #[test]
    fn integers_past_64_bits_are_found_outside_strings_only() {
        for ok in [
            r#"{"n": 18446744073709551615}"#,
            r#"{"n": -9223372036854775808}"#,
            r#"{"n": 0, "m": [1, -1, 12.5e300, 1e5, 99999999999999999999999.5]}"#,
            r#"{"s": "18446744073709551616", "t": "\"99999999999999999999\""}"#,
            r#"{"e": 123456789012345678901234567890e-10}"#,
        ] {
            assert_eq!(past(ok.as_bytes()), None, "{ok}");
        }
        for (bad, n) in [
            (r#"{"n": 18446744073709551616}"#, "18446744073709551616"),
            (r#"{"n": -9223372036854775809}"#, "-9223372036854775809"),
            (
                r#"{"a": [1, {"b": 100000000000000000000}]}"#,
                "100000000000000000000",
            ),
            (
                r#"{"s": "x\\", "n": 18446744073709551617}"#,
                "18446744073709551617",
            ),
        ] {
            assert_eq!(past(bad.as_bytes()), Some(n), "{bad}");
        }
    }
}
