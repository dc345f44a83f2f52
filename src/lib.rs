//! runyard: an async job service.
//!
//! # Layout
//! - [`job`]: the job model, its statuses and the one function that changes a job
//!   ([`job::apply`]).
//! - [`store`]: storage traits (jobs, queue, logs, events), the embedded SQLite backend and the
//!   Redis backend for scale-out (`store/redis/`, its atomic operations in `store/redis/lua/`).
//! - [`worker`]: claims jobs with leases and runs them on their runner; the reaper.
//! - [`scheduler`]: delayed jobs and retention.
//! - [`schedule`]: cron schedules (fire times, the fire loop; exactly once across processes).
//! - [`runner_set`]: the configured runners and the choice of a runner for a job type.
//! - [`api`]: the HTTP API (axum); errors map to status codes in `api/error.rs`.
//! - [`connections`]: the HTTP accept loop (connection cap, header/idle/request timeouts);
//!   [`limits`]: the open-file limit.
//! - [`server`]: assembles everything; [`server::ServerBuilder`] is the embedding API.
//! - [`auth`]: JWT channel tokens and the `Origin` check of the event transports.
//! - [`config`]: `runyard.toml`, `RUNYARD_*`, flags.
//! - [`security`]: the master key in memory, environment scrubbing, process hardening, private
//!   data directory (docs/security.md).
//! - [`notify`]: signed webhooks out (stored deliveries, the delivery loop, address checks).
//! - [`cli`]: the `runyard` command line, including `bench`.
//!
//! The runners themselves live in the `runyard-runners` crate, the hook protocol in
//! `runyard-hooks`.

// Issue 8's limit: no function over 80 lines (clippy.toml's threshold) outside tests.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connections;
pub mod dashboard;
pub mod demo;
pub mod events;
pub mod files;
pub mod job;
pub mod limits;
pub mod logging;
pub mod master_key;
pub mod metrics;
pub mod notify;
pub mod outcomes;
pub mod runner_set;
pub mod schedule;
pub mod scheduler;
pub mod security;
pub mod server;
pub mod startup;
pub mod store;
pub mod waiting;
pub mod worker;

pub use runyard_runners::service::{ServiceContext, ServiceRegistry, ServiceResult};
