"""The throwaway redis-server of the demo and the tests (``streamq.dev.local_redis``)."""

from __future__ import annotations

import socket

import pytest

from streamq.core.exceptions import ConfigError
from streamq.dev.local_redis import LocalRedis, free_port, redis_answers


def _taken(port: int) -> socket.socket:
    """A socket listening on ``port``, as another program that took it would be."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_port_it_chose_that_was_taken_meanwhile_gives_way_to_another() -> None:
    """The port a LocalRedis chose was free when it looked; taken before the server binds it,
    the server starts on another free port, and the URL says which."""
    server = LocalRedis()
    chosen = server.port
    with _taken(chosen), server:
        assert server.port != chosen
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert redis_answers(server.url)


def test_a_port_it_was_given_that_is_taken_fails_saying_why() -> None:
    """A port the caller chose is kept: taken, the start fails with redis-server's reason."""
    port = free_port()
    with _taken(port), pytest.raises(ConfigError, match="Address already in use"):
        LocalRedis(port=port).start()
