"""The release API: channels, publish, promote, rollback."""

from __future__ import annotations

import asyncio
import logging
from email.utils import formatdate
from typing import Any

import aiohttp
from aiohttp import BodyPartReader, web

from ovota.server.api.auth import actor, api_handler
from ovota.server.api.body_rate import minimum_rate
from ovota.server.api.json_body import json_body
from ovota.server.context import CONTEXT_KEY, Desk
from ovota.server.store.channels import channel_order
from ovota.server.store.deltas import Delta
from ovota.server.store.errors import RepositoryError
from ovota.server.store.repository import BIN, Channel, publish_on_own_connection
from ovota.server.store.trust import BuildSecurity


def channel_json(
    channel: Channel, base: str, security: BuildSecurity, patches: list[Delta] | None = None
) -> dict[str, Any]:
    """A channel as the JSON listing and the API show it: with the build's secure version and signers
    (Secure Boot V2 key digests), and ``patches``, the delta patches to its build."""
    build = channel.build
    listed = (
        {}
        if patches is None
        else {"deltas": [{"base_hash": d.base_hash, "size": d.size, "sha256": d.patch_sha256} for d in patches]}
    )
    return {
        "product": channel.product,
        "tag": channel.tag,
        "version": build.version,
        "changelog": build.changelog,
        "size": build.size,
        "sha256": build.sha256,
        "updated": formatdate(channel.updated, usegmt=True),
        "url": f"{base}/firmware/ota/{channel.product}/{channel.tag}/{BIN}",
        "immutable_url": f"{base}/firmware/builds/{build.sha256}/{BIN}",
        "secure_version": security.secure_version,
        "signers": list(security.signers),
        **listed,
    }


async def _channel_answer(request: web.Request, channel: Channel, status: int = 200) -> web.Response:
    context = request.app[CONTEXT_KEY]
    security = await context.run(lambda desk: desk.repo.security(channel.build.sha256))
    return web.json_response(channel_json(channel, context.public_url, security), status=status)


async def api_channels(request: web.Request) -> web.Response:
    context = request.app[CONTEXT_KEY]

    def read(desk: Desk) -> list[dict[str, Any]]:
        repo = desk.repo
        ordered = sorted(repo.channels(), key=lambda c: channel_order(c.product, c.tag))
        return [channel_json(c, context.public_url, repo.security(c.build.sha256)) for c in ordered]

    return web.json_response(await context.run(read))


log = logging.getLogger("ovota.server")
MAX_PARTS = 16  # an upload's multipart parts: the image and a few fields
MAX_FIELD = 64 << 10  # bytes of a text field (a changelog)


async def _field(part: BodyPartReader) -> bytes:
    """A text field's bytes, read no further than MAX_FIELD."""
    value = b""
    while chunk := await part.read_chunk(MAX_FIELD):
        value += chunk
        if len(value) > MAX_FIELD:
            raise RepositoryError(f"form field {(part.name or '')[:32]!r} is over {MAX_FIELD} bytes")
    return value


async def read_upload(request: web.Request) -> tuple[bytes, dict[str, str]]:
    """An image upload: a raw body with the fields in the query, or multipart with an ``image`` part and text
    fields, arriving at ``body_rate.MIN_RATE`` at least. RepositoryError for a body that is not what it says or a
    field that is not UTF-8."""
    async with minimum_rate(request):
        return await _read_upload(request)


async def _read_upload(request: web.Request) -> tuple[bytes, dict[str, str]]:
    fields: dict[str, str] = dict(request.query)
    if not request.content_type.startswith("multipart/"):
        return await request.read(), fields
    data = b""
    try:
        reader = await request.multipart()
        for _ in range(MAX_PARTS + 1):
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.name == "image":
                data = await part.read()
            else:
                fields[part.name] = (await _field(part)).decode()
        else:
            raise RepositoryError(f"an upload has at most {MAX_PARTS} parts")
    except UnicodeDecodeError:
        raise RepositoryError("a form field is not UTF-8 text") from None
    except (ValueError, AssertionError, LookupError, aiohttp.ClientPayloadError) as err:
        raise RepositoryError(f"malformed multipart body: {err}") from None
    return data, fields


async def api_publish(request: web.Request) -> web.Response:
    """Raw image body with ?tag=&product=&changelog=&force=&new_channel=, or multipart fields image, tag,
    product, changelog, force (``true`` aborts the channel's active rollout), new_channel (``true`` makes a channel
    that is not one of main, eap and edge)."""
    data, fields = await read_upload(request)
    if not fields.get("tag"):
        raise RepositoryError("missing tag")
    context = request.app[CONTEXT_KEY]
    channel = await asyncio.to_thread(
        publish_on_own_connection,
        context.threads.backends,
        data,
        fields["tag"],
        fields.get("product") or None,
        fields.get("changelog", ""),
        context.threads.busy_timeout,
        actor(request),
        fields.get("force", "") in ("true", "1", "yes"),
        fields.get("new_channel", "") in ("true", "1", "yes"),
    )
    context.changed()
    return await _channel_answer(request, channel, 201)


async def json_object(request: web.Request, *keys: str) -> dict[str, Any]:
    """A JSON object body with the string fields ``keys`` (and ``force`` and ``new_channel``, booleans, if
    present); RepositoryError otherwise."""
    body = await json_body(request)
    if not isinstance(body, dict) or any(not isinstance(body.get(k), str) for k in keys):
        raise RepositoryError(f"JSON body must have string fields: {', '.join(keys)}")
    for flag in ("force", "new_channel"):
        if not isinstance(body.get(flag, False), bool):
            raise RepositoryError(f"{flag} must be true or false")
    return body


async def api_promote(request: web.Request) -> web.Response:
    body = await json_object(request, "product", "from", "to")
    context = request.app[CONTEXT_KEY]
    product, source, target, force = body["product"], body["from"], body["to"], body.get("force", False)
    new = body.get("new_channel", False)
    channel = await context.run(lambda desk: desk.repo.promote(product, source, target, force, new), actor(request))
    context.changed()
    return await _channel_answer(request, channel)


async def api_rollback(request: web.Request) -> web.Response:
    body = await json_object(request, "product", "tag")
    context = request.app[CONTEXT_KEY]
    product, tag, force = body["product"], body["tag"], body.get("force", False)
    channel = await context.run(lambda desk: desk.repo.rollback(product, tag, force), actor(request))
    context.changed()
    return await _channel_answer(request, channel)


def add_release_routes(api: web.Application) -> None:
    api.router.add_get("/channels", api_handler(api_channels))
    api.router.add_post("/publish", api_handler(api_publish, "release"))
    api.router.add_post("/promote", api_handler(api_promote, "release"))
    api.router.add_post("/rollback", api_handler(api_rollback, "release"))
