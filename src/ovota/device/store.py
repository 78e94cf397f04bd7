"""/store: the module's config params (``config set ota tag edge``), kept crash-safe in the store partition.

OVMS keeps its config as files on a FAT filesystem in /store. The emulator keeps the same params and
instances as one JSON record in two alternating banks at the start of the partition (see records.py), so
a power cut while saving never loses the previous value.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from ovota.device.config_files import load_params, save_params
from ovota.device.fat_store import VolumeError, guarded, has_wear_levelling
from ovota.device.flash import Flash
from ovota.device.records import RecordBanks, encode_json
from ovota.formats.partition_table import Partition

BANK_SIZE = 0x10000
T = TypeVar("T")
CONFIG_MAGIC = b"OVCF"

# The params OVMS registers that the emulator knows: their titles, and whether `config list` shows values.
PARAMS = {
    "auto": "Auto start functionality",
    "module": "Module configuration",
    "network": "Network configuration",
    "ota": "OTA setup and status",
    "password": "Password store",
    "server.v3": "Server V3 (MQTT) configuration",
    "vehicle": "Vehicle configuration",
}
UNREADABLE = {"password"}  # OVMS registers it writable but not readable


class StoreError(Exception):
    """The store partition is missing or too small."""


class Config:
    """Config params in /store. Every change is committed to flash before the call returns."""

    def __init__(self, flash: Flash, store: Partition | None) -> None:
        if store is None:
            raise StoreError("no 'store' partition in the partition table")
        # The AutoFlash task saves http.mru from its own thread: one commit at a time, or two could share a bank
        # (or, on a real /store, two FAT caches the same free cluster). vfs on that volume takes it too.
        self.lock = threading.RLock()
        self._flash, self._store = flash, store
        # A real module's dump: FAT on wear levelling, OVMS's own files. Anything else is the emulator's record.
        self.files = has_wear_levelling(flash, store)
        if self.files:
            self._params: dict[str, dict[str, str]] = self._guarded(lambda: load_params(flash, store))
            return
        if store.size < 2 * BANK_SIZE:
            raise StoreError(f"store partition of {store.size} bytes is too small")
        self._banks = RecordBanks(flash, store.offset, BANK_SIZE, CONFIG_MAGIC)
        loaded = self._banks.load()
        self._params = json.loads(loaded[1]) if loaded else {}

    @staticmethod
    def _guarded(action: Callable[[], T]) -> T:
        """What the FAT volume refuses is one StoreError (see :func:`ovota.device.fat_store.guarded`)."""
        try:
            return guarded(action)
        except VolumeError as err:
            raise StoreError(str(err)) from None

    def get(self, param: str, instance: str, default: str = "") -> str:
        value = self._params.get(param, {}).get(instance, "")
        return value if value else default

    def get_bool(self, param: str, instance: str, default: bool) -> bool:
        value = self.get(param, instance)
        return default if value == "" else value in ("yes", "1", "true")

    def get_int(self, param: str, instance: str, default: int) -> int:
        try:
            return int(self.get(param, instance) or default)
        except ValueError:
            return default

    def set(self, param: str, instance: str, value: str) -> None:
        self.update({(param, instance): value})

    def delete(self, param: str, instance: str) -> bool:
        if instance not in self._params.get(param, {}):
            return False
        self.update({(param, instance): None})
        return True

    def update(self, changes: dict[tuple[str, str], str | None]) -> None:
        """Apply several changes in one commit (None deletes the instance)."""
        with self.lock:
            params = {p: dict(v) for p, v in self._params.items()}
            for (param, instance), value in changes.items():
                if value is None:
                    params.get(param, {}).pop(instance, None)
                else:
                    params.setdefault(param, {})[instance] = value
            if self.files:
                # OVMS writes a param's file only when one of its values changed.
                touched = {p for p, _ in changes if params.get(p, {}) != self._params.get(p, {})}
                if touched:
                    changed = {p: params.get(p, {}) for p in touched}
                    self._guarded(lambda: save_params(self._flash, self._store, changed))
            else:
                self._banks.save(encode_json(params))
            self._params = params

    def save_all(self) -> None:
        """Write the current params (creates the record on a fresh store)."""
        if self.files:
            self._guarded(lambda: save_params(self._flash, self._store, self._params))
        else:
            self._banks.save(encode_json(self._params))

    def instances(self, param: str) -> Iterator[tuple[str, str]]:
        yield from sorted(self._params.get(param, {}).items())

    def snapshot(self) -> dict[str, dict[str, str]]:
        return {p: dict(v) for p, v in self._params.items()}
