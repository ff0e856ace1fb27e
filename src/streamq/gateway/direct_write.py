"""Writing an event stream's body chunks from outside its request's task, straight onto the
connection of uvicorn's h11 protocol (the protocol ``streamq serve`` runs).

A gateway following one job for 2,000 subscribers spent most of each subscriber-event waking
the subscriber's task and resuming its coroutines (the server's, Starlette's, the body's, the
reader's) only to hand one frame to the socket. A :class:`DirectWriter` lets the multiplexer
that read the entry write it for every subscriber whose task waits with nothing else to write
(:meth:`streamq.multiplexer.Subscription.write_directly`): the bytes and the chunk framing are
the ones the server's own ``send`` would write, through the same ``h11.Connection``. A chunk
framed once for all of them (HTTP/1.1 chunked, as h11 frames it: its state does not change
with body data) is written as it is to a response h11 sends chunked, sparing each of them
h11's own framing (~2.5 µs); an HTTP/1.0 client's response goes through h11.

It declines (the chunk then goes the usual way, through the task and ``send``) while the client
cannot take more (the transport paused writing: ``send`` waits for it to drain), after the
client left, before the response started or after it ended, and for ``HEAD``.
"""

from __future__ import annotations

from collections.abc import Callable

import h11
from h11._writers import ChunkedWriter
from starlette.types import Send
from uvicorn.protocols.http.h11_impl import RequestResponseCycle

from streamq.core.events import Event

# A batch's body bytes, and the same framed as one HTTP/1.1 chunk (:func:`chunk_of`).
Frames = Callable[[list[Event]], tuple[bytes, bytes]]


class DirectWriter:
    """Writes the frames of a batch of events as one body chunk of one response on uvicorn's
    h11 connection, when it can: a multiplexer's sink
    (:meth:`streamq.multiplexer.Subscription.write_directly`)."""

    __slots__ = ("_cycle", "_frames")

    def __init__(self, cycle: RequestResponseCycle, frames: Frames) -> None:
        self._cycle = cycle
        self._frames = frames

    def write(self, batch: list[Event]) -> bool:
        """Write ``batch``'s frames as the server's ``send`` would write them, and say so; or
        False, writing nothing, before the response started or after it ended, after the
        client left and while its connection is paused (it cannot take more)."""
        cycle = self._cycle
        if (
            not cycle.response_started
            or cycle.response_complete
            or cycle.disconnected
            or cycle.flow.write_paused
        ):
            return False
        data, chunk = self._frames(batch)
        if not data:  # (an empty chunk would end the body)
            return True
        conn = cycle.conn
        if type(getattr(conn, "_writer", None)) is ChunkedWriter:
            cycle.transport.write(chunk)
        else:
            cycle.transport.write(conn.send(h11.Data(data=data)))
        return True


def chunk_of(data: bytes) -> bytes:
    """``data`` (not empty) framed as one HTTP/1.1 chunk, as h11's ``ChunkedWriter`` does."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def direct_writer(send: Send, method: str, frames: Frames) -> DirectWriter | None:
    """A :class:`DirectWriter` for the response that ``send`` (the server's own, not a
    middleware's) belongs to, framing batches with ``frames``; None under another server or
    protocol, or for ``HEAD``."""
    cycle = getattr(send, "__self__", None)
    if type(cycle) is not RequestResponseCycle or method == "HEAD":
        return None
    return DirectWriter(cycle, frames)
