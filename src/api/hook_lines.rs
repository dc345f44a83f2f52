//! A job's hook log lines stored as its stdout is (`runners/src/lines.rs`): a line ends at `\n`
//! (a trailing `\r` dropped; a final `\n` ends the last line, it does not start an empty one),
//! and a line over [`MAX_LINE_BYTES`] is stored in pieces of at most that many bytes, never cut
//! inside a UTF-8 character (docs/hooks.md).

use runyard_runners::lines::LineSplitter;

use super::hooks::MAX_LINE_BYTES;

/// The lines `reported` stands for, as stored, in order; `None` as soon as they are more than
/// `max`.
pub fn split(reported: Vec<String>, max: usize) -> Option<Vec<String>> {
    let mut out = Vec::with_capacity(reported.len());
    for line in reported {
        if !line.contains('\n') && !line.ends_with('\r') && line.len() <= MAX_LINE_BYTES {
            out.push(line); // the usual line: as it came
        } else {
            let mut split = LineSplitter::new();
            let mut keep = |t: &[u8]| out.push(String::from_utf8_lossy(t).into_owned());
            split.push_text(line.as_bytes(), &mut keep);
            split.finish(&mut |p| keep(p.text));
        }
        if out.len() > max {
            return None;
        }
    }
    Some(out)
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
        assert_eq!(got.unwrap(), ["a", "b", "c", "d", "", "e"]);
        let long = "é".repeat(MAX_LINE_BYTES); // twice the cap in bytes
        let got = split(vec![long.clone()], 100).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|p| p.len() <= MAX_LINE_BYTES));
        assert_eq!(got.concat(), long);
        assert!(
            split(vec!["x\n".repeat(4)], 3).is_none(),
            "counted once split"
        );
        assert_eq!(split(vec!["x\n".repeat(3)], 3).unwrap().len(), 3);
    }
}
