//! Following a job from the command line: its events from the Server-Sent Events stream
//! (`GET /async/events/sse`, reconnecting from the last event id), and its log lines with their
//! time and attempt. `submit --wait` and `logs --follow` are built on these.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use super::client::{job_path, Api};
use super::exit::Failure;
pub use super::log_tail::{LogLine, LogTail};
use super::output::{self, Format};
use super::sse;

/// Statuses a job does not leave (except through an explicit retry).
pub fn is_terminal(status: &str) -> bool {
    matches!(status, "SUCCESS" | "ERROR" | "TIMEOUT" | "CANCELLED")
}

/// How long the server may stay unreachable before the command gives up (exit 3).
const GIVE_UP: Duration = Duration::from_secs(60);
/// Pause before reconnecting: doubles from the first to the second value.
const RECONNECT: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// The one rule by which `submit --wait` and `logs --follow` ride out a server restart, for the
/// event stream and for every request they make while following: a request that found no server,
/// got a 5xx or an answer that is not runyard's (`not_runyard`: a proxy's page while the server
/// is away) is tried again after a pause (doubling from 100 ms to 2 s), until the server has been
/// out of reach for [`GIVE_UP`]; any other failure (runyard's 4xx) ends the command at once.
///
/// A clone shares the count of time: a follow gives one to each of its readers (the event
/// stream, the log lines, the job), so that the server is given one [`GIVE_UP`] from its last
/// answer, whichever reader meets the failures (each with a count of its own, a reader that gave
/// up waiting at its own deadline left the next one a fresh minute: 88 s in all). Each reader
/// keeps its own pause: one whose requests keep failing (an event stream refused `503
/// too_many_streams` while plain reads go through) backs off to 2 s whatever the others get.
#[derive(Debug, Clone)]
pub(super) struct Patience {
    failing_since: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
    delay: Duration,
}

impl Patience {
    pub(super) fn new() -> Self {
        Self {
            failing_since: std::sync::Arc::new(std::sync::Mutex::new(None)),
            delay: RECONNECT.0,
        }
    }

    fn failing_since(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.failing_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request went through: the next failure starts a new count, and this reader's pause
    /// starts again from its least.
    fn reset(&mut self) {
        self.delay = RECONNECT.0;
        *self.failing_since() = None;
    }

    /// The pause before this reader's next try (doubling up to its bound).
    fn pause(&mut self) -> Duration {
        let d = self.delay;
        self.delay = (d * 2).min(RECONNECT.1);
        d
    }

    /// After a failed request: the pause before trying again, or the error itself when it is
    /// not worth trying again or the server has been out of reach for [`GIVE_UP`].
    fn after(&mut self, e: anyhow::Error) -> anyhow::Result<Duration> {
        if !is_transient(&e) {
            return Err(e);
        }
        let now = Instant::now();
        let since = *self.failing_since().get_or_insert(now);
        if now.duration_since(since) > GIVE_UP {
            return Err(e);
        }
        Ok(self.pause())
    }

    /// The value of a request that went through; `None`, after the pause, when it failed and
    /// is worth trying again; the error otherwise.
    pub(super) async fn settle<T>(&mut self, r: anyhow::Result<T>) -> anyhow::Result<Option<T>> {
        match r {
            Ok(v) => {
                self.reset();
                Ok(Some(v))
            }
            Err(e) => {
                tokio::time::sleep(self.after(e)?).await;
                Ok(None)
            }
        }
    }

    /// `GET path`, tried again by this rule.
    async fn get(&mut self, api: &Api, path: &str) -> anyhow::Result<Value> {
        loop {
            if let Some(v) = self.settle(api.get(path).await).await? {
                return Ok(v);
            }
        }
    }
}

/// One job's events, read from its channel's SSE stream: the stream is opened on first use and
/// re-opened from the last event id whenever it drops, so nothing is lost or repeated.
pub struct JobEvents {
    api: Api,
    job_id: String,
    channel: String,
    last_id: Option<String>,
    stream: Option<sse::Events>,
    /// The stream's request on its way: kept across calls, so that a server slow to answer it
    /// (one at `api.max_connections` keeps new connections waiting; a hung proxy) holds no call
    /// past its `within` (the follow froze 45 s a try, its log reads and job reads with it:
    /// probe s53b).
    connecting: Option<Connecting>,
    patience: Patience,
    /// Pause before the next connection attempt.
    not_before: Option<Instant>,
}

/// A stream's request on its way.
type Connecting =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<sse::Events>> + Send>>;

impl JobEvents {
    /// Follows `job_id` on `channel` from the oldest event the server keeps, giving up by
    /// `patience` (shared with the follow's other readers).
    pub(super) fn new(api: &Api, job_id: &str, channel: &str, patience: &Patience) -> Self {
        Self {
            api: api.clone(),
            job_id: job_id.to_string(),
            channel: channel.to_string(),
            last_id: None,
            stream: None,
            connecting: None,
            patience: patience.clone(),
            not_before: None,
        }
    }

    /// The next event of the job (or a `resync`), waiting at most `within`; `None` when none
    /// came in that time. Errors: the server refused the stream (4xx), or stayed unreachable
    /// for a minute.
    pub async fn next(&mut self, within: Duration) -> anyhow::Result<Option<Value>> {
        let deadline = Instant::now() + within;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if self.stream.is_none() {
                if let Some(t) = self.not_before {
                    if t > now {
                        tokio::time::sleep(t.min(deadline) - now).await;
                        continue;
                    }
                }
                let connecting = self.connecting.get_or_insert_with(|| {
                    let (api, channel) = (self.api.clone(), self.channel.clone());
                    let last_id = self.last_id.clone();
                    Box::pin(async move { api.event_stream(&channel, last_id.as_deref()).await })
                });
                let Ok(answer) = tokio::time::timeout(deadline - now, connecting).await else {
                    return Ok(None);
                };
                self.connecting = None;
                match answer {
                    Ok(r) => {
                        self.stream = Some(r);
                        self.patience.reset();
                        self.not_before = None;
                        // The time left is reckoned again: the connection took some of it.
                        continue;
                    }
                    Err(e) => {
                        self.not_before = Some(Instant::now() + self.patience.after(e)?);
                        continue;
                    }
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match tokio::time::timeout(deadline - now, stream.next()).await {
                Err(_) => return Ok(None),
                Ok(Some(Err(e))) if e.not_runyard() => {
                    return Err(sse::not_runyard(&e, self.api.shown()));
                }
                Ok(None) | Ok(Some(Err(_))) => {
                    // Dropped (a server restart, a proxy, a silence past the read bound):
                    // reconnect from the last event id after a short pause.
                    self.stream = None;
                    self.not_before = Some(Instant::now() + self.patience.pause());
                }
                Ok(Some(Ok(ev))) => {
                    // The stream's last id (an empty one: none, the reconnect sends none).
                    self.last_id = (!ev.id.is_empty()).then_some(ev.id);
                    let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                        continue;
                    };
                    if v["type"] == "resync" || v["job_id"] == self.job_id.as_str() {
                        return Ok(Some(v));
                    }
                }
            }
        }
    }
}

/// No answer, or a 5xx: worth reconnecting.
fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<Failure>(),
            Some(Failure::Unreachable { .. } | Failure::Unavailable { .. })
        )
    })
}

/// What a job shows while `submit --wait` follows it: a progress bar with the status and the
/// last log lines on a terminal, plain status lines on stderr otherwise.
enum View {
    Bar(indicatif::ProgressBar),
    Plain,
}

impl View {
    fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return View::Plain;
        }
        let bar = indicatif::ProgressBar::new(100);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos:>3}% {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        View::Bar(bar)
    }

    fn status(&self, status: &str, attempt: &Value) {
        let text = match attempt.as_u64() {
            Some(n) if n > 0 => format!("{status} (attempt {n})"),
            _ => status.to_string(),
        };
        match self {
            View::Bar(b) => b.set_message(text),
            View::Plain => eprintln!("{text}"),
        }
    }

    fn progress(&self, p: f64) {
        let pct = (p.clamp(0.0, 1.0) * 100.0).round() as u64;
        match self {
            View::Bar(b) => b.set_position(pct),
            View::Plain => eprintln!("progress {pct}%"),
        }
    }

    /// A line of its own above the bar (a terminal only, as the log lines).
    fn note(&self, text: &str) {
        if let View::Bar(b) = self {
            b.println(text);
        }
    }

    fn log(&self, line: &LogLine) {
        if let View::Bar(b) = self {
            b.println(line.text());
        }
    }

    fn finish(&self) {
        if let View::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}

/// How long `wait_job` waits without an event before it reads the job itself.
const QUIET_CHECK: Duration = Duration::from_secs(30);

/// Follows the job's events until it ends; returns the final job. On a terminal, shows a
/// progress bar with the job's log lines above it.
pub async fn wait_job(api: &Api, id: &str, channel: &str) -> anyhow::Result<Value> {
    let view = View::new();
    // One count for every reader: the server is given a minute from its last answer.
    let mut patience = Patience::new();
    let mut tail = match view {
        View::Bar(_) => Some(LogTail::new(id)?.sharing(&patience)),
        View::Plain => None,
    };
    let mut events = JobEvents::new(api, id, channel, &patience);
    // Without a terminal, nothing is shown but the events: wait for them, reading the job itself
    // after each `QUIET_CHECK` without one (a job whose record is gone, a store that lost its
    // data, answers 404 there: exit 4, not a wait for ever).
    let within = if tail.is_some() {
        Duration::from_millis(500)
    } else {
        QUIET_CHECK
    };
    let mut quiet_since = std::time::Instant::now();
    let r = async {
        loop {
            let ev = events.next(within).await?;
            if let Some(t) = tail.as_mut() {
                let lines = t.fetch_patiently(api).await?;
                if let Some(note) = t.take_gap() {
                    view.note(&note);
                }
                for l in lines {
                    view.log(&l);
                }
            }
            let Some(ev) = ev else {
                if quiet_since.elapsed() >= QUIET_CHECK {
                    quiet_since = std::time::Instant::now();
                    let job = patience.get(api, &job_path(id)?).await?;
                    if is_terminal(job["status"].as_str().unwrap_or("")) {
                        return Ok(job);
                    }
                }
                continue;
            };
            quiet_since = std::time::Instant::now();
            match ev["type"].as_str() {
                Some("progress") => view.progress(ev["progress"].as_f64().unwrap_or(0.0)),
                Some("resync") => {
                    // Events were trimmed: the job itself says where it is.
                    let job = patience.get(api, &job_path(id)?).await?;
                    if is_terminal(job["status"].as_str().unwrap_or("")) {
                        return Ok(job);
                    }
                }
                _ => {
                    let st = ev["runyard_status"].as_str().unwrap_or("");
                    view.status(st, &ev["attempt"]);
                    if let Some(p) = ev["progress"].as_f64() {
                        if let View::Bar(b) = &view {
                            b.set_position((p.clamp(0.0, 1.0) * 100.0).round() as u64);
                        }
                    }
                    if is_terminal(st) {
                        // An explicit retry may have followed; the job says.
                        let job = patience.get(api, &job_path(id)?).await?;
                        if ended_by(&job, &ev) {
                            return Ok(job);
                        }
                    }
                }
            }
        }
    }
    .await;
    if let (Ok(_), Some(t)) = (&r, tail.as_mut()) {
        for l in t.drain(api).await.unwrap_or_default() {
            view.log(&l);
        }
    }
    view.finish();
    r
}

/// Whether `job` (as just read) ended with the write that made the terminal event `ev`: the
/// job's `finished_at` is that event's `ts`. An earlier attempt's end replayed from history
/// (the job was retried, and may have ended again since) is not the job's end.
fn ended_by(job: &Value, ev: &Value) -> bool {
    is_terminal(job["status"].as_str().unwrap_or(""))
        && match (job["finished_at"].as_str(), ev["ts"].as_str()) {
            (Some(f), Some(t)) => f == t,
            _ => true,
        }
}

/// `logs --follow`: prints the job's lines as they come until it ends (the end from its event
/// stream), then the lines its process wrote last; returns the final job.
pub async fn follow_logs(api: &Api, tail: &mut LogTail, format: Format) -> anyhow::Result<Value> {
    let job = api.get(&job_path(&tail.id)?).await?;
    let channel = job["channel_id"].as_str().unwrap_or(&tail.id).to_string();
    let mut done = is_terminal(job["status"].as_str().unwrap_or(""));
    // One count for every reader: the server is given a minute from its last answer.
    let mut patience = Patience::new();
    tail.share(&patience);
    let mut events = JobEvents::new(api, &tail.id, &channel, &patience);
    // The job is read again after QUIET_CHECK without an event (a stream refused for good while
    // plain reads go through, as `wait_job` does): its end is then seen without one.
    let mut quiet_since = Instant::now();
    loop {
        loop {
            let lines = tail.fetch_patiently(api).await?;
            if let Some(note) = tail.take_gap() {
                eprintln!("{note}");
            }
            if lines.is_empty() {
                break;
            }
            for l in &lines {
                l.print(format);
            }
        }
        if done {
            break;
        }
        // Log lines are not events: between events, new lines are read twice a second.
        let ended = match events.next(Duration::from_millis(500)).await? {
            Some(ev) => {
                quiet_since = Instant::now();
                ev["type"] == "resync" || is_terminal(ev["runyard_status"].as_str().unwrap_or(""))
            }
            None => quiet_since.elapsed() >= QUIET_CHECK,
        };
        if ended {
            quiet_since = Instant::now();
            let job = patience.get(api, &job_path(&tail.id)?).await?;
            done = is_terminal(job["status"].as_str().unwrap_or(""));
        }
    }
    let last = tail.drain(api).await?;
    if let Some(note) = tail.take_gap() {
        eprintln!("{note}");
    }
    for l in last {
        l.print(format);
    }
    patience.get(api, &job_path(&tail.id)?).await
}

/// The last line of `logs --follow`: the job's final status, its exit code when the server
/// knows one, and its error.
pub fn end_line(job: &Value) -> String {
    let mut s = format!(
        "job {} ended {}",
        output::cell(&job["id"]),
        output::cell(&job["status"]),
    );
    if let Some(code) = job["exit_code"].as_i64() {
        s.push_str(&format!(" (exit code {code})"));
    }
    if let Some(e) = job["error"].as_str().filter(|e| !e.is_empty()) {
        s.push_str(": ");
        s.push_str(&crate::logging::visible(e));
    }
    s
}
