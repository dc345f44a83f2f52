//! The CLI's reading of a Server-Sent Events stream, bounded: an event (its lines up to the blank
//! line that ends it) longer than [`MAX_EVENT`] ends the stream with [`SseRead::TooLong`] instead
//! of growing the parser's buffer without end (a server that is not runyard's, or a proxy
//! sending one endless line).

use std::pin::Pin;

use bytes::Bytes;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};

use super::exit::Failure;

/// The longest event read. runyard's events are a status or a progress with at most the job's
/// error, stored cut to 16 KiB (`job::error_text`): a few KiB. The bound stays small because the
/// parser reads an unfinished event again with each chunk that comes (an endless line costs
/// time in the square of its length, not only memory).
pub const MAX_EVENT: usize = 1 << 20;

/// What ends a stream's reading before its end.
#[derive(Debug, thiserror::Error)]
pub enum SseRead {
    /// The connection failed or dropped.
    #[error(transparent)]
    Net(#[from] reqwest::Error),
    /// An event ran past [`MAX_EVENT`] without its end.
    #[error("an event of the stream ran past {0} bytes without its end")]
    TooLong(usize),
}

/// The error that ends a follow whose stream (from the server `shown`) sent an event past
/// [`MAX_EVENT`]: not runyard's (exit 3).
pub fn too_long(shown: &str) -> anyhow::Error {
    Failure::Unavailable {
        status: 200,
        code: "not_runyard".into(),
        message: format!(
            "an event of the stream ran past {} MiB without its end: is {shown} the address of \
             runyard's API?",
            MAX_EVENT >> 20
        ),
    }
    .into()
}

/// The events of an SSE stream, read by [`bounded`].
pub type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<SseRead>>> + Send>>;

/// `r`'s body read as events, each at most [`MAX_EVENT`] bytes.
pub fn events(r: reqwest::Response) -> Events {
    Box::pin(bounded(r.bytes_stream().map(|c| c.map_err(SseRead::Net)), MAX_EVENT).eventsource())
}

/// Where a stream stands in its current event.
#[derive(Default)]
struct Cursor {
    /// Bytes since the end of the last event.
    len: usize,
    /// Bytes on the current line, its end not counted.
    line: usize,
    /// The last byte was a `\r` (a `\n` right after it ends no second line).
    after_cr: bool,
    /// The bound was passed: the stream is over.
    done: bool,
}

impl Cursor {
    /// Reads `chunk`; `false` once the current event has run past `cap` bytes.
    fn read(&mut self, chunk: &[u8], cap: usize) -> bool {
        for &b in chunk {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    if self.line == 0 {
                        self.len = 0;
                    } else {
                        self.len += 1;
                    }
                    self.line = 0;
                    self.after_cr = b == b'\r';
                }
                _ => {
                    self.after_cr = false;
                    self.line += 1;
                    self.len += 1;
                    if self.len > cap {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// `chunks` as they come, ended by an [`SseRead::TooLong`] once one event (lines up to a blank
/// line) passes `cap` bytes.
fn bounded<S>(chunks: S, cap: usize) -> impl Stream<Item = Result<Bytes, SseRead>>
where
    S: Stream<Item = Result<Bytes, SseRead>>,
{
    chunks.scan(Cursor::default(), move |at, c| {
        let item = if at.done {
            None
        } else {
            match c {
                Ok(bytes) if !at.read(&bytes, cap) => {
                    at.done = true;
                    Some(Err(SseRead::TooLong(cap)))
                }
                other => Some(other),
            }
        };
        std::future::ready(item)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(chunks: &[&str], cap: usize) -> (Vec<String>, Option<String>) {
        let items: Vec<Result<Bytes, SseRead>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c.as_bytes())))
            .collect();
        let mut s = Box::pin(bounded(futures::stream::iter(items), cap).eventsource());
        let mut data = Vec::new();
        while let Some(ev) = s.next().await {
            match ev {
                Ok(ev) => data.push(ev.data),
                Err(e) => return (data, Some(e.to_string())),
            }
        }
        (data, None)
    }

    #[tokio::test]
    async fn events_within_the_bound_pass_whole_in_any_chunking() {
        let stream =
            "id: 1\ndata: {\"a\":1}\n\nid: 2\r\ndata: x\r\ndata: y\r\n\r\n:keep\n\ndata: z\r\r\n";
        for size in [1, 2, 3, 7, stream.len()] {
            let chunks: Vec<&str> = stream
                .as_bytes()
                .chunks(size)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            assert_eq!(
                read(&chunks, 64).await,
                (vec!["{\"a\":1}".into(), "x\ny".into(), "z".into()], None),
                "chunks of {size}"
            );
        }
    }

    #[tokio::test]
    async fn an_endless_line_ends_the_stream_at_the_bound() {
        let (data, err) = read(&["data: ok\n\n", "data: ", &"x".repeat(40), "\n\n"], 32).await;
        assert_eq!(data, vec!["ok".to_string()]);
        let err = err.expect("an error at the bound");
        assert!(err.contains("ran past 32 bytes"), "{err}");
    }

    #[tokio::test]
    async fn many_short_lines_without_a_blank_one_count_as_one_event() {
        let lines = "data: abcdef\n".repeat(10);
        let (data, err) = read(&[&lines, "\n"], 64).await;
        assert!(data.is_empty(), "{data:?}");
        assert!(err.is_some_and(|e| e.contains("ran past 64")));
    }
}
