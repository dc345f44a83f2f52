//! The server's log: `RUNYARD_LOG` (else `RUST_LOG`, else `info`) picks what is logged;
//! `--log-format text|json` how. Text has ANSI colours only when stderr is a terminal (never in
//! files, pipes or `kubectl logs`; `NO_COLOR` turns them off there too). JSON is one object per
//! line (tracing-subscriber's format: `timestamp`, `level`, `target`, the event's fields
//! flattened, and `span` with the current span's fields: `job_id`, `type`, `attempt` for every
//! line about a job).

use std::io::IsTerminal;

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Drops log events that may carry job secrets whatever `RUNYARD_LOG` says: bollard (the docker
/// runner's client) prints request and response bodies at debug level, and a container's create
/// body and inspect answer hold its `JOB_SECRET_KEY`.
fn not_secret_bearing(meta: &tracing::Metadata<'_>) -> bool {
    !(meta.target().starts_with("bollard") && *meta.level() > tracing::Level::INFO)
}

/// Whether text logs get ANSI colours: stderr is a terminal and `NO_COLOR` is not set.
pub fn use_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber (stderr).
pub fn init(format: LogFormat, filter: tracing_subscriber::EnvFilter) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let secrets = tracing_subscriber::filter::filter_fn(not_secret_bearing);
    match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(use_colour())
            .finish()
            .with(secrets)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .finish()
            .with(secrets)
            .init(),
    }
}

/// The error a command ends with, on stderr whatever the log filter: `error: ...` as text, or
/// with `--log-format json` one JSON object in the log's own shape (`timestamp`, `level`
/// `ERROR`, `target`, `message`), so that a log shipper reads a server's last word too.
pub fn fatal(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => eprintln!("error: {message}"),
        LogFormat::Json => eprintln!("{}", fatal_json(message)),
    }
}

fn fatal_json(message: &str) -> serde_json::Value {
    serde_json::json!({
        "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
        "level": "ERROR",
        "target": "runyard",
        "message": message,
    })
}

/// The Unicode bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C).
pub fn bidi(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{61c}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// JSON text as a terminal may show it: DEL, the C1 controls and the bidirectional ones, which JSON
/// leaves as they are, written as JSON escapes (`\u009b`, `\u202e`): the same JSON, the same
/// values once read, and nothing a job wrote can move the cursor or reorder the text. (C0
/// controls are escaped by the JSON writer already; these can only be inside strings.)
pub fn visible_json(json: String) -> String {
    let hidden = |c: char| ('\u{7f}'..='\u{9f}').contains(&c) || bidi(c);
    if !json.chars().any(hidden) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if hidden(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `s` as a terminal may show it: every C0 control but the tab, DEL and every C1 control (ESC,
/// `\r`, BEL, `\u{9b}`, ...) replaced by a visible escape (`\x1b`, `\r`, `\x07`, `\u{9b}`), so
/// that a job's output printed as text cannot move the cursor, erase lines, set the title or
/// write the clipboard; the Unicode bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E,
/// U+200F, U+061C) too, so that it cannot show its text in another order than it has; and a
/// backslash doubled (`\\`), so that an escape shown is never text the job wrote. Text output
/// only: JSON output escapes control characters already.
pub fn visible(s: &str) -> std::borrow::Cow<'_, str> {
    let shown = |c: char| c == '\t' || !(c.is_control() || bidi(c) || c == '\\');
    if s.chars().all(shown) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            c if shown(c) => out.push(c),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// What `tracing` writes, kept for a test (`with_writer(move || capture.clone())`).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Capture(pub(crate) std::sync::Arc<parking_lot::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Capture {
    /// What was written, as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

#[cfg(test)]
impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::visible;

    #[test]
    fn json_text_keeps_its_values_with_c1_and_bidi_controls_escaped() {
        let v = serde_json::json!({"error": "evil \u{202e}gnp.exe \u{9b}31m \u{1b}x é ✓"});
        let text = super::visible_json(serde_json::to_string_pretty(&v).unwrap());
        assert!(
            text.contains("\\u202e") && text.contains("\\u009b"),
            "{text}"
        );
        assert!(
            !text.contains('\u{202e}') && !text.contains('\u{9b}'),
            "{text}"
        );
        assert!(text.contains("é ✓"), "other text is left as it is: {text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v, "the same value once read");
    }

    #[test]
    fn controls_bidi_marks_and_backslashes_are_shown_as_escapes() {
        assert!(matches!(
            visible("plain text\tand é"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(visible("a\x1b[2Jb\r\n"), r"a\x1b[2Jb\r\n");
        assert_eq!(
            visible("x\u{202e}y\u{2066}z\u{200f}"),
            r"x\u{202e}y\u{2066}z\u{200f}"
        );
        // A job writing an escape's text is told apart from one writing the character.
        assert_eq!(visible(r"\x1b"), r"\\x1b");
        assert_ne!(visible(r"\x1b"), visible("\x1b"));
    }
}
