"""OVMS's HTTP client, as the simulator needs it: the exact bare HTTP/1.0 request, body read to the close.

OVMS sends ``GET <path> HTTP/1.0`` with only ``Host`` (without the port) and ``User-Agent``, reads the
status from the line starting with ``HTTP/`` and the size from ``Content-Length``, and reads the body
until the server closes the connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

from ovota.device.fetch import failure_reason


class HttpFailed(Exception):
    """No usable answer from the server."""


class Unreachable(HttpFailed):
    """No answer at all: the connection was refused or reset, the name lookup failed, or it timed out. ``reason``
    says which, in a few words (``connection refused``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Reply:
    status: int
    content_length: int  # 0 when the header is missing, as OVMS reads it
    body: bytes


@dataclass(frozen=True)
class Server:
    """``host:port/path`` as OVMS's ``ota server`` param holds it (a scheme is allowed and ignored)."""

    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Server:
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"invalid server URL {url!r}: use host:port/path or http://host:port/path")
        return cls(parts.hostname, parts.port or 80, parts.path.rstrip("/"))

    def __str__(self) -> str:
        """``host:port/path``, as OVMS's ``ota server`` param holds it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}{self.path}"


async def ovms_get(
    server: Server, path: str, user_agent: str, timeout: float = 30.0, extra: dict[str, str] | None = None
) -> Reply:
    """One request exactly as an OVMS module makes it (``extra``: headers a delta-capable module adds)."""
    added = "".join(f"{name}: {value}\r\n" for name, value in (extra or {}).items())
    request = f"GET {path} HTTP/1.0\r\nHost: {server.host}\r\nUser-Agent: {user_agent}\r\n{added}\r\n".encode()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(server.host, server.port), timeout)
        try:
            writer.write(request)
            data = await asyncio.wait_for(reader.read(), timeout)
        finally:
            writer.close()
    except (OSError, TimeoutError) as err:
        raise Unreachable(failure_reason(err)) from None
    head, _, body = data.partition(b"\r\n\r\n")
    status, length = 0, 0
    for line in head.split(b"\r\n"):
        if line.startswith(b"HTTP/"):
            status = _atoi(line.partition(b" ")[2])
        elif line[:15].lower() == b"content-length:":
            length = _atoi(line[15:])
    return Reply(status, length, body)


def _atoi(text: bytes) -> int:
    digits = text.strip()
    end = 0
    while end < len(digits) and digits[end : end + 1].isdigit():
        end += 1
    return int(digits[:end]) if end else 0
