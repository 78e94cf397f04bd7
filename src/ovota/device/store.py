"""/store: the module's config params (``config set ota tag edge``), as OVMS keeps them.

OvmsConfig mounts /store (FAT on wear levelling, :class:`~ovota.device.store_volume.StoreVolume`) at boot and
keeps each param as a file ``/store/ovms_config/<param>`` (config_files.py). A change rewrites the param's file
before the call returns.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TypeVar

from ovota.device.config_files import CONFIG_DIR, load_params, save_params
from ovota.device.fat_store import VolumeError
from ovota.device.flash import Flash
from ovota.device.store_volume import StoreVolume
from ovota.formats.partition_table import Partition

T = TypeVar("T")

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
    """The store partition is missing, too small, or its volume refuses (damaged, full)."""


class Config:
    """Config params in /store. Every change is committed to flash before the call returns."""

    def __init__(self, flash: Flash, store: Partition | None, clock: Callable[[], datetime] | None = None) -> None:
        """OvmsConfig::mount: mount /store (formatting what does not mount), create ``ovms_config``, load.
        ``clock``: the module's, for the files' time stamps."""
        if store is None:
            raise StoreError("no 'store' partition in the partition table")
        self._flash, self._store, self.clock = flash, store, clock
        # The AutoFlash task saves http.mru from its own thread: one commit at a time (two FAT caches must not
        # take the same free cluster). vfs on the volume takes the same lock.
        self.lock = threading.RLock()
        self.mount()

    def mount(self) -> None:
        """``store mount`` (and every boot)."""
        with self.lock:
            self.volume = self._guarded(lambda: StoreVolume(self._flash, self._store, lock=self.lock, clock=self.clock))
            if self.volume.mounted:
                with contextlib.suppress(VolumeError):  # a damaged root directory: OvmsConfig::mount's mkdir fails
                    self.volume.makedir(CONFIG_DIR)
            self._params: dict[str, dict[str, str]] = load_params(self.volume)

    def unmount(self) -> None:
        """``store unmount``: the volume lets go and wear levelling flushes. Params stay readable (OVMS keeps
        them in RAM); a change is not saved until /store is mounted again."""
        self._guarded(self.volume.unmount)

    @property
    def mounted(self) -> bool:
        return self.volume.mounted

    @staticmethod
    def _guarded(action: Callable[[], T]) -> T:
        """What the volume refuses is one StoreError; a partition too small for wear levelling too."""
        try:
            return action()
        except (VolumeError, ValueError) as err:
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
            # OVMS writes a param's file only when one of its values changed.
            touched = {p for p, _ in changes if params.get(p, {}) != self._params.get(p, {})}
            if touched and self.mounted:
                changed = {p: params.get(p, {}) for p in touched}
                self._guarded(lambda: save_params(self.volume, changed))
            self._params = params

    def instances(self, param: str) -> Iterator[tuple[str, str]]:
        yield from sorted(self._params.get(param, {}).items())

    def snapshot(self) -> dict[str, dict[str, str]]:
        return {p: dict(v) for p, v in self._params.items()}
