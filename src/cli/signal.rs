//! `runyard signal KEY [--payload JSON] [--id ID]`: writes a readiness signal.

use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

use super::client::{Api, ServerArg};

/// `signal` flags.
#[derive(Debug, Args)]
pub struct SignalArgs {
    /// The signal's key, e.g. `src.orders`.
    #[arg(value_parser = signal_key)]
    pub key: String,
    /// A JSON payload.
    #[arg(long)]
    pub payload: Option<String>,
    /// An id that makes the write idempotent (the same id again returns the first record).
    #[arg(long)]
    pub id: Option<String>,
    #[command(flatten)]
    pub server: ServerArg,
}

/// A key the server would take (checked here: a usage error, exit 2, before any request).
fn signal_key(key: &str) -> Result<String, String> {
    crate::store::signals::check_key(key).map(|()| key.to_string())
}

/// Runs `runyard signal`: prints `{key, seq, at, id}` (one line of JSON, whatever `--output`).
pub async fn run(a: SignalArgs) -> anyhow::Result<ExitCode> {
    let api = Api::from_arg(&a.server)?;
    let mut body = json!({});
    if let Some(p) = &a.payload {
        body["payload"] = super::client::json_arg("--payload", p)?;
    }
    if let Some(i) = a.id {
        body["id"] = Value::String(i);
    }
    // The key goes in the path: percent-encode it as one segment.
    let mut u = reqwest::Url::parse("http://x/async/signals/")?;
    u.path_segments_mut()
        .map_err(|_| anyhow::anyhow!("cannot build the signal URL"))?
        .pop_if_empty()
        .push(&a.key);
    let v = api.post(u.path(), &body).await?;
    println!("{}", serde_json::to_string(&v).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}
