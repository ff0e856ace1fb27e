"""Redis URLs streamq accepts beyond redis-py's own: Sentinel-managed primaries."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    """``redis+sentinel://[user:password@]host:port[,host:port...]/SERVICE[/DB]``.

    The user and password are the data nodes'; ``?sentinel_password=`` authenticates to the
    sentinels themselves. ``rediss+sentinel://`` uses TLS to the data nodes.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """Parse ``url``; raises ValueError saying what is wrong."""
        parts = urlsplit(url)
        credentials, _, hosts = parts.netloc.rpartition("@")
        username, _, password = credentials.partition(":")
        sentinels = []
        for host in filter(None, hosts.split(",")):
            name, _, port = host.rpartition(":") if ":" in host else (host, "", "")
            sentinels.append((name, int(port) if port else DEFAULT_SENTINEL_PORT))
        path = [segment for segment in parts.path.split("/") if segment]
        if not sentinels or not 1 <= len(path) <= 2:
            raise ValueError("expected redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]")
        query = parse_qs(parts.query)
        return cls(
            sentinels=tuple(sentinels),
            service=path[0],
            db=int(path[1]) if len(path) == 2 else 0,
            username=unquote(username) or None,
            password=unquote(password) or None,
            sentinel_password=query.get("sentinel_password", [None])[0],
            tls=parts.scheme.startswith("rediss"),
        )


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def cluster_nodes(url: str) -> tuple[str, list[tuple[str, int]]]:
    """``redis+cluster://[user:password@]host:port[,host:port...]`` -> the URL of its first
    node (``redis://`` or ``rediss://``, credentials kept) and every node given."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    nodes = []
    for host in filter(None, hosts.split(",")):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError("expected redis+cluster://HOST:PORT[,HOST:PORT...]")
        nodes.append((name, int(port)))
    if not nodes:
        raise ValueError("expected redis+cluster://HOST:PORT[,HOST:PORT...]")
    scheme = "rediss" if parts.scheme.startswith("rediss") else "redis"
    login = f"{credentials}@" if credentials else ""
    first = f"{scheme}://{login}{nodes[0][0]}:{nodes[0][1]}"
    return first, nodes
