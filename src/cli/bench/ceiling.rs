//! `runyard bench --http-ceiling`: the machine's HTTP ceiling for the submit shapes, as
//! `scripts/compare/` measures the spawn ceiling for process jobs.
//!
//! A bare server (this binary's hidden `bench-bare-server`: hyper alone, no store, no layers, no
//! worker) answers every `POST` as a submit does, `202` with a fresh job id, after reading the
//! body; the burst's own submit loop (`load::send_all`, the same client, connections and
//! requests) drives it. What runyard reaches in the same shape, divided by this, is the share of a
//! bare HTTP round trip it keeps while storing, queueing and running each job.

use std::process::{ExitCode, Stdio};
use std::time::Instant;

use anyhow::{anyhow, Context};
use axum::body::Body;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::AsyncBufReadExt;

use super::collect::latency;
use super::load::{body_for, send_all};
use super::*;

/// What `--http-ceiling --json` prints.
#[derive(Debug, Serialize)]
pub struct CeilingReport {
    /// Always `http-ceiling`.
    pub system: &'static str,
    /// Concurrent keep-alive clients.
    pub connections: usize,
    /// Requests answered `202` (warm-up not counted).
    pub jobs: usize,
    /// Requests that failed.
    pub submit_errors: usize,
    /// Requests per second (named as bench's end-to-end rate, so the compare tables read it alike).
    pub e2e_rate: f64,
    /// The bare server's CPU (user + system) per request, in milliseconds.
    pub server_cpu_ms_per_request: Option<f64>,
    /// Round trip of a request.
    pub submit_rtt: Option<Latency>,
}

/// Runs the ceiling measurement with `--connections` clients and `--jobs` requests.
pub(super) async fn run(a: &BenchArgs) -> anyhow::Result<ExitCode> {
    let deadline = Instant::now() + a.timeout;
    let (mut child, pid, port) = start_bare().await?;
    let ctx = Ctx {
        base: format!("http://127.0.0.1:{port}"),
        deadline,
        connections: a.connections,
        batch_size: 1,
        http: client(1)?,
        quiet: a.json,
    };
    let url = format!("{}/async/jobs", ctx.base);
    let body = body_for(SERVICE_TYPE);
    if a.warmup > 0 {
        send_all(&ctx, &url, body, a.warmup, 1).await?;
    }
    let cpu0 = cpu_secs(pid);
    let (sent, errors, secs) = send_all(&ctx, &url, body, a.jobs, 1).await?;
    let cpu1 = cpu_secs(pid);
    let _ = child.start_kill();
    let _ = child.wait().await;
    ctx.check_deadline()?;
    let report = CeilingReport {
        system: "http-ceiling",
        connections: a.connections,
        jobs: sent.len(),
        submit_errors: errors,
        e2e_rate: sent.len() as f64 / secs.max(1e-9),
        server_cpu_ms_per_request: match (cpu0, cpu1) {
            (Some(c0), Some(c1)) if !sent.is_empty() => {
                Some((c1 - c0) * 1000.0 / sent.len() as f64)
            }
            _ => None,
        },
        submit_rtt: latency(sent.iter().map(|s| s.rtt.as_micros() as i64)),
    };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    if errors > 0 {
        eprintln!("error: {errors} requests failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts `runyard bench-bare-server`; returns it, its pid and its port.
async fn start_bare() -> anyhow::Result<(tokio::process::Child, u32, u16)> {
    let mut child = super::child::this_binary()?
        .arg("bench-bare-server")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the bare server")?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("the bare server exited at once"))?;
    let out = child.stdout.take().context("the bare server's stdout")?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(out).read_line(&mut line),
    )
    .await
    .context("the bare server did not print its port")??;
    let port: u16 = line.trim().parse().context("the bare server's port")?;
    Ok((child, pid, port))
}

fn print_text(r: &CeilingReport) {
    println!(
        "HTTP ceiling, {} connection(s): {:.0} requests/s, bare server CPU {} ms/request{}",
        r.connections,
        r.e2e_rate,
        r.server_cpu_ms_per_request
            .map_or("?".into(), |c| format!("{c:.4}")),
        r.submit_rtt.as_ref().map_or(String::new(), |l| format!(
            ", round trip p50 {:.3} ms",
            l.p50_ms
        )),
    );
}

/// A process's CPU seconds (user + system) from /proc.
fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // Safety: a plain sysconf query.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks / hz as f64)
}

/// The hidden `runyard bench-bare-server`: prints its loopback port, then answers every request
/// `202 {"job_id": ..., "status": "QUEUED"}` after reading its body (at most 1 MiB), until killed.
pub async fn serve_bare() -> anyhow::Result<ExitCode> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", l.local_addr()?.port());
    loop {
        let (s, _) = l.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                // A body that cannot be read (over 1 MiB, broken) closes the connection.
                axum::body::to_bytes(Body::new(req.into_body()), 1 << 20).await?;
                let text = format!(
                    r#"{{"job_id":"{}","status":"QUEUED"}}"#,
                    uuid::Uuid::now_v7()
                );
                Response::builder()
                    .status(StatusCode::ACCEPTED)
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(text))
                    .map_err(axum::Error::new)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}
