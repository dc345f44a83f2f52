//! A duration in a request body: a number of seconds or a humantime string (`"10m"`), 1 ms to
//! 30 days, refused in plain words.

use std::time::Duration;

use serde::Deserialize;

use super::error::{ApiError, ApiResult};

/// A duration given as a string (`"10m"`) or a number of seconds.
#[derive(Debug, Clone, utoipa::ToSchema)]
#[serde(untagged)] // read by utoipa only (the schema: one of the two)
pub enum DurationSpec {
    /// Seconds.
    Seconds(f64),
    /// Humantime text.
    Text(String),
}

/// By hand rather than `#[serde(untagged)]`, whose refusal names the Rust type ("data did not
/// match any variant of untagged enum DurationSpec").
impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DurationSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of seconds or a duration like \"10m\"")
            }
            fn visit_i64<E>(self, v: i64) -> Result<DurationSpec, E> {
                Ok(DurationSpec::Seconds(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<DurationSpec, E> {
                Ok(DurationSpec::Seconds(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<DurationSpec, E> {
                Ok(DurationSpec::Seconds(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<DurationSpec, E> {
                Ok(DurationSpec::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The longest duration a client may give (30 days), in seconds.
const MAX_DURATION_SECS: f64 = 30.0 * 24.0 * 3600.0;

impl DurationSpec {
    pub(super) fn to_duration(&self, field: &str) -> ApiResult<Duration> {
        let d = match self {
            // Range-checked before the conversion, which panics on values past u64 seconds.
            DurationSpec::Seconds(s) if s.is_finite() && *s > 0.0 && *s <= MAX_DURATION_SECS => {
                Duration::try_from_secs_f64(*s).map_err(|e| {
                    ApiError::unprocessable("invalid_request", format!("`{field}`: {e}"))
                })?
            }
            DurationSpec::Text(t) => humantime::parse_duration(t).map_err(|e| {
                ApiError::unprocessable(
                    "invalid_request",
                    format!("`{field}`: `{t}` is not a duration: {e}"),
                )
            })?,
            _ => {
                return Err(ApiError::unprocessable(
                    "invalid_request",
                    format!(
                        "`{field}` must be a positive number of seconds (at most 30 days) or a duration like \"10m\""
                    ),
                ))
            }
        };
        if d < Duration::from_millis(1) || d > Duration::from_secs_f64(MAX_DURATION_SECS) {
            return Err(ApiError::unprocessable(
                "invalid_request",
                format!("`{field}` must be between 1ms and 30 days"),
            ));
        }
        Ok(d)
    }
}
