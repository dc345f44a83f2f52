//! The client commands' exit codes (docs/cli.md): what a script can tell apart without reading
//! the message.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success (with `--wait` / `--follow`: the job ended `SUCCESS`) |
//! | 1 | the job did not succeed (`ERROR`, `TIMEOUT`, `CANCELLED`), or another failure |
//! | 2 | usage: a bad flag or argument (clap's own code), a bad `--args` JSON, an unreadable file |
//! | 3 | the server is unreachable or unavailable (no answer, a timeout, a 5xx answer, a redirect, an answer that is not runyard's; a request that changes something sent and not answered: it may have been done) |
//! | 4 | the server refused the request (a 4xx answer: unknown job or type, bad field, no token) |

use std::process::ExitCode;

/// Exit code: success.
pub const SUCCESS: u8 = 0;
/// Exit code: the job did not succeed (or an unclassified failure).
pub const NOT_SUCCESSFUL: u8 = 1;
/// Exit code: usage error.
pub const USAGE: u8 = 2;
/// Exit code: the server is unreachable or unavailable.
pub const UNREACHABLE: u8 = 3;
/// Exit code: the server refused the request (4xx).
pub const REFUSED: u8 = 4;

/// A failure of a client command that decides its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A bad argument the command itself found (clap's own errors exit 2 before this).
    #[error("{0}")]
    Usage(String),
    /// No answer from the server.
    #[error("cannot reach the server at {url}: {detail}")]
    Unreachable {
        /// The server's base URL.
        url: String,
        /// What went wrong (connection refused, timeout, ...).
        detail: String,
    },
    /// A request that changes something was sent and got no answer (a timeout, a connection
    /// closed after the request went out): it may have been done. Not "cannot reach": that
    /// invites a blind retry, and a second job from a submit (probe s54b F3).
    #[error("the request was sent to {url} and got no answer (it may have been done): {detail}")]
    NotConfirmed {
        /// The server's base URL.
        url: String,
        /// What went wrong (timeout, connection closed, ...).
        detail: String,
    },
    /// A 4xx answer.
    #[error("{message} ({code}, HTTP {status})")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// `error.code` of the answer.
        code: String,
        /// `error.message` of the answer.
        message: String,
    },
    /// A 5xx answer: the server is there but cannot serve (store down, overloaded, a bug).
    #[error("the server failed: {message} ({code}, HTTP {status})")]
    Unavailable {
        /// The HTTP status.
        status: u16,
        /// `error.code` of the answer.
        code: String,
        /// `error.message` of the answer.
        message: String,
    },
}

impl Failure {
    /// A usage error with this message.
    pub fn usage(msg: impl Into<String>) -> anyhow::Error {
        Failure::Usage(msg.into()).into()
    }

    /// This failure's exit code.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) => USAGE,
            Failure::Unreachable { .. }
            | Failure::NotConfirmed { .. }
            | Failure::Unavailable { .. } => UNREACHABLE,
            Failure::Refused { .. } => REFUSED,
        }
    }
}

/// The exit code of a command that failed with `e`: the `Failure` in its chain decides, else 1.
pub fn code_of(e: &anyhow::Error) -> ExitCode {
    ExitCode::from(
        e.chain()
            .find_map(|c| c.downcast_ref::<Failure>())
            .map(Failure::code)
            .unwrap_or(NOT_SUCCESSFUL),
    )
}

/// The exit code for a job that ended with `status`: 0 for `SUCCESS`, 1 otherwise.
pub fn of_status(status: &str) -> ExitCode {
    ExitCode::from(if status == "SUCCESS" {
        SUCCESS
    } else {
        NOT_SUCCESSFUL
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_in_the_chain_decides_the_code() {
        let refused: anyhow::Error = Failure::Refused {
            status: 404,
            code: "not_found".into(),
            message: "no job".into(),
        }
        .into();
        assert_eq!(code_of(&refused), ExitCode::from(REFUSED));
        let wrapped = anyhow::Error::from(Failure::Unreachable {
            url: "http://x".into(),
            detail: "refused".into(),
        })
        .context("reading the job");
        assert_eq!(code_of(&wrapped), ExitCode::from(UNREACHABLE));
        assert_eq!(code_of(&Failure::usage("bad")), ExitCode::from(USAGE));
        assert_eq!(code_of(&anyhow::anyhow!("other")), ExitCode::from(1));
    }
}
