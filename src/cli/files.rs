//! `runyard files get JOB PROPERTY [INDEX] [-o FILE]`, `runyard files put JOB PROPERTY FILE`, and
//! the multipart body of `submit --input PROP=FILE`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use futures::StreamExt;
use md5::Digest;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::client::{job_path, path_of, Api, ServerArg};
use super::exit::Failure;
use super::output::{self, Format};

/// `files` flags.
#[derive(Debug, Args)]
pub struct FilesArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Download one of a job's files (an input or an output) to FILE, or to stdout.
    Get(GetArgs),
    /// Attach FILE to a job as PROPERTY (before it ends; inputs before it runs). Prints its index.
    Put(PutArgs),
}

/// Flags of `files get`.
#[derive(Debug, Args)]
struct GetArgs {
    /// The job id.
    job: String,
    /// The file's property, e.g. `inputs` or `outputs`.
    #[arg(value_parser = file_property)]
    property: String,
    /// Which file of the property (from 0).
    #[arg(default_value_t = 0)]
    index: usize,
    /// Write to this file instead of stdout (`-`: stdout).
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArg,
}

/// Flags of `files put`.
#[derive(Debug, Args)]
struct PutArgs {
    /// The job id.
    job: String,
    /// The property to attach it to, e.g. `inputs`.
    #[arg(value_parser = file_property)]
    property: String,
    /// The file to send.
    file: PathBuf,
    /// Its name on the job (default: the file's name); checked as the server checks it (a usage
    /// error before any byte is sent).
    #[arg(long, value_parser = file_label)]
    name: Option<String>,
    /// Its media type.
    #[arg(long, default_value = "application/octet-stream")]
    mimetype: String,
    #[command(flatten)]
    server: ServerArg,
}

/// Runs `runyard files ...`.
pub async fn run(a: FilesArgs) -> anyhow::Result<ExitCode> {
    match a.action {
        Action::Get(g) => get(g).await,
        Action::Put(p) => put(p).await,
    }
}

async fn get(mut a: GetArgs) -> anyhow::Result<ExitCode> {
    // `-o -` is stdout, as for curl and wget; the text itself (paths compare by components:
    // `-/` would equal `-`, and it names a directory).
    if a.out.as_ref().is_some_and(|o| o.as_os_str() == "-") {
        a.out = None;
    }
    if let Some(dir) = a.out.as_deref().filter(|d| d.is_dir()) {
        return Err(Failure::usage(format!(
            "-o {}: is a directory: name the file to write",
            dir.display()
        )));
    }
    let format = a.server.output;
    if format.json() && a.out.is_none() {
        return Err(Failure::usage(
            "files get --output json needs -o FILE: the file's bytes cannot share stdout with JSON",
        ));
    }
    let api = Api::from_arg(&a.server)?;
    let index = a.index.to_string();
    let path = job_path(&a.job)? + &path_of("", &["files", &a.property, &index])?;
    let (r, md5) = api.get_file(&path).await?;
    if md5.is_none() {
        eprintln!(
            "warning: the server sent no md5 ETag with the file (a runyard before it did): the \
             bytes are not checked"
        );
    }
    let mut body = r.bytes_stream();
    let mut digest = md5::Md5::new();
    match &a.out {
        None => {
            let mut out = tokio::io::stdout();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| api.unreachable(&e))?;
                digest.update(&chunk);
                out.write_all(&chunk).await?;
            }
            out.flush().await?;
            check_md5(digest, md5.as_deref())?;
        }
        Some(dest) => {
            // Into a temporary file beside the destination, renamed when complete and its md5
            // checked: a failed or altered download never leaves a file under the asked name.
            let part = part_path(dest);
            let written = async {
                let mut size = 0u64;
                let mut f = tokio::fs::File::create(&part).await.map_err(|e| {
                    Failure::usage(format!("-o {}: cannot write: {e}", dest.display()))
                })?;
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| api.unreachable(&e))?;
                    size += chunk.len() as u64;
                    digest.update(&chunk);
                    f.write_all(&chunk).await?;
                }
                f.flush().await?;
                check_md5(digest, md5.as_deref())?;
                f.sync_all().await?;
                tokio::fs::rename(&part, dest).await?;
                anyhow::Ok(size)
            }
            .await;
            if written.is_err() {
                let _ = tokio::fs::remove_file(&part).await;
            }
            let size = written?;
            let summary = json!({
                "job_id": a.job,
                "property": a.property,
                "index": a.index,
                "path": dest.display().to_string(),
                "size": size,
            });
            match format {
                Format::Json => output::json_line(&summary),
                Format::Text => eprintln!("{size} bytes -> {}", dest.display()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The bytes received against the md5 the server's `ETag` gave: a proxy or a cut connection
/// that altered them is an error (exit 3), not a file.
fn check_md5(digest: md5::Md5, expected: Option<&str>) -> anyhow::Result<()> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let got = hex::encode(digest.finalize());
    if got == expected {
        return Ok(());
    }
    Err(Failure::Unavailable {
        status: 200,
        code: "bad_download".into(),
        message: format!(
            "the bytes received have md5 {got}, the server's ETag says {expected}: they were \
             altered or cut on the way"
        ),
    }
    .into())
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

async fn put(a: PutArgs) -> anyhow::Result<ExitCode> {
    let api = Api::from_arg(&a.server)?;
    let (body, _len) = file_body(&a.file).await?;
    // The name from the path is checked as a --name is (the server would refuse it after the
    // upload).
    let name = match &a.name {
        Some(n) => n.clone(),
        None => file_label(&file_name(&a.file)).map_err(|e| {
            Failure::usage(format!("{}: {e}; name it with --name", a.file.display()))
        })?,
    };
    // The server refuses a file for an ended job before reading it, and a refusal that arrives
    // while the body is still being sent reads as a broken connection: ask first, so the answer
    // is the refusal itself (the server checks again when the file arrives).
    // A token that may attach files but not read jobs (`jobs:submit` alone) skips the question.
    let job = match api.get(&job_path(&a.job)?).await {
        Ok(job) => Some(job),
        Err(e) if refused_with(&e, 403) => None,
        Err(e) => return Err(e),
    };
    let status = job
        .as_ref()
        .and_then(|j| j["status"].as_str())
        .unwrap_or("");
    if super::follow::is_terminal(status) {
        return Err(Failure::Refused {
            status: 409,
            code: "illegal_transition".into(),
            message: format!("job is {status} (as the server shows it): it takes no more files"),
        }
        .into());
    }
    let mut u = reqwest::Url::parse("http://x/")?;
    u.set_path(&format!(
        "{}{}",
        job_path(&a.job)?,
        path_of("", &["files", &a.property])?
    ));
    u.query_pairs_mut().append_pair("name", &name);
    let path = format!("{}?{}", u.path(), u.query().unwrap_or(""));
    let v = api.put_body(&path, body, &a.mimetype).await?;
    match a.server.output {
        Format::Json => output::json_line(&v),
        Format::Text => println!(
            "{}[{}] {} bytes, md5 {}",
            output::cell(&v["property"]),
            output::cell(&v["index"]),
            output::cell(&v["size"]),
            output::cell(&v["hash"])
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `e` is the server's refusal with this status.
fn refused_with(e: &anyhow::Error, status: u16) -> bool {
    matches!(e.downcast_ref::<Failure>(), Some(Failure::Refused { status: s, .. }) if *s == status)
}

/// A property the server would take (1-64 letters, digits, `_`, `-`; so never `.` or `..`,
/// which a URL would resolve as a path): a usage error, exit 2, before any request.
fn file_property(p: &str) -> Result<String, String> {
    if crate::api::hooks::valid_property(p) {
        Ok(p.to_string())
    } else {
        Err("a property is 1-64 letters, digits, '_' or '-'".into())
    }
}

/// A `--name` the server would take.
fn file_label(name: &str) -> Result<String, String> {
    crate::api::files::check_file_name(name).map(|()| name.to_string())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A file as a streamed request body with its length; an unreadable file is a usage error.
async fn file_body(path: &Path) -> anyhow::Result<(reqwest::Body, u64)> {
    let unreadable =
        |e: std::io::Error| Failure::usage(format!("{}: cannot read: {e}", path.display()));
    let regular = |m: &std::fs::Metadata| {
        if m.is_file() {
            Ok(())
        } else {
            Err(Failure::usage(format!(
                "{}: not a regular file",
                path.display()
            )))
        }
    };
    // Looked at before it is opened (opening a FIFO waits for a writer, forever), and again
    // once open (it may have been replaced between the two).
    regular(&tokio::fs::metadata(path).await.map_err(unreadable)?)?;
    let f = tokio::fs::File::open(path).await.map_err(unreadable)?;
    let meta = f.metadata().await.map_err(unreadable)?;
    regular(&meta)?;
    let stream = tokio_util::io::ReaderStream::new(f);
    Ok((reqwest::Body::wrap_stream(stream), meta.len()))
}

/// The multipart body of `submit --input PROP=FILE ...`: the `job` part, then one file part per
/// input, named by its property, in the order given.
pub async fn submit_form(
    job: &Value,
    inputs: &[String],
) -> anyhow::Result<reqwest::multipart::Form> {
    let mut form = reqwest::multipart::Form::new().part(
        "job",
        reqwest::multipart::Part::text(job.to_string()).mime_str("application/json")?,
    );
    for input in inputs {
        let Some((prop, file)) = input
            .split_once('=')
            .filter(|(p, f)| crate::api::hooks::valid_property(p) && !f.is_empty())
        else {
            return Err(Failure::usage(format!(
                "--input `{input}`: expected PROP=FILE, PROP 1-64 letters, digits, '_' or '-'"
            )));
        };
        let path = Path::new(file);
        file_label(&file_name(path))
            .map_err(|e| Failure::usage(format!("--input `{input}`: {e}")))?;
        let (body, len) = file_body(path).await?;
        form = form.part(
            prop.to_string(),
            reqwest::multipart::Part::stream_with_length(body, len)
                .file_name(file_name(path))
                .mime_str("application/octet-stream")?,
        );
    }
    Ok(form)
}
