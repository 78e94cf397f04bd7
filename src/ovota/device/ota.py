"""The OTA engine, as ESP-IDF's esp_ota_* API behaves (IDF v3.3): begin -> write -> end -> set boot.

It only ever erases and programs the target OTA slot and otadata; the running partition is refused.
Errors carry ESP-IDF's numeric codes, which OVMS prints as "ESP32 error #N".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ovota.device.bootloader import confirm_secure_version, read_otadata, write_entry
from ovota.device.flash import SECTOR_SIZE, Flash
from ovota.device.images import rollback_problem, verify_partition_image
from ovota.device.layout import Layout
from ovota.device.security import ESP_ERR_OTA_SMALL_SEC_VER, NO_SECURITY, Security
from ovota.formats.app_image import APP_DESC, HEADER, IMAGE_MAGIC, SEGMENT_HEADER
from ovota.formats.otadata import OTADATA_SIZE, OtaData, OtaState, boot_slot_entry
from ovota.formats.partition_table import Partition

ESP_ERR_INVALID_ARG = 0x102
ESP_ERR_INVALID_SIZE = 0x104
ESP_ERR_NOT_FOUND = 0x105
ESP_ERR_OTA_PARTITION_CONFLICT = 0x1501
ESP_ERR_OTA_VALIDATE_FAILED = 0x1503
ESP_ERR_OTA_ROLLBACK_INVALID_STATE = 0x1506
ESP_FAIL = -1

OTA_SIZE_UNKNOWN = None
DESCRIPTOR_END = HEADER.size + SEGMENT_HEADER.size + APP_DESC.size  # the app descriptor has arrived


class EspError(Exception):
    """An ESP-IDF error code, with the reason the emulator knows for the log."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"ESP32 error #{code}: {reason}")
        self.code = code
        self.reason = reason


def next_update_partition(layout: Layout, running: Partition) -> Partition | None:
    """esp_ota_get_next_update_partition: the OTA slot after the running one, wrapping; ota_0 from factory."""
    slots = layout.ota_slots
    if not slots:
        return None
    if running.ota_slot is None:
        return slots[0]
    index = next((i for i, p in enumerate(slots) if p.ota_slot == running.ota_slot), -1)
    return slots[(index + 1) % len(slots)]


class OtaUpdate:
    """One esp_ota_begin/write/end session on ``target``."""

    def __init__(
        self,
        flash: Flash,
        running: Partition,
        target: Partition,
        image_size: int | None = OTA_SIZE_UNKNOWN,
        running_pending: bool = False,
        resume_at: int = 0,
        security: Security = NO_SECURITY,
    ) -> None:
        """esp_ota_begin, or with ``resume_at`` (a multiple of the sector size) esp_ota_resume: the sectors
        before it keep what an interrupted update wrote there, only the rest is erased. With anti-rollback,
        an image below the eFuse counter is refused as soon as its app descriptor has been written."""
        if running_pending:
            raise EspError(ESP_ERR_OTA_ROLLBACK_INVALID_STATE, "the running app is still pending verification")
        if target.ota_slot is None:
            raise EspError(ESP_ERR_INVALID_ARG, f"{target.name} is not an OTA app partition")
        if target == running:
            raise EspError(ESP_ERR_OTA_PARTITION_CONFLICT, f"{target.name} is the running partition")
        # IDF v3.3 erases (size/4096 + 1) sectors, or the whole slot when the size is unknown.
        erase = target.size if not image_size else (image_size // SECTOR_SIZE + 1) * SECTOR_SIZE
        if erase > target.size:
            raise EspError(ESP_ERR_INVALID_SIZE, f"erase of {erase} bytes exceeds {target.name} ({target.size} bytes)")
        if resume_at % SECTOR_SIZE or not 0 <= resume_at < erase:
            raise EspError(ESP_ERR_INVALID_ARG, f"cannot resume {target.name} at byte {resume_at}")
        self.flash = flash
        self.target = target
        self.written = resume_at
        self.security = security
        flash.erase(target.offset + resume_at, erase - resume_at)

    def write(self, data: bytes | memoryview) -> None:
        if not data:
            return
        if self.written == 0 and data[0] != IMAGE_MAGIC:
            raise EspError(
                ESP_ERR_OTA_VALIDATE_FAILED,
                f"OTA image has invalid magic byte (expected 0xE9, saw 0x{data[0]:02x})",
            )
        if self.written + len(data) > self.target.size:
            raise EspError(ESP_ERR_INVALID_SIZE, f"write beyond the end of {self.target.name}")
        self.flash.program(self.target.offset + self.written, data)
        before = self.written
        self.written += len(data)
        if before < DESCRIPTOR_END <= self.written:
            problem = rollback_problem(self.flash, self.target, self.security)
            if problem is not None:
                raise EspError(ESP_ERR_OTA_SMALL_SEC_VER, problem)

    def end(self) -> None:
        """esp_ota_end: the written image must verify (with secure boot, its signature too)."""
        if self.written == 0:
            raise EspError(ESP_ERR_INVALID_ARG, "nothing was written")
        problem = verify_partition_image(self.flash, self.target, self.security)
        if problem is not None:
            raise EspError(ESP_ERR_OTA_VALIDATE_FAILED, problem)


def set_boot_partition(
    flash: Flash, layout: Layout, part: Partition, rollback: bool = False, security: Security = NO_SECURITY
) -> None:
    """esp_ota_set_boot_partition: verify the image, then write otadata (erase it all for factory).

    With ``rollback`` the new entry is NEW, so the next boot runs it as PENDING_VERIFY. With anti-rollback,
    an OTA slot whose image is below the eFuse counter is erased and refused, as ESP-IDF does.
    """
    if part.type != 0:
        raise EspError(ESP_ERR_INVALID_ARG, f"{part.name} is not an app partition")
    problem = verify_partition_image(flash, part, security)
    if problem is not None:
        raise EspError(ESP_ERR_OTA_VALIDATE_FAILED, problem)
    too_old = rollback_problem(flash, part, security) if part.ota_slot is not None else None
    if too_old is not None:
        flash.erase(part.offset, part.size)
        raise EspError(ESP_ERR_OTA_SMALL_SEC_VER, too_old)
    otadata_part = layout.otadata
    if otadata_part is None:
        raise EspError(ESP_ERR_NOT_FOUND, "no otadata partition")
    if part.ota_slot is None:
        if part != layout.factory:
            raise EspError(ESP_ERR_INVALID_ARG, f"{part.name} is neither factory nor an OTA slot")
        flash.erase(otadata_part.offset, OTADATA_SIZE)
        return
    otadata = read_otadata(flash, layout) or OtaData()
    state = OtaState.NEW if rollback else OtaState.UNDEFINED
    sector, entry = boot_slot_entry(otadata, part.ota_slot, len(layout.ota_slots), state)
    write_entry(flash, otadata_part.offset, sector, entry)


def running_state(flash: Flash, layout: Layout) -> int | None:
    """The state of the active otadata entry (what esp_ota_mark_app_* act on), None without one."""
    otadata = read_otadata(flash, layout)
    active = otadata.active_index() if otadata else None
    return None if otadata is None or active is None else otadata.entries[active].state


def mark_app_valid(flash: Flash, layout: Layout, running: Partition, security: Security = NO_SECURITY) -> None:
    """esp_ota_mark_app_valid_cancel_rollback: the active entry becomes VALID; with anti-rollback, the eFuse
    counter is then raised to the running image's secure version."""
    otadata = read_otadata(flash, layout)
    active = otadata.active_index() if otadata else None
    if otadata is None or active is None or layout.otadata is None:
        raise EspError(ESP_FAIL, "Running firmware is factory")
    if otadata.entries[active].state != OtaState.VALID:
        write_entry(flash, layout.otadata.offset, active, replace(otadata.entries[active], state=OtaState.VALID))
    confirm_secure_version(flash, running, security)


COPY_PROGRESS_EVERY = 0x40000  # OVMS prints copy progress every 256 KiB


def copy_partition(flash: Flash, source: Partition, dest: Partition, length: int, say: Callable[[str], None]) -> None:
    """ovms_partition_copy: raw erase of ``length`` bytes of ``dest``, then a copy in 4 KiB sectors.

    Sectors that are blank in the source are left erased instead of being programmed.
    """
    label = "OTA Factory Copy" if dest.ota_slot is None else "OTA Copy"
    flash.erase(dest.offset, length)
    for done in range(SECTOR_SIZE, length + SECTOR_SIZE, SECTOR_SIZE):
        block = flash.read(source.offset + done - SECTOR_SIZE, SECTOR_SIZE)
        if block != b"\xff" * SECTOR_SIZE:
            flash.program(dest.offset + done - SECTOR_SIZE, block)
        if done % COPY_PROGRESS_EVERY == 0:
            say(f"{label}: {done * 100 // length}% progress ({done} bytes)")
    say("OTA copy complete")
