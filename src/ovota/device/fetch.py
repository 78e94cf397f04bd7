"""HTTP(S) download for the module (aiohttp client), with OVMS's request shape and bounded retries.

OVMS sends a bare HTTP/1.0 GET with Host and User-Agent, strips any scheme and never does TLS. Here a
URL without a scheme is plain http (as OVMS), and an https URL gets real, verified TLS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

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
                last_error = str(err) or type(err).__name__
                if attempt + 1 < CONNECT_ATTEMPTS:
                    await asyncio.sleep(0.2 * 2**attempt)
        else:
            raise RequestFailed(last_error)
        try:
            yield Response(resp.status, resp.reason or "", resp.content_length, resp)
        finally:
            resp.release()


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
