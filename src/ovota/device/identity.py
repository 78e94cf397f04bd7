"""The module's factory identity (hardware string, chip revision, bootloader options), kept in nvs.

On a real module these come from the chip, the modem and the build; the emulator records them once at
creation, where no console command can change them, as ESP-IDF NVS items in a namespace of its own
(``ovota``), so the partition stays one that ESP-IDF reads. A real module's dump has no such namespace: its
identity is the defaults. Flash files made before NVS keep their identity in the old record, still read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ovota.device.flash import Flash
from ovota.device.records import RecordBanks
from ovota.formats import FormatError
from ovota.formats.nvs import Typed, build_nvs, read_nvs
from ovota.formats.partition_table import Partition

IDENTITY_MAGIC = b"OVID"  # the record of flash files made before the identity moved to NVS
NAMESPACE = "ovota"
DEFAULT_HARDWARE = "OVMS WIFI BLE BT cores=2 rev=ESP32/3"


@dataclass(frozen=True)
class Identity:
    hardware: str = DEFAULT_HARDWARE
    chip_revision: int = 3
    idf_build: str = "idf v3.3.4-854-g9063c8662c"
    anti_rollback: bool = False  # the bootloader and app are built with CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK


def _banks(flash: Flash, nvs: Partition) -> RecordBanks:
    return RecordBanks(flash, nvs.offset, nvs.size // 2, IDENTITY_MAGIC)


def write_identity(flash: Flash, nvs: Partition, identity: Identity) -> None:
    """A fresh NVS partition holding the identity (what `module create` writes; nothing else is in nvs)."""
    items: dict[str, int | str | bytes | Typed] = {
        "hardware": identity.hardware,
        "chip_rev": Typed(identity.chip_revision, "u8"),
        "idf_build": identity.idf_build,
        "anti_rollback": Typed(int(identity.anti_rollback), "u8"),
    }
    image = build_nvs({NAMESPACE: items}, nvs.size)
    flash.erase(nvs.offset, nvs.size)
    flash.program(nvs.offset, image)


def read_identity(flash: Flash, nvs: Partition | None) -> Identity:
    """The recorded identity, or the defaults when nvs holds none (a real module's, or a blank one)."""
    if nvs is None:
        return Identity()
    try:
        stored = read_nvs(flash.read(nvs.offset, nvs.size)).get(NAMESPACE)
    except FormatError:
        stored = None
    if stored is not None:
        return _from_nvs(stored)
    loaded = _banks(flash, nvs).load()
    if loaded is None:
        return Identity()
    fields = json.loads(loaded[1])
    return Identity(**{k: v for k, v in fields.items() if k in Identity.__dataclass_fields__})


def _from_nvs(stored: dict[str, int | str | bytes]) -> Identity:
    """Each item that is there and of its type; the default for any other."""
    default = Identity()
    hardware, build = stored.get("hardware"), stored.get("idf_build")
    revision, anti_rollback = stored.get("chip_rev"), stored.get("anti_rollback")
    return Identity(
        hardware=hardware if isinstance(hardware, str) else default.hardware,
        chip_revision=revision if isinstance(revision, int) else default.chip_revision,
        idf_build=build if isinstance(build, str) else default.idf_build,
        anti_rollback=bool(anti_rollback) if isinstance(anti_rollback, int) else default.anti_rollback,
    )
