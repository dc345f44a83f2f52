//! The submit body: `POST /async/jobs` with any bytes as a JSON body, through the real router and
//! embedded store (`SubmitBody`, `build_job`: names, args, `timeout` as seconds or humantime text,
//! `max_attempts`, `backoff`, `run_at`, idempotency keys, channels).
//!
//! Never a panic, never a 5xx, every refusal in the API's error shape; every accepted job can be
//! read back, listed, run, failed, retried and cancelled ([`runyard_fuzz::check_submit`]).
#![no_main]

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use runyard_fuzz::{check_submit, harness};

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let (status, body) = h.send(
        Request::post("/async/jobs")
            .header("content-type", "application/json")
            .body(Body::from(data.to_vec()))
            .expect("request"),
    );
    check_submit(status, &body);
});
