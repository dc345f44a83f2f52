//! The one line forwarder: a job's output bytes cut into log lines, for every runner (`local`,
//! `docker`, `kube`) and for `runyard launch`.
//!
//! A line ends at `\n` (a trailing `\r` is dropped); a line longer than [`MAX_LINE_BYTES`] is
//! reported in pieces of [`MAX_LINE_BYTES`] (up to 3 bytes fewer so as not to cut a UTF-8
//! character; the last piece holds the rest), so one endless line cannot hold more than that in
//! memory. Invalid UTF-8 is replaced (lossy), never fatal.
//!
//! With [`LineSplitter::with_heads`], the bytes before a line's first space (at most
//! `MAX_HEAD_BYTES`, e.g. a log timestamp) are cut off as the line's head and handed with its
//! first piece, not counted in the pieces' size.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{LogStream, Reporter};

pub use runyard_hooks::MAX_LINE_BYTES;

/// Longest head (with its separating space) [`LineSplitter::with_heads`] looks for.
pub const MAX_HEAD_BYTES: usize = 64;

/// One piece of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    /// With heads: on a line's first piece, the bytes before its first space, the space
    /// included (the whole line when it has no space); `None` without heads, on later pieces,
    /// and when no space came within [`MAX_HEAD_BYTES`] (those bytes are then in `text`).
    pub head: Option<&'a [u8]>,
    /// The piece's text (at most [`MAX_LINE_BYTES`]).
    pub text: &'a [u8],
    /// The first piece of its line.
    pub first: bool,
    /// The last piece of its line: the line ended (a newline, or [`LineSplitter::finish`]).
    pub last: bool,
}

/// Cuts a byte stream into lines and pieces of lines; see the module documentation.
#[derive(Debug, Default)]
pub struct LineSplitter {
    heads: bool,
    /// The current line's head while it is read (and until its first piece is out).
    head: Vec<u8>,
    /// The head of the current line is complete (or abandoned, see `headless`).
    head_done: bool,
    /// No space within the bound: the current line has no head.
    headless: bool,
    /// The current line's text not yet reported.
    text: Vec<u8>,
    /// A piece of the current line was reported.
    started: bool,
}

impl LineSplitter {
    /// A splitter of plain lines.
    pub fn new() -> Self {
        Self::default()
    }

    /// A splitter that cuts each line's head off (see [`Piece::head`]).
    pub fn with_heads() -> Self {
        Self {
            heads: true,
            ..Self::default()
        }
    }

    /// Feeds bytes; `emit` gets every piece they complete.
    pub fn push(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(Piece<'_>)) {
        while !bytes.is_empty() {
            if self.heads && !self.head_done {
                bytes = self.read_head(bytes);
                continue;
            }
            match bytes.iter().position(|b| *b == b'\n') {
                Some(nl) => {
                    self.text.extend_from_slice(&bytes[..nl]);
                    self.cut(emit);
                    self.end_line(emit);
                    bytes = &bytes[nl + 1..];
                }
                None => {
                    self.text.extend_from_slice(bytes);
                    self.cut(emit);
                    bytes = &[];
                }
            }
        }
    }

    /// Feeds bytes; `emit` gets the text of every piece they complete.
    pub fn push_text(&mut self, bytes: &[u8], emit: &mut dyn FnMut(&[u8])) {
        self.push(bytes, &mut |p| emit(p.text));
    }

    /// The end of the stream: reports what is left of an unfinished line.
    pub fn finish(&mut self, emit: &mut dyn FnMut(Piece<'_>)) {
        if !self.text.is_empty() || !self.head.is_empty() {
            self.end_line(emit);
        }
    }

    /// Reads the head of a line from `bytes`; returns what is left.
    fn read_head<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        let room = MAX_HEAD_BYTES.saturating_sub(self.head.len());
        match bytes
            .iter()
            .take(room)
            .position(|b| *b == b' ' || *b == b'\n')
        {
            Some(i) if bytes[i] == b' ' => {
                self.head.extend_from_slice(&bytes[..=i]);
                self.head_done = true;
                &bytes[i + 1..]
            }
            Some(i) => {
                // The line ends inside its head: the whole line is the head.
                self.head.extend_from_slice(&bytes[..i]);
                self.head_done = true;
                &bytes[i..]
            }
            None if bytes.len() < room => {
                self.head.extend_from_slice(bytes);
                &[]
            }
            None => {
                // No space within the bound: not a head, those bytes are text.
                self.text.append(&mut self.head);
                self.text.extend_from_slice(&bytes[..room]);
                self.head_done = true;
                self.headless = true;
                &bytes[room..]
            }
        }
    }

    /// Reports whole pieces of [`MAX_LINE_BYTES`] once more of the line follows them (a line of
    /// exactly `MAX_LINE_BYTES` is one piece, not one and an empty one); the rest stays, moved
    /// to the front once.
    fn cut(&mut self, emit: &mut dyn FnMut(Piece<'_>)) {
        if self.text.len() <= MAX_LINE_BYTES {
            return;
        }
        let text = std::mem::take(&mut self.text);
        let mut start = 0;
        while text.len() - start > MAX_LINE_BYTES {
            // Not inside a UTF-8 character (its continuation bytes are `10xxxxxx`): a piece may
            // be up to 3 bytes short, and the character is whole in the next one.
            let mut end = start + MAX_LINE_BYTES;
            while end > start + MAX_LINE_BYTES - 3 && text[end] & 0xC0 == 0x80 {
                end -= 1;
            }
            if text[end] & 0xC0 == 0x80 {
                end = start + MAX_LINE_BYTES; // not UTF-8 here: cut where the cap is
            }
            self.emit(&text[start..end], false, emit);
            start = end;
        }
        self.text = text;
        self.text.drain(..start);
    }

    fn end_line(&mut self, emit: &mut dyn FnMut(Piece<'_>)) {
        while self.text.last() == Some(&b'\r') {
            self.text.pop();
        }
        // The buffer is kept for the next line (one allocation per stream, not per line).
        let mut text = std::mem::take(&mut self.text);
        self.emit(&text, true, emit);
        text.clear();
        self.text = text;
        self.head.clear();
        self.head_done = false;
        self.headless = false;
        self.started = false;
    }

    fn emit(&mut self, text: &[u8], last: bool, emit: &mut dyn FnMut(Piece<'_>)) {
        let first = !self.started;
        let head = (self.heads && first && !self.headless).then_some(self.head.as_slice());
        emit(Piece {
            head,
            text,
            first,
            last,
        });
        self.started = true;
    }
}

/// Reads `pipe` to its end: `tee` gets the raw bytes as they come, `each` the text of every
/// line (or piece of a long line). A read error ends the stream like its end.
pub async fn read_lines<R: AsyncRead + Unpin>(
    mut pipe: R,
    mut tee: impl FnMut(&[u8]),
    mut each: impl FnMut(&[u8]),
) {
    let mut split = LineSplitter::new();
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tee(&buf[..n]);
        split.push_text(&buf[..n], &mut each);
    }
    split.finish(&mut |p| each(p.text));
}

/// Reports a line's text on `stream` (lossy UTF-8).
pub fn report(reporter: &dyn Reporter, stream: LogStream, text: &[u8]) {
    reporter.log(stream, String::from_utf8_lossy(text).into_owned());
}

/// What a job's log readers ([`forward_lines`]) are told as the job ends.
#[derive(Clone, Default)]
pub struct Drain {
    room: tokio_util::sync::CancellationToken,
    end: tokio_util::sync::CancellationToken,
}

impl Drain {
    /// A drain that has told nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The readers wait for room no more.
    pub fn stop_waiting(&self) {
        self.room.cancel();
    }

    /// The readers wait for room no more, and read for [`LAST_READS`] at most.
    pub fn end_soon(&self) {
        self.room.cancel();
        self.end.cancel();
    }
}

/// How long [`forward_lines`] reads on after [`Drain::end_soon`] (the local runner's
/// readers are stopped 500 ms after it: this leaves them the time to report the rest).
pub const LAST_READS: std::time::Duration = std::time::Duration::from_millis(400);

/// Reads `pipe` to its end and reports its lines on `stream`. Before each line it waits for
/// the reporter's [room](Reporter::room), reading nothing meanwhile: a job that writes faster
/// than its lines are stored waits in its write (what one read holds, at most 8 KiB, is all
/// that sits here). Once told to by `drain` ([`Drain::stop_waiting`]: the job has exited and what
/// is left in the pipe must be read before the runner's drain deadline, or it is being stopped)
/// it waits no more: a full buffer then drops its oldest lines (with a note), so the job's last
/// lines reach the final flush. After [`Drain::end_soon`] it reads for [`LAST_READS`] at most:
/// a pipe still open after that (a process out of the job's reach holds it) counts as ended, so
/// a last line without its newline is reported too.
pub async fn forward_lines<R: AsyncRead + Unpin>(
    mut pipe: R,
    stream: LogStream,
    reporter: std::sync::Arc<dyn Reporter>,
    drain: Drain,
) {
    let mut split = LineSplitter::new();
    let mut buf = vec![0u8; 8 * 1024];
    let mut read = Vec::new();
    let mut ended = false;
    let mut last_read_by = None;
    while !ended {
        let got = match last_read_by {
            None => tokio::select! {
                // Cancel-safe: a read that loses the race has read nothing.
                r = pipe.read(&mut buf) => r,
                () = drain.end.cancelled() => {
                    last_read_by = Some(tokio::time::Instant::now() + LAST_READS);
                    continue;
                }
            },
            Some(by) => tokio::time::timeout_at(by, pipe.read(&mut buf))
                .await
                .unwrap_or(Ok(0)),
        };
        match got {
            Ok(0) | Err(_) => {
                ended = true;
                split.finish(&mut |p| read.push(String::from_utf8_lossy(p.text).into_owned()));
            }
            Ok(n) => split.push_text(&buf[..n], &mut |t| {
                read.push(String::from_utf8_lossy(t).into_owned())
            }),
        }
        for line in read.drain(..) {
            tokio::select! {
                biased;
                () = drain.room.cancelled() => {}
                () = reporter.room() => {}
            }
            reporter.log(stream, line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(split: &mut LineSplitter, chunks: &[&[u8]], finish: bool) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for c in chunks {
            split.push_text(c, &mut |t| got.push(t.to_vec()));
        }
        if finish {
            split.finish(&mut |p| got.push(p.text.to_vec()));
        }
        got
    }

    #[test]
    fn lines_are_split_joined_and_capped() {
        let mut s = LineSplitter::new();
        let big = vec![b'x'; MAX_LINE_BYTES + 10];
        let got = texts(
            &mut s,
            &[b"one\r\ntw", b"o\nthree", b"\n", &big, b"\n", b"tail"],
            true,
        );
        let lens: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(
            &got[..3],
            &[b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert_eq!(&lens[3..5], &[MAX_LINE_BYTES, 10]);
        assert_eq!(got[5], b"tail");
        assert_eq!(got.len(), 6);
        // A whole line in one chunk is capped too.
        let mut s = LineSplitter::new();
        let mut line = vec![b'y'; 3 * MAX_LINE_BYTES + 1];
        line.push(b'\n');
        let lens: Vec<usize> = texts(&mut s, &[&line], false)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(lens, [MAX_LINE_BYTES, MAX_LINE_BYTES, MAX_LINE_BYTES, 1]);
        // A line of exactly the cap is one piece, whether its end comes with it or later, and
        // an unterminated one of twice the cap is two pieces: no empty line after them.
        let exact = vec![b'z'; MAX_LINE_BYTES];
        for chunks in [
            &[&exact[..], b"\n"][..],
            &[&[&exact[..], b"\n"].concat()[..]][..],
        ] {
            let lens: Vec<usize> = texts(&mut LineSplitter::new(), chunks, false)
                .iter()
                .map(Vec::len)
                .collect();
            assert_eq!(lens, [MAX_LINE_BYTES]);
        }
        let twice = vec![b'z'; 2 * MAX_LINE_BYTES];
        let lens: Vec<usize> = texts(&mut LineSplitter::new(), &[&twice], true)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(lens, [MAX_LINE_BYTES, MAX_LINE_BYTES]);
        // Nothing to finish: nothing reported.
        assert!(texts(&mut LineSplitter::new(), &[], true).is_empty());
    }

    #[test]
    fn a_long_line_is_never_cut_inside_a_character() {
        let mut s = LineSplitter::new();
        let mut pieces: Vec<Vec<u8>> = Vec::new();
        let line = "€".repeat(10_000); // 3 bytes each: 16,384 is not a multiple
        s.push_text(line.as_bytes(), &mut |t| pieces.push(t.to_vec()));
        s.push_text(b"\n", &mut |t| pieces.push(t.to_vec()));
        assert!(pieces.len() >= 2);
        for p in &pieces {
            assert!(p.len() <= MAX_LINE_BYTES);
            assert!(
                std::str::from_utf8(p).is_ok(),
                "a piece cut inside a character"
            );
        }
        assert_eq!(pieces.concat(), line.as_bytes());
    }

    #[test]
    fn heads_are_cut_off_before_the_cap() {
        let mut s = LineSplitter::with_heads();
        let mut got: Vec<(Option<Vec<u8>>, usize, bool, bool)> = Vec::new();
        let mut line = b"2024-01-01T00:00:00Z ".to_vec();
        line.extend(vec![b'x'; MAX_LINE_BYTES + 5]);
        line.extend(b"\n2024-01-01T00:00:01Z short\r\nno-space-at-all\n");
        // Fed byte by byte: the head may come in pieces.
        for b in &line {
            s.push(std::slice::from_ref(b), &mut |p| {
                got.push((p.head.map(<[u8]>::to_vec), p.text.len(), p.first, p.last))
            });
        }
        assert_eq!(
            got,
            vec![
                (
                    Some(b"2024-01-01T00:00:00Z ".to_vec()),
                    MAX_LINE_BYTES,
                    true,
                    false
                ),
                (None, 5, false, true),
                (Some(b"2024-01-01T00:00:01Z ".to_vec()), 5, true, true),
                (Some(b"no-space-at-all".to_vec()), 0, true, true),
            ]
        );
        // No space within the bound: no head, the bytes are text.
        let mut got = Vec::new();
        let long = vec![b'z'; MAX_HEAD_BYTES + 3];
        s.push(&long, &mut |_| {});
        s.finish(&mut |p| got.push((p.head.is_some(), p.text.len())));
        assert_eq!(got, [(false, MAX_HEAD_BYTES + 3)]);
    }

    #[tokio::test]
    async fn pipes_are_read_to_their_end() {
        let data = b"a\nb\r\n\nlast".to_vec();
        let mut raw = Vec::new();
        let mut lines = Vec::new();
        read_lines(
            &data[..],
            |c| raw.extend_from_slice(c),
            |t| lines.push(String::from_utf8_lossy(t).into_owned()),
        )
        .await;
        assert_eq!(raw, data);
        assert_eq!(lines, ["a", "b", "", "last"]);
    }
}
