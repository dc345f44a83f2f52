"""The two thin transports under ``Client`` and ``AsyncClient``: each performs the commands of
the request layer (``api_core.py``) with its own I/O and nothing else. What to send, what an
answer means, when to reconnect or poll is decided once, in the operations.

Both send ``Accept``, ``User-Agent`` and, with a token, ``Authorization: Bearer <token>`` on every
request (never the token in a URL), and turn a request that got no answer (``httpx``'s transport
errors: refused, reset, timed out) into ``ServerUnreachable``, thrown into the operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, AsyncIterator, Dict, Generator, Iterator, List, Optional, TypeVar

import httpx

from . import sse
from .api_core import CLOSE, NEXT_LINE, Call, Emit, Op, Open, Sleep
from .api_errors import ServerUnreachable
from .api_requests import _headers

T = TypeVar("T")


class _Steps:
    """Steps an operation: iterating gives its commands, each sent the ``answer`` (or thrown the
    ``error``) set meanwhile; ``value`` is what it returned. Closes it on exit."""

    def __init__(self, op: Op[Any], url: str):
        self.op = op
        self.url = url
        self.answer: Any = None
        self.error: Optional[BaseException] = None
        self.value: Any = None

    def __enter__(self) -> "_Steps":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.op.close()

    def __iter__(self) -> Iterator[Any]:
        while True:
            answer, error = self.answer, self.error
            self.answer = self.error = None
            try:
                yield self.op.throw(error) if error is not None else self.op.send(answer)
            except StopIteration as done:
                self.value = done.value
                return

    def failed(self, error: httpx.TransportError) -> None:
        """No answer came: the operation gets ``ServerUnreachable``."""
        unreachable = ServerUnreachable(self.url, error)
        unreachable.__cause__ = error
        self.error = unreachable


def _bounded(kwargs: Dict[str, Any], default: float) -> Dict[str, Any]:
    """A request's own ``timeout`` never longer than the client's."""
    if "timeout" in kwargs:
        kwargs["timeout"] = min(kwargs["timeout"], default)
    return kwargs


def _stream_timeout(default: float, command: Open) -> httpx.Timeout:
    return httpx.Timeout(default, read=command.read_timeout)


def _unknown(command: Any) -> TypeError:
    return TypeError(f"the request layer sent an unknown command: {command!r}")


class _SyncStream(contextlib.ExitStack):
    lines: Iterator[str] = iter(())


class SyncTransport:
    """Commands performed with ``httpx.Client`` and ``time.sleep``."""

    def __init__(self, url: str, token: Optional[str], timeout: float, transport: Optional[httpx.BaseTransport]):
        self.url = url
        self.timeout = timeout
        self.http = httpx.Client(base_url=url, headers=_headers(token), timeout=timeout, transport=transport)

    def run(self, op: Op[T]) -> T:
        """Runs ``op`` to its end; returns its value (events it emits are dropped)."""
        steps = self.iterate(op)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def iterate(self, op: Op[T]) -> Generator[Any, None, T]:
        """Runs ``op``, yielding what it emits; returns its value."""
        with _Steps(op, self.url) as steps, _SyncStream() as stream:
            for command in steps:
                if isinstance(command, Emit):
                    yield command.event
                    continue
                try:
                    steps.answer = self._perform(command, stream)
                except httpx.TransportError as e:
                    steps.failed(e)
        return steps.value  # type: ignore[no-any-return]

    def _perform(self, command: Any, stream: _SyncStream) -> Any:
        if isinstance(command, Call):
            return self.http.request(command.method, command.path, **_bounded(command.kwargs(), self.timeout))
        if isinstance(command, Open):
            stream.close()
            call = command.call
            response = stream.enter_context(
                self.http.stream(call.method, call.path, headers=command.headers,
                                 timeout=_stream_timeout(self.timeout, command), **call.kwargs())
            )  # fmt: skip
            if response.status_code >= 400:
                response.read()
            stream.lines = sse.Lines().of(response.iter_bytes())
            return response
        if command is NEXT_LINE:
            return next(stream.lines, None)
        if command is CLOSE:
            stream.close()
            stream.lines = iter(())
            return None
        if isinstance(command, Sleep):
            time.sleep(command.seconds)
            return None
        raise _unknown(command)


class _AsyncStream(contextlib.AsyncExitStack):
    lines: Optional[AsyncIterator[str]] = None


class AsyncTransport:
    """Commands performed with ``httpx.AsyncClient`` and ``asyncio.sleep``."""

    def __init__(
        self, url: str, token: Optional[str], timeout: float, transport: Optional[httpx.AsyncBaseTransport]
    ):
        self.url = url
        self.timeout = timeout
        self.http = httpx.AsyncClient(base_url=url, headers=_headers(token), timeout=timeout, transport=transport)

    async def run(self, op: Op[T]) -> T:
        """Runs ``op`` to its end; returns its value (events it emits are dropped)."""
        out: List[Any] = []
        async for _ in self.iterate(op, out):
            pass
        return out[0]  # type: ignore[no-any-return]

    async def iterate(self, op: Op[Any], out: Optional[List[Any]] = None) -> AsyncIterator[Any]:
        """Runs ``op``, yielding what it emits; its value goes to ``out``."""
        with _Steps(op, self.url) as steps:
            async with _AsyncStream() as stream:
                for command in steps:
                    if isinstance(command, Emit):
                        yield command.event
                        continue
                    try:
                        steps.answer = await self._perform(command, stream)
                    except httpx.TransportError as e:
                        steps.failed(e)
        if out is not None:
            out.append(steps.value)

    async def _perform(self, command: Any, stream: _AsyncStream) -> Any:
        if isinstance(command, Call):
            kwargs = _bounded(command.kwargs(), self.timeout)
            if "files" in kwargs:
                # httpx's async multipart cannot read sync files: read them here.
                kwargs["files"] = [
                    (prop, (name, content.read() if hasattr(content, "read") else content, mimetype))
                    for prop, (name, content, mimetype) in kwargs["files"]
                ]
            return await self.http.request(command.method, command.path, **kwargs)
        if isinstance(command, Open):
            await stream.aclose()
            call = command.call
            response = await stream.enter_async_context(
                self.http.stream(call.method, call.path, headers=command.headers,
                                 timeout=_stream_timeout(self.timeout, command), **call.kwargs())
            )  # fmt: skip
            if response.status_code >= 400:
                await response.aread()
            stream.lines = sse.Lines().of_async(response.aiter_bytes())
            return response
        if command is NEXT_LINE:
            try:
                return await stream.lines.__anext__() if stream.lines is not None else None
            except StopAsyncIteration:
                return None
        if command is CLOSE:
            await stream.aclose()
            stream.lines = None
            return None
        if isinstance(command, Sleep):
            await asyncio.sleep(command.seconds)
            return None
        raise _unknown(command)
