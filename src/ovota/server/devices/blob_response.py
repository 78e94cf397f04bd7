"""Answering with a blob: sendfile from a cached open file, with Range and conditional GET.

aiohttp's FileResponse stats and opens the file (and looks for .gz/.br siblings) in a worker thread on
every request. Build blobs are content-addressed and never change, so each is opened once and its
SHA-256 is a strong ETag; a request then costs a header block and one sendfile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from collections.abc import Callable

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from ovota.server.context import CONTEXT_KEY
from ovota.server.devices.blobs import OpenBlob
from ovota.server.devices.stall import StallWatch
from ovota.server.metrics import DEVICE_BYTES, device_request

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
TLS_CHUNK = 256 * 1024


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(offset, count) of a single satisfiable range; None to serve the whole file; ValueError if unsatisfiable."""
    match = _RANGE.fullmatch(header.replace(" ", ""))
    if match is None:
        return None  # multiple or malformed ranges: RFC 9110 lets a server ignore Range
    first, last = match.groups()
    if first == "":
        if last == "" or int(last) == 0:
            raise ValueError
        count = min(int(last), size)
        return size - count, count
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise ValueError
    return start, end - start + 1


# Called once the body is sent or has failed: (offset of the range sent, bytes sent). sendfile reports no partial
# count, so a broken transfer reports 0 bytes.
SentCallback = Callable[[int, int], None]


async def _sendfile(request: web.BaseRequest, transport: asyncio.Transport, sock: socket.socket | None,
                    blob: OpenBlob, offset: int, count: int) -> None:  # fmt: skip
    """``count`` bytes of the blob from ``offset`` to the client. When the headers have left (the transport holds
    nothing) the kernel usually takes the whole range in one ``sendfile`` call straight away: asyncio's
    ``loop.sendfile`` would first pause reading, stat and seek the file and wait on futures (four epoll changes
    and a few syscalls per request); it is used only for what the socket did not take at once."""
    if sock is not None and transport.get_write_buffer_size() == 0:
        try:
            while count > 0:
                sent = os.sendfile(sock.fileno(), blob.file.fileno(), offset, count)
                if sent == 0:
                    raise ConnectionResetError("the client closed the connection")
                offset, count = offset + sent, count - sent
        except BlockingIOError:
            pass
    if count > 0:
        await request._loop.sendfile(transport, blob.file, offset, count)


class BlobResponse(web.StreamResponse):
    def __init__(
        self,
        blob: OpenBlob,
        cache_control: str,
        sha256: str,
        on_sent: SentCallback | None = None,
        status: int = 200,
        extra: dict[str, str] | None = None,
        file: str = "bin",
    ) -> None:
        """``status``: the answer for the whole blob (226 for a delta); a Range still gives 206. ``file``: how
        the request is counted in the metrics (bin, build), once its status is known."""
        super().__init__(
            status=status,
            headers={
                "Content-Type": "application/octet-stream",
                "Accept-Ranges": "bytes",
                "ETag": blob.etag,
                "Last-Modified": blob.last_modified,
                "Cache-Control": cache_control,
                "X-Build-SHA256": sha256,
                **(extra or {}),
            },
        )
        self._blob = blob
        self._on_sent = on_sent
        self._file = file

    async def _copy(self, blob: OpenBlob, offset: int, count: int) -> None:
        """The body through TLS, which the kernel cannot encrypt: positional reads (the open file is shared by
        concurrent requests, so its file position must not be used) written through the response."""
        end = offset + count
        while offset < end:
            chunk = os.pread(blob.file.fileno(), min(TLS_CHUNK, end - offset), offset)
            if not chunk:
                raise ConnectionResetError(f"blob ended at {offset} of {end} bytes")
            await self.write(chunk)
            offset += len(chunk)

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            return await self._send(request)
        finally:
            device_request(self._file, self.status)

    async def _send(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        blob = self._blob
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match is not None:
            if if_none_match.strip() == "*" or blob.etag in (
                t.strip().removeprefix("W/") for t in if_none_match.split(",")
            ):
                return await self._not_modified(request)
        elif request.if_modified_since is not None and blob.mtime <= request.if_modified_since.timestamp():
            return await self._not_modified(request)
        offset, count = 0, blob.size
        range_header = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if range_header and (if_range is None or if_range.strip() in (blob.etag, blob.last_modified)):
            try:
                chosen = _byte_range(range_header, blob.size)
            except ValueError:
                self.set_status(416)
                self.headers["Content-Range"] = f"bytes */{blob.size}"
                self.content_length = 0
                return await super().prepare(request)
            if chosen is not None:
                offset, count = chosen
                self.set_status(206)
                self.headers["Content-Range"] = f"bytes {offset}-{offset + count - 1}/{blob.size}"
        self.content_length = count
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("Connection lost")
        sock = transport.get_extra_info("socket")
        cork = sock is not None and request.method != "HEAD" and count > 0
        if cork:
            # Like nginx's tcp_nopush: headers and the first data go out in full segments.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        try:
            writer = await super().prepare(request)
            if request.method == "HEAD" or count == 0:
                return writer
            window = request.config_dict[CONTEXT_KEY].body_seconds if isinstance(request, web.Request) else 0.0
            task = asyncio.current_task()
            watch = StallWatch(transport, sock, window, task) if sock is not None and task is not None else None
            try:
                if transport.get_extra_info("sslcontext") is not None:
                    await self._copy(blob, offset, count)
                else:
                    await _sendfile(request, transport, sock, blob, offset, count)
            except BaseException:
                if self._on_sent is not None:
                    self._on_sent(offset, 0)
                raise
            finally:
                if watch is not None:
                    watch.stop()
            DEVICE_BYTES.inc(count)
            if self._on_sent is not None:
                self._on_sent(offset, count)
        finally:
            if cork:
                with contextlib.suppress(OSError):  # a client gone mid-body closed the socket: nothing to uncork
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        await super().write_eof()
        return writer

    async def _not_modified(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        self.set_status(304)
        self.content_length = None
        return await super().prepare(request)
