"""The module's download client: OVMS 3.3.006's ``OvmsHttpClient`` request, on aiohttp.

OVMS strips a leading ``http://`` or ``https://`` and always speaks plain HTTP: the port is the URL's or 80,
even for ``https://``, and TLS is never used. The request is a bare HTTP/1.0 GET with only ``Host`` (without
the port) and ``User-Agent``, tried once: auto-update tries again at its next tick.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from yarl import URL

TIMEOUT_SECONDS = 10.0  # OVMS's select() timeout per read
CHUNK = 512  # OVMS reads and writes 512 bytes at a time
MAX_VER = 64 * 1024  # of ovms3.ver: a version line and its changelog, never more than a page
MIN_DOWNLOAD = 1024  # OVMS 3.3.006: a smaller body is an error page, never firmware


class RequestFailed(Exception):
    """No HTTP response could be had (bad URL, DNS, connect, no or broken response head), in the one attempt."""


class BodyFailed(Exception):
    """The body stopped early: the connection broke or a read timed out. ``closed``: the server just closed
    the connection before Content-Length bytes came, which OVMS's reader sees as a normal end of file."""

    def __init__(self, reason: str, closed: bool = False) -> None:
        super().__init__(reason)
        self.closed = closed


@dataclass(frozen=True)
class Target:
    """Where ``OvmsHttpClient::Request`` sends a GET: a host, a port and the path, exactly as split from the URL."""

    host: str  # as written in the URL: it is also the Host header, which has no port
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """Split ``url`` as OVMS does: a leading ``http://`` or ``https://`` (case-sensitive) is dropped, the
        server is everything up to the first ``/`` and the path the rest; a ``:port`` in the server is the
        port, 80 otherwise (for ``https://`` too). ValueError for a server aiohttp cannot connect to."""
        for scheme in ("http://", "https://"):
            if url.startswith(scheme):
                url = url[len(scheme) :]
                break
        server, slash, path = url.partition("/")
        host, colon, port = server.partition(":")
        # OVMS hands the port text to getaddrinfo as a service name; only numbers are taken here.
        if not host or (colon and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536)):
            raise ValueError(url)
        return cls(host, int(port) if colon else 80, slash + path)

    def url(self) -> URL:
        """The plain-http URL aiohttp connects to; ``encoded``: the path is sent as written, not requoted."""
        return URL(f"http://{self.host}:{self.port}{self.path}", encoded=True)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Response:
    status: int
    reason: str
    content_length: int | None
    _resp: aiohttp.ClientResponse

    def header(self, name: str) -> str:
        """A response header, "" when absent."""
        return self._resp.headers.get(name, "")

    async def chunks(self, size: int = CHUNK) -> AsyncIterator[bytes]:
        """The body in chunks of exactly ``size`` bytes (the last may be shorter).

        Bytes that arrived before a broken connection are still yielded, then BodyFailed is raised.
        """
        buffer = b""
        failure: Exception | None = None
        try:
            while data := await self._resp.content.read(size - len(buffer)):
                buffer += data
                if len(buffer) == size:
                    yield buffer
                    buffer = b""
        except (aiohttp.ClientError, TimeoutError) as err:
            failure = err
        if buffer:
            yield buffer
        if failure is not None:
            closed = isinstance(failure, aiohttp.ClientPayloadError) and "ContentLengthError" in repr(failure)
            raise BodyFailed(f"{type(failure).__name__}: {failure}", closed)

    async def body(self, limit: int = MAX_VER) -> bytes:
        """At most ``limit`` bytes of the body (what a module keeps of a version file and its changelog)."""
        kept = b""
        async for chunk in self.chunks(65536):
            kept += chunk[: limit - len(kept)]
            if len(kept) >= limit:
                break
        return kept


@asynccontextmanager
async def get(
    url: str, user_agent: str, timeout: float = TIMEOUT_SECONDS, headers: dict[str, str] | None = None
) -> AsyncIterator[Response]:
    """GET ``url`` once, as an OVMS module does: plain HTTP/1.0 (``https://`` is only stripped), ``Host`` and
    ``User-Agent`` and nothing else, then ``headers`` (the emulator's own delta/resume additions) after them.
    No redirects are followed. RequestFailed (its text says why, see ``request_failure``) when no response
    head arrives within ``timeout`` seconds of connecting; reads time out after ``timeout`` seconds too."""
    try:
        target = Target.parse(url)
        request_url = target.url()
    except ValueError as err:
        raise RequestFailed(request_failure(url, err)) from None
    client_timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout, sock_read=timeout)
    # force_close: with HTTP/1.0, aiohttp would otherwise add "Connection: keep-alive"; OVMS sends no
    # Connection header and reads the body until the server closes.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=client_timeout, auto_decompress=False, version=aiohttp.HttpVersion10
    ) as session:
        # aiohttp sends an idempotent request a second time when the connection is reset or closed before
        # the answer; OVMS never does. This switch has no public setter: aiohttp's own test client clears it
        # the same way, and tests/test_module_http.py counts the connections.
        session._retry_connection = False
        try:
            resp = await session.get(
                request_url,
                # Host is given so it has no port (aiohttp adds a non-default one), and goes first.
                headers={"Host": target.host, "User-Agent": user_agent, **(headers or {})},
                skip_auto_headers=("Accept", "Accept-Encoding"),
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise RequestFailed(request_failure(url, err)) from None
        try:
            yield Response(resp.status, resp.reason or "", resp.content_length, resp)
        finally:
            resp.release()


def request_failure(url: str, err: BaseException) -> str:
    """One line saying why a GET of ``url`` got no response: ``cannot connect to 127.0.0.1:1: connection
    refused``, ``no answer from HOST:PORT: the server closed the connection``, ``invalid URL …``."""
    try:
        where = str(Target.parse(url))
    except ValueError:
        return f"invalid URL {url}"
    if isinstance(err, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return f"cannot connect to {where}: {failure_reason(err)}"
    if isinstance(err, ValueError):  # aiohttp.InvalidURL, or a host yarl cannot take
        return f"invalid URL {url}"
    return f"no answer from {where}: {failure_reason(err)}"


def failure_reason(err: BaseException) -> str:
    """Why a connection failed or gave no answer, in a few words: ``connection refused``, ``timed out``, ``name
    lookup failed (Name or service not known)``, ``TLS certificate verify failed (…)``."""
    # aiohttp's own text names its TLS setting ("ssl:default") even for plain http: the cause it wraps is used.
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        err = err.certificate_error
    elif isinstance(err, aiohttp.ClientConnectorError):
        err = err.os_error
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed ({err.verify_message or err.reason})"
    if isinstance(err, ssl.SSLError):
        return f"TLS failed ({err.reason or err})"
    if isinstance(err, socket.gaierror):
        return f"name lookup failed ({err.strerror})"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, ConnectionResetError):
        return "connection reset"
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(err, aiohttp.ClientResponseError):
        return err.message
    if isinstance(err, OSError) and err.strerror:
        return err.strerror[:1].lower() + err.strerror[1:]
    return str(err) or type(err).__name__


@dataclass(frozen=True)
class ServerVersion:
    version: str
    changelog: str


async def fetch_version(url: str, user_agent: str, timeout: float = TIMEOUT_SECONDS) -> ServerVersion | None:
    """OvmsOTA::GetStatus's server check: line 1 of ovms3.ver is the version, the rest the changelog."""
    try:
        async with get(url, user_agent, timeout) as resp:
            if resp.status != 200:
                return None
            body = await resp.body()
    except (RequestFailed, BodyFailed):
        return None
    return parse_ver(body)


def parse_ver(body: bytes) -> ServerVersion | None:
    """ovms3.ver as OVMS reads it: the version up to the first CR or LF, then the changelog; None for a
    reply with no line end or one that starts with a newline."""
    for end, char in enumerate(body):
        if char in b"\r\n":
            if end == 0:
                return None  # OVMS ignores a reply that starts with a newline
            rest = body[end + 1 :]
            if char == 0x0D and rest[:1] == b"\n":
                rest = rest[1:]
            return ServerVersion(body[:end].decode("utf-8", "replace"), rest.decode("utf-8", "replace"))
    return None
