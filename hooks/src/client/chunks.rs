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

impl JobClient {
    /// Sends `first` (progress, status...) with the first of the reports `lines` need
    /// ([`log_chunks`]), the others with log lines only. A report that fails does not stop the
    /// rest: the next one sent starts with a [`lost_note`] for its lines; the answer is then the
    /// last failure (after every report was tried), else the last report's answer.
    pub async fn report_with_logs(
        &self,
        first: StatusReport,
        lines: Vec<String>,
    ) -> Result<Value, ClientError> {
        let mut head = Some(first);
        let mut chunks = log_chunks(lines).into_iter();
        let (mut lost, mut failed, mut answer) = (0, None, Value::Null);
        loop {
            let chunk = chunks.next();
            if chunk.is_none() && head.is_none() {
                break;
            }
            let mut report = head.take().unwrap_or_default();
            let mut logs = chunk.unwrap_or_default();
            let n = logs.len();
            if lost > 0 && n > 0 {
                let why = failed.as_ref().map(ToString::to_string).unwrap_or_default();
                logs.insert(0, lost_note(lost, &why));
            }
            if !logs.is_empty() || report.logs.is_some() {
                report.logs.get_or_insert_with(Vec::new).extend(logs);
            }
            match self.status(&report).await {
                Ok(v) if n > 0 => (lost, answer) = (0, v),
                Ok(v) => answer = v,
                Err(e) => {
                    lost += n;
                    failed = Some(e);
                }
            }
        }
        failed.map_or(Ok(answer), Err)
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
}
