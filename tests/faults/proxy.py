"""A small TCP fault proxy on loopback: forward, blackhole, reset and refuse connections.

No toxiproxy server can be installed here, so this is the few faults the suite needs, on its own
event loop in a background thread::

    with FaultProxy(redis_port) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        proxy.blackhole()      # bytes stop flowing both ways; sockets stay open
        proxy.heal()
        proxy.reset_all()      # every open connection gets a TCP RST
        proxy.refuse(True)     # the listener closes: new connections are refused
        proxy.silence_after(b"EXEC")  # the next EXEC is executed, its reply never arrives

Every control method may be called from any thread and has taken effect when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from streamq.dev.local_redis import free_port
from tests.harness.loop_thread import BackgroundLoop

T = TypeVar("T")

HOST = "127.0.0.1"
CHUNK = 64 * 1024
CALL_TIMEOUT = 30.0  # bound on a control call on the proxy's loop (milliseconds, normally)
# SO_LINGER on with a zero timeout: closing the socket sends RST instead of FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass
class ProxyStats:
    """Counters since the proxy started (written on the proxy's loop, read from anywhere)."""

    accepted: int = 0
    upstream_failures: int = 0  # accepted, but the target refused: the client got a RST
    resets: int = 0
    forwarded_bytes: int = 0
    dropped_bytes: int = 0


def _abort(writer: asyncio.StreamWriter, *, reset: bool) -> None:
    """Close a connection at once, with a TCP RST when ``reset``."""
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.transport.abort()


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's side, the target's side, a pump for each way."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    # A link that lost bytes can never be in sync again: it stays silent for good.
    dead: bool = False
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    def end(self, *, reset: bool) -> None:
        """Abort both sides and stop both pumps."""
        _abort(self.client, reset=reset)
        _abort(self.upstream, reset=reset)
        current = asyncio.current_task()
        for pump in self.pumps:
            if pump is not current:
                pump.cancel()


class FaultProxy(BackgroundLoop):
    """Forwards TCP connections from ``127.0.0.1:port`` to ``target_host:target_port``.

    Faults: :meth:`blackhole` (bytes held or dropped), :meth:`heal`, :meth:`reset_all`,
    :meth:`refuse`. A connection the target does not accept is reset, as a dead host's would be.
    Use it as a context manager; on exit every socket is closed and the thread has ended.
    """

    def __init__(self, target_port: int, target_host: str = HOST, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.stats = ProxyStats()
        super().__init__("fault-proxy")
        # The rest belongs to the proxy's loop.
        self._flowing: asyncio.Event | None = None
        self._drop = False
        self._silence_marker: bytes | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """Where clients connect."""
        return HOST, self.port

    def url(self, scheme: str = "redis", path: str = "/0") -> str:
        """A URL for clients, e.g. ``redis://127.0.0.1:PORT/0``."""
        return f"{scheme}://{HOST}:{self.port}{path}"

    @property
    def open_connections(self) -> int:
        """Connections proxied right now."""
        return len(self._links)

    # ---- faults (any thread) ----------------------------------------------------------------

    def blackhole(self, *, drop: bool = False) -> None:
        """Stop forwarding bytes in both directions; sockets stay open, new ones are accepted.

        By default bytes are held and delivered on :meth:`heal`, like TCP across a short
        partition. ``drop=True`` discards them instead, and a connection that lost bytes stays
        silent for good (as when a vanished host or a NAT forgets it): only its owner's own
        timeout gets it out, even after :meth:`heal`.
        """

        def apply() -> None:
            assert self._flowing is not None
            self._drop = drop
            self._flowing.clear()

        self._call(apply)

    def heal(self) -> None:
        """Forward again (held bytes first); connections that lost bytes stay silent."""

        def apply() -> None:
            assert self._flowing is not None
            self._flowing.set()

        self._call(apply)

    def reset_all(self) -> int:
        """Abort every open connection with a TCP RST to both ends; returns how many."""

        def apply() -> int:
            links = list(self._links)
            for link in links:
                link.end(reset=True)
            self.stats.resets += len(links)
            return len(links)

        return self._call(apply)

    def silence_after(self, marker: bytes) -> None:
        """Arm a one-shot fault: the next client chunk holding ``marker`` (e.g. ``b"EXEC"``)
        reaches the target, then that connection goes silent for good, so the target acts on
        the command but its reply is lost: what a client sees when a link dies (or its own
        socket timeout fires) after the server did the work."""

        def apply() -> None:
            self._silence_marker = marker

        self._call(apply)

    @property
    def silence_armed(self) -> bool:
        """Whether a :meth:`silence_after` fault is still waiting for its marker."""
        return self._silence_marker is not None

    def refuse(self, on: bool) -> None:
        """``True``: close the listener, so new connections are refused (open ones stay).
        ``False``: listen again on the same port."""
        self.call(self._close_listener() if on else self._listen(), CALL_TIMEOUT)

    # ---- the proxy's loop -------------------------------------------------------------------

    def _call(self, function: Callable[[], T]) -> T:
        async def call() -> T:
            return function()

        return self.call(call(), CALL_TIMEOUT)

    async def run(self, stop: asyncio.Event) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()
        self._ready.set()
        try:
            await stop.wait()
        finally:
            await self._close_listener()
            for link in list(self._links):
                link.end(reset=False)
            handlers = list(self._handlers)
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, HOST, self.port, reuse_address=True
            )

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # the listening socket closes now; open connections are ours to end

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.stats.accepted += 1
        try:
            await self._proxy(reader, writer)
        except asyncio.CancelledError:
            pass  # stopping: asyncio's own callback would log a cancelled handler as an error
        finally:
            self._handlers.discard(task)
            if not writer.transport.is_closing():
                _abort(writer, reset=False)

    async def _proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.stats.upstream_failures += 1
            _abort(writer, reset=True)
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.pumps = [
            asyncio.create_task(self._pump(link, reader, up_writer, from_client=True)),
            asyncio.create_task(self._pump(link, up_reader, writer, from_client=False)),
        ]
        try:
            await asyncio.gather(*link.pumps, return_exceptions=True)
        finally:
            # Close first, without awaiting: a stop may cancel this task at any await below.
            self._links.discard(link)
            for side in (link.client, link.upstream):
                side.close()  # after flushing what is buffered; nothing to do once aborted
            for pump in link.pumps:
                pump.cancel()
            await asyncio.gather(*link.pumps, return_exceptions=True)

    async def _pump(
        self,
        link: _Link,
        source: asyncio.StreamReader,
        destination: asyncio.StreamWriter,
        *,
        from_client: bool,
    ) -> None:
        """Copy one direction: an EOF goes on as a half-close, a reset as a reset."""
        assert self._flowing is not None
        try:
            while True:
                data = await source.read(CHUNK)
                if not link.dead and not self._flowing.is_set():
                    if self._drop:
                        link.dead = True
                    else:
                        await self._flowing.wait()
                if link.dead:
                    self.stats.dropped_bytes += len(data)
                    if data:
                        continue
                    if from_client:  # the client gave up on the dead link: end it
                        link.end(reset=False)
                        return
                    await asyncio.Event().wait()  # the target's FIN is lost too
                if not data:
                    if destination.can_write_eof() and not destination.transport.is_closing():
                        destination.write_eof()
                    return
                destination.write(data)
                self.stats.forwarded_bytes += len(data)
                marker = self._silence_marker
                if from_client and marker is not None and marker in data:
                    self._silence_marker = None
                    link.dead = True  # what the target answers is lost from now on
                await destination.drain()
        except (ConnectionError, OSError):
            link.end(reset=True)
