//! [`Refusal`]: why the access rules turn a request away. Auth does not know HTTP answers: the
//! API maps each variant to its status and code in one place (`src/api/error.rs`).

use crate::store::StoreError;

/// A request refused by the access rules (or the store they consulted).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No credential, or a bad one (401 `unauthorized`, with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// A valid credential that does not grant this (403 `forbidden`).
    #[error("{0}")]
    Forbidden(String),
    /// A browser page of an origin not allowed opening an event stream (403 `cross_origin`):
    /// not in `auth.allowed_origins` with `[auth]`, else neither the server's own nor in
    /// `api.cors_origins`.
    #[error("{0}")]
    CrossOrigin(String),
    /// A credential in the query string (400 `token_in_query`): URLs are logged.
    #[error("{0}")]
    TokenInQuery(String),
    /// A query string on a route that reads none (400 `bad_query`).
    #[error("{0}")]
    StrayQuery(String),
    /// A credential header over [`super::MAX_CREDENTIAL_BYTES`] (431 `header_too_large`).
    #[error("{0}")]
    HeaderTooLarge(String),
    /// A route with no line in the access table (500 `route_not_in_access_table`).
    #[error("{0}")]
    NotInTable(String),
    /// A caller asked for on a route the guard did not run on (500 `no_access_decision`).
    #[error("{0}")]
    NoDecision(String),
    /// Not there, as far as this credential may know (404 `not_found`): a job of another channel
    /// asked for with a channel JWT, so that its id is not confirmed.
    #[error("{0}")]
    NotFound(String),
    /// The store could not say what a path names.
    #[error(transparent)]
    Store(#[from] StoreError),
}
