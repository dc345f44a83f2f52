//! The house rules of issue 8 (docs/architecture.md), read from the source tree: no build of the
//! code under test, no network. Each failure names the file and line to look at.
//!
//! - **Layering**: arrows point down only. The job model (`src/job/`) does not import the store,
//!   the API, the server, the worker or the runners crate; the store (`src/store/`) does not
//!   import the API, the server or the worker; the API (`src/api/`) does not import the server;
//!   the `hooks` crate does not depend on `runners` (nor either of them on `runyard`).
//! - **File size**: no source file of `src/`, `runners/src/`, `hooks/src/` over [`MAX_LINES`]
//!   lines, counting the lines before its test module (its first `#[cfg(test)]` on an inline
//!   `mod tests {`; a `#[cfg(test)] mod x;` before other code does not end the count, and a
//!   test-only module file does not count at all).
//! - **Import circles**: the top-level modules of `runyard` (`src/<name>.rs`, `src/<name>/`),
//!   linked by their `crate::<name>` (and `super::` up to the root) paths, form no circle.
//!
//! Each rule has an allow-list of what breaks it today (other helpers are fixing those now): the
//! test passes with them and fails on anything new. Entries that no longer match are printed as
//! stale: remove them. The lead empties the lists at the end of issue 8.
//!
//! What is read: code outside comments and before a file's test module; one-line test-only items
//! and test-only module files (`#[cfg(test)] mod x;`) are skipped. Paths in string literals are not told apart from
//! code (none name a module today).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The most lines a source file may have before its first `#[cfg(test)]`.
const MAX_LINES: usize = 600;

/// Files allowed over [`MAX_LINES`]: none since issue 8 (a new entry needs a reason in a comment).
const OVERSIZED_ALLOWED: &[&str] = &[];

/// Imports against the layering allowed anyway: none since issue 8.
const LAYERING_ALLOWED: &[(&str, &str, &str)] = &[];

/// Import circles allowed through one edge `from -> to` that closes each (the edge that points
/// up): (from, to, the circle and why). None since issue 8: a new import that closes a circle
/// fails.
const CYCLE_EDGES_ALLOWED: &[(&str, &str, &str)] = &[];

/// What a module must not import: (folder of the importing files, forbidden targets). A target
/// is a top-level module of `runyard` or `runyard_runners` / `runyard_hooks` / `runyard`.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "src/job/",
        &["store", "api", "server", "worker", "runyard_runners"],
    ),
    ("src/store/", &["api", "server", "worker"]),
    ("src/api/", &["server"]),
    ("hooks/src/", &["runyard_runners", "runyard"]),
    ("runners/src/", &["runyard"]),
];

/// Crates whose `Cargo.toml` must not depend on some others: (manifest, forbidden packages).
const CRATE_LAYERS: &[(&str, &[&str])] = &[
    ("hooks/Cargo.toml", &["runyard-runners", "runyard"]),
    ("runners/Cargo.toml", &["runyard"]),
];

/// One source file as the rules read it.
struct Source {
    /// Relative to the workspace root, with `/`.
    rel: String,
    /// Its lines before the first `#[cfg(test)]`, comments blanked.
    code: Vec<String>,
    /// The path of its module in its crate (`src/job/mod.rs` -> `["job"]`).
    module: Vec<String>,
}

/// A path in the code that leaves its file's module: where, and what it names.
#[derive(Debug, Clone)]
struct Ref {
    file: String,
    line: usize,
    /// A top-level module of the crate (`store`), or an external crate (`runyard_runners`).
    target: String,
    text: String,
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: `{}`", self.file, self.line, self.text.trim())
    }
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(ROOT)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The folder holding the child modules of the module in `file`.
fn children_dir(file: &str) -> String {
    let (dir, name) = file.rsplit_once('/').unwrap_or(("", file));
    let stem = name.trim_end_matches(".rs");
    if matches!(stem, "mod" | "lib" | "main") {
        format!("{dir}/")
    } else {
        format!("{dir}/{stem}/")
    }
}

/// Files (or folders, ending in `/`) of modules declared `#[cfg(test)] mod x;`.
fn test_only(file: &str, lines: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.trim() != "#[cfg(test)]" {
            continue;
        }
        let Some(decl) = item_after(lines, i).and_then(|(_, d)| d.strip_suffix(';')) else {
            continue;
        };
        let decl = decl
            .trim_start_matches("pub ")
            .trim_start_matches("pub(crate) ");
        if let Some(name) = decl.strip_prefix("mod ") {
            let dir = children_dir(file);
            out.push(format!("{dir}{name}.rs"));
            out.push(format!("{dir}{name}/"));
        }
    }
    out
}

/// `line` without its `//` comment (a `//` inside a string literal ends the line early, which
/// at worst hides a path after it).
fn strip_comment(line: &str) -> String {
    let mut in_str = false;
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'/' if !in_str && b.get(i + 1) == Some(&b'/') => return line[..i].to_string(),
            _ => {}
        }
        i += 1;
    }
    line.to_string()
}

/// The item after the `#[cfg(test)]` at line `i`: the next line that is not blank, an
/// attribute or a comment.
fn item_after<'a>(lines: &[&'a str], i: usize) -> Option<(usize, &'a str)> {
    lines
        .iter()
        .enumerate()
        .skip(i + 1)
        .map(|(k, l)| (k, l.trim()))
        .find(|(_, l)| !l.is_empty() && !l.starts_with("#[") && !l.starts_with("//"))
}

/// The lines of a file that count, comments blanked: those before its test module (the first
/// `#[cfg(test)]` on an inline `mod x {`), with a one-line test-only item (`#[cfg(test)] mod
/// x;`, `#[cfg(test)] use ...;`) blanked.
fn live_code(lines: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut blank_until = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.trim() == "#[cfg(test)]" {
            match item_after(lines, i) {
                Some((_, item)) if is_inline_mod(item) => break,
                Some((k, item)) if item.ends_with(';') => blank_until = k + 1,
                _ => {}
            }
        }
        out.push(if i < blank_until {
            String::new()
        } else {
            strip_comment(l)
        });
    }
    out
}

fn is_inline_mod(item: &str) -> bool {
    let item = item
        .trim_start_matches("pub(crate) ")
        .trim_start_matches("pub ");
    item.starts_with("mod ") && item.ends_with('{')
}

/// Every source file of `src/`, `runners/src/`, `hooks/src/`, test-only module files left out.
fn sources() -> Vec<Source> {
    let mut out = Vec::new();
    for (dir, crate_root) in [
        ("src", "src/"),
        ("runners/src", "runners/src/"),
        ("hooks/src", "hooks/src/"),
    ] {
        let mut files = Vec::new();
        rs_files(&Path::new(ROOT).join(dir), &mut files);
        let texts: Vec<(String, String)> = files
            .iter()
            .map(|p| (rel(p), std::fs::read_to_string(p).expect("read source")))
            .collect();
        let skipped: Vec<String> = texts
            .iter()
            .flat_map(|(f, t)| test_only(f, &t.lines().collect::<Vec<_>>()))
            .collect();
        for (file, text) in texts {
            if skipped
                .iter()
                .any(|s| file == *s || (s.ends_with('/') && file.starts_with(s.as_str())))
            {
                continue;
            }
            let code = live_code(&text.lines().collect::<Vec<_>>());
            let inner = file.strip_prefix(crate_root).expect("under its crate");
            let mut module: Vec<String> = inner
                .trim_end_matches(".rs")
                .split('/')
                .map(str::to_string)
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            out.push(Source {
                rel: file,
                code,
                module,
            });
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The identifier at the start of `s` (after blanks).
fn ident(s: &str) -> &str {
    let s = s.trim_start();
    let end = s.bytes().position(|c| !is_ident(c)).unwrap_or(s.len());
    &s[..end]
}

/// The first identifiers of the items of the `{...}` group at the start of `s`, with their
/// offsets in `s`.
fn group_items(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 1usize);
    for (i, c) in s.bytes().enumerate() {
        match c {
            b'{' => depth += 1,
            b'}' | b',' if depth == 1 => {
                let item = &s[start..i];
                let lead = item.len() - item.trim_start().len();
                out.push((start + lead, ident(item)));
                start = i + 1;
                if c == b'}' {
                    break;
                }
            }
            b'}' => depth -= 1,
            _ => {}
        }
    }
    out
}

/// The paths of `src` that name something outside its top-level module: `crate::x`,
/// `super::...::x` up to the crate root, and the external crates in `externs`.
fn refs(src: &Source, modules: &BTreeSet<String>, externs: &[&str]) -> Vec<Ref> {
    let text = src.code.join("\n");
    let line_of = |pos: usize| text[..pos].bytes().filter(|&c| c == b'\n').count();
    let mut out = Vec::new();
    let mut push = |pos: usize, target: &str| {
        let line = line_of(pos);
        out.push(Ref {
            file: src.rel.clone(),
            line: line + 1,
            target: target.to_string(),
            text: src.code[line].clone(),
        });
    };
    let b = text.as_bytes();
    let own = src.module.first().map(String::as_str);
    let mut i = 0;
    while i < b.len() {
        if (i > 0 && (is_ident(b[i - 1]) || b[i - 1] == b'$')) || !is_ident(b[i]) {
            i += 1;
            continue;
        }
        let word = ident(&text[i..]);
        let after = &text[i + word.len()..];
        let mut rest = None;
        if word == "crate" && after.starts_with("::") {
            rest = Some(i + word.len() + 2);
        } else if word == "super" && after.starts_with("::") {
            let mut at = i;
            let mut ups = 0;
            while text[at..].starts_with("super::") {
                ups += 1;
                at += "super::".len();
            }
            if ups >= src.module.len() {
                rest = Some(at);
            }
        } else if externs.contains(&word) && after.starts_with("::") {
            push(i, word);
        }
        if let Some(at) = rest {
            let names: Vec<(usize, &str)> = if text[at..].starts_with('{') {
                group_items(&text[at..])
                    .into_iter()
                    .map(|(o, n)| (at + o, n))
                    .collect()
            } else {
                vec![(at, ident(&text[at..]))]
            };
            for (pos, name) in names {
                if modules.contains(name) && Some(name) != own {
                    push(pos, name);
                }
            }
        }
        i += word.len().max(1);
    }
    out
}

/// The top-level modules of `runyard`.
fn top_modules(sources: &[Source]) -> BTreeSet<String> {
    sources
        .iter()
        .filter(|s| s.rel.starts_with("src/"))
        .filter_map(|s| s.module.first().cloned())
        .collect()
}

fn all_refs(sources: &[Source]) -> Vec<Ref> {
    let modules = top_modules(sources);
    let externs = ["runyard_runners", "runyard_hooks", "runyard"];
    sources
        .iter()
        .flat_map(|s| {
            let local = if s.rel.starts_with("src/") {
                modules.clone()
            } else {
                BTreeSet::new()
            };
            refs(s, &local, &externs)
        })
        .collect()
}

/// An allow-list entry that no longer matches fails: the lists only shrink, and say the truth.
fn report_stale(what: &str, stale: &[String]) {
    assert!(
        stale.is_empty(),
        "stale entries in {what} (tests/architecture.rs), remove them: {stale:?}"
    );
}

#[test]
fn arrows_point_down_only() {
    let sources = sources();
    let refs = all_refs(&sources);
    let mut bad = Vec::new();
    let mut used = BTreeSet::new();
    for r in &refs {
        for (dir, forbidden) in LAYERS {
            if !r.file.starts_with(dir) || !forbidden.contains(&r.target.as_str()) {
                continue;
            }
            match LAYERING_ALLOWED
                .iter()
                .position(|(f, t, _)| *f == r.file && *t == r.target)
            {
                Some(k) => {
                    used.insert(k);
                }
                None => bad.push(format!(
                    "{r}: `{dir}` must not import `{}` (the layering of docs/architecture.md)",
                    r.target
                )),
            }
        }
    }
    for (manifest, forbidden) in CRATE_LAYERS {
        let text = std::fs::read_to_string(Path::new(ROOT).join(manifest)).expect("manifest");
        for (line, dep) in manifest_deps(&text) {
            if forbidden.contains(&dep.as_str()) {
                bad.push(format!(
                    "{manifest}:{line}: depends on `{dep}`: the arrows between crates point \
                     down (runyard -> runners -> hooks)"
                ));
            }
        }
    }
    let stale: Vec<String> = LAYERING_ALLOWED
        .iter()
        .enumerate()
        .filter(|(k, _)| !used.contains(k))
        .map(|(_, (f, t, _))| format!("{f} -> {t}"))
        .collect();
    report_stale("LAYERING_ALLOWED", &stale);
    assert!(
        bad.is_empty(),
        "imports against the layering:\n  {}",
        bad.join("\n  ")
    );
}

/// The packages a manifest depends on (every `*dependencies` table), with their lines.
fn manifest_deps(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_deps = false;
    for (i, l) in text.lines().enumerate() {
        let l = l.split('#').next().unwrap_or("").trim();
        if let Some(h) = l.strip_prefix('[') {
            let h = h.trim_end_matches(']');
            // `[dependencies.name]` names its package in the header.
            if let Some((_, name)) = h.rsplit_once("dependencies.") {
                out.push((i + 1, name.trim_matches('"').to_string()));
                in_deps = false;
            } else {
                in_deps = h.ends_with("dependencies");
            }
            continue;
        }
        if !in_deps || l.is_empty() {
            continue;
        }
        let key = l
            .split(['=', '.'])
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        out.push((i + 1, key.to_string()));
        // A renamed dependency: `alias = { package = "name", ... }`.
        if let Some((_, p)) = l.split_once("package") {
            let name = p.trim_start().trim_start_matches('=').trim_start();
            if let Some(name) = name.strip_prefix('"').and_then(|n| n.split('"').next()) {
                out.push((i + 1, name.to_string()));
            }
        }
    }
    out
}

#[test]
fn no_file_over_the_line_limit() {
    let mut bad = Vec::new();
    let mut seen = BTreeSet::new();
    for s in sources() {
        let n = s.code.len();
        if n <= MAX_LINES {
            continue;
        }
        if OVERSIZED_ALLOWED.contains(&s.rel.as_str()) {
            seen.insert(s.rel.clone());
            continue;
        }
        bad.push(format!(
            "{}:{}: {n} lines before its test module (the limit is {MAX_LINES}): split it \
             by what its parts do",
            s.rel,
            MAX_LINES + 1
        ));
    }
    let stale: Vec<String> = OVERSIZED_ALLOWED
        .iter()
        .filter(|f| !seen.contains(**f))
        .map(|f| f.to_string())
        .collect();
    report_stale("OVERSIZED_ALLOWED", &stale);
    assert!(bad.is_empty(), "files too long:\n  {}", bad.join("\n  "));
}

#[test]
fn no_import_circle_between_top_level_modules() {
    let sources = sources();
    let refs: Vec<Ref> = all_refs(&sources)
        .into_iter()
        .filter(|r| r.file.starts_with("src/") && !r.target.starts_with("runyard"))
        .collect();
    // Each edge with the first place that makes it.
    let mut edges: BTreeMap<(String, String), &Ref> = BTreeMap::new();
    let own = |r: &Ref| {
        sources
            .iter()
            .find(|s| s.rel == r.file)
            .and_then(|s| s.module.first().cloned())
    };
    for r in &refs {
        if let Some(from) = own(r) {
            edges.entry((from, r.target.clone())).or_insert(r);
        }
    }
    // `ARCHITECTURE_EDGES=1 cargo test --test architecture -- --nocapture`: the whole graph.
    if std::env::var_os("ARCHITECTURE_EDGES").is_some() {
        for ((f, t), r) in &edges {
            println!("edge {f} -> {t}: {r}");
        }
    }
    let stale: Vec<String> = CYCLE_EDGES_ALLOWED
        .iter()
        .filter(|(f, t, _)| !edges.contains_key(&(f.to_string(), t.to_string())))
        .map(|(f, t, _)| format!("{f} -> {t}"))
        .collect();
    report_stale("CYCLE_EDGES_ALLOWED", &stale);
    let graph: BTreeMap<&str, Vec<&str>> = edges
        .keys()
        .filter(|(f, t)| !CYCLE_EDGES_ALLOWED.iter().any(|(a, b, _)| a == f && b == t))
        .fold(BTreeMap::new(), |mut g, (f, t)| {
            g.entry(f.as_str()).or_default().push(t.as_str());
            g
        });
    let mut msg = String::new();
    for cycle in circles(&graph) {
        let mut path = cycle.clone();
        path.push(cycle[0]);
        let _ = writeln!(msg, "import circle: {}", path.join(" -> "));
        for w in path.windows(2) {
            let r = edges[&(w[0].to_string(), w[1].to_string())];
            let _ = writeln!(msg, "    {} -> {}: {r}", w[0], w[1]);
        }
    }
    assert!(
        msg.is_empty(),
        "{msg}break the circle: move what both sides need to the lower module (see \
         docs/architecture.md); an import that points up is the one to remove"
    );
}

/// Tarjan's strongly connected components of an import graph.
struct Tarjan<'a, 'g> {
    graph: &'g BTreeMap<&'a str, Vec<&'a str>>,
    index: BTreeMap<&'a str, usize>,
    low: BTreeMap<&'a str, usize>,
    stack: Vec<&'a str>,
    on_stack: BTreeSet<&'a str>,
    comps: Vec<Vec<&'a str>>,
}

impl<'a> Tarjan<'a, '_> {
    fn visit(&mut self, v: &'a str) {
        let n = self.index.len();
        self.index.insert(v, n);
        self.low.insert(v, n);
        self.stack.push(v);
        self.on_stack.insert(v);
        for &w in self.graph.get(v).map(Vec::as_slice).unwrap_or(&[]) {
            if !self.index.contains_key(w) {
                self.visit(w);
                let l = self.low[v].min(self.low[w]);
                self.low.insert(v, l);
            } else if self.on_stack.contains(w) {
                let l = self.low[v].min(self.index[w]);
                self.low.insert(v, l);
            }
        }
        if self.low[v] == self.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack.remove(w);
                comp.push(w);
                if w == v {
                    break;
                }
            }
            self.comps.push(comp);
        }
    }
}

/// One circle through each strongly connected component of more than one module.
fn circles<'a>(graph: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<Vec<&'a str>> {
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        comps: Vec::new(),
    };
    for &v in graph.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.comps
        .iter()
        .filter(|c| c.len() > 1)
        .map(|c| circle_in(graph, c.iter().copied().collect()))
        .collect()
}

/// A shortest way from the first module of a component back to it (breadth-first, inside it).
fn circle_in<'a>(
    graph: &BTreeMap<&'a str, Vec<&'a str>>,
    members: BTreeSet<&'a str>,
) -> Vec<&'a str> {
    let start = *members.iter().next().expect("non-empty");
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut last = None;
    'search: while let Some(v) = queue.pop_front() {
        for &w in graph.get(v).map(Vec::as_slice).unwrap_or(&[]) {
            if w == start {
                last = Some(v);
                break 'search;
            }
            if members.contains(w) && !prev.contains_key(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    let mut cycle = Vec::new();
    let mut at = last.expect("a component has a circle");
    while at != start {
        cycle.push(at);
        at = prev[at];
    }
    cycle.push(start);
    cycle.reverse();
    cycle
}

/// The reader itself: the paths it must see and those it must not.
#[test]
fn the_reader_finds_paths_in_use_groups_and_inline() {
    let modules: BTreeSet<String> = ["api", "store", "job", "server"].map(String::from).into();
    let src = Source {
        rel: "src/job/x.rs".into(),
        code: [
            "use crate::{",
            "    api::A,",
            "    job::J,",
            "};",
            "fn f() { let _ = crate::store::open(); }",
            "use super::super::server::S;",
            "use super::sibling;",
            "macro_rules! m { () => { $crate::server::x() } }",
            "use runyard_runners::RunHandle;",
            &strip_comment("// use crate::server::Commented;"),
            &strip_comment("let s = \"http://x\"; // crate::server"),
        ]
        .map(String::from)
        .into(),
        module: vec!["job".into(), "x".into()],
    };
    let got: Vec<(usize, String)> = refs(&src, &modules, &["runyard_runners"])
        .into_iter()
        .map(|r| (r.line, r.target))
        .collect();
    let want: Vec<(usize, String)> = vec![
        (2, "api".into()),
        (5, "store".into()),
        (6, "server".into()),
        (9, "runyard_runners".into()),
    ];
    assert_eq!(got, want);
    let live = live_code(&[
        "use a;",
        "#[cfg(test)]",
        "mod proptests;",
        "use crate::job::X; // after a test-only module file: still code",
        "#[cfg(test)]",
        "mod tests {",
        "    use crate::store::S;",
        "}",
    ]);
    assert_eq!(live, ["use a;", "", "", "use crate::job::X; "]);
    let g: BTreeMap<&str, Vec<&str>> = [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"])]
        .into_iter()
        .chain([("d", vec!["a"])])
        .collect();
    assert_eq!(circles(&g), vec![vec!["a", "b", "c"]]);
    let deps = manifest_deps(
        "[package]\nname = \"x\"\n[dependencies]\nfoo.workspace = true\nbar = { path = \"../b\" }\n\
         alias = { package = \"real\" }\n[dev-dependencies.baz]\nversion = \"1\"\n",
    );
    let names: Vec<&str> = deps.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["foo", "bar", "alias", "real", "baz"]);
}
