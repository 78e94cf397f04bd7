"""Bodies that must keep arriving: a request body (an upload, a JSON body, a console form) that arrives slower
than MIN_RATE bytes a second over any --idle-timeout is cut, so a token or session holder's stalled client
cannot hold a connection (and what waits on it) for ever. Said in the log once a minute, counted always."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from ovota.server.context import CONTEXT_KEY
from ovota.server.metrics import BODIES_CUT

MIN_RATE = 1024  # bytes a second, over each --idle-timeout
log = logging.getLogger("ovota.server")
_logged = [-60.0]


@contextlib.asynccontextmanager
async def minimum_rate(request: web.Request, rate: int = MIN_RATE) -> AsyncIterator[None]:
    """While inside, close the connection if the body arrives slower than ``rate`` bytes a second over a window
    of --idle-timeout seconds."""
    seconds = request.app[CONTEXT_KEY].body_seconds

    async def watch() -> None:
        seen = request.content.total_bytes
        while not request.content.is_eof():
            await asyncio.sleep(seconds)
            arrived, seen = request.content.total_bytes - seen, request.content.total_bytes
            if arrived < rate * seconds and not request.content.is_eof() and request.transport is not None:
                BODIES_CUT.inc()
                if time.monotonic() - _logged[0] >= 60:
                    _logged[0] = time.monotonic()
                    log.warning("request body from %s cut: %d bytes in %g s; said once a minute", request.remote,
                                arrived, seconds)  # fmt: skip
                request.transport.close()
                return

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()
