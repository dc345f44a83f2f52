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

/// A line of the file: its number, and its body or why it is not one (an error code, a message).
type Line = (usize, Result<Value, (String, String)>);

/// Runs the command (see the module's docs).
pub async fn run(api: &Api, file: &str, format: Format) -> anyhow::Result<ExitCode> {
    let text = read(file).await?;
    // (line number, body or the reason it is not one)
    let lines: Vec<Line> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            (
                i + 1,
                serde_json::from_str::<Value>(l)
                    .map_err(|e| ("bad_json".to_string(), format!("not JSON: {e}")))
                    .and_then(|v| {
                        super::client::no_integer_past_64_bits(l)
                            .map(|()| v)
                            .map_err(|e| ("invalid_request".to_string(), e))
                    }),
            )
        })
        .collect();
    if lines.is_empty() {
        return Err(Failure::usage(format!("--batch {file}: no jobs in it")));
    }
    let mut failed = 0usize;
    for chunk in lines.chunks(CHUNK) {
        let bodies: Vec<&Value> = chunk.iter().filter_map(|(_, b)| b.as_ref().ok()).collect();
        let results = if bodies.is_empty() {
            Vec::new()
        } else {
            let r = api
                .post("/async/jobs/batch", &json!({ "jobs": bodies }))
                .await?;
            r["results"].as_array().cloned().unwrap_or_default()
        };
        let mut answers = results.into_iter();
        for (line, body) in chunk {
            let result = match body {
                Ok(_) => answers
                    .next()
                    .ok_or(("no_result".into(), "the server gave no result".into())),
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
    }
    if failed > 0 {
        eprintln!("{failed} of {} jobs were not accepted", lines.len());
        return Ok(ExitCode::from(exit::REFUSED));
    }
    Ok(ExitCode::SUCCESS)
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

/// A refused line: its error code and message.
type Refusal = (String, String);

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
