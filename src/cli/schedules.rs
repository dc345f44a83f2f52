//! `runyard schedules [list|get|pause|resume|trigger]`: cron schedules over the HTTP API.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{Api, ServerArg};

/// `schedules` flags.
#[derive(Debug, Args)]
pub struct SchedulesArgs {
    #[command(subcommand)]
    action: Option<Action>,
    #[command(flatten)]
    server: ServerArg,
}

/// Flags of the subcommands that name a schedule.
#[derive(Debug, Args)]
struct NameArgs {
    /// The schedule's name.
    name: String,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// One line per schedule: name, paused, next fire, cron, time zone (the default).
    List(ListArgs),
    /// Print a schedule as JSON (with its next fires and last runs).
    Get(NameArgs),
    /// Stop firing until resumed.
    Pause(NameArgs),
    /// Fire again from the next fire time (times passed while paused are not caught up).
    Resume(NameArgs),
    /// Fire once now; prints the job id.
    Trigger(NameArgs),
}

/// Flags of `schedules list`.
#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    server: ServerArg,
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn path(name: &str) -> anyhow::Result<String> {
    // Names are letters, digits, '.', '_', '-': nothing to escape, but refuse what would be.
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        anyhow::bail!("`{name}` is not a schedule name (letters, digits, '.', '_', '-')");
    }
    Ok(format!("/async/schedules/{name}"))
}

/// Runs `runyard schedules ...`.
pub async fn run(a: SchedulesArgs) -> anyhow::Result<ExitCode> {
    let (action, server) = match a.action {
        None => (None, a.server),
        Some(Action::List(l)) => (None, l.server),
        Some(Action::Get(n)) => (Some(("get", n.name)), n.server),
        Some(Action::Pause(n)) => (Some(("pause", n.name)), n.server),
        Some(Action::Resume(n)) => (Some(("resume", n.name)), n.server),
        Some(Action::Trigger(n)) => (Some(("trigger", n.name)), n.server),
    };
    let api = Api::new(&server.server)?;
    let Some((verb, name)) = action else {
        let v = api.get("/async/schedules").await?;
        for s in v["schedules"].as_array().cloned().unwrap_or_default() {
            println!(
                "{:<32}  {:<6}  {:<24}  {:<20}  {}",
                s["name"].as_str().unwrap_or(""),
                if s["paused"] == true {
                    "paused"
                } else {
                    "active"
                },
                s["next_fires"][0].as_str().unwrap_or("-"),
                s["cron"].as_str().unwrap_or(""),
                s["timezone"].as_str().unwrap_or(""),
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    let p = path(&name)?;
    match verb {
        "get" => print(&api.get(&p).await?),
        "pause" => {
            let v = api.post(&format!("{p}/pause"), &json!({})).await?;
            println!("{} paused", v["name"].as_str().unwrap_or(&name));
        }
        "resume" => {
            let v = api.post(&format!("{p}/resume"), &json!({})).await?;
            println!(
                "{} resumed; next fire {}",
                v["name"].as_str().unwrap_or(&name),
                v["next_fires"][0].as_str().unwrap_or("-")
            );
        }
        _ => {
            let v = api.post(&format!("{p}/trigger"), &json!({})).await?;
            println!("{}", v["job_id"].as_str().unwrap_or(""));
        }
    }
    Ok(ExitCode::SUCCESS)
}
