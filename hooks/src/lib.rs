//! # runyard-hooks
//!
//! The job hook protocol of runyard: how a running job authenticates to the server and what it
//! sends. Both sides live here so they cannot drift apart:
//!
//! - [`secret`]: the per-attempt job secret ([`Secret`], [`derive_job_secret`]).
//! - [`sign`]: v1 (webda-compatible) and v2 (request-bound, with an optional nonce) signatures and
//!   the `X-Job-*` headers.
//! - [`verify`]: the server-side check ([`HookHeaders`], [`Verifier`]): time window, constant-time
//!   comparison, replay refusal.
//! - [`replay`]: the replay memory ([`ReplayStore`], in-memory [`ReplayGuard`]).
//! - [`wire`]: the JSON bodies of the hook endpoints and the upload challenge.
//! - [`client`]: [`JobClient`], the async Rust client a job uses.
//! - [`vocab`]: the shared vocabulary of runners, job model and stores ([`LogStream`], [`RunKind`],
//!   [`RunHandle`], [`MAX_LINE_BYTES`]), on this bottom floor so that arrows point down only.
//!
//! The protocol itself, for clients in other languages, is described in `docs/hooks.md`.

#![warn(missing_docs)]
// Issue 8's limit: no function over 80 lines (clippy.toml's threshold) outside tests.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod client;
pub mod error_text;
pub mod replay;
pub mod secret;
pub mod sign;
pub mod verify;
pub mod vocab;
pub mod wire;

pub use client::{ClientError, JobClient, UploadOutcome};
pub use replay::{ReplayError, ReplayGuard, ReplayStore};
pub use secret::{deployment_id, derive_job_secret, Secret};
pub use sign::{
    hmac_sha256_parts, now_ms, random_nonce, sign_v1, sign_v2, sign_v2_with_nonce, signed_headers,
    signed_headers_now, signed_headers_with_nonce, valid_nonce, SigVersion,
};
pub use verify::{HookHeaders, VerifiedSignature, Verifier, VerifyError};
pub use vocab::{LogStream, RunHandle, RunKind, UnknownLogStream, MAX_LINE_BYTES};
pub use wire::{
    upload_challenge, DownloadResponse, FileMeta, JobSelf, StatusReport, UploadDigest,
    UploadHasher, UploadRequest, UploadResponse,
};
