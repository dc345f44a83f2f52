//! How the client commands print: for people (`--output text`, the default) or for programs
//! (`--output json`: one JSON document on stdout, or one JSON document per line for streams).

use serde_json::Value;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Tables and lines for people.
    #[default]
    Text,
    /// Machine-readable: one JSON document (JSON lines for `logs`).
    Json,
}

impl Format {
    /// True for `--output json`.
    pub fn json(self) -> bool {
        self == Format::Json
    }
}

/// Prints `v` as one line of compact JSON.
pub fn json_line(v: &Value) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

/// Prints `v` as indented JSON (text mode of the commands that show a whole object), with the
/// C1 and bidirectional controls of its strings escaped ([`crate::logging::visible_json`]).
pub fn pretty(v: &Value) {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    println!("{}", crate::logging::visible_json(text));
}

/// Prints `v` for `format`: compact JSON, or indented JSON for people.
pub fn document(format: Format, v: &Value) {
    match format {
        Format::Json => json_line(v),
        Format::Text => pretty(v),
    }
}

/// Renders a table with a header row: columns padded to their widest cell (the last one is not
/// padded, so lines carry no trailing blanks).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i + 1 == n {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// A string field of a JSON object, or `-` when absent or null.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        // A job's text (its type, an error it reported) shown with its controls escaped.
        Value::String(s) => crate::logging::visible(s).into_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_has_a_header_and_aligned_columns() {
        let t = table(
            &["ID", "STATUS", "TYPE"],
            &[
                vec!["a".into(), "SUCCESS".into(), "x".into()],
                vec!["bbbb".into(), "ERROR".into(), "long.type".into()],
            ],
        );
        assert_eq!(
            t,
            "ID    STATUS   TYPE\na     SUCCESS  x\nbbbb  ERROR    long.type\n"
        );
    }
}
