//! `runyard submit`: one job from flags (with `--wait`, followed to its end), or the jobs of a
//! JSON-lines file (`--batch`, `submit_batch.rs`).

use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Args;
use serde_json::{json, Value};

use super::client::{json_arg, Api, ServerArg};
use super::exit::{self, Failure};
use super::follow;
use super::output::{self, Format};

/// `submit` flags.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The job type (not with --batch).
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    pub job_type: Option<String>,
    /// Submit the jobs of FILE instead (JSON lines, one submit body per line; `-` = stdin), up
    /// to 1,000 per request; prints one result per line, exits 4 when any line failed. Each
    /// line says all of its job: no other flag of a job goes with it.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "wait", "inputs", "wait_for", "args", "timeout", "max_attempts", "idempotency_key",
        "channel", "run_at", "no_notify",
    ])]
    pub batch: Option<String>,
    /// Arguments as a JSON object.
    #[arg(long)]
    pub args: Option<String>,
    /// Follow the job until it ends; print the final job; exit 0 only on SUCCESS.
    #[arg(long)]
    pub wait: bool,
    /// Per-attempt time limit, e.g. 30s, 10m, or plain seconds (500, 1.5).
    #[arg(long)]
    pub timeout: Option<String>,
    /// Attempts.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Idempotency key.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Event channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// Run at this RFC 3339 time.
    #[arg(long)]
    pub run_at: Option<String>,
    /// Wait (status WAITING, no worker slot) for COUNT records (1-10000, default 1) of signal KEY
    /// before running; repeatable, every one must be met. A last part of digits is always the
    /// COUNT: for a key that itself ends in `:DIGITS`, write the count out (`shard:2:1` waits for
    /// one record of `shard:2`; `shard:2` is two records of `shard`). Only 0-9 are digits: a sign
    /// or a space makes it part of the key (`k:+5` is one record of `k:+5`).
    #[arg(long = "wait-for", value_name = "KEY[:COUNT]", value_parser = wait_spec)]
    pub wait_for: Vec<String>,
    /// Records before this time do not count, for every --wait-for: RFC 3339, "-4h" (before the
    /// submit) or "HH:MM" (the last such UTC time).
    #[arg(long, requires = "wait_for", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Stop waiting at this time: RFC 3339, "+4h" or "HH:MM" (the next such UTC time).
    #[arg(long, requires = "wait_for")]
    pub deadline: Option<String>,
    /// What the deadline does.
    #[arg(long, requires = "deadline", value_parser = ["run", "fail", "skip"])]
    pub on_deadline: Option<String>,
    /// No webhook at all, not even the type's `[[notify.defaults]]` one (sends `"notify": null`;
    /// without it the job gets its type's default, if any).
    #[arg(long)]
    pub no_notify: bool,
    /// Attach an input file before the job can start: `PROP=FILE` (repeatable; the submit is then
    /// multipart, the file part named PROP).
    #[arg(long = "input", value_name = "PROP=FILE")]
    pub inputs: Vec<String>,
    #[command(flatten)]
    pub server: ServerArg,
}

/// `--timeout` as the API takes it: a plain number of seconds (`500`, `1.5`) as a JSON number,
/// anything else (`30s`, `10m`) as the string, for the server to read or refuse.
fn timeout_value(t: &str) -> Value {
    let plain = !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.');
    match (
        t.parse::<u64>(),
        plain.then(|| t.parse::<f64>().ok()).flatten(),
    ) {
        (Ok(n), _) => Value::from(n),
        (_, Some(f)) if f.is_finite() => Value::from(f),
        _ => Value::from(t),
    }
}

/// `--wait-for KEY[:COUNT]` split: a key may itself contain ':'; a last part of digits (ASCII
/// 0-9 only, after a non-empty key) is always the count, unparsed. A part with a sign (`+5`,
/// `-5`) or a space is not digits, so it stays in the key, though Rust's integer parse would
/// take `+5` as 5: only a part checked here is ever parsed as the count.
fn wait_parts(spec: &str) -> (&str, Option<&str>) {
    match spec.rsplit_once(':') {
        Some((k, c)) if !k.is_empty() && !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) => {
            (k, Some(c))
        }
        _ => (spec, None),
    }
}

/// Checks `--wait-for` as the server would (a usage error, exit 2, before any request): the key
/// to the rule of a key to wait for, the count from 1 to 10,000.
fn wait_spec(spec: &str) -> Result<String, String> {
    let (key, count) = wait_parts(spec);
    crate::store::signals::check_key(key)?;
    if let Some(c) = count {
        let max = crate::waiting::MAX_COUNT;
        if !c.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n)) {
            return Err(format!(
                "the COUNT `{c}` must be from 1 to {max} (for a key that itself ends in `:{c}`, \
                 write its count out: `{spec}:1`)"
            ));
        }
    }
    Ok(spec.to_string())
}

/// `--wait-for KEY[:COUNT]` (checked by [`wait_spec`]) as a `wait_for` item.
fn wait_item(spec: &str, since: Option<&str>) -> Value {
    let (key, count) = wait_parts(spec);
    let count = count.and_then(|c| c.parse::<u32>().ok()).unwrap_or(1);
    let mut item = json!({ "key": key, "count": count });
    if let Some(s) = since {
        item["since"] = json!(s);
    }
    item
}

/// `runyard submit`.
pub async fn submit(a: SubmitArgs) -> anyhow::Result<ExitCode> {
    let api = Api::from_arg(&a.server)?;
    let format = a.server.output;
    if let Some(file) = &a.batch {
        return super::submit_batch::run(&api, file, format).await;
    }
    let mut body = json!({ "type": a.job_type });
    if let Some(s) = &a.args {
        let args = json_arg("--args", s)?;
        if !args.is_object() {
            return Err(Failure::usage("--args must be a JSON object"));
        }
        body["args"] = args;
    }
    for (k, v) in [
        // A plain number (`500`, `1.5`) is seconds, as the API's JSON number (its string form
        // needs a unit).
        ("timeout", a.timeout.map(|t| timeout_value(&t))),
        ("max_attempts", a.max_attempts.map(Value::from)),
        ("idempotency_key", a.idempotency_key.map(Value::from)),
        ("channel", a.channel.map(Value::from)),
        ("run_at", a.run_at.map(Value::from)),
        (
            "wait_for",
            (!a.wait_for.is_empty()).then(|| {
                Value::Array(
                    a.wait_for
                        .iter()
                        .map(|w| wait_item(w, a.since.as_deref()))
                        .collect(),
                )
            }),
        ),
        ("deadline", a.deadline.map(Value::from)),
        ("on_deadline", a.on_deadline.map(Value::from)),
        // `null` itself, not "left out": left out takes the type's default webhook.
        ("notify", a.no_notify.then_some(Value::Null)),
    ] {
        if let Some(v) = v {
            body[k] = v;
        }
    }
    let keyed = body.get("idempotency_key").is_some();
    let r = if a.inputs.is_empty() {
        api.post("/async/jobs", &body).await
    } else {
        let form = super::files::submit_form(&body, &a.inputs).await?;
        api.post_multipart("/async/jobs", form).await
    }
    .map_err(|e| not_confirmed(e, keyed))?;
    let id = r["job_id"]
        .as_str()
        .ok_or_else(|| anyhow!("no job_id in the answer"))?
        .to_string();
    if !a.wait {
        match format {
            Format::Json => output::json_line(&r),
            Format::Text => println!("{id}"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{id}");
    let channel = r["channel_id"].as_str().unwrap_or(&id).to_string();
    // The job was accepted: a failure from here on (the token expired, the server went away)
    // ends the wait, not the job, and the message says so with how to find it.
    let job = follow::wait_job(&api, &id, &channel)
        .await
        .with_context(|| {
            format!(
                "stopped waiting for job {id}, which was accepted and is not cancelled \
                 (`runyard status {id}` shows where it is)"
            )
        })?;
    output::document(format, &job);
    Ok(exit::of_status(job["status"].as_str().unwrap_or("")))
}

/// A submit sent and not answered: the job may have been stored, and submitting again without
/// an idempotency key may make a second one (probe s54b F3: "cannot reach" invited just that).
fn not_confirmed(e: anyhow::Error, keyed: bool) -> anyhow::Error {
    if !matches!(e.downcast_ref(), Some(Failure::NotConfirmed { .. })) {
        return e;
    }
    e.context(if keyed {
        "the job may have been stored: submitting again with the same --idempotency-key makes \
         no second job"
    } else {
        "the job may have been stored: look for it (`runyard jobs`) before submitting again, or \
         give --idempotency-key K (the same key sent again makes no second job)"
    })
}

#[cfg(test)]
mod tests {
    use super::{timeout_value, wait_item, wait_spec};
    use serde_json::json;

    #[test]
    fn a_last_part_of_digits_is_the_count_and_a_count_of_0_is_refused() {
        for (spec, key, count) in [
            ("src", "src", 1),
            ("src:3", "src", 3),
            ("shard:2:1", "shard:2", 1),
            ("a:b", "a:b", 1),
            (":5", ":5", 1),
            ("k:", "k:", 1),
            // A sign is not a digit: the key is all of it (docs/cli.md), never `k` counting 5.
            ("k:+5", "k:+5", 1),
            ("k:-5", "k:-5", 1),
            ("k: 5", "k: 5", 1),
            ("k:+5:2", "k:+5", 2),
            ("k:5+", "k:5+", 1),
        ] {
            assert!(wait_spec(spec).is_ok(), "{spec}");
            assert_eq!(
                wait_item(spec, None),
                json!({"key": key, "count": count}),
                "{spec}"
            );
        }
        for spec in ["src:00", "src:0", "src:10001", "src:99999999999999999999"] {
            let e = wait_spec(spec).unwrap_err();
            assert!(e.contains(&format!("`{spec}:1`")), "{spec}: {e}");
        }
        assert!(wait_spec(" ").is_err());
    }

    #[test]
    fn a_plain_timeout_is_seconds_as_a_number_and_the_rest_goes_as_written() {
        assert_eq!(timeout_value("500"), json!(500));
        assert_eq!(timeout_value("1.5"), json!(1.5));
        for t in ["30s", "1e3", "inf", "1..5", ".", "-1", ""] {
            assert_eq!(timeout_value(t), json!(t), "{t}");
        }
    }
}
