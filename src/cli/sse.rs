//! The CLI's reading of a Server-Sent Events stream (the HTML standard's "event stream
//! interpretation": one leading byte order mark skipped, lines ended by CR, LF or CRLF, `data:`
//! lines joined, `id:` kept (an empty one clears it; the id before the connection carried on, as
//! an `EventSource` keeps it across reconnects), a blank line ends an event, `:` a comment),
//! bounded: an event (its lines up to the blank line that ends it)
//! longer than [`MAX_EVENT`], or a line that is not UTF-8, ends the stream with an error instead
//! of growing a buffer without end. Read byte by byte once, so the time is linear in what
//! comes (eventsource-stream 0.2, used before, re-read its buffer per line and kept every byte
//! after an invalid UTF-8 one).

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::exit::Failure;

/// The longest event read. runyard's events are a status or a progress with at most the job's
/// error, stored cut to 16 KiB (`job::error_text`): a few KiB.
pub const MAX_EVENT: usize = 1 << 20;
/// The byte order mark (U+FEFF in UTF-8) a stream may begin with.
const BOM: &[u8] = b"\xEF\xBB\xBF";
/// The longest event id kept (it goes with every event after it). runyard's are a few dozen
/// bytes (a Redis stream entry's id, a row number).
pub const MAX_ID: usize = 1024;

/// What ends a stream's reading before its end.
#[derive(Debug, thiserror::Error)]
pub enum SseRead {
    /// The connection failed or dropped.
    #[error(transparent)]
    Net(#[from] reqwest::Error),
    /// An event ran past [`MAX_EVENT`] without its end.
    #[error("an event of the stream ran past {} MiB without its end", MAX_EVENT >> 20)]
    TooLong,
    /// A line is not UTF-8.
    #[error("a line of the stream is not UTF-8")]
    NotUtf8,
    /// An event id past [`MAX_ID`].
    #[error("an event id of the stream is longer than {MAX_ID} bytes")]
    IdTooLong,
}

impl SseRead {
    /// Whether the stream is not runyard's (no reconnect helps).
    pub fn not_runyard(&self) -> bool {
        !matches!(self, SseRead::Net(_))
    }
}

/// An event: its `data` lines joined by `\n`, and the last `id` the stream gave (empty: none).
/// An event with no data carries an id that changed with no data after it (the standard sets the
/// last event id then too, without dispatching): the reader keeps the id and skips it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub data: String,
}

/// The events of an SSE stream.
pub type Events = Pin<Box<dyn Stream<Item = Result<Event, SseRead>> + Send>>;

/// The error that ends a follow whose stream (from the server `shown`) is not runyard's: an
/// event past [`MAX_EVENT`], a line not UTF-8 (exit 3).
pub fn not_runyard(e: &SseRead, shown: &str) -> anyhow::Error {
    Failure::Unavailable {
        status: 200,
        code: "not_runyard".into(),
        message: format!("{e}: is {shown} the address of runyard's API?"),
    }
    .into()
}

/// `r`'s body read as events, the last event id starting at `last_id` (the one the request
/// went on from: events without an `id:` line carry it, as a browser's do).
pub fn events(r: reqwest::Response, last_id: Option<&str>) -> Events {
    parsed(
        r.bytes_stream().map(|c| c.map_err(SseRead::Net)),
        last_id.unwrap_or(""),
    )
}

/// `chunks` read as events, one at a time (a chunk is read up to the end of its next event,
/// so no more than one event is held); an error ends the stream (after the events before it).
fn parsed<S>(chunks: S, last_id: &str) -> Events
where
    S: Stream<Item = Result<Bytes, SseRead>> + Send + 'static,
{
    struct State<S> {
        chunks: Pin<Box<S>>,
        parser: Parser,
        /// The chunk being read, and how far.
        chunk: Bytes,
        at: usize,
        done: bool,
    }
    let start = State {
        chunks: Box::pin(chunks),
        parser: Parser {
            id: last_id.to_string(),
            sent_id: last_id.to_string(),
            ..Parser::default()
        },
        chunk: Bytes::new(),
        at: 0,
        done: false,
    };
    Box::pin(futures::stream::unfold(start, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if st.at < st.chunk.len() {
                match st.parser.next_event(&st.chunk, &mut st.at) {
                    Ok(Some(ev)) => return Some((Ok(ev), st)),
                    Ok(None) => {}
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
                continue;
            }
            match st.chunks.next().await {
                None => st.done = true,
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                Some(Ok(bytes)) => (st.chunk, st.at) = (bytes, 0),
            }
        }
    }))
}

/// Where a stream stands.
#[derive(Default)]
struct Parser {
    /// The current line's bytes (its end not yet come).
    line: Vec<u8>,
    /// The last byte was a `\r` (a `\n` right after it ends no second line).
    after_cr: bool,
    /// The current event's `data` lines, each followed by `\n`.
    data: String,
    /// The last `id` given.
    id: String,
    /// The id of the last event returned.
    sent_id: String,
    /// The first line was read (a byte order mark is skipped only before it).
    past_first: bool,
    /// Bytes of the current event so far (its lines' ends not counted).
    len: usize,
}

impl Parser {
    /// Reads `chunk` from `*at` up to the end of its next event (returned, `*at` just past it)
    /// or, when no event ends in it, to its end.
    fn next_event(&mut self, chunk: &[u8], at: &mut usize) -> Result<Option<Event>, SseRead> {
        while let Some(&b) = chunk.get(*at) {
            *at += 1;
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    if let Some(ev) = self.end_line()? {
                        return Ok(Some(ev));
                    }
                }
                _ => {
                    self.len += 1;
                    if self.len > MAX_EVENT {
                        return Err(SseRead::TooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(None)
    }

    /// The end of a line: the event it ends (a blank line after data), if any.
    fn end_line(&mut self) -> Result<Option<Event>, SseRead> {
        if !std::mem::replace(&mut self.past_first, true) && self.line.starts_with(BOM) {
            self.line.drain(..BOM.len());
        }
        if self.line.is_empty() {
            self.len = 0;
            if self.data.is_empty() && self.id == self.sent_id {
                return Ok(None);
            }
            let mut data = std::mem::take(&mut self.data);
            data.pop();
            self.sent_id.clone_from(&self.id);
            return Ok(Some(Event {
                id: self.id.clone(),
                data,
            }));
        }
        let line = std::str::from_utf8(&self.line).map_err(|_| SseRead::NotUtf8)?;
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if value.len() > MAX_ID => return Err(SseRead::IdTooLong),
            // With NUL, ignored (the standard); one that cannot go back as a `Last-Event-ID`
            // header (a control character; UTF-8 can) too: it ended the follow with a usage error at the
            // reconnect (probe s53b).
            "id" if reqwest::header::HeaderValue::from_bytes(value.as_bytes()).is_ok() => {
                self.id = value.to_string()
            }
            // A comment (`:`), `event`, `retry` and unknown fields: nothing the CLI uses.
            _ => {}
        }
        self.line.clear();
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(chunks: Vec<Vec<u8>>) -> (Vec<(String, String)>, Option<String>) {
        read_after(chunks, "").await
    }

    /// [`read`] on a connection that went on from `last_id`.
    async fn read_after(
        chunks: Vec<Vec<u8>>,
        last_id: &str,
    ) -> (Vec<(String, String)>, Option<String>) {
        let items: Vec<Result<Bytes, SseRead>> =
            chunks.into_iter().map(|c| Ok(Bytes::from(c))).collect();
        let mut s = parsed(futures::stream::iter(items), last_id);
        let mut got = Vec::new();
        while let Some(ev) = s.next().await {
            match ev {
                Ok(ev) => got.push((ev.id, ev.data)),
                Err(e) => return (got, Some(e.to_string())),
            }
        }
        (got, None)
    }

    fn chunked(stream: &[u8], size: usize) -> Vec<Vec<u8>> {
        stream.chunks(size).map(<[u8]>::to_vec).collect()
    }

    #[tokio::test]
    async fn events_pass_whole_in_any_chunking() {
        let stream = "id: 1\ndata: {\"a\":1}\n\nid: 2\r\ndata: x\r\ndata: y\r\n\r\n:keep\n\n\
                      event: e\rdata:z\r\rretry: 5\ndata\n\n";
        for size in 1..=stream.len() {
            assert_eq!(
                read(chunked(stream.as_bytes(), size)).await,
                (
                    vec![
                        ("1".into(), "{\"a\":1}".into()),
                        ("2".into(), "x\ny".into()),
                        ("2".into(), "z".into()),
                        ("2".into(), String::new()),
                    ],
                    None
                ),
                "chunks of {size}"
            );
        }
    }

    #[tokio::test]
    async fn an_endless_line_ends_the_stream_at_the_bound() {
        let mut chunks = vec![b"data: ok\n\ndata: ".to_vec()];
        chunks.extend(std::iter::repeat_n(vec![b'x'; 1 << 16], 20));
        let (got, err) = read(chunks).await;
        assert_eq!(got, vec![(String::new(), "ok".to_string())]);
        assert_eq!(
            err.as_deref(),
            Some("an event of the stream ran past 1 MiB without its end")
        );
    }

    #[tokio::test]
    async fn many_short_lines_without_a_blank_one_count_as_one_event() {
        let lines = "data: abcdef\n".repeat((MAX_EVENT / 12) + 1);
        let (got, err) = read(vec![lines.into_bytes(), b"\n".to_vec()]).await;
        assert!(got.is_empty(), "{got:?}");
        assert!(err.is_some_and(|e| e.contains("ran past 1 MiB")));
    }

    /// eventsource-stream kept every byte after an invalid UTF-8 one and gave nothing, whatever
    /// the blank lines: the stream now ends at the line.
    #[tokio::test]
    async fn a_line_not_utf8_ends_the_stream() {
        let mut chunks = vec![b"data: ok\n\n".to_vec(), b"data: \xff\n\n".to_vec()];
        chunks.extend(std::iter::repeat_n(b"data: x\n\n".to_vec(), 1000));
        let (got, err) = read(chunks).await;
        assert_eq!(got, vec![(String::new(), "ok".to_string())]);
        assert_eq!(err.as_deref(), Some("a line of the stream is not UTF-8"));
    }

    /// Blank lines and tiny events by the million are all read (and end: the parser before
    /// copied its buffer's rest per line, so a chunk of 524,288 `\n` took minutes and one of
    /// 4 Mi would not end within the test's time).
    #[tokio::test]
    async fn blank_lines_and_tiny_events_by_the_million_are_read() {
        let (got, err) = read(vec![vec![b'\n'; 4 << 20]]).await;
        assert_eq!((got.len(), err), (0, None));
        let (got, err) = read(vec!["data:\n\n".repeat(1 << 20).into_bytes()]).await;
        assert_eq!((got.len(), err), (1 << 20, None));
    }

    /// The last id goes with every event after it: a long one was copied into each of a chunk's
    /// events, all held at once (review rev52d: 8 KiB of `data` lines after a 1 MiB id made
    /// 1.3 GB). An id past 1 KiB is not runyard's; events are read one at a time.
    #[tokio::test]
    async fn a_long_event_id_ends_the_stream() {
        let stream = format!(
            "id: 7\ndata: a\n\nid: {}\ndata: b\n\n",
            "x".repeat(MAX_ID + 1)
        );
        let (got, err) = read(vec![stream.into_bytes()]).await;
        assert_eq!(got, vec![("7".to_string(), "a".to_string())]);
        assert_eq!(
            err.as_deref(),
            Some("an event id of the stream is longer than 1024 bytes")
        );
        // An id of the longest kept: its event of no data (the id moved), then the 1000.
        let stream = format!("id: {}\n\n{}", "y".repeat(MAX_ID), "data\n\n".repeat(1000));
        let (got, err) = read(vec![stream.into_bytes()]).await;
        assert_eq!((got.len(), err), (1001, None));
        assert!(got[0].1.is_empty() && got[1..].iter().all(|(i, _)| i.len() == MAX_ID));
    }

    /// The standard's rules the CLI relies on: an event cut by the stream's end is dropped, an
    /// id with NUL is ignored (the one before it stays).
    #[tokio::test]
    async fn a_cut_event_is_dropped_and_an_id_with_nul_ignored() {
        let stream = b"id: 1\ndata: a\n\nid: 2\0\ndata: b\n\nid: 3\ndata: cut".to_vec();
        let (got, err) = read(vec![stream]).await;
        assert_eq!(
            got,
            vec![("1".into(), "a".into()), ("1".into(), "b".into())]
        );
        assert_eq!(err, None);
    }

    /// The standard's rules the probe s53b found broken: a leading byte order mark is skipped
    /// (the first event was dropped: its field read as `\u{feff}data`), whatever the chunking;
    /// an `id:` with no data after it moves the id all the same (the reader skips the event of
    /// no data); an empty `id:` clears it; events without an `id:` line carry the id the
    /// connection went on from; an id with a control character is ignored as one with NUL
    /// (it could not go back as `Last-Event-ID`: the follow ended with a usage error).
    #[tokio::test]
    async fn a_bom_is_skipped_and_ids_follow_the_standard() {
        let stream = b"\xEF\xBB\xBFdata: a\n\nid: 4\n\nid: a\x01b\ndata: b\n\nid:\ndata: c\n\n";
        for size in [1, 2, 3, stream.len()] {
            let (got, err) = read_after(chunked(stream, size), "3").await;
            assert_eq!(err, None);
            let want: Vec<(String, String)> = [("3", "a"), ("4", ""), ("4", "b"), ("", "c")]
                .iter()
                .map(|(i, d)| (i.to_string(), d.to_string()))
                .collect();
            assert_eq!(got, want, "chunks of {size}");
        }
        // An id in UTF-8 is kept (it goes back as it came).
        let (got, _) = read(vec!["id: é1\ndata: a\n\n".as_bytes().to_vec()]).await;
        assert_eq!(got, vec![("é1".to_string(), "a".to_string())]);
        // A BOM only at the start: one later is part of its line (an unknown field).
        let (got, _) = read(vec![b"data: a\n\n\xEF\xBB\xBFdata: b\n\n".to_vec()]).await;
        assert_eq!(got, vec![("".to_string(), "a".to_string())]);
    }
}
