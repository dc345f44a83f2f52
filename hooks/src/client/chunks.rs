//! Log lines cut into reports the hook takes: at most [`MAX_REPORT_ENTRIES`] entries and about
//! [`MAX_CHUNK_JSON_BYTES`] of JSON a report (the server's body limit is 1 MiB by default), every
//! entry one line of at most [`MAX_LINE_BYTES`] (split at `\n` as the server stores them, long
//! lines in pieces never cut inside a UTF-8 character nor after a `\r`, which the server would
//! take for a line's end). Used by [`JobClient::log`] and `runyard launch`.

use serde_json::Value;

use super::{ClientError, JobClient};
use crate::wire::StatusReport;
use crate::MAX_LINE_BYTES;

/// Most `logs` entries the hook takes in one report (more is `413`).
pub const MAX_REPORT_ENTRIES: usize = 1000;
/// About the most JSON of log lines one report carries.
pub const MAX_CHUNK_JSON_BYTES: usize = 256 * 1024;

/// The line that stands where `n` lines could not be sent (`why`).
pub fn lost_note(n: usize, why: &str) -> String {
    format!("[runyard] {n} line(s) lost here: the hook refused or did not answer ({why})")
}

/// `lines` as the entries of successive reports (each leaves room for one note more).
pub fn log_chunks(lines: Vec<String>) -> Vec<Vec<String>> {
    let mut chunks = Vec::new();
    let mut chunk: Vec<String> = Vec::new();
    let mut size = 0;
    for line in lines {
        for entry in entries(&line) {
            // The entry's JSON: quoted, escaped, and a comma.
            let json = serde_json::to_string(entry).map_or(entry.len() + 3, |j| j.len() + 1);
            if !chunk.is_empty()
                && (chunk.len() + 1 >= MAX_REPORT_ENTRIES || size + json > MAX_CHUNK_JSON_BYTES)
            {
                chunks.push(std::mem::take(&mut chunk));
                size = 0;
            }
            chunk.push(entry.to_owned());
            size += json;
        }
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// A line's entries: its lines (a final `\n` ends it, it starts no empty one) in pieces.
fn entries(line: &str) -> impl Iterator<Item = &str> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.split('\n').flat_map(pieces)
}

/// `line` in pieces of at most [`MAX_LINE_BYTES`], none ending inside a character or with a
/// `\r` (only the last may: the line's own end, which the server drops as it always does).
fn pieces(mut line: &str) -> impl Iterator<Item = &str> {
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        if line.len() <= MAX_LINE_BYTES {
            done = true;
            return Some(std::mem::take(&mut line));
        }
        let mut end = MAX_LINE_BYTES;
        while !line.is_char_boundary(end) || (end > 1 && line.as_bytes()[end - 1] == b'\r') {
            end -= 1;
        }
        let (piece, rest) = line.split_at(end);
        line = rest;
        Some(piece)
    })
}

/// Failed reports in a row after which the rest is not tried: the hook is down or overloaded.
pub const MAX_FAILURES_IN_A_ROW: usize = 3;

/// Whether a report that failed with `e` may go better for the next one: the request did not
/// get through or the server could not take it now (5xx, 429). Any other refusal (409: the job
/// is already terminal; 401/403: the key; 404...) is the same for every report.
fn is_transient(e: &ClientError) -> bool {
    match e {
        ClientError::Transport { .. } => true,
        ClientError::Http { status, .. } => *status == 429 || *status >= 500,
        _ => false,
    }
}

/// Whether the reports after a failure `e`, the `in_a_row`-th in a row, are still tried.
fn carry_on_after(e: &ClientError, in_a_row: usize) -> bool {
    is_transient(e) && in_a_row < MAX_FAILURES_IN_A_ROW
}

impl JobClient {
    /// Sends `lines` in as many reports as they need ([`log_chunks`]) and the other fields of
    /// `fields` (progress, status...) with the last one, so a terminal status goes after every
    /// line (a report after it would be refused: `409`). Lines in `fields.logs` go first.
    ///
    /// A report that failed for a passing reason ([`is_transient`]) does not stop the rest: the
    /// next one sent starts with a [`lost_note`] for its lines; after
    /// [`MAX_FAILURES_IN_A_ROW`] such failures in a row, or after any other refusal, no more
    /// lines are sent; after the failures, a `status` in `fields` still goes (with its report
    /// window), its only line the note of the lines lost (the error is then [`ClientError::LinesLost`]
    /// with the status report's failure as its source if it failed too). A report the hook took
    /// (2xx) counts as stored whatever its answer's body.
    /// The answer is the last report's (an error if its body is not JSON), else
    /// [`ClientError::LinesLost`] with the number of lines not stored and the last failure (the
    /// failure alone if no line was lost).
    pub async fn report_with_logs(
        &self,
        mut fields: StatusReport,
        lines: Vec<String>,
    ) -> Result<Value, ClientError> {
        if fields.progress.is_some_and(|p| !p.is_finite()) {
            // Refused before any line goes, rather than after all of them.
            return Err(ClientError::InvalidArgument(
                "progress must be a finite number".to_owned(),
            ));
        }
        let lines = match fields.logs.take() {
            Some(mut first) => {
                first.extend(lines);
                first
            }
            None => lines,
        };
        let chunks = log_chunks(lines);
        let mut left: usize = chunks.iter().map(Vec::len).sum();
        let count = chunks.len().max(1);
        let mut chunks = chunks.into_iter();
        let mut fields = Some(fields);
        let (mut lost, mut unnoted, mut in_a_row) = (0, 0, 0);
        let (mut failed, mut answer) = (None, Ok(Value::Null));
        for i in 0..count {
            let mut logs = chunks.next().unwrap_or_default();
            let n = logs.len();
            left -= n;
            let mut report = if i + 1 == count {
                fields.take().unwrap_or_default()
            } else {
                StatusReport::default()
            };
            if unnoted > 0 && n > 0 {
                let why = failed.as_ref().map(ToString::to_string).unwrap_or_default();
                logs.insert(0, lost_note(unnoted, &why));
            }
            if !logs.is_empty() {
                report.logs = Some(logs);
            }
            match self.send_status(&report).await {
                // Taken (2xx): its lines are stored even if its answer is not JSON.
                Ok(taken) => {
                    (answer, in_a_row) = (taken.answer(), 0);
                    if n > 0 {
                        unnoted = 0;
                    }
                }
                Err(e) => {
                    (lost, unnoted, in_a_row) = (lost + n, unnoted + n, in_a_row + 1);
                    let (go_on, transient) = (carry_on_after(&e, in_a_row), is_transient(&e));
                    let why = e.to_string();
                    failed = Some(e);
                    if !go_on {
                        lost += left;
                        // The status (the job's result above all) goes all the same, with its
                        // window, saying where the lines went (not after a refusal: it would get
                        // it too).
                        if let Some(mut report) =
                            fields.take().filter(|f| transient && f.status.is_some())
                        {
                            report.logs = Some(vec![lost_note(unnoted + left, &why)]);
                            match self.send_status(&report).await {
                                Ok(taken) => answer = taken.answer(),
                                Err(e) => failed = Some(e),
                            }
                        }
                        break;
                    }
                }
            }
        }
        match failed {
            None => answer,
            Some(e) if lost == 0 => Err(e),
            Some(e) => Err(ClientError::LinesLost {
                lost,
                source: Box::new(e),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_go_in_reports_the_hook_takes() {
        // Many short lines: by count (one place left for a note).
        let chunks = log_chunks((0..2500).map(|i| i.to_string()).collect());
        let lens: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(lens, [999, 999, 502]);
        assert_eq!(chunks.concat().last().map(String::as_str), Some("2499"));
        // 1,000 lines of 16 KiB: by size (each report's JSON well under 1 MiB).
        let chunks = log_chunks(vec!["x".repeat(MAX_LINE_BYTES); 1000]);
        assert!(chunks.len() >= 60, "{}", chunks.len());
        for c in &chunks {
            let json = serde_json::to_vec(c).unwrap();
            assert!(json.len() <= MAX_CHUNK_JSON_BYTES, "{}", json.len());
        }
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 1000);
        // Escaped characters count as they are sent.
        let chunks = log_chunks(vec!["\u{1}".repeat(10_000); 40]);
        for c in &chunks {
            assert!(serde_json::to_vec(c).unwrap().len() <= MAX_CHUNK_JSON_BYTES);
        }
    }

    #[test]
    fn long_lines_are_cut_on_characters_and_never_after_a_carriage_return() {
        let long = "€".repeat(10_000); // 3 bytes each
        let got = log_chunks(vec![long.clone()]).concat();
        assert!(got.len() >= 2);
        assert!(got.iter().all(|p| p.len() <= MAX_LINE_BYTES));
        assert_eq!(got.concat(), long);
        let mut cr = "a".repeat(MAX_LINE_BYTES - 1);
        cr.push('\r');
        cr.push_str("bc");
        let got = log_chunks(vec![cr.clone()]).concat();
        assert!(got.iter().all(|p| !p.ends_with('\r')), "{:?}", got[1]);
        assert_eq!(got.concat(), cr);
        // Split at newlines as the server stores them; an empty line stays one.
        let got = log_chunks(vec!["a\nb\r\nc".into(), "d\n".into(), String::new()]).concat();
        assert_eq!(got, ["a", "b\r", "c", "d", ""]);
    }

    fn http(status: u16) -> ClientError {
        ClientError::Http {
            context: "POST /async/status".into(),
            status,
            code: None,
            message: String::new(),
        }
    }

    #[test]
    fn only_passing_failures_let_the_next_reports_go_and_only_a_few_in_a_row() {
        for status in [500, 502, 503, 504, 429] {
            assert!(carry_on_after(&http(status), 1), "{status}");
            assert!(carry_on_after(&http(status), 2), "{status}");
            assert!(!carry_on_after(&http(status), 3), "{status}: 3 in a row");
        }
        // The same for every report: the job is terminal (409), the key (401, 403), 404, 413...
        for status in [400, 401, 403, 404, 409, 413, 422] {
            assert!(!carry_on_after(&http(status), 1), "{status}");
        }
        assert!(!carry_on_after(
            &ClientError::InvalidArgument("x".into()),
            1
        ));
        let lost = ClientError::LinesLost {
            lost: 7,
            source: Box::new(http(409)),
        };
        assert_eq!(lost.status(), Some(409));
        assert!(
            lost.to_string().starts_with("7 log line(s) not stored: "),
            "{lost}"
        );
    }
}
