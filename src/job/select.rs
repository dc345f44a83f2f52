//! Why no runner takes a job: the model's word for a refused submission, so that the API (which
//! answers it) and the runner set (which decides it) both depend on the model, not on each other.

/// Why no runner was chosen.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// No runner's globs match.
    #[error("no runner handles job type `{0}`")]
    NoRunner(String),
    /// The named runner does not exist.
    #[error("no runner named `{0}`")]
    UnknownRunner(String),
    /// The named runner does not claim the type.
    #[error("runner `{0}` does not handle job type `{1}`")]
    NotClaimed(String, String),
    /// The runner refuses the job.
    #[error("{0}")]
    Refused(String),
    /// The runner refuses the request's own values (args too large for it): the message names
    /// the field.
    #[error("{0}")]
    InvalidRequest(String),
}
