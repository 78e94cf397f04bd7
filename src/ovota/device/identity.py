"""The module's factory identity (hardware string, chip revision, bootloader options), kept in nvs.

On a real module these come from the chip, the modem and the build; the emulator records them once at
creation, where no console command can change them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ovota.device.flash import Flash
from ovota.device.records import RecordBanks, encode_json
from ovota.formats.partition_table import Partition

IDENTITY_MAGIC = b"OVID"
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
    _banks(flash, nvs).save(encode_json(asdict(identity)))


def read_identity(flash: Flash, nvs: Partition | None) -> Identity:
    """The recorded identity, or the defaults when nvs holds none."""
    loaded = _banks(flash, nvs).load() if nvs is not None else None
    if loaded is None:
        return Identity()
    fields = json.loads(loaded[1])
    return Identity(**{k: v for k, v in fields.items() if k in Identity.__dataclass_fields__})
