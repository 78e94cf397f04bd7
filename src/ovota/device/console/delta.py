"""Delta updates for the module (emulator parameter ``ota delta``, off by default: OVMS has none).

The module asks for an esp_delta_ota patch against its running image (RFC 3229: ``A-IM: esp-delta-ota`` and
the image's validation hash in ``If-None-Match``). A ``226 IM Used`` answer is applied streaming: the base is
read from the running slot, the result written into the target slot (never the running one) and verified like
any image before the boot partition may be set.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

from ovota.device import fetch
from ovota.device.console import resume
from ovota.device.console.session import Session
from ovota.device.flash import SECTOR_SIZE
from ovota.device.images import PartitionFile, stored_image
from ovota.device.ota import EspError, OtaUpdate, running_state
from ovota.formats import FormatError
from ovota.formats.delta import apply_patch, patch_info, validation_hash
from ovota.formats.otadata import OtaState
from ovota.formats.partition_table import Partition

DELTA_IM = "esp-delta-ota"  # the RFC 3229 instance-manipulation for Espressif's esp_delta_ota patches
PROGRESS_EVERY = 200000


def delta_base(session: Session) -> bytes | None:
    """The running image's validation hash when delta updates are on (what a patch must be made from)."""
    m = session.module
    if not m.config.get_bool("ota", "delta", False):
        return None
    image = stored_image(m.flash, m.running)
    if image is None:
        return None
    try:
        return validation_hash(image)
    except FormatError:
        return None


def delta_headers(base: bytes) -> dict[str, str]:
    return {"A-IM": DELTA_IM, "If-None-Match": f'"{base.hex()}"'}


class Broken(Exception):
    """The delta download broke with resuming on: what arrived is kept for the next attempt (no fallback)."""


def delta_target(target: Partition) -> str:
    """The name under which a delta download into ``target`` records its progress."""
    return f"{target.name}+delta"


def resume_headers(base: bytes, progress: resume.Progress | None) -> dict[str, str]:
    """Delta negotiation, plus Range/If-Range to continue a patch download that broke."""
    headers = delta_headers(base)
    if progress is not None:
        headers.update(resume.range_headers(progress))
    return headers


async def flash_delta(
    session: Session,
    resp: fetch.Response,
    running: Partition,
    target: Partition,
    base: bytes,
    say: Callable[[str], object],
    prefix: str,
    url: str,
    progress: resume.Progress | None,
) -> OtaUpdate | None:
    """Download the patch of a 226 answer (or its rest: 206) and apply it into ``target``; the finished
    (verified) update, or None on a failure that is logged: the caller then falls back to the whole image.
    With resuming on, a broken download raises Broken instead, keeping what arrived in the target slot.
    ``progress``: what a broken delta download kept (the request asked for the rest)."""
    m = session.module
    continued = progress is not None and resp.status == 206 and resume.continues(resp, progress)
    if progress is not None and not continued:
        resume.clear(session)
    etag = resp.header("ETag")
    if resume.enabled(session) and etag:
        patch = await _download_to_slot(session, resp, target, url, etag, progress if continued else None, say, prefix)
    else:
        patch = await _download_to_memory(session, resp, say, prefix)
    if patch is None:
        return None
    try:
        _, details = patch_info(patch)
        pending = m.rollback and running_state(m.flash, m.layout) == OtaState.PENDING_VERIFY
        update = OtaUpdate(m.flash, running, target, int(str(details["to_size"])), pending, security=m.security)
        say(f"{prefix}: Applying delta...\n")
        written = apply_patch(PartitionFile(m.flash, running), io.BytesIO(patch), update.write, base)
        update.end()
    except (FormatError, EspError, KeyError, ValueError) as err:
        session.log(f"{prefix}: delta not applied: {err}")
        return None
    say(f"Delta applied: {written} bytes written to {target.name}\n")
    return update


async def _download_to_memory(
    session: Session, resp: fetch.Response, say: Callable[[str], object], prefix: str
) -> bytes | None:
    expected = resp.content_length or 0
    say(f"Expected delta size is {expected}\n")
    patch = bytearray()
    sofar = 0
    try:
        async for chunk in resp.chunks():
            patch += chunk
            sofar += len(chunk)
            if sofar > PROGRESS_EVERY:
                say(f"Downloading delta... ({len(patch)} bytes so far)\n")
                sofar = 0
    except fetch.BodyFailed as err:
        session.log(f"{prefix}: delta download failed: {err}")
        return None
    if len(patch) != expected:
        session.log(f"{prefix}: delta size ({len(patch)}) does not match expected ({expected})")
        return None
    return bytes(patch)


async def _download_to_slot(
    session: Session,
    resp: fetch.Response,
    target: Partition,
    url: str,
    etag: str,
    progress: resume.Progress | None,
    say: Callable[[str], object],
    prefix: str,
) -> bytes | None:
    """Keep the patch at the end of the target slot while it downloads, so a broken download can continue:
    verified sectors are recorded like a whole image's. The image is written from the slot's start later,
    and only if it ends before the patch begins."""
    flash = session.module.flash
    total = progress.size if progress is not None else resp.content_length or 0
    start = progress.done if progress is not None else 0
    if progress is not None:
        say(f"Resuming delta download at {start} of {total} bytes\n")
    else:
        say(f"Expected delta size is {total}\n")
    stored = -(-total // SECTOR_SIZE) * SECTOR_SIZE
    region = target.size - stored
    if total <= 0 or region < SECTOR_SIZE:
        session.log(f"{prefix}: a {total}-byte delta does not fit {target.name} beside the image")
        return None
    address = target.offset + region
    flash.erase(address + start, stored - start)
    record = resume.Progress(url, delta_target(target), total, etag, 0)
    tracker = resume.Tracker(
        session, address, start, lambda data: flash.program(address + tracker.written, data), record
    )
    sofar = 0
    try:
        async for chunk in resp.chunks():
            if tracker.written + len(chunk) > total:
                session.log(f"{prefix}: delta larger than announced")
                return None
            tracker.write(chunk)
            sofar += len(chunk)
            if sofar > PROGRESS_EVERY:
                say(f"Downloading delta... ({tracker.written} bytes so far)\n")
                sofar = 0
    except fetch.BodyFailed as err:
        tracker.save()
        session.log(f"{prefix}: delta download failed: {err}; {tracker.verified} bytes kept for the next attempt")
        raise Broken from None
    if tracker.written != total:
        tracker.save()
        session.log(f"{prefix}: delta download ended at {tracker.written} of {total} bytes; kept for the next attempt")
        raise Broken
    patch = flash.read(target.offset + region, total)
    resume.clear(session)
    if f'"{hashlib.sha256(patch).hexdigest()}"' != etag:
        session.log(f"{prefix}: the stored delta does not match its ETag")
        return None
    return patch
