//! Errors become HTTP answers in one place: `src/api/error.rs` (`ApiError` and its one
//! `IntoResponse`). This test reads the server's sources (`src/**/*.rs`, test modules left out)
//! and fails when code elsewhere builds an error answer itself:
//!
//! - `impl IntoResponse for`: a second type with its own answer;
//! - `"error": {`: the error body's shape written by hand;
//! - `Response::builder` or `status_mut()`: a response put together by hand;
//! - an error status (`StatusCode::` of a 4xx or 5xx, or `StatusCode::from_u16`): no handler
//!   answers or compares error statuses itself, not even as the first argument of
//!   `ApiError::new(`: error statuses live in `src/api/error.rs` (a constructor there, or a
//!   `From` impl for a rejection or a library error);
//! - `ApiError::new(` itself, whatever its status (a constant, a variable, a rejection's
//!   `e.status()`): the status of an error answer is chosen in `src/api/error.rs` only.
//!
//! Success answers (`(StatusCode::ACCEPTED, Json(..))`) are the handlers' own. Client code
//! (`reqwest::StatusCode`, the CLI reading the server's answers) is not an answer.

use std::path::{Path, PathBuf};

/// The one file allowed to do all of the above.
const ERROR_FILE: &str = "src/api/error.rs";

/// Answers that are not API errors, each with its reason: (file, the code that is allowed there).
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "src/api/health.rs",
        "StatusCode::SERVICE_UNAVAILABLE",
        "the readiness probe answers 503 {\"status\": \"unavailable\", \"store\", \"error\"} \
         (docs/api.md): a probe's documented body, not an API error",
    ),
    (
        "src/cli/bench/ceiling.rs",
        "Response::builder()",
        "`bench --http-ceiling`'s bare server (no API, no store) answers every request 202 as a \
         submit does: a success, never an error answer",
    ),
];

/// Status constants that are not errors (1xx, 2xx, 3xx).
const NOT_ERRORS: &[&str] = &[
    "CONTINUE",
    "SWITCHING_PROTOCOLS",
    "PROCESSING",
    "OK",
    "CREATED",
    "ACCEPTED",
    "NON_AUTHORITATIVE_INFORMATION",
    "NO_CONTENT",
    "RESET_CONTENT",
    "PARTIAL_CONTENT",
    "MULTI_STATUS",
    "ALREADY_REPORTED",
    "IM_USED",
    "MULTIPLE_CHOICES",
    "MOVED_PERMANENTLY",
    "FOUND",
    "SEE_OTHER",
    "NOT_MODIFIED",
    "USE_PROXY",
    "TEMPORARY_REDIRECT",
    "PERMANENT_REDIRECT",
];

/// One finding: line (1-based), the offending code, what rule it breaks.
#[derive(Debug, PartialEq)]
struct Finding {
    line: usize,
    code: String,
    rule: &'static str,
}

/// The source without its `#[cfg(test)] mod ...` tail (test modules close a file here) and with
/// comment lines blanked (line numbers kept).
fn code_of(source: &str) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let mut end = lines.len();
    for (i, l) in lines.iter().enumerate() {
        if l.trim() == "#[cfg(test)]"
            && lines
                .get(i + 1)
                .is_some_and(|n| n.trim_start().starts_with("mod ") && n.trim_end().ends_with('{'))
        {
            end = i;
            break;
        }
    }
    lines[..end]
        .iter()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn line_at(code: &str, offset: usize) -> usize {
    code[..offset].matches('\n').count() + 1
}

fn excerpt(code: &str, offset: usize) -> String {
    let start = code[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = code[offset..].find('\n').map_or(code.len(), |i| offset + i);
    code[start..end].trim().to_string()
}

/// What in `source` builds an error answer outside `src/api/error.rs`.
fn findings(source: &str) -> Vec<Finding> {
    let code = code_of(source);
    let mut out = Vec::new();
    let mut push = |offset: usize, rule: &'static str, code_text: &str| {
        out.push(Finding {
            line: line_at(code_text, offset),
            code: excerpt(code_text, offset),
            rule,
        });
    };
    for (needle, rule) in [
        (
            "IntoResponse for",
            "a second error answer: implement From<YourError> for ApiError instead",
        ),
        (
            "Response::builder",
            "a hand-built response: return an ApiError",
        ),
        ("status_mut()", "a status set by hand: return an ApiError"),
        (
            "ApiError::new(",
            "an ApiError given its status outside src/api/error.rs: add a constructor (or a \
             From impl) there",
        ),
    ] {
        for (at, _) in code.match_indices(needle) {
            if needle != "IntoResponse for" || excerpt(&code, at).contains("impl") {
                push(at, rule, &code);
            }
        }
    }
    for (at, _) in code.match_indices("\"error\"") {
        let rest = code[at + "\"error\"".len()..].trim_start();
        if let Some(rest) = rest.strip_prefix(':') {
            if rest.trim_start().starts_with('{') {
                push(
                    at,
                    "the error body written by hand: return an ApiError",
                    &code,
                );
            }
        }
    }
    for (at, _) in code.match_indices("StatusCode::") {
        let name: String = code[at + "StatusCode::".len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let is_error = if name.starts_with("from_") {
            true
        } else {
            name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                && !name.is_empty()
                && !NOT_ERRORS.contains(&name.as_str())
        };
        if !is_error {
            continue;
        }
        // The path before `StatusCode` (`axum::http::`, `reqwest::`).
        let path_start = code[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |i| i + 1);
        if code[path_start..at].contains("reqwest") {
            continue;
        }
        push(
            at,
            "an error status outside src/api/error.rs: use an ApiError constructor or a From \
             impl there",
            &code,
        );
    }
    out.sort_by_key(|f| f.line);
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn only_src_api_error_rs_builds_error_answers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    assert!(
        files.len() > 50,
        "the sources were not found under {}",
        root.display()
    );
    let mut bad = Vec::new();
    let mut allowed_used = vec![false; ALLOWED.len()];
    for f in &files {
        let rel = f
            .strip_prefix(root)
            .unwrap_or(f)
            .to_string_lossy()
            .replace('\\', "/");
        if rel == ERROR_FILE {
            continue;
        }
        let source = std::fs::read_to_string(f).unwrap_or_default();
        for finding in findings(&source) {
            let allowed = ALLOWED
                .iter()
                .position(|(file, what, _)| *file == rel && finding.code.contains(what));
            match allowed {
                Some(i) => allowed_used[i] = true,
                None => bad.push(format!(
                    "{rel}:{}: {}\n    {}",
                    finding.line, finding.rule, finding.code
                )),
            }
        }
    }
    assert!(
        bad.is_empty(),
        "error answers built outside {ERROR_FILE}:\n{}",
        bad.join("\n")
    );
    // A stale allow-list entry would let a later violation in that file through unnoticed.
    for (i, used) in allowed_used.iter().enumerate() {
        assert!(
            used,
            "allow-list entry {:?} matches nothing any more: remove it",
            ALLOWED[i]
        );
    }
}

/// The checker itself: each rule catches its pattern, and what is allowed stays allowed.
#[test]
fn the_checker_catches_each_way_of_building_an_error_answer() {
    let rules = |src: &str| -> Vec<usize> { findings(src).iter().map(|f| f.line).collect() };
    assert_eq!(
        rules("struct E;\nimpl IntoResponse for E {\n fn into_response(self) {}\n}"),
        [2]
    );
    assert_eq!(
        rules("impl axum::response::IntoResponse for E {}"),
        [1],
        "a full path"
    );
    assert_eq!(
        rules("fn f() -> Response {\n  (StatusCode::BAD_REQUEST, \"no\").into_response()\n}"),
        [2]
    );
    assert_eq!(
        rules("let x = (axum::http::StatusCode::NOT_FOUND, Json(v));"),
        [1]
    );
    assert_eq!(rules("if s == StatusCode::UNAUTHORIZED { }"), [1]);
    assert_eq!(rules("let s = StatusCode::from_u16(401);"), [1]);
    assert_eq!(
        rules("Json(json!({\"error\": {\"code\": \"x\", \"message\": m}}))"),
        [1]
    );
    assert_eq!(rules("Response::builder().status(500)"), [1]);
    assert_eq!(rules("*res.status_mut() = s;"), [1]);

    // ApiError::new outside src/api/error.rs, with any status: the status is not chosen there
    // (both the call and an error status constant are findings).
    assert_eq!(
        rules("ApiError::new(\n    StatusCode::FORBIDDEN,\n    \"host_not_allowed\", m)"),
        [1, 2]
    );
    assert_eq!(
        rules("ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, \"busy\", m)"),
        [1, 1]
    );
    assert_eq!(
        rules("e.map_err(|e| ApiError::new(e.status(), \"bad_multipart\", e.body_text()))"),
        [1]
    );

    // Allowed: the constructors of src/api/error.rs, success statuses, client code, comments,
    // test modules, error fields that are not the error body.
    assert!(rules("Err(ApiError::refused(\"host_not_allowed\", m))").is_empty());
    assert!(rules("Ok((StatusCode::ACCEPTED, Json(job)).into_response())").is_empty());
    assert!(rules("if status != reqwest::StatusCode::NOT_FOUND {}").is_empty());
    assert!(rules("// (StatusCode::BAD_REQUEST, ..) is not how").is_empty());
    assert!(rules("json!({\"status\": \"x\", \"error\": e.to_string()})").is_empty());
    assert!(rules(
        "fn a() {}\n#[cfg(test)]\nmod tests {\n  fn t() { assert_eq!(s, StatusCode::FORBIDDEN); }\n}"
    )
    .is_empty());
    // A test module kept in its own file (`mod tests;`) hides nothing after it.
    assert_eq!(
        rules("#[cfg(test)]\nmod tests;\nimpl IntoResponse for E {}"),
        [3]
    );
}
