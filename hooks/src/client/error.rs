//! The errors of the [`JobClient`](super::JobClient) and how an HTTP answer becomes one.

use std::path::PathBuf;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::MAX_ERROR_EXCERPT;
use crate::sign::SignError;
use crate::wire::ErrorBody;

/// Errors of the [`JobClient`]. None of them contains the secret or a signature.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A required environment variable is absent or empty.
    #[error(
        "environment variable {0} is not set (JOB_ID, JOB_SECRET_KEY and JOB_HOOK are required)"
    )]
    MissingEnv(&'static str),
    /// `JOB_HOOK` is not a usable http(s) base URL.
    #[error("invalid JOB_HOOK: {0}")]
    InvalidHook(String),
    /// A URL returned by the server cannot be used.
    #[error("invalid {what} URL from the server: {reason}")]
    InvalidUrl {
        /// Which URL (`download Location`, `upload`).
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// An argument cannot be sent (non-finite progress, job id not a header value...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The server answered with a non-2xx status.
    #[error("{context}: HTTP {status}{}: {message}", code_suffix(code))]
    Http {
        /// The request, e.g. `POST /async/status` (never a query string: it may hold a token).
        context: String,
        /// The HTTP status.
        status: u16,
        /// `error.code` of the server's `{"error": {"code", "message"}}` body, when present.
        code: Option<String>,
        /// `error.message` of that body, or an excerpt of the body, or the status reason.
        message: String,
    },
    /// The request could not be sent or its answer not received.
    #[error("{context}: {source}")]
    Transport {
        /// The request, e.g. `GET /async/job`.
        context: String,
        /// The cause (its URL removed).
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Setup(#[source] reqwest::Error),
    /// The server's answer is not the expected JSON.
    #[error("{context}: unexpected answer: {source}")]
    Json {
        /// The request.
        context: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The server's answer is well-formed JSON but unusable.
    #[error("{context}: unexpected answer: {reason}")]
    BadResponse {
        /// The request.
        context: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A downloaded file's md5 does not match the announced hash (nothing was kept).
    #[error("downloaded content has md5 {actual}, expected {expected}")]
    HashMismatch {
        /// The hash announced in `Map.hash`.
        expected: String,
        /// The md5 of the bytes received.
        actual: String,
    },
    /// Log lines were not all stored: reports failed, or the rest was not tried after one
    /// the hook refused for good (`409`: the job is terminal...) or after failures in a row.
    #[error("{lost} log line(s) not stored: {source}")]
    LinesLost {
        /// How many lines (entries as sent: a long line's pieces count one each).
        lost: usize,
        /// The last failure.
        #[source]
        source: Box<ClientError>,
    },
}

fn code_suffix(code: &Option<String>) -> String {
    match code {
        Some(code) => format!(" ({code})"),
        None => String::new(),
    }
}

impl From<SignError> for ClientError {
    fn from(err: SignError) -> Self {
        ClientError::InvalidArgument(err.to_string())
    }
}

impl ClientError {
    /// The HTTP status when the server refused the request.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            ClientError::LinesLost { source, .. } => source.status(),
            _ => None,
        }
    }
}

/// Builds the error for a non-2xx answer from its body.
pub(crate) fn http_error(context: String, status: StatusCode, body: &[u8]) -> ClientError {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => (Some(parsed.error.code), parsed.error.message),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let message = if text.is_empty() {
                status.canonical_reason().unwrap_or("no message").to_owned()
            } else {
                text.chars().take(MAX_ERROR_EXCERPT).collect()
            };
            (None, message)
        }
    };
    ClientError::Http {
        context,
        status: status.as_u16(),
        code,
        message,
    }
}

pub(super) fn transport(context: &str, err: reqwest::Error) -> ClientError {
    ClientError::Transport {
        context: context.to_owned(),
        source: err.without_url(),
    }
}

pub(super) fn parse_json<T: DeserializeOwned>(
    context: &str,
    bytes: &[u8],
) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|source| ClientError::Json {
        context: context.to_owned(),
        source,
    })
}
