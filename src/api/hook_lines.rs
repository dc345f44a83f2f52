//! A job's hook log lines stored as its stdout is (`runners/src/lines.rs`): a line ends at `\n`
//! (a trailing `\r` dropped; a final `\n` ends the last line, it does not start an empty one),
//! and a line over [`MAX_LINE_BYTES`] is stored in pieces of at most that many bytes, never cut
//! inside a UTF-8 character (docs/hooks.md).

use runyard_runners::lines::LineSplitter;

use super::hooks::MAX_LINE_BYTES;

/// The lines `reported` stands for, as stored, in order; at most `max` of them: when they are
/// more, the newest `max` are kept (a job's last words, as for its stdout), after a note that
/// says how many went.
pub fn split(reported: Vec<String>, max: usize) -> Vec<String> {
    let mut out = std::collections::VecDeque::with_capacity(reported.len().min(max));
    let mut dropped = 0u64;
    for line in reported {
        let mut keep = |t: String| {
            if out.len() == max {
                out.pop_front();
                dropped += 1;
            }
            out.push_back(t);
        };
        if !line.contains('\n') && !line.ends_with('\r') && line.len() <= MAX_LINE_BYTES {
            keep(line); // the usual line: as it came
        } else {
            let mut split = LineSplitter::new();
            let mut piece = |t: &[u8]| keep(String::from_utf8_lossy(t).into_owned());
            split.push_text(line.as_bytes(), &mut piece);
            split.finish(&mut |p| piece(p.text));
        }
    }
    if dropped > 0 {
        out.push_front(dropped_note(dropped, max));
    }
    out.into()
}

/// The line that stands where a report's oldest lines were dropped.
pub fn dropped_note(n: u64, max: usize) -> String {
    format!(
        "[runyard] {n} line(s) dropped here: a report stores at most {max} lines once split \
         (the newest are kept)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_like_stdout() {
        let got = split(
            vec![
                "a\nb\r\nc".into(),
                "d\n".into(),
                String::new(),
                "e\r".into(),
            ],
            100,
        );
        assert_eq!(got, ["a", "b", "c", "d", "", "e"]);
        let long = "é".repeat(MAX_LINE_BYTES); // twice the cap in bytes
        let got = split(vec![long.clone()], 100);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|p| p.len() <= MAX_LINE_BYTES));
        assert_eq!(got.concat(), long);
        let got = split(vec!["x\n".repeat(2), "y\nz".into()], 3);
        assert_eq!(
            got,
            [dropped_note(1, 3), "x".into(), "y".into(), "z".into()]
        );
        assert_eq!(split(vec!["x\n".repeat(3)], 3), ["x", "x", "x"]);
    }
}
