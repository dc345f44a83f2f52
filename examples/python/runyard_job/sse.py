"""The event stream read by the HTML standard's rules ("event stream interpretation"), as the
CLI reads it (src/cli/sse.rs): lines ended by CR, LF or CRLF (``Lines``, in the transports),
one leading byte order mark skipped, ``data:`` lines joined, an event dispatched on a blank line,
``:`` a comment, and the last event id kept as an ``EventSource`` keeps it (``Parser``): an
``id:`` with no data after it moves it, an empty one clears it, one that could not go back in a
``Last-Event-ID`` header (NUL or another control character) is ignored. ``last_event_id``
gives the header's value: UTF-8 goes back as it came.

Before (probe s54b F11): a CR-only line end left the last event unread while the connection
stayed open (httpx's line reader waits for a LF after a CR), a UTF-8 id raised
``UnicodeEncodeError`` at the reconnect, an id with white space at its end was refused as a
header and the follow never reconnected, and an empty ``id:`` left the old id to be sent.
"""

from __future__ import annotations

import re
from typing import AsyncIterable, AsyncIterator, Iterable, Iterator, List, Optional

#: The byte order mark (U+FEFF in UTF-8) a stream may begin with.
BOM = b"\xef\xbb\xbf"
#: A line's end: CRLF, CR or LF.
_EOL = re.compile(rb"\r\n?|\n")
#: Characters no header value may hold (white space at its ends aside): an id with one is ignored.
_NOT_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class Lines:
    """A stream's bytes cut into lines (decoded UTF-8, an invalid byte replaced, as a browser
    does). A line is given as soon as its end comes: a CR ends it at once (a LF right after it
    ends no second line). A last line without its end, when the stream ends, is dropped (the
    event it belonged to is incomplete)."""

    def __init__(self) -> None:
        self._line = bytearray()
        self._after_cr = False
        self._first = True

    def feed(self, chunk: bytes) -> List[str]:
        lines: List[str] = []
        at = 1 if self._after_cr and chunk[:1] == b"\n" else 0
        if chunk:
            self._after_cr = False
        while True:
            end = _EOL.search(chunk, at)
            if end is None:
                self._line += chunk[at:]
                return lines
            self._line += chunk[at : end.start()]
            lines.append(self._take())
            at = end.end()
            if end.group() == b"\r" and at == len(chunk):
                self._after_cr = True

    def _take(self) -> str:
        line = bytes(self._line)
        self._line.clear()
        if self._first:
            self._first = False
            if line.startswith(BOM):
                line = line[len(BOM) :]
        return line.decode("utf-8", "replace")

    def of(self, chunks: Iterable[bytes]) -> Iterator[str]:
        for chunk in chunks:
            yield from self.feed(chunk)

    async def of_async(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
        async for chunk in chunks:
            for line in self.feed(chunk):
                yield line


class Parser:
    """One connection's lines -> its events' data. ``last_id`` is the stream's last event id
    (set when an event is dispatched, its data or not), starting from the one the connection
    went on from; empty: none."""

    def __init__(self, last_id: Optional[str]) -> None:
        self.last_id = last_id or ""
        self._id = self.last_id
        self._data: List[str] = []

    def feed(self, line: str) -> Optional[str]:
        """One line; the data of the event it ends, if any."""
        if line == "":
            self.last_id = self._id
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data = []
            return data
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "id" and not _NOT_IN_HEADER.search(value):
            self._id = value
        return None


def last_event_id(last_id: Optional[str]) -> Optional[bytes]:
    """The ``Last-Event-ID`` header's value for ``last_id`` (None: no header): UTF-8 as it came
    (httpx would encode a str as ASCII), without white space at its ends, which is no part of a
    header's value (the receiver drops it; the HTTP library refuses to send it)."""
    value = (last_id or "").strip(" \t")
    return value.encode("utf-8") if value else None
