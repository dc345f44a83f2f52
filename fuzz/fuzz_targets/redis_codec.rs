//! The Lua-facing encoders of the Redis store (`src/store/redis/mod.rs`): the named values per job
//! write that `commit.lua` receives (`commit_args`) and the log entries of `logs_append.lua` /
//! `logs_read.lua` (`log_entry`, `parse_log_entry`).
//!
//! Round trip: decoding what is sent gives back what was meant: the job record is the job and
//! the event is the job's event, in either form (`store.records`: the JSON, or the compact form,
//! read back with `read_job_record` / `read_event_record` as every node reads them), the index
//! fields are the job's fields as decimal integers Lua's `tonumber` reads, the file hashes split
//! back to the job's set, and a log line (any text, `|` and newlines included) reads back whole.
//! Any text read as a job record or an event is an error or a value, never a panic.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use runyard::job::{Backoff, Event, EventKind, FileRef, Job, JobStatus, Lease, RunRecord};
use runyard::notify::{NotifyEvent, NotifySpec};
use runyard::store::redis::{
    commit_args, log_entry, parse_log_entry, read_event_record, read_job_record,
};
use runyard::store::LogStream;
use serde_json::Value;

/// A JSON value: the input's bytes when they are JSON (floats, big numbers, escapes...), else a
/// string of them.
fn json(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    let bytes: Vec<u8> = u.arbitrary()?;
    Ok(serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())))
}

fn micros(u: &mut Unstructured<'_>) -> arbitrary::Result<i64> {
    // Mostly plausible times, sometimes anything.
    Ok(if u.ratio(1, 8)? {
        u.arbitrary()?
    } else {
        1_700_000_000_000_000 + i64::from(u.arbitrary::<i32>()?) * 1000
    })
}

fn job(u: &mut Unstructured<'_>) -> arbitrary::Result<Job> {
    let status = *u.choose(&JobStatus::ALL)?;
    let files_n = u.int_in_range(0..=3)?;
    let mut files = std::collections::BTreeMap::new();
    for _ in 0..files_n {
        let prop: String = u.arbitrary()?;
        let hash: [u8; 16] = u.arbitrary()?;
        files.entry(prop).or_insert_with(Vec::new).push(FileRef {
            hash: hex(&hash),
            size: u.arbitrary()?,
            mimetype: u.arbitrary()?,
            name: u.arbitrary()?,
            metadata: json(u)?,
            attempt: u.arbitrary()?,
        });
    }
    let runs_n = u.int_in_range(0..=2)?;
    let mut runs = Vec::new();
    for _ in 0..runs_n {
        runs.push(RunRecord {
            attempt: u.arbitrary()?,
            worker: u.arbitrary()?,
            token: u.arbitrary()?,
            claimed_at: micros(u)?,
            started_at: u.arbitrary()?,
            ended_at: u.arbitrary()?,
            outcome: u.arbitrary()?,
            reported: None,
            time_limit: u.arbitrary()?,
            error: u.arbitrary()?,
        });
    }
    let progress = f64::from(u.arbitrary::<u32>()?) / f64::from(u32::MAX);
    let multiplier = u.arbitrary::<f64>()?;
    Ok(Job {
        id: uuid::Uuid::from_bytes(u.arbitrary()?),
        job_type: u.arbitrary()?,
        args: json(u)?,
        runner: u.arbitrary()?,
        status,
        channel_id: u.arbitrary()?,
        user_id: u.arbitrary()?,
        attempt: u.arbitrary()?,
        max_attempts: u.arbitrary()?,
        backoff: Backoff {
            initial_ms: u.arbitrary()?,
            max_ms: u.arbitrary()?,
            multiplier: if multiplier.is_finite() {
                multiplier
            } else {
                2.0
            },
            jitter: u.arbitrary()?,
        },
        timeout_ms: u.arbitrary()?,
        run_at: if u.arbitrary()? {
            Some(micros(u)?)
        } else {
            None
        },
        idempotency_key: u.arbitrary()?,
        submit_hash: u.arbitrary()?,
        schedule: u.arbitrary()?,
        fire_time: u.arbitrary()?,
        schedule_gen: u.arbitrary()?,
        // A webhook (a normalised URL, as the API stores it) or none.
        notify: if u.arbitrary()? {
            let words = [
                NotifyEvent::Terminal,
                NotifyEvent::Status,
                NotifyEvent::Progress,
            ];
            Some(NotifySpec {
                url: format!("https://hooks.example.com/{}", u.arbitrary::<u16>()?),
                events: vec![*u.choose(&words)?],
            })
        } else {
            None
        },
        wait: None,
        // Signal keys are names (no newline: the separator commit.lua splits on).
        emits: u
            .arbitrary::<Vec<String>>()?
            .into_iter()
            .filter(|k| !k.is_empty() && !k.contains('\n'))
            .collect(),
        progress: if u.ratio(1, 2)? {
            progress
        } else {
            u.arbitrary::<u8>()? as f64 / 255.0
        },
        // `Some(null)` is stored as `null`, which reads back as `None` (both forms, as the API).
        status_details: if u.arbitrary()? { Some(json(u)?).filter(|v| !v.is_null()) } else { None },
        result: if u.arbitrary()? { Some(json(u)?).filter(|v| !v.is_null()) } else { None },
        error: u.arbitrary()?,
        exit_code: u.arbitrary()?,
        lease: if u.arbitrary()? {
            Some(Lease {
                worker: u.arbitrary()?,
                token: u.arbitrary()?,
                expires_at: micros(u)?,
            })
        } else {
            None
        },
        handle: None,
        files,
        runs,
        created_at: micros(u)?,
        // Always the clock of the last write (`apply`): a time the API can show.
        updated_at: 1_700_000_000_000_000 + i64::from(u.arbitrary::<i32>()?) * 1000,
        queued_at: micros(u)?,
        started_at: u.arbitrary()?,
        finished_at: if status.is_terminal() {
            Some(micros(u)?)
        } else {
            None
        },
        progress_event_at: u.arbitrary()?,
        progress_due: u.arbitrary()?,
        version: u.arbitrary()?,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What Lua's `tonumber` reads exactly: an optional sign and decimal digits.
fn lua_integer(s: &str, v: i64) {
    assert_eq!(s, v.to_string());
    assert!(s
        .trim_start_matches('-')
        .bytes()
        .all(|b| b.is_ascii_digit()));
}

fn opt_integer(s: &str, v: Option<i64>) {
    match v {
        Some(v) => lua_integer(s, v),
        None => assert_eq!(s, ""),
    }
}

fn commit(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let job = job(u)?;
    let submit = u.arbitrary::<bool>()?;
    let expected: Option<u64> = if submit { None } else { Some(u.arbitrary()?) };
    // The loaded job: none for a submit, else the same job with or without its files.
    let old = if submit {
        None
    } else {
        let mut o = job.clone();
        if u.arbitrary()? {
            o.files.clear();
        }
        Some(o)
    };
    let ev = *u.choose(&[None, Some(EventKind::Status), Some(EventKind::Progress)])?;
    let compact: bool = u.arbitrary()?;
    let pairs =
        commit_args(expected, old.as_ref(), &job, ev, compact).expect("a job always encodes");
    // Named values: each name once, the write's first value its id.
    let mut args = std::collections::HashMap::new();
    for (k, v) in &pairs {
        assert!(args.insert(k.as_str(), v.as_str()).is_none(), "`{k}` sent twice");
    }
    assert_eq!(pairs[0].0, "id");
    let arg = |k: &str| args.get(k).copied().unwrap_or("");
    // A job entering or leaving WAITING moves in the wait indexes, with or without a wait
    // record (these jobs have none: so no deadline). The loaded job has the same status.
    let was_waiting = old.as_ref().map(|o| o.status == JobStatus::Waiting);
    let movement = match (job.status == JobStatus::Waiting, was_waiting) {
        (true, Some(true)) | (false, Some(false) | None) => "",
        (true, _) => "enter",
        (false, Some(true)) => "leave",
    };
    assert_eq!(arg("wait"), movement);
    assert_eq!(arg("dl"), "");
    assert_eq!(arg("t"), job.job_type);
    assert_eq!(arg("id"), job.id.to_string());
    assert_eq!(arg("v"), expected.map(|v| v.to_string()).unwrap_or_default());
    assert_eq!(arg("nv"), job.version.to_string());
    assert_eq!(arg("st").parse::<JobStatus>(), Ok(job.status));
    assert_eq!(arg("r"), job.runner);
    assert_eq!(arg("c"), job.channel_id);
    lua_integer(arg("q"), job.queued_at);
    opt_integer(
        arg("runat"),
        job.run_at.filter(|_| job.status == JobStatus::Scheduled),
    );
    // In the lease set: an active job's lease, and a cancelled one's (kept while its worker
    // stops the work: the reaper finds it there once it runs out).
    let in_set = |st: JobStatus| st.is_active() || st == JobStatus::Cancelled;
    let active_lease = job
        .lease
        .as_ref()
        .filter(|_| in_set(job.status))
        .map(|l| l.expires_at);
    if args.contains_key("lease") {
        opt_integer(arg("lease"), active_lease);
    } else if let Some(o) = &old {
        // Left out when the loaded job was in the set with the same expiry, or neither is.
        let old_lease = o
            .lease
            .as_ref()
            .filter(|_| in_set(o.status))
            .map(|l| l.expires_at);
        assert_eq!(old_lease, active_lease);
    } else {
        assert!(active_lease.is_none());
    }
    opt_integer(arg("fin"), job.finished_at);
    if submit {
        assert_eq!(arg("idem"), job.idempotency_key.clone().unwrap_or_default());
    } else {
        assert_eq!(arg("idem"), "");
    }
    // The file hashes, as commit.lua splits them (`%S+`).
    let sent: BTreeSet<&str> = arg("files").split_whitespace().collect();
    let changed = old.as_ref().is_none_or(|o| o.files != job.files);
    let hashes: BTreeSet<&str> = job
        .files
        .values()
        .flatten()
        .map(|f| f.hash.as_str())
        .collect();
    if changed {
        assert_eq!(sent, hashes);
    } else {
        assert!(sent.is_empty());
    }
    // The body is the job, in the form asked for.
    let b = arg("b");
    assert_eq!(b.starts_with(r#"{"i":"#), compact, "record form: {b}");
    let back = read_job_record(b).expect("the body parses");
    assert_eq!(back, job, "the job body does not read back as the job");
    if !compact {
        let plain: Job = serde_json::from_str(b).expect("the JSON body parses");
        assert_eq!(plain, job);
    }
    // Signals emitted when the job becomes SUCCESS (the loaded job has the same status), one per
    // line.
    if submit && job.status == JobStatus::Success && job.finished_at.is_some() {
        let sent: Vec<&str> = arg("emits").split('\n').filter(|k| !k.is_empty()).collect();
        assert_eq!(
            sent,
            job.emits.iter().map(String::as_str).collect::<Vec<_>>()
        );
    } else {
        assert_eq!(arg("emits"), "");
    }
    // The webhook delivery: `created\nurl` exactly when the job's webhook wants this event.
    match (ev, &job.notify) {
        (Some(kind), Some(n)) if runyard::job::notify_spec::wants(&job, kind) => {
            assert_eq!(arg("dlv"), format!("{}\n{}", job.updated_at, n.url));
        }
        _ => assert_eq!(arg("dlv"), ""),
    }
    // The event is the job's.
    match ev {
        None => assert_eq!(arg("event"), ""),
        Some(kind) => {
            let e = read_event_record(arg("event")).expect("the event parses");
            assert_eq!(e, Event::for_job(&job, kind));
            assert_eq!(arg("event").starts_with(r#"{"c":"#), compact);
        }
    }
    Ok(())
}

fn log(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let stream = *u.choose(&[LogStream::Stdout, LogStream::Stderr, LogStream::Job])?;
    let ts: i64 = u.arbitrary()?;
    let seq: u64 = u.arbitrary()?;
    let line: String = u.arbitrary()?;
    let sent = log_entry(stream, ts, &line);
    // logs_append.lua stores `seq|` .. the entry; logs_read.lua returns it as stored.
    let stored = format!("{seq}|{sent}");
    let back = parse_log_entry(&stored).expect("a stored entry parses");
    assert_eq!(
        (back.seq, back.stream, back.ts, back.line.as_str()),
        (seq, stream, ts, line.as_str())
    );
    Ok(())
}

/// Any stored text, as a record or an event: an error or a value, never a panic.
fn stored(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let prefix = *u.choose(&["", r#"{"i":"#, r#"{"c":"#, r#"{"id":"#])?;
    let text = format!("{prefix}{}", u.arbitrary::<&str>()?);
    let _ = read_job_record(&text);
    let _ = read_event_record(&text);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    if data.first() == Some(&0xff) {
        let _ = stored(&mut Unstructured::new(&data[1..]));
        return;
    }
    let mut u = Unstructured::new(data);
    let _ = if u.arbitrary::<bool>().unwrap_or(false) {
        log(&mut u)
    } else {
        commit(&mut u)
    };
});
