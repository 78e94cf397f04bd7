"""Cutting a download whose client stopped taking it.

A client can ask for a multi-megabyte ``ovms3.bin`` and then read a byte now and then: the server's socket
buffer fills, the kernel holds the rest, and the connection stays busy (never idle, so the connection caps cannot
close it to make room) for as long as the client likes. A few thousand such clients, from as many addresses,
take every connection the server may open and stop the fleet. So a body being sent is watched: over every
``window`` seconds (--idle-timeout) the client must acknowledge at least MIN_RATE bytes a second, as the
kernel counts them (TCP_INFO's bytes acknowledged, Linux), or the connection is reset. OVMS over the slowest
modem takes several KB/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time

from ovota.server.metrics import DOWNLOADS_CUT

MIN_RATE = 1024  # bytes a second, acknowledged by the client, averaged over a window
_BYTES_ACKED = 120  # offset of tcpi_bytes_acked (u64) in Linux's struct tcp_info (since 4.1)
_TCP_INFO_SIZE = 232
log = logging.getLogger("ovota.server")
_logged = [-60.0]


def acknowledged(sock: socket.socket) -> int | None:
    """Bytes the peer has acknowledged on this TCP connection; None where the kernel does not say."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except (OSError, AttributeError):
        return None
    if len(info) < _BYTES_ACKED + 8:
        return None
    return int(struct.unpack_from("Q", info, _BYTES_ACKED)[0])


class StallWatch:
    """Resets the connection (cancelling ``task``, the one sending) when its client acknowledges less than
    MIN_RATE bytes a second over a window; ``stop`` once the body is sent. Does nothing where the kernel does
    not count acknowledged bytes."""

    def __init__(self, transport: asyncio.Transport, sock: socket.socket, window: float,
                 task: asyncio.Task[object]) -> None:  # fmt: skip
        self.transport, self.sock, self.window, self.task = transport, sock, window, task
        self.acked = acknowledged(sock)
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(window, self._check) if self.acked is not None and window > 0 else None

    def _check(self) -> None:
        now = acknowledged(self.sock)
        if now is None or self.acked is None or self.transport.is_closing():
            return
        if now - self.acked < MIN_RATE * self.window:
            DOWNLOADS_CUT.inc()
            if time.monotonic() - _logged[0] >= 60:
                _logged[0] = time.monotonic()
                log.warning("cut a download whose client took %d bytes in %g s (under %d B/s); said once a minute",
                            now - self.acked, self.window, MIN_RATE)  # fmt: skip
            # Not transport.abort(): with asyncio's sendfile waiting on the transport, that fails inside asyncio and
            # leaves the socket open. The sending task is cancelled instead (aiohttp then closes the connection);
            # with SO_LINGER 0 the close is a reset that drops what the kernel still queues for this client.
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.task.cancel()
            return
        self.acked = now
        self._handle = asyncio.get_running_loop().call_later(self.window, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
