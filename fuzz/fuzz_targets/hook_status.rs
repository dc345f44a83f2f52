//! Hook bodies: `POST /async/status` with any body, correctly signed for a running job, through
//! the real router and embedded store (`runyard::api::hooks::status`, `runyard_hooks::wire::
//! StatusReport`, `Command::Hook`).
//!
//! Input: byte 0 chooses the signature version (bit 0: v1) and whether a `Content-Type` is sent
//! (bit 1: none); the rest is the body. Never a panic, never a 5xx; every refusal is the API's
//! error shape; an accepted report leaves the stored job as the answer says.
#![no_main]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use runyard_fuzz::{check_error_shape, harness};
use runyard_hooks::{signed_headers, SigVersion};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let h = harness();
    let (id, secret) = h.active_job();
    let version = if flags & 1 == 1 {
        SigVersion::V1
    } else {
        SigVersion::V2
    };
    // A unique query makes every v2 signature unique, and a time stepping forward through the
    // window every v1 one (almost always): the replay memory does not refuse fuzz inputs. Never
    // back: a request signed before the server started is refused (503 on the embedded store).
    let n = h.next();
    let path = format!("/async/status?n={n}");
    let time = runyard_hooks::now_ms() + (n % 200_000) as i64;
    let headers = signed_headers(&id.to_string(), &secret, version, "POST", &path, body, time)
        .expect("headers");
    let mut req = Request::post(path.as_str());
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    if flags & 2 == 0 {
        req = req.header("content-type", "application/json");
    }
    let (status, answer) = h.send(req.body(Body::from(body.to_vec())).expect("request"));
    assert!(!status.is_server_error(), "{status}: {answer}");
    if status == StatusCode::OK {
        let job = h
            .block_on(h.server.app.store.get(id))
            .expect("store")
            .expect("job");
        assert_eq!(answer["status"], serde_json::json!(job.status), "{answer}");
        assert!(
            (0.0..=1.0).contains(&job.progress),
            "progress {}",
            job.progress
        );
    } else {
        check_error_shape(status, &answer);
        // Replays are avoided above (a v1 one remains possible, rarely); anything else a signed
        // request gets is about its body or the job's state.
        if status == StatusCode::UNAUTHORIZED {
            assert!(
                version == SigVersion::V1 && answer["error"]["code"] == "replay",
                "{answer}"
            );
        }
    }
});
