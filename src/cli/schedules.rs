//! `runyard schedules [list|get|pause|resume|trigger]`: cron schedules over the HTTP API.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{Api, ServerArg};
use super::output::{self, Format};

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

fn path(name: &str) -> anyhow::Result<String> {
    // Names are letters, digits, '.', '_', '-': nothing to escape, but refuse what would be.
    // `.` and `..` too (the server refuses them): a URL would resolve them as path segments.
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 100
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(super::exit::Failure::usage(format!(
            "`{}` is not a schedule name (1-100 letters, digits, '.', '_', '-'; not `.` or `..`)",
            super::answer::clipped(name, 80)
        )));
    }
    Ok(format!("/async/schedules/{name}"))
}

/// Runs `runyard schedules ...`.
pub async fn run(a: SchedulesArgs) -> anyhow::Result<ExitCode> {
    // `schedules --output json list`: the `--output` given before the command holds for it too
    // (text is the default: json on either side is asked for).
    let outer = a.server.output;
    let (action, server) = match a.action {
        None => (None, a.server),
        Some(Action::List(l)) => (None, l.server),
        Some(Action::Get(n)) => (Some(("get", n.name)), n.server),
        Some(Action::Pause(n)) => (Some(("pause", n.name)), n.server),
        Some(Action::Resume(n)) => (Some(("resume", n.name)), n.server),
        Some(Action::Trigger(n)) => (Some(("trigger", n.name)), n.server),
    };
    let api = Api::from_arg(&server)?;
    let format = if outer.json() { outer } else { server.output };
    let Some((verb, name)) = action else {
        let v = api.get("/async/schedules").await?;
        if format.json() {
            output::json_line(&v);
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = v["schedules"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|s| {
                vec![
                    output::cell(&s["name"]),
                    if s["paused"] == true {
                        "paused"
                    } else {
                        "active"
                    }
                    .to_string(),
                    output::cell(&s["next_fires"][0]),
                    output::cell(&s["cron"]),
                    output::cell(&s["timezone"]),
                ]
            })
            .collect();
        print!(
            "{}",
            output::table(&["NAME", "STATE", "NEXT FIRE", "CRON", "TIMEZONE"], &rows)
        );
        return Ok(ExitCode::SUCCESS);
    };
    let p = path(&name)?;
    match verb {
        "get" => output::document(format, &api.get(&p).await?),
        "pause" => {
            let v = api.post(&format!("{p}/pause"), &json!({})).await?;
            if format.json() {
                output::json_line(&v);
                return Ok(ExitCode::SUCCESS);
            }
            println!("{} paused", v["name"].as_str().unwrap_or(&name));
        }
        "resume" => {
            let v = api.post(&format!("{p}/resume"), &json!({})).await?;
            if format.json() {
                output::json_line(&v);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{} resumed; next fire {}",
                v["name"].as_str().unwrap_or(&name),
                v["next_fires"][0].as_str().unwrap_or("-")
            );
        }
        _ => {
            let v = api.post(&format!("{p}/trigger"), &json!({})).await?;
            match format {
                Format::Json => output::json_line(&v),
                Format::Text => println!("{}", v["job_id"].as_str().unwrap_or("")),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
