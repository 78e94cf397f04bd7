"""HTTP(S) download for the module (aiohttp client), with OVMS's request shape and bounded retries.

OVMS sends a bare HTTP/1.0 GET with Host and User-Agent, strips any scheme and never does TLS. Here a
URL without a scheme is plain http (as OVMS), and an https URL gets real, verified TLS.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

TIMEOUT_SECONDS = 10.0  # OVMS's select() timeout per read
CONNECT_ATTEMPTS = 3
CHUNK = 512  # OVMS reads and writes 512 bytes at a time
MIN_DOWNLOAD = 1024  # OVMS 3.3.006: a smaller body is an error page, never firmware


class RequestFailed(Exception):
    """No HTTP response could be had (DNS, connect, TLS, headers), after the bounded retries."""


class BodyFailed(Exception):
    """The body stopped early: the connection broke or a read timed out."""


def http_url(url: str) -> str:
    return url if "://" in url else "http://" + url


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
            raise BodyFailed(f"{type(failure).__name__}: {failure}")

    async def body(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks(65536)])


@asynccontextmanager
async def get(
    url: str, user_agent: str, timeout: float = TIMEOUT_SECONDS, headers: dict[str, str] | None = None
) -> AsyncIterator[Response]:
    """GET ``url`` as an OVMS module does; connection failures are retried a bounded number of times.
    ``headers``: emulator additions (delta negotiation); OVMS itself sends only Host and User-Agent."""
    client_timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout, sock_read=timeout)
    async with aiohttp.ClientSession(
        timeout=client_timeout, auto_decompress=False, version=aiohttp.HttpVersion10
    ) as session:
        last_error = ""
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                resp = await session.get(
                    http_url(url),
                    headers={"User-Agent": user_agent, **(headers or {})},
                    skip_auto_headers=("Accept", "Accept-Encoding"),
                    allow_redirects=False,
                )
                break
            except (aiohttp.ClientError, TimeoutError, ValueError) as err:
                last_error = request_failure(url, err)
                if attempt + 1 < CONNECT_ATTEMPTS:
                    await asyncio.sleep(0.2 * 2**attempt)
        else:
            raise RequestFailed(last_error)
        try:
            yield Response(resp.status, resp.reason or "", resp.content_length, resp)
        finally:
            resp.release()


def request_failure(url: str, err: BaseException) -> str:
    """One line saying why a GET of ``url`` got no response: ``cannot connect to 127.0.0.1:1: connection
    refused``, ``no answer from HOST:PORT: timed out``, ``invalid URL …``."""
    if isinstance(err, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return f"cannot connect to {_where(url)}: {failure_reason(err)}"
    if isinstance(err, ValueError):  # aiohttp.InvalidURL, or a URL yarl cannot parse
        return f"invalid URL {url}"
    return f"no answer from {_where(url)}: {failure_reason(err)}"


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


def _where(url: str) -> str:
    """``host:port`` of a URL, the port filled in from its scheme."""
    parts = urlsplit(http_url(url))
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a port that is not a number
        return parts.netloc
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


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
