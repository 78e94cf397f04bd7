"""The ESP-IDF second-stage bootloader: choose the boot slot from otadata, verify it, fall back if needed.

Models a rollback-less IDF v3.3 bootloader (OVMS's build): the first choice comes from otadata
(formats/otadata.py); a slot whose image fails verification is skipped, trying lower slots down to
factory and then higher slots, as bootloader_utility_load_boot_image does. With secure boot, verification
includes the signature; with anti-rollback, images below the eFuse counter are skipped too, and booting a
confirmed (VALID) image raises the counter to its secure version.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ovota.device.flash import SECTOR_SIZE, Flash
from ovota.device.images import partition_descriptor, rollback_problem, verify_partition_image
from ovota.device.layout import Layout
from ovota.device.security import NO_SECURITY, Security
from ovota.formats.otadata import OTADATA_SIZE, BootChoice, OtaData, OtaState, SelectEntry, choose_boot
from ovota.formats.partition_table import Partition


class NoBootableApp(Exception):
    """No partition holds a valid app: a real module would sit in a reset loop."""


@dataclass(frozen=True)
class BootResult:
    running: Partition  # may differ from the choice when the chosen image failed verification
    choice: BootChoice


def read_otadata(flash: Flash, layout: Layout) -> OtaData | None:
    part = layout.otadata
    if part is None or part.size < OTADATA_SIZE:
        return None
    return OtaData.from_bytes(flash.read(part.offset, OTADATA_SIZE))


def boot_choice(flash: Flash, layout: Layout) -> BootChoice:
    """The bootloader's first choice (also what esp_ota_get_boot_partition reports)."""
    otadata = read_otadata(flash, layout)
    if otadata is None:
        return BootChoice(None)
    return choose_boot(otadata, len(layout.ota_slots), layout.factory is not None)


def _candidates(layout: Layout, choice: BootChoice) -> list[Partition]:
    slots = {p.ota_slot: p for p in layout.ota_slots}
    start = -1 if choice.slot is None else choice.slot
    order = list(range(start, -2, -1)) + list(range(start + 1, len(slots)))
    found: list[Partition] = []
    for index in order:
        part = layout.factory if index == -1 else slots.get(index)
        if part is not None and part not in found:
            found.append(part)
    return found


def boot(flash: Flash, layout: Layout, rollback: bool = False, security: Security = NO_SECURITY) -> BootResult:
    """Pick and verify the partition to run; raise NoBootableApp if none is valid.

    ``rollback``: a bootloader built with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE. An image still
    PENDING_VERIFY from the last boot was never confirmed and is marked ABORTED; a NEW one is marked
    PENDING_VERIFY and booted.
    """
    if rollback:
        _advance_states(flash, layout)
    choice = boot_choice(flash, layout)
    for part in _candidates(layout, choice):
        if verify_partition_image(flash, part, security) is None and rollback_problem(flash, part, security) is None:
            if choice.initial and part.ota_slot is not None:
                _record_initial_seq(flash, layout, part.ota_slot)
            if security.counter is not None and _confirmed(flash, layout, part):
                confirm_secure_version(flash, part, security)
            return BootResult(part, choice)
    raise NoBootableApp("No bootable app partitions in the partition table")


def _confirmed(flash: Flash, layout: Layout, part: Partition) -> bool:
    """Factory, or the OTA slot the active otadata entry marks VALID."""
    if part.ota_slot is None:
        return True
    otadata = read_otadata(flash, layout)
    active = otadata.active_index() if otadata else None
    if otadata is None or active is None:
        return False
    entry = otadata.entries[active]
    return entry.state == OtaState.VALID and (entry.seq - 1) % len(layout.ota_slots) == part.ota_slot


def confirm_secure_version(flash: Flash, part: Partition, security: Security) -> bool:
    """Raise the anti-rollback counter to the secure version of the confirmed image in ``part``."""
    descriptor = partition_descriptor(flash, part)
    return security.confirm(descriptor.secure_version if descriptor else 0)


def _advance_states(flash: Flash, layout: Layout) -> None:
    otadata = read_otadata(flash, layout)
    part = layout.otadata
    if otadata is None or part is None:
        return
    for index, entry in enumerate(otadata.entries):
        if entry.state == OtaState.PENDING_VERIFY:
            write_entry(flash, part.offset, index, replace(entry, state=OtaState.ABORTED))
    otadata = read_otadata(flash, layout)
    active = otadata.active_index() if otadata else None
    if otadata is not None and active is not None and otadata.entries[active].state == OtaState.NEW:
        write_entry(flash, part.offset, active, replace(otadata.entries[active], state=OtaState.PENDING_VERIFY))


def write_entry(flash: Flash, otadata_offset: int, index: int, entry: SelectEntry) -> None:
    """Rewrite one otadata sector: erase it, program its 32-byte entry."""
    address = otadata_offset + index * SECTOR_SIZE
    flash.erase(address, SECTOR_SIZE)
    flash.program(address, entry.to_bytes())


def _record_initial_seq(flash: Flash, layout: Layout, slot: int) -> None:
    # IDF >= v3.3 set_actual_ota_seq: on a blank otadata the booted slot is written to sector 0 as VALID.
    part = layout.otadata
    assert part is not None
    write_entry(flash, part.offset, 0, SelectEntry.for_seq(slot + 1, OtaState.VALID))
