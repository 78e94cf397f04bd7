"""Request bodies in JSON, decoded once and with limits, so that nothing a client sends is a 500: at most
MAX_JSON bytes (413 beyond, read no further), UTF-8, nesting at most MAX_DEPTH deep, whole numbers of at most
MAX_DIGITS digits and finite numbers only. Large bodies are parsed off the event loop."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from aiohttp import web

from ovota.server.api.body_rate import minimum_rate
from ovota.server.store.errors import RepositoryError

MAX_JSON = 1 << 20  # far above any API body (a group add of 100,000 ids is about 1.5 MB: see MAX_GROUP_JSON)
MAX_GROUP_JSON = 8 << 20
MAX_DEPTH = 16
MAX_DIGITS = 18  # an int64's worth: larger whole numbers are no setting of ours
OFF_LOOP = 64 << 10  # bodies larger than this are parsed in a thread


class _Refused(ValueError):
    pass


def _whole(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise _Refused(f"whole numbers have at most {MAX_DIGITS} digits")
    return int(text)


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused("numbers must be finite")
    return value


def _constant(name: str) -> float:
    raise _Refused(f"{name} is not JSON")


def _depth(value: Any) -> int:
    """How deep lists and objects nest (iteratively: no recursion for a client to exhaust)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                break
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def decode(raw: bytes) -> Any:
    """The JSON value of ``raw``; RepositoryError (one line) for anything outside the limits."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_int=_whole, parse_float=_number, parse_constant=_constant)
    except _Refused as err:
        raise RepositoryError(f"request body refused: {err}") from None
    except RecursionError:
        raise RepositoryError(f"request body refused: JSON nested more than {MAX_DEPTH} deep") from None
    except (ValueError, UnicodeDecodeError):
        raise RepositoryError("request body must be JSON (UTF-8)") from None
    if _depth(value) > MAX_DEPTH:
        raise RepositoryError(f"request body refused: JSON nested more than {MAX_DEPTH} deep")
    return value


async def json_body(request: web.Request, limit: int = MAX_JSON) -> Any:
    """The request's JSON body (see the module's limits), arriving at ``body_rate.MIN_RATE`` at least; 413
    naming the limit for a larger one."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    raw = bytearray()
    async with minimum_rate(request):
        while len(raw) <= limit and (chunk := await request.content.read(limit + 1 - len(raw))):
            raw += chunk
    if len(raw) > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(raw))
    body = bytes(raw)
    return await asyncio.to_thread(decode, body) if len(body) > OFF_LOOP else decode(body)
