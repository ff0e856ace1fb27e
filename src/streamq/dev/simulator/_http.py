"""Just enough HTTP/1.1 for the simulator: a keep-alive asyncio server, JSON and chunked SSE."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from streamq.core._loop_thread import LoopThread

logger = logging.getLogger("streamq.simulator")

MAX_BODY_BYTES = 32 * 1024 * 1024
# The terminating zero-length chunk of a chunked body.
LAST_CHUNK = b"0\r\n\r\n"

Headers = Iterable[tuple[str, str]]


class BadRequest(Exception):
    """The bytes received are not an HTTP/1.x request this server can answer."""


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request; header names are lower-cased and the path has no query string."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    keep_alive: bool


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Read the next request from a connection; None when the client closed it between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest("connection closed in the middle of the request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest("request head too large") from None
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"malformed request line {request_line!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(f"malformed header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    body = await _read_body(reader, headers)
    connection = headers.get("connection", "").lower()
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    return Request(method, target.partition("?")[0], headers, body, keep_alive)


async def _read_body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await _read_chunked(reader)
        length = int(headers.get("content-length", "0"))
        if not 0 <= length <= MAX_BODY_BYTES:
            raise BadRequest(f"content-length {length} out of range")
        return await reader.readexactly(length)
    except ValueError:
        raise BadRequest("malformed content-length or chunk size") from None
    except asyncio.IncompleteReadError:
        raise BadRequest("connection closed in the middle of the request body") from None


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # skip trailers
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY_BYTES:
            raise BadRequest("request body too large")
        body += (await reader.readexactly(size + 2))[:-2]


def response_head(status: int, headers: Headers) -> bytes:
    """Encode a status line and headers, ending with the blank line."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def json_bytes(value: object) -> bytes:
    """Compact UTF-8 JSON, as OpenAI sends it; lone surrogates as ``\\uXXXX`` escapes."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:  # what JavaScript's JSON.stringify does with a lone surrogate
        return json.dumps(value, separators=(",", ":")).encode()


def json_response(status: int, payload: Any, *, keep_alive: bool, headers: Headers = ()) -> bytes:
    """A complete response with a JSON body and Content-Length, ready for one write."""
    body = json_bytes(payload)
    head = response_head(
        status,
        [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("connection", "keep-alive" if keep_alive else "close"),
            *headers,
        ],
    )
    return head + body


def sse_head(headers: Headers = ()) -> bytes:
    """The head of a 200 event-stream response whose body is sent chunked."""
    return response_head(
        200,
        [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("transfer-encoding", "chunked"),
            ("connection", "keep-alive"),
            *headers,
        ],
    )


def sse_chunk(data: bytes) -> bytes:
    """One SSE event ``data: <data>\\n\\n`` framed as one HTTP chunk."""
    # len(b"data: ") + len(b"\n\n") == 8
    return b"%x\r\ndata: %b\n\n\r\n" % (len(data) + 8, data)


def sse_event(name: str, data: bytes) -> bytes:
    """One SSE event ``event: <name>\\ndata: <data>\\n\\n`` framed as one HTTP chunk."""
    event = b"event: %b\ndata: %b\n\n" % (name.encode(), data)
    return b"%x\r\n%b\r\n" % (len(event), event)


def wildcard_to_loopback(host: str) -> str:
    """The host to put in a URL for a server bound to ``host``."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


async def client_left_within(reader: asyncio.StreamReader, timeout: float | None) -> bool:
    """Wait ``timeout`` seconds (None: forever); True as soon as the client closes."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):  # discard anything the client sends meanwhile
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


class HTTPServer:
    """A keep-alive HTTP/1.1 server on asyncio streams; subclasses implement :meth:`handle`."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def origin(self) -> str:
        """``http://host:port`` of the listening socket."""
        return f"http://{wildcard_to_loopback(self.host)}:{self.port}"

    async def handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Write the response to ``request``; False when the connection must then be closed."""
        raise NotImplementedError

    def bad_request(self, reason: str) -> bytes:
        """The response to bytes that are not a request; the connection is closed after it."""
        return json_response(400, {"error": reason}, keep_alive=False)

    def connection_opened(self) -> None:
        """Called for every accepted connection."""

    async def start(self) -> Self:
        """Bind and start accepting connections."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        """Stop accepting, end every open connection and wait for their tasks."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing = True
        server.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:  # accepted just before aclose() closed the listening socket
            writer.close()
            return
        # Own the task (rather than hand start_server a coroutine) so aclose() can cancel it.
        task = asyncio.get_running_loop().create_task(self._serve_connection(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connection_opened()
        try:
            while True:
                try:
                    request = await read_request(reader)
                except BadRequest as exc:
                    writer.write(self.bad_request(str(exc)))
                    break
                if request is None:
                    break
                if not await self.handle(request, reader, writer) or writer.is_closing():
                    break
                await writer.drain()
        except ConnectionError:
            pass  # the client went away; nobody is left to answer
        except Exception:
            logger.exception("unexpected error while serving a connection")
        finally:
            writer.close()


Server = TypeVar("Server", bound=HTTPServer)


class ServerThread(LoopThread, Generic[Server]):
    """Runs an :class:`HTTPServer` on its own event loop in a daemon thread."""

    def __init__(self, server: Server, *, name: str) -> None:
        super().__init__(name)
        self.server = server

    async def serve(self, stop: asyncio.Event) -> None:
        async with self.server:
            self._ready.set()
            await stop.wait()
