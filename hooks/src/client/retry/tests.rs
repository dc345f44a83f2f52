//! The report window against a hook on a real port: one that refuses connections for a while
//! (a restarted API node), answers "not now", refuses for good, or takes a report and hangs up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::secret::Secret;
use crate::UploadOutcome;

/// What the fake hook does with the `i`-th request: answer with a status and body, or close the
/// connection without an answer (`None`).
trait Plan: Fn(usize) -> Option<(u16, &'static str)> + Send + 'static {}
impl<F: Fn(usize) -> Option<(u16, &'static str)> + Send + 'static> Plan for F {}

/// A request the fake hook got: its `X-Job-Hash` and body.
type Got = Arc<Mutex<Vec<(String, Value)>>>;

/// Reads one request (head and body) from `conn`; None when it closed first.
async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = conn.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                .unwrap_or_default()
        };
        let len: usize = header("content-length:").parse().unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Some((header("x-job-hash:"), buf[end + 4..end + 4 + len].to_vec()));
        }
    }
}

/// Serves `listener` with `plan`, keeping every request in `got`.
fn serve(listener: TcpListener, plan: impl Plan, got: Got) {
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let Some((hash, body)) = read_request(&mut conn).await else {
                continue;
            };
            let i = {
                let mut g = got.lock().unwrap();
                g.push((hash, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                g.len() - 1
            };
            let Some((status, body)) = plan(i) else {
                continue; // hang up: no answer
            };
            let reply = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
}

/// A fake hook answering with `plan` from now on; its hook URL and what it got.
async fn fake_hook(plan: impl Plan) -> (String, Got) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/async", listener.local_addr().unwrap());
    let got = Got::default();
    serve(listener, plan, got.clone());
    (hook, got)
}

fn client(hook: &str) -> JobClient {
    JobClient::new("j1", Secret::from_string("k".into()), hook).unwrap()
}

const TAKEN: Option<(u16, &str)> = Some((200, r#"{"status":"SUCCESS"}"#));

/// The probe's case: the API node `JOB_HOOK` names restarts (connections refused for 3 s) just
/// as the job reports its result. Before the window, the report failed at once (connection
/// refused) and the finished job's result was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_reported_while_the_hook_restarts_lands() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed again: connections are refused
    let got = Got::default();
    let back = got.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        serve(listener, |_| TAKEN, back);
    });
    let c = client(&format!("http://127.0.0.1:{port}/async"));
    assert_eq!(c.report_window(), DEFAULT_REPORT_WINDOW);
    let answer = c.success(Some(json!({"n": 1}))).await.expect("reported");
    assert_eq!(answer["status"], "SUCCESS");
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, json!({"status": "SUCCESS", "results": {"n": 1}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_now_answers_are_tried_again_and_refusals_are_final() {
    for status in [408, 429, 500, 503] {
        let (hook, got) = fake_hook(move |i| if i < 2 { Some((status, "")) } else { TAKEN }).await;
        client(&hook)
            .success(None)
            .await
            .expect("taken on the third try");
        assert_eq!(got.lock().unwrap().len(), 3, "{status}");
    }
    for status in [400u16, 401, 403, 404, 409, 413, 422] {
        let (hook, got) = fake_hook(move |_| Some((status, ""))).await;
        let e = client(&hook).error("boom").await.expect_err("refused");
        assert_eq!(e.status(), Some(status));
        assert_eq!(got.lock().unwrap().len(), 1, "{status}: not tried again");
    }
}

/// A report taken, its answer lost: the retry sends the very same signed request, the hook
/// refuses it as a replay, and the report counts as taken (not sent twice, no error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_whose_answer_was_lost_is_not_taken_twice() {
    const REPLAY: &str = r#"{"error":{"code":"replay","message":"replayed request"}}"#;
    let (hook, got) = fake_hook(|i| if i == 0 { None } else { Some((401, REPLAY)) }).await;
    let answer = client(&hook).success(None).await.expect("taken");
    assert_eq!(answer, Value::Null);
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, got[1].0, "the same signature");
    }
    // runyard's own 503 took nothing and spent the signature: signed afresh.
    const UNAVAILABLE: &str = r#"{"error":{"code":"unavailable","message":"store"}}"#;
    let (hook, got) = fake_hook(|i| {
        if i == 0 {
            Some((503, UNAVAILABLE))
        } else {
            TAKEN
        }
    })
    .await;
    client(&hook).running().await.expect("taken");
    let got = got.lock().unwrap();
    assert_ne!(got[0].0, got[1].0, "signed again");
}

/// A report taken, its answer lost, and its re-send refused `503 replay_unavailable` (the hook's
/// replay memory was down: it could not tell whether the first send was taken). Signed afresh,
/// the report would be taken twice once the store is back (its log lines stored twice): the very
/// same request is sent again, and the hook's `401 replay` then says it was taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_refused_replay_unavailable_is_sent_again_as_it_was() {
    const REPLAY: &str = r#"{"error":{"code":"replay","message":"replayed request"}}"#;
    const NO_MEMORY: &str =
        r#"{"error":{"code":"replay_unavailable","message":"the store cannot write"}}"#;
    let (hook, got) = fake_hook(|i| match i {
        0 => None,
        1 => Some((503, NO_MEMORY)),
        _ => Some((401, REPLAY)),
    })
    .await;
    let answer = client(&hook).success(None).await.expect("taken");
    assert_eq!(answer, Value::Null);
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 3);
    assert!(
        got.iter().all(|g| g.0 == got[0].0),
        "one signature: {got:?}"
    );
}

/// An error message longer than the server stores is sent cut as it would store it, its length
/// noted (probe s50 F7: a 1.1 MB one was refused 413 whole, the job's error lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_error_is_sent_cut_as_the_server_stores_it() {
    let (hook, got) = fake_hook(|_| TAKEN).await;
    client(&hook)
        .error("€".repeat(400_000))
        .await
        .expect("taken");
    // A report of one's own with a long error too.
    client(&hook)
        .status(&crate::wire::StatusReport {
            status: Some("ERROR".into()),
            error_message: Some("x".repeat(20_000)),
            ..Default::default()
        })
        .await
        .expect("taken");
    let got = got.lock().unwrap();
    let sent = got[0].1["errorMessage"].as_str().expect("errorMessage");
    assert!(sent.len() <= 16 * 1024, "{} bytes", sent.len());
    assert!(
        sent.ends_with("… [runyard: cut, 1200000 bytes in all]"),
        "{}",
        &sent[sent.len() - 60..]
    );
    let own = got[1].1["errorMessage"].as_str().expect("errorMessage");
    assert!(
        own.len() <= 16 * 1024 && own.ends_with("… [runyard: cut, 20000 bytes in all]"),
        "{}",
        own.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_is_bounded_and_other_calls_go_once() {
    let (hook, got) = fake_hook(|_| Some((503, ""))).await;
    let c = client(&hook).with_report_window(Duration::from_secs(1));
    let began = std::time::Instant::now();
    assert_eq!(c.success(None).await.expect_err("down").status(), Some(503));
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let tries = got.lock().unwrap().len();
    assert!((2..=4).contains(&tries), "{tries}");
    // Progress and log lines: one try each, as before.
    got.lock().unwrap().clear();
    assert!(c.progress(0.5, None).await.is_err());
    assert_eq!(got.lock().unwrap().len(), 1);
    // A zero window: one try.
    got.lock().unwrap().clear();
    let c = c.with_report_window(Duration::ZERO);
    assert!(c.success(None).await.is_err());
    assert_eq!(got.lock().unwrap().len(), 1);
}

#[test]
fn the_window_comes_from_the_environment() {
    assert_eq!(window_from(None).unwrap(), DEFAULT_REPORT_WINDOW);
    assert_eq!(
        window_from(Some(" ".into())).unwrap(),
        DEFAULT_REPORT_WINDOW
    );
    assert_eq!(
        window_from(Some("45.5".into())).unwrap(),
        Duration::from_millis(45_500)
    );
    assert_eq!(window_from(Some("0".into())).unwrap(), Duration::ZERO);
    for bad in ["soon", "-1", "NaN", "inf", "1e400"] {
        let e = window_from(Some(bad.into())).expect_err(bad).to_string();
        assert!(e.contains(ENV_REPORT_WINDOW), "{e}");
    }
    let env = |name: &str| {
        let value = match name {
            "JOB_ID" => "j1",
            "JOB_SECRET_KEY" => "k",
            "JOB_HOOK" => "http://127.0.0.1:9/async",
            _ => "7",
        };
        Some(value.to_owned())
    };
    let c = JobClient::from_lookup(env).unwrap();
    assert_eq!(c.report_window(), Duration::from_secs(7));
}

/// The hook applied a final report, then answered its own 503 (a store op failed after the
/// apply): the report signed again is refused 409 saying the job reported that very status,
/// and counts as taken (`runyard launch` exits 0, not 3). A 409 saying another outcome, or on
/// a first try, is still an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_report_applied_before_the_hooks_own_5xx_counts_as_taken() {
    const UNAVAILABLE: &str = r#"{"error":{"code":"unavailable","message":"store"}}"#;
    const REPORTED_SUCCESS: &str =
        r#"{"error":{"code":"illegal_transition","message":"reported","reported":"SUCCESS"}}"#;
    let (hook, got) = fake_hook(|i| {
        if i == 0 {
            Some((503, UNAVAILABLE))
        } else {
            Some((409, REPORTED_SUCCESS))
        }
    })
    .await;
    let c = client(&hook);
    assert_eq!(c.success(None).await.expect("taken"), Value::Null);
    assert_eq!(got.lock().unwrap().len(), 2);
    got.lock().unwrap().clear();
    let e = c.error("boom").await.expect_err("another outcome");
    assert_eq!(e.status(), Some(409));
    got.lock().unwrap().clear();
    let (hook, _) = fake_hook(|_| Some((409, REPORTED_SUCCESS))).await;
    let e = client(&hook).success(None).await.expect_err("first try");
    assert_eq!(e.status(), Some(409));
}

/// The values the Python client takes and refuses (examples/python/runyard_job/client_retry.py,
/// tests/test_report_window.py): the same rule.
#[test]
fn the_window_takes_and_refuses_what_the_python_client_does() {
    for (text, secs) in [
        ("1e3", 1000.0),
        (" 2.5 ", 2.5),
        (".5", 0.5),
        ("5.", 5.0),
        ("+3", 3.0),
        ("-0", 0.0),
    ] {
        let w = window_from(Some(text.into())).expect(text);
        assert_eq!(w, Duration::from_secs_f64(secs), "{text}");
    }
    for bad in [
        "1_000", "1e300", "0x10", "\u{ff11}", "5 s", ".", "infinity", "nan", "-1",
    ] {
        assert!(window_from(Some(bad.into())).is_err(), "{bad}");
    }
}

/// An upload while the hook's node restarts: the upload request answered `503`, then no
/// answer, then the bytes' transfer answered `502`; each time the whole upload is tried again,
/// signed afresh, until the bytes are stored. A refusal (`409`) is final at once, and a zero
/// window tries once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_tried_again_whole_within_the_window() {
    const URL: &str = r#"{"done":false,"method":"PUT","url":"/async/blobs/upload?t=1"}"#;
    let (hook, got) = fake_hook(|i| match i {
        0 => Some((
            503,
            r#"{"error":{"code":"store_unavailable","message":"x"}}"#,
        )),
        1 => None,
        2 => Some((200, URL)),
        3 => Some((502, "bad gateway")),
        4 => Some((200, URL)),
        _ => Some((201, "")),
    })
    .await;
    let file = std::env::temp_dir().join(format!("runyard-upload-{}.txt", std::process::id()));
    std::fs::write(&file, "hello").unwrap();
    let c = client(&hook);
    let done = c
        .upload("outputs", &file, json!({"name": "out.txt"}))
        .await
        .expect("uploaded");
    assert!(matches!(done, UploadOutcome::Uploaded(_)), "{done:?}");
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 6, "{got:?}");
    // Requests 0, 1, 2 and 4 are the signed upload request (each signed afresh), 3 and 5 the
    // bytes (no job headers).
    let asked: Vec<&str> = [0, 1, 2, 4].iter().map(|&i| got[i].0.as_str()).collect();
    assert!(asked.iter().all(|h| !h.is_empty()), "{got:?}");
    for (i, a) in asked.iter().enumerate() {
        assert!(!asked[..i].contains(a), "signed again each time: {asked:?}");
    }
    assert_eq!(got[0].1["hash"], "5d41402abc4b2a76b9719d911017c592");
    assert_eq!(got[4].1, got[0].1, "the same upload request");
    assert!(got[3].0.is_empty() && got[5].0.is_empty(), "{got:?}");

    for (status, tries, window) in [(409, 1, DEFAULT_REPORT_WINDOW), (503, 1, Duration::ZERO)] {
        let (hook, got) =
            fake_hook(move |_| Some((status, r#"{"error":{"code":"c","message":"m"}}"#))).await;
        let c = client(&hook).with_report_window(window);
        let e = c
            .upload("outputs", &file, Value::Null)
            .await
            .expect_err("refused");
        assert_eq!(e.status(), Some(status));
        assert_eq!(got.lock().unwrap().len(), tries, "{status}");
    }
    let _ = std::fs::remove_file(&file);
}
