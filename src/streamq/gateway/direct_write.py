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

import h11
from h11._writers import ChunkedWriter
from starlette.types import Send
from uvicorn.protocols.http.h11_impl import RequestResponseCycle


class DirectWriter:
    """Writes body chunks of one response on uvicorn's h11 connection, when it can."""

    __slots__ = ("_cycle",)

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle

    def ready(self) -> bool:
        """Whether :meth:`write` may write now: the response has started and not ended, the
        client is there and its connection is not paused."""
        cycle = self._cycle
        return (
            cycle.response_started
            and not cycle.response_complete
            and not cycle.disconnected
            and not cycle.flow.write_paused
        )

    def write(self, data: bytes, chunk: bytes | None = None) -> None:
        """Body ``data``, as the server's ``send`` writes it (call when :meth:`ready`);
        ``chunk``, when given, is ``data`` framed as one HTTP/1.1 chunk (:func:`chunk_of`)."""
        if not data:  # (an empty chunk would end the body)
            return
        cycle = self._cycle
        conn = cycle.conn
        if chunk is not None and type(getattr(conn, "_writer", None)) is ChunkedWriter:
            cycle.transport.write(chunk)
        else:
            cycle.transport.write(conn.send(h11.Data(data=data)))


def chunk_of(data: bytes) -> bytes:
    """``data`` (not empty) framed as one HTTP/1.1 chunk, as h11's ``ChunkedWriter`` does."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def direct_writer(send: Send, method: str) -> DirectWriter | None:
    """A :class:`DirectWriter` for the response that ``send`` (the server's own, not a
    middleware's) belongs to; None under another server or protocol, or for ``HEAD``."""
    cycle = getattr(send, "__self__", None)
    if type(cycle) is not RequestResponseCycle or method == "HEAD":
        return None
    return DirectWriter(cycle)
