//! The multipart submit: `POST /async/jobs` as `multipart/form-data` (a `job` part with the job
//! JSON, file parts named by property), through the real router (axum's `Multipart`, i.e. multer,
//! with the server's limits), the blob store and the embedded store.
//!
//! Input: the first line is the boundary (`Content-Type: multipart/form-data; boundary=<line>`),
//! the rest is the body. Never a panic, never a 5xx, every refusal in the API's error shape; an
//! accepted job carries the files it was sent with, and lives like any other
//! ([`runyard_fuzz::check_submit`]).
#![no_main]

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use runyard_fuzz::{check_submit, harness};

fuzz_target!(|data: &[u8]| {
    let (boundary, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut ctype = b"multipart/form-data; boundary=".to_vec();
    ctype.extend_from_slice(boundary);
    let Ok(ctype) = axum::http::HeaderValue::from_bytes(&ctype) else {
        return;
    };
    let h = harness();
    let (status, answer) = h.send(
        Request::post("/async/jobs")
            .header("content-type", ctype)
            .body(Body::from(body.to_vec()))
            .expect("request"),
    );
    check_submit(status, &answer);
    if status.as_u16() == 202 {
        let id = answer["job_id"].as_str().expect("job id");
        let (_, job) = h.send(
            Request::get(format!("/async/jobs/{id}"))
                .body(Body::empty())
                .expect("request"),
        );
        // Files are attached as sent: every file has a content hash and a size.
        if let Some(files) = job["files"].as_object() {
            for f in files
                .values()
                .flat_map(|l| l.as_array().into_iter().flatten())
            {
                assert!(f["hash"].as_str().is_some_and(|h| h.len() == 32), "{job}");
                assert!(f["size"].as_u64().is_some(), "{job}");
            }
        }
    }
});
