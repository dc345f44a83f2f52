//! `runyard submit --batch FILE`: JSON lines (one submit body per line; `-` = stdin) sent to
//! `POST /async/jobs/batch` up to 1,000 per request; one result per non-empty line, in order.
//! Text: `LINE JOB_ID` (`LINE JOB_ID replayed`) or `LINE error CODE: MESSAGE`; `--output json`:
//! one JSON object per line, the server's result with `line`. Exit 0 when every line was
//! accepted, 4 when any was refused (a line that is not JSON is refused here, not sent).

use std::process::ExitCode;

use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use super::client::Api;
use super::exit::{self, Failure};
use super::output::{self, Format};

/// Items per request: the server's limit.
const CHUNK: usize = 1000;

/// Bytes of lines per request: under the server's default `api.max_body_bytes` (1 MiB). A server
/// set lower answers 413: the request is sent again in halves, down to a line alone, which is
/// then refused in its own slot (`too_large`).
const CHUNK_BYTES: usize = 768 * 1024;

/// A refused line: its error code and message.
type Refusal = (String, String);

/// A line of the file: its number, and its text or why it is not a body.
type Line<'a> = (usize, Result<&'a str, Refusal>);

/// Runs the command (see the module's docs).
pub async fn run(api: &Api, file: &str, format: Format) -> anyhow::Result<ExitCode> {
    let text = read(file).await?;
    // A byte order mark (an editor's UTF-8 "with BOM") is not part of the first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let lines: Vec<Line> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, check_line(l)))
        .collect();
    if lines.is_empty() {
        return Err(Failure::usage(format!("--batch {file}: no jobs in it")));
    }
    let mut failed = 0usize;
    for chunk in chunks(&lines) {
        let sent: Vec<&str> = chunk
            .iter()
            .filter_map(|(_, b)| b.as_ref().ok().copied())
            .collect();
        let (answered, failure) = send(api, &sent).await;
        // The bodies answered come first (a failed request stops the sending): their lines, and
        // the lines refused here among them, are printed before the failure is said.
        let confirmed = answered.len();
        let mut answers = answered.into_iter();
        for (line, body) in chunk {
            let result = match body {
                // No answer left: the request that carried this line failed (said below).
                Ok(_) => match answers.next() {
                    Some(r) => r,
                    None => break,
                },
                Err(e) => Err(e.clone()),
            };
            let result = result.and_then(|r| match r["job_id"].as_str() {
                Some(_) => Ok(r),
                None => Err((
                    r["error"]["code"].as_str().unwrap_or("refused").to_string(),
                    r["error"]["message"].as_str().unwrap_or("").to_string(),
                )),
            });
            if result.is_err() {
                failed += 1;
            }
            print_result(format, *line, result);
        }
        if let Some((e, part)) = failure {
            return Err(unconfirmed(e, chunk, confirmed, part));
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} jobs were not accepted", lines.len());
        return Ok(ExitCode::from(exit::REFUSED));
    }
    Ok(ExitCode::SUCCESS)
}

/// A line as a body: JSON (checked, then sent as written), no integer past 64 bits.
fn check_line(l: &str) -> Result<&str, Refusal> {
    serde_json::from_str::<serde::de::IgnoredAny>(l)
        .map_err(|e| ("bad_json".to_string(), format!("not JSON: {e}")))?;
    super::client::no_integer_past_64_bits(l).map_err(|e| ("invalid_request".to_string(), e))?;
    Ok(l.trim())
}

/// The lines in requests: at most [`CHUNK`] bodies and [`CHUNK_BYTES`] of them each (a longer
/// line goes alone).
fn chunks<'l, 'a>(lines: &'l [Line<'a>]) -> Vec<&'l [Line<'a>]> {
    let mut out = Vec::new();
    let (mut start, mut n, mut bytes) = (0, 0, 0);
    for (i, (_, body)) in lines.iter().enumerate() {
        let size = body.as_ref().map_or(0, |b| b.len() + 1);
        if n > 0 && (n == CHUNK || bytes + size > CHUNK_BYTES) {
            out.push(&lines[start..i]);
            (start, n, bytes) = (i, 0, 0);
        }
        if body.is_ok() {
            n += 1;
            bytes += size;
        }
    }
    out.push(&lines[start..]);
    out
}

/// The error of a request that failed after `confirmed` bodies of `chunk` were answered, for
/// its next `part` bodies: it names their lines and says whether they may have been stored (no
/// answer, or the server failing) or were refused as a whole or answered a redirect (nothing
/// stored: runyard's API redirects nothing, so what answered was not runyard).
fn unconfirmed(e: anyhow::Error, chunk: &[Line], confirmed: usize, part: usize) -> anyhow::Error {
    let sent: Vec<usize> = chunk
        .iter()
        .filter(|(_, b)| b.is_ok())
        .map(|(n, _)| *n)
        .skip(confirmed)
        .take(part.max(1))
        .collect();
    let (first, last) = (
        sent.first().copied().unwrap_or(0),
        sent.last().copied().unwrap_or(0),
    );
    let failure = e.downcast_ref::<Failure>();
    let refused = matches!(failure, Some(Failure::Refused { .. }));
    let redirected = matches!(
        failure,
        Some(Failure::Unavailable {
            status: 300..=399,
            ..
        })
    );
    let what = if refused {
        format!(
            "lines {first}-{last} were refused as a whole (none of them stored; the results \
             above stand, the lines after them were not sent)"
        )
    } else if redirected {
        format!(
            "lines {first}-{last} were not stored: the answer was a redirect, which runyard's API \
             never gives, so the request did not reach runyard (the results above stand, the \
             lines after them were not sent)"
        )
    } else {
        format!(
            "lines {first}-{last} were sent and not confirmed: they may have been stored (the \
             results above stand, the lines after them were not sent); with idempotency keys, \
             sending the file again makes no second job"
        )
    };
    e.context(what)
}

/// Sends `bodies` in one request (in halves again on 413): one result per body answered, in
/// order, and when a request failed, its error and how many bodies it carried (none answered
/// after it).
async fn send(
    api: &Api,
    bodies: &[&str],
) -> (Vec<Result<Value, Refusal>>, Option<(anyhow::Error, usize)>) {
    let mut out = Vec::with_capacity(bodies.len());
    let mut todo = vec![bodies];
    while let Some(part) = todo.pop() {
        if part.is_empty() {
            continue;
        }
        let body = format!("{{\"jobs\":[{}]}}", part.join(","));
        match api.post_json_text("/async/jobs/batch", body).await {
            Ok(mut r) => {
                let mut results = match r["results"].take() {
                    Value::Array(a) => a.into_iter(),
                    _ => Vec::new().into_iter(),
                };
                for _ in part {
                    out.push(
                        results
                            .next()
                            .ok_or(("no_result".into(), "the server gave no result".into())),
                    );
                }
            }
            Err(e) => match e.downcast_ref::<Failure>() {
                // Refused before anything was read: nothing of it is stored.
                Some(Failure::Refused {
                    status: 413,
                    code,
                    message,
                }) if part.len() == 1 => out.push(Err((code.clone(), message.clone()))),
                Some(Failure::Refused { status: 413, .. }) => {
                    let (a, b) = part.split_at(part.len() / 2);
                    todo.push(b);
                    todo.push(a);
                }
                _ => return (out, Some((e, part.len()))),
            },
        }
    }
    (out, None)
}

async fn read(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut s = String::new();
        tokio::io::stdin()
            .read_to_string(&mut s)
            .await
            .map_err(|e| Failure::usage(format!("--batch -: cannot read stdin: {e}")))?;
        return Ok(s);
    }
    tokio::fs::read_to_string(file)
        .await
        .map_err(|e| Failure::usage(format!("--batch {file}: {e}")))
}

fn print_result(format: Format, line: usize, result: Result<Value, Refusal>) {
    match (format, result) {
        (Format::Json, Ok(mut r)) => {
            r["line"] = json!(line);
            output::json_line(&r);
        }
        (Format::Json, Err((code, message))) => output::json_line(&json!({
            "line": line,
            "error_code": code,
            "message": message,
        })),
        (Format::Text, Ok(r)) => {
            let id = r["job_id"].as_str().unwrap_or("");
            if r["idempotent_replayed"] == true {
                println!("{line} {id} replayed");
            } else {
                println!("{line} {id}");
            }
        }
        (Format::Text, Err((code, message))) => println!("{line} error {code}: {message}"),
    }
}
