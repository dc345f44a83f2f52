//! `runyard launch`: the entrypoint inside a container, a Kubernetes pod or any process started by
//! a runner. It reads JOB_ID / JOB_SECRET_KEY / JOB_HOOK, reports RUNNING through the signed hook,
//! then either runs a registered service operation with the job's args (`runyard launch OP`) or
//! wraps a command (`runyard launch -- CMD ARGS...`), forwarding its output as logs, and reports
//! SUCCESS or ERROR.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use runyard_hooks::wire::StatusReport;
use runyard_hooks::JobClient;
use runyard_runners::buffered::{Batch, BatchSink, BufferedReporter};
use runyard_runners::service::{AbortError, ServiceContext, ServiceRegistry};
use runyard_runners::{lines, LogStream};
use serde_json::Value;
use tokio::io::AsyncRead;
use tokio_util::sync::CancellationToken;

/// `launch` flags.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// A registered service operation to run with the job's args.
    pub operation: Option<String>,
    /// Or: the command to wrap, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Sign hook calls with v1 (timestamp only) instead of v2.
    #[arg(long)]
    pub v1: bool,
    /// With `-- CMD`: once the command succeeded, upload FILE as a file of the job's PROPERTY
    /// (e.g. `--output outputs=/tmp/report.csv`; repeatable). A missing file fails the job.
    #[arg(long = "output", value_name = "PROPERTY=FILE")]
    pub outputs: Vec<String>,
    /// Also send the command's output lines through the hook. Off by default: every runyard
    /// runner (local, docker, kube) already captures the job's output, and forwarding would
    /// store each line twice. Use it when something else started the job.
    #[arg(long)]
    pub forward_logs: bool,
}

/// Runs `runyard launch` with the given operations.
pub async fn run(a: LaunchArgs, registry: ServiceRegistry) -> anyhow::Result<ExitCode> {
    let mut client = JobClient::from_env()?;
    if a.v1 {
        client = client.with_v1();
    }
    let client = Arc::new(client);
    let outputs = match parse_outputs(&a.outputs, a.command.is_empty()) {
        Ok(o) => o,
        Err(msg) => {
            client.error(msg.clone()).await?;
            anyhow::bail!(msg);
        }
    };
    match (a.operation, a.command.is_empty()) {
        (Some(op), true) => run_operation(client, &registry, &op).await,
        (None, false) => run_command(client, &a.command, &outputs, a.forward_logs).await,
        _ => {
            anyhow::bail!("give either an OPERATION or `-- CMD ARGS...`, not both and not neither")
        }
    }
}

/// Sends logs and progress through the hook: the one buffered reporter, at most every 200 ms.
type HookReporter = BufferedReporter<HookSink>;

/// Where launch's batches go: status reports through the job's signed hook.
struct HookSink(Arc<JobClient>);

impl HookSink {
    fn reporter(client: &Arc<JobClient>) -> Arc<HookReporter> {
        BufferedReporter::new(Self(client.clone()), Duration::from_millis(200), 100_000)
    }
}

#[async_trait::async_trait]
impl BatchSink for HookSink {
    /// In as many reports as the hook's limits need (`JobClient::report_with_logs`: a report
    /// that fails for a passing reason does not drop the rest, a note marks its lines; after a
    /// refusal such as `409` or 3 failures in a row the rest is dropped); the progress goes last.
    async fn send(&self, batch: Batch) {
        let lines = batch.lines.into_iter().map(|(_, _, line)| line).collect();
        let (progress, status_details) = match batch.progress {
            // A progress JSON cannot carry (NaN) is left out, not the batch's lines with it.
            Some((p, d)) => (Some(p).filter(|p| p.is_finite()), d),
            None => (None, None),
        };
        let fields = StatusReport {
            progress,
            status_details,
            ..Default::default()
        };
        if let Err(e) = self.0.report_with_logs(fields, lines).await {
            eprintln!("runyard launch: cannot send (some) logs/progress: {e}");
        }
    }
}

/// Reports the outcome; an error with `retry: false` ends the job without another attempt.
async fn finish(
    client: &JobClient,
    outcome: Result<Option<Value>, String>,
    retry: bool,
) -> ExitCode {
    let r = match &outcome {
        Ok(v) => client.success(v.clone()).await,
        Err(m) if retry => client.error(m.clone()).await,
        Err(m) => client.error_no_retry(m.clone()).await,
    };
    if let Err(e) = r {
        eprintln!("runyard launch: cannot report the outcome: {e}");
        return ExitCode::from(3);
    }
    if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run_operation(
    client: Arc<JobClient>,
    registry: &ServiceRegistry,
    op: &str,
) -> anyhow::Result<ExitCode> {
    let job = client.job().await?;
    let Some(f) = registry.get(op) else {
        let names: Vec<&str> = registry.names().collect();
        let msg = format!("no operation named `{op}` (known: {})", names.join(", "));
        client.error(msg.clone()).await?;
        anyhow::bail!(msg);
    };
    client.running().await?;
    let reporter = HookSink::reporter(&client);
    let cancel = CancellationToken::new();
    let ctx = ServiceContext::new(
        job.id,
        job.r#type,
        job.args,
        job.attempt,
        reporter.clone(),
        cancel.clone(),
    );
    let task = tokio::spawn(f(ctx));
    let mut retry = true;
    let outcome = tokio::select! {
        r = task => match r {
            Ok(Ok(v)) => Ok((!v.is_null()).then_some(v)),
            Ok(Err(e)) => {
                // The operation said no retry can fix it (`AbortError`), as in a service runner.
                retry = !AbortError::is_abort(e.as_ref());
                Err(e.to_string())
            }
            Err(e) => Err(format!("panicked: {e}")),
        },
        signal = crate::cli::stop_signal() => {
            cancel.cancel();
            note_stop(&client, signal, "the operation was cancelled").await;
            Err("stopped by a signal".to_string())
        }
    };
    reporter.flush().await;
    Ok(finish(&client, outcome, retry).await)
}

/// Notes a stop signal in the job's log as runyard's own: a line `runyard launch: SIGTERM
/// received: ...` sent through the hook, which stores it in the `job` stream (docs/api.md,
/// "logs"), apart from the job's stdout and stderr. Never on launch's stderr, which the runner
/// stores as the job's own output; there only when the hook does not take it.
/// Bounded: the stop of the work went first, and the runner's grace is short.
async fn note_stop(client: &JobClient, signal: &str, what: &str) {
    let line = format!("runyard launch: {signal} received: {what}");
    match tokio::time::timeout(Duration::from_secs(2), client.log(vec![line.clone()])).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => eprintln!("{line} (the hook did not take this note: {e})"),
        Err(_) => eprintln!("{line} (the hook did not answer this note in 2 s)"),
    }
}

/// Echoes the command's output as is (stdout or stderr) and, with `reporter`, sends its lines
/// through the hook, cut by the one line forwarder (at most `MAX_LINE_BYTES` a line).
async fn forward<R: AsyncRead + Unpin>(pipe: R, reporter: Option<Arc<HookReporter>>, stderr: bool) {
    use std::io::Write;
    lines::read_lines(
        pipe,
        |raw| {
            // Best effort, like `println!` without its panic on a closed stdout.
            let _ = if stderr {
                std::io::stderr().lock().write_all(raw)
            } else {
                std::io::stdout().lock().write_all(raw)
            };
        },
        |text| {
            if let Some(r) = &reporter {
                lines::report(r.as_ref(), LogStream::Stdout, text);
            }
        },
    )
    .await;
    let _ = if stderr {
        std::io::stderr().flush()
    } else {
        std::io::stdout().flush()
    };
}

/// `--output PROPERTY=FILE` values, checked before anything runs.
fn parse_outputs(raw: &[String], no_command: bool) -> Result<Vec<(String, PathBuf)>, String> {
    if !raw.is_empty() && no_command {
        return Err("`--output` goes with `-- CMD ARGS...`, not with an operation".into());
    }
    raw.iter()
        .map(|o| match o.split_once('=') {
            // The server's rule for a property (its upload route refuses any other, after the
            // command ran: a `.` had been taken here, and the job failed at its end).
            Some((prop, file)) if crate::api::hooks::valid_property(prop) && !file.is_empty() => {
                Ok((prop.to_string(), PathBuf::from(file)))
            }
            _ => Err(format!(
                "`--output {o}`: expected PROPERTY=FILE, PROPERTY 1-64 letters, digits, '_' or '-'"
            )),
        })
        .collect()
}

/// Uploads the outputs of a command that succeeded; the first failure is the job's error.
async fn upload_outputs(client: &JobClient, outputs: &[(String, PathBuf)]) -> Result<(), String> {
    for (prop, path) in outputs {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        client
            .upload(prop, path, serde_json::json!({ "name": name }))
            .await
            .map_err(|e| format!("cannot upload {} as `{prop}`: {e}", path.display()))?;
    }
    Ok(())
}

async fn run_command(
    client: Arc<JobClient>,
    command: &[String],
    outputs: &[(String, PathBuf)],
    forward_logs: bool,
) -> anyhow::Result<ExitCode> {
    client.running().await?;
    let mut child = match tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("cannot start `{}`: {e}", command[0]);
            client.error(msg.clone()).await?;
            anyhow::bail!(msg);
        }
    };
    let reporter = HookSink::reporter(&client);
    let mut readers = Vec::new();
    if let Some(o) = child.stdout.take() {
        readers.push(tokio::spawn(forward(
            o,
            forward_logs.then(|| reporter.clone()),
            false,
        )));
    }
    if let Some(e) = child.stderr.take() {
        readers.push(tokio::spawn(forward(
            e,
            forward_logs.then(|| reporter.clone()),
            true,
        )));
    }
    let mut stopped = false;
    let status = tokio::select! {
        s = child.wait() => s,
        signal = crate::cli::stop_signal() => {
            stopped = true;
            if let Some(pid) = child.id() {
                // Safety: plain syscall on our own child.
                unsafe { libc::kill(pid as i32, libc::SIGTERM); }
            }
            note_stop(&client, signal, &format!("sent SIGTERM to `{}`", command[0])).await;
            child.wait().await
        }
    }?;
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
    reporter.flush().await;
    use std::os::unix::process::ExitStatusExt;
    let ended = match (status.code(), status.signal()) {
        (Some(c), _) => format!("command exited with code {c}"),
        (None, Some(s)) => format!("command killed by signal {s}"),
        _ => "command ended abnormally".to_string(),
    };
    let outcome = match status.code() {
        // Stopped (docker stop, a pod's eviction): not done, whatever the command made of it;
        // an error worth another attempt, as with `launch OP`.
        _ if stopped => Err(format!("stopped by a signal ({ended})")),
        Some(0) => upload_outputs(&client, outputs).await.map(|()| None),
        _ => Err(ended),
    };
    // Each upload was tried again within its own report window, and so is the outcome's report:
    // a large output's transfer time must not leave the report (the job's outcome) one try.
    let code = finish(&client, outcome, true).await;
    Ok(match status.code() {
        Some(c) if code == ExitCode::SUCCESS || c != 0 => ExitCode::from(c.clamp(0, 255) as u8),
        _ => code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A property is checked by the server's rule before the command runs (review rev52e: `.`
    /// and 65 characters passed here, the command ran, and the upload's 400 failed the job at
    /// its end; `..` even sent the upload to another route).
    #[test]
    fn an_output_property_the_server_refuses_is_refused_before_anything_runs() {
        let long = format!("{}=f", "p".repeat(65));
        for bad in [
            "report.pdf=out/r.pdf",
            ".=f",
            "..=f",
            "=f",
            "p=",
            long.as_str(),
        ] {
            let err = parse_outputs(&[bad.to_string()], false).expect_err(bad);
            assert!(err.contains("PROPERTY 1-64 letters"), "{bad}: {err}");
        }
        let ok = parse_outputs(&["report_pdf-2=out/r.pdf".to_string()], false).unwrap();
        assert_eq!(
            ok,
            vec![("report_pdf-2".to_string(), PathBuf::from("out/r.pdf"))]
        );
    }
}
