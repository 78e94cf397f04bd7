"""Delta updates for the module (emulator parameter ``ota delta``, off by default: OVMS has none).

The module asks for an esp_delta_ota patch against its running image (RFC 3229: ``A-IM: esp-delta-ota`` and
the image's validation hash in ``If-None-Match``). A ``226 IM Used`` answer is applied streaming: the base is
read from the running slot, the result written into the target slot (never the running one) and verified like
any image before the boot partition may be set.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from ovota.device import fetch
from ovota.device.console.session import Session
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


async def flash_delta(
    session: Session,
    resp: fetch.Response,
    running: Partition,
    target: Partition,
    base: bytes,
    say: Callable[[str], object],
    prefix: str,
) -> OtaUpdate | None:
    """Download the patch of a 226 answer and apply it into ``target``; the finished (verified) update, or None
    on any failure, which is logged: the caller then falls back to the whole image."""
    m = session.module
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
    try:
        _, details = patch_info(bytes(patch))
        pending = m.rollback and running_state(m.flash, m.layout) == OtaState.PENDING_VERIFY
        update = OtaUpdate(m.flash, running, target, int(str(details["to_size"])), pending)
        say(f"{prefix}: Applying delta...\n")
        written = apply_patch(PartitionFile(m.flash, running), io.BytesIO(patch), update.write, base)
        update.end()
    except (FormatError, EspError, KeyError, ValueError) as err:
        session.log(f"{prefix}: delta not applied: {err}")
        return None
    say(f"Delta applied: {written} bytes written to {target.name}\n")
    return update
