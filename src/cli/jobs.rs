//! `runyard jobs`: a page of jobs as a table (or the page as JSON), with the cursor of the next.

use std::process::ExitCode;

use clap::Args;

use super::client::{Api, ServerArg};
use super::output;

/// `jobs` flags.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only this status.
    #[arg(long)]
    pub status: Option<String>,
    /// Only this type (glob).
    #[arg(long = "type")]
    pub job_type: Option<String>,
    /// Only jobs stored under this runner name (`--runner '(no runner)'`: the parked ones).
    #[arg(long)]
    pub runner: Option<String>,
    /// How many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// The next page: the cursor the previous page gave (`next_cursor`, or the hint after the
    /// table).
    #[arg(long)]
    pub cursor: Option<String>,
    #[command(flatten)]
    pub server: ServerArg,
}

/// `runyard jobs`: a table with a header (ID, STATUS, TYPE, ATTEMPT, CREATED).
pub async fn jobs(a: JobsArgs) -> anyhow::Result<ExitCode> {
    let api = Api::from_arg(&a.server)?;
    let mut u = reqwest::Url::parse("http://x/async/jobs")?;
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("limit", &a.limit.to_string());
        if let Some(s) = &a.status {
            q.append_pair("status", s);
        }
        if let Some(t) = &a.job_type {
            q.append_pair("type", t);
        }
        if let Some(r) = &a.runner {
            q.append_pair("runner", r);
        }
        if let Some(c) = &a.cursor {
            q.append_pair("cursor", c);
        }
    }
    let page = api
        .get(&format!("{}?{}", u.path(), u.query().unwrap_or("")))
        .await?;
    if a.server.output.json() {
        output::json_line(&page);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = page["jobs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|j| {
            vec![
                output::cell(&j["id"]),
                output::cell(&j["status"]),
                output::cell(&j["type"]),
                format!(
                    "{}/{}",
                    output::cell(&j["attempt"]),
                    output::cell(&j["max_attempts"])
                ),
                output::cell(&j["created_at"]),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(&["ID", "STATUS", "TYPE", "ATTEMPT", "CREATED"], &rows)
    );
    // More may follow (a filtered page can be short, even empty, and still have a next one).
    if let Some(c) = page["next_cursor"].as_str() {
        eprintln!("more jobs: runyard jobs --cursor {c} (with the same filters)");
    }
    Ok(ExitCode::SUCCESS)
}
