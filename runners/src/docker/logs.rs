//! Following a container's output (with the engine's timestamps, so a broken stream is resumed
//! without repeating lines) into the job's logs, through the one line forwarder.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{InspectContainerOptions, LogsOptions};
use bollard::Docker;
use futures::StreamExt;

use super::*;
use crate::lines::{self, LineSplitter};

/// Follows the container's output until it ends, as log lines. With `since` (ns since the epoch),
/// lines older than that are skipped (a recovered container's output is followed from then on).
pub(super) async fn follow_logs(
    docker: Docker,
    id: String,
    reporter: SharedReporter,
    since: Option<i128>,
) {
    let mut cursor = Cursor::new(since);
    let mut out = (LineSplitter::new(), LogStream::Stdout);
    let mut err = (LineSplitter::new(), LogStream::Stderr);
    let mut failures = 0u32;
    loop {
        let opts = LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            timestamps: true,
            since: cursor.reopen_since(),
            ..Default::default()
        };
        let mut stream = docker.logs(&id, Some(opts));
        cursor.reopen();
        let mut broken: Option<DockerError> = None;
        let mut progressed = false;
        while let Some(item) = stream.next().await {
            let (buf, message, which) = match item {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    (&mut out, message, Side::Out)
                }
                Ok(LogOutput::StdErr { message }) => (&mut err, message, Side::Err),
                Ok(LogOutput::StdIn { .. }) => continue,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            };
            progressed = true;
            let (ts, payload) = split_timestamp(&message);
            if !cursor.take(which, ts) {
                continue; // forwarded before the stream was reopened
            }
            let (split, stream) = buf;
            split.push_text(payload, &mut |t| {
                lines::report(reporter.as_ref(), *stream, t)
            });
        }
        let Some(e) = broken else {
            break; // the container ended and the engine closed the stream
        };
        if let DockerError::DockerResponseServerError { message, .. } = &e {
            // The engine refuses (e.g. a log driver that cannot be read): retrying will not help.
            reporter.log(
                LogStream::Job,
                format!("runyard: cannot read the container's output: {message}"),
            );
            break;
        }
        // The connection broke: reopen while the container runs, and once more when it has
        // stopped (that stream brings the rest and ends). While the engine cannot be reached,
        // its answer is waited for (the engine down for a moment must not end the copy).
        // A stream that brought output before it broke starts the count again: only breaks in
        // a row (an engine that answers but cannot stream) use the reopens up.
        failures = if progressed { 1 } else { failures + 1 };
        if failures > MAX_REOPENS {
            dropped(
                &reporter,
                "the engine broke the container's output too often",
            );
            break;
        }
        match container_state(&docker, &id).await {
            // Not at once: a stream that breaks again right away would use the reopens up in
            // moments (the pause grows with the breaks in a row, to MAX_PAUSE).
            State::Running => {
                tokio::time::sleep((REOPEN_PAUSE * failures).min(MAX_PAUSE)).await;
            }
            State::Stopped => {}
            State::Gone(why) => {
                dropped(&reporter, &why);
                break;
            }
        }
    }
    for (split, stream) in [&mut out, &mut err] {
        split.finish(&mut |p| lines::report(reporter.as_ref(), *stream, p.text));
    }
}

/// How many times in a row a broken output stream is reopened before the copy gives up.
const MAX_REOPENS: u32 = 60;
/// The pause before reopening the output of a running container, per break in a row.
const REOPEN_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two questions to an engine that cannot be reached: short, so that
/// the output is followed again soon after the engine is back (and drained before the container
/// is removed).
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Says in the job's logs that lines may be missing here, and why.
pub(super) fn dropped(reporter: &SharedReporter, why: &str) {
    tracing::warn!(
        reason = why,
        "the container's output cannot be copied any further"
    );
    reporter.log(LogStream::Stderr, crate::buffered::lost_note(why));
}

/// What a broken output stream is to do.
enum State {
    /// The container runs: reopen the stream.
    Running,
    /// The container has stopped: reopen the stream to read the rest.
    Stopped,
    /// The output cannot be read again (why).
    Gone(String),
}

/// Whether the container still runs, asked until the engine answers (for at most
/// [`LOST_ENGINE_LIMIT`], with a pause that grows to [`MAX_PAUSE`]).
async fn container_state(docker: &Docker, id: &str) -> State {
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(ContainerInspectResponse { state: Some(s), .. }) if s.running == Some(true) => {
                return State::Running
            }
            Ok(_) => return State::Stopped,
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => return State::Gone("the container was removed".into()),
            Err(e) => {
                if started.elapsed() >= LOST_ENGINE_LIMIT {
                    return State::Gone(format!(
                        "the docker engine could not be reached for {}s: {}",
                        LOST_ENGINE_LIMIT.as_secs(),
                        engine_message(&e)
                    ));
                }
                tracing::debug!(container = %short(id), error = %engine_message(&e), "the engine cannot be reached; asking again");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[derive(Clone, Copy)]
enum Side {
    Out,
    Err,
}

/// Where the follower is in each of the container's two streams, so a reopened stream repeats no
/// line and loses none. stdout and stderr are timestamped apart and the engine may hand over an
/// earlier stderr line after a later stdout one, so each stream has its own mark; a reopened
/// stream asks for everything since the older of the two marks and skips, per stream, the lines
/// at or before that stream's mark when it was reopened.
#[derive(Debug)]
struct Cursor {
    /// The newest timestamp forwarded per stream (stdout, stderr), or `since` for a recovered
    /// container's output.
    last: [Option<i128>; 2],
    /// How many frames stamped exactly `last` were forwarded: the engine stamps every part of a
    /// line it split (over 16 KiB) with the line's time, and a coarse clock stamps lines alike.
    at_last: [u32; 2],
    /// `last` and `at_last` as they were when the current stream was opened: the frames up to
    /// that mark were forwarded, and that many stamped exactly with it.
    skip_upto: [Option<i128>; 2],
    skip_at: [u32; 2],
}

impl Cursor {
    fn new(since: Option<i128>) -> Self {
        Cursor {
            last: [since; 2],
            at_last: [0; 2],
            skip_upto: [since; 2],
            skip_at: [0; 2],
        }
    }

    /// The engine's `since` (whole seconds) for (re)opening: the older stream's mark, rounded
    /// down, or 0 (the start) while a stream has forwarded nothing.
    fn reopen_since(&self) -> i32 {
        match self.last {
            [Some(a), Some(b)] => i32::try_from(a.min(b).div_euclid(1_000_000_000)).unwrap_or(0),
            _ => 0,
        }
    }

    /// A stream was (re)opened: what was forwarded so far is skipped when it comes again.
    fn reopen(&mut self) {
        self.skip_upto = self.last;
        self.skip_at = self.at_last;
    }

    /// Whether a frame of `side` stamped `ts` is to be forwarded (and if so, marks it).
    fn take(&mut self, side: Side, ts: Option<i128>) -> bool {
        let i = side as usize;
        let Some(t) = ts else {
            return true;
        };
        if let Some(upto) = self.skip_upto[i] {
            if t < upto {
                return false;
            }
            if t == upto && self.skip_at[i] > 0 {
                self.skip_at[i] -= 1;
                return false;
            }
        }
        if Some(t) > self.last[i] {
            self.last[i] = Some(t);
            self.at_last[i] = 1;
        } else if Some(t) == self.last[i] {
            self.at_last[i] += 1;
        }
        true
    }
}

/// Splits the engine's `2024-05-01T12:34:56.123456789Z ` prefix off a log frame.
pub(super) fn split_timestamp(frame: &[u8]) -> (Option<i128>, &[u8]) {
    let Some(space) = frame.iter().take(40).position(|b| *b == b' ') else {
        return (None, frame);
    };
    match std::str::from_utf8(&frame[..space])
        .ok()
        .and_then(parse_rfc3339_ns)
    {
        Some(ts) => (Some(ts), &frame[space + 1..]),
        None => (None, frame),
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into nanoseconds since the epoch.
pub(super) fn parse_rfc3339_ns(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = digits.parse().ok()?;
    }
    let offset_secs: i64 = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            let oh: i64 = tz.get(1..3)?.parse().ok()?;
            let om: i64 = tz.get(4..6)?.parse().ok()?;
            let o = oh * 3600 + om * 60;
            if tz.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
    Some(secs as i128 * 1_000_000_000 + nanos)
}

pub(super) fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = 1_000_000_000;

    #[test]
    fn an_earlier_stderr_line_after_a_later_stdout_line_is_kept() {
        let mut c = Cursor::new(None);
        c.reopen();
        assert!(c.take(Side::Out, Some(5 * S)));
        assert!(
            c.take(Side::Err, Some(4 * S)),
            "stderr's own line is not a repeat"
        );
        assert!(c.take(Side::Out, Some(6 * S)));
    }

    #[test]
    fn a_reopened_stream_repeats_no_line_and_loses_none_of_either_stream() {
        let mut c = Cursor::new(None);
        assert_eq!(c.reopen_since(), 0);
        c.reopen();
        // Forwarded before the break: stdout up to 7.5 s, stderr up to 3.2 s.
        for (side, t) in [
            (Side::Out, 2 * S),
            (Side::Err, 3 * S + S / 5),
            (Side::Out, 7 * S + S / 2),
        ] {
            assert!(c.take(side, Some(t)));
        }
        // Reopened from the older mark, stderr's 3 s (whole seconds: the engine's `since`).
        assert_eq!(c.reopen_since(), 3);
        c.reopen();
        // The engine sends again everything since 3 s, in its own order.
        assert!(
            !c.take(Side::Err, Some(3 * S + S / 5)),
            "stderr's line at 3.2 s again"
        );
        assert!(
            c.take(Side::Err, Some(6 * S)),
            "stderr's line at 6 s was never forwarded"
        );
        assert!(
            !c.take(Side::Out, Some(7 * S + S / 2)),
            "stdout's line at 7.5 s again"
        );
        assert!(c.take(Side::Out, Some(8 * S)));
        assert!(
            c.take(Side::Err, Some(7 * S)),
            "a later stderr line before stdout's mark"
        );
    }

    #[test]
    fn the_parts_of_a_split_line_after_a_reopen_are_not_lost() {
        // A line over 16 KiB comes as parts that all carry the line's time.
        let mut c = Cursor::new(None);
        c.reopen();
        assert!(c.take(Side::Out, Some(4 * S)));
        assert!(c.take(Side::Out, Some(5 * S)), "part 1 of the long line");
        assert!(c.take(Side::Err, Some(5 * S)));
        // The connection broke after part 1; the engine sends every part again.
        c.reopen();
        assert!(!c.take(Side::Out, Some(4 * S)));
        assert!(!c.take(Side::Out, Some(5 * S)), "part 1 again");
        assert!(c.take(Side::Out, Some(5 * S)), "part 2 was never forwarded");
        assert!(c.take(Side::Out, Some(5 * S)), "part 3 was never forwarded");
        assert!(!c.take(Side::Err, Some(5 * S)), "stderr's line again");
        // A second break: parts 1-3 are all skipped, the next line is not.
        c.reopen();
        for _ in 0..3 {
            assert!(!c.take(Side::Out, Some(5 * S)));
        }
        assert!(
            c.take(Side::Out, Some(5 * S)),
            "a fourth frame stamped alike"
        );
    }

    #[test]
    fn a_recovered_containers_output_starts_at_since_and_a_stream_without_lines_reopens_from_the_start(
    ) {
        let mut c = Cursor::new(Some(10 * S));
        c.reopen();
        assert!(!c.take(Side::Out, Some(9 * S)), "older than `since`");
        assert!(c.take(Side::Out, Some(10 * S)));
        assert!(c.take(Side::Err, Some(11 * S)));
        let mut fresh = Cursor::new(None);
        fresh.reopen();
        assert!(fresh.take(Side::Out, Some(20 * S)));
        assert_eq!(fresh.reopen_since(), 0, "stderr has forwarded nothing yet");
        assert!(
            fresh.take(Side::Out, None),
            "a frame without a timestamp is forwarded"
        );
    }
}
