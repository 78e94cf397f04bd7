"""Resumable downloads (emulator parameter ``ota resume``, off by default: OVMS starts over).

While a whole image downloads into the target slot, each completed sector is read back and compared with
what was received; every ``SAVE_EVERY`` bytes, and when the download breaks, the verified length is saved in
/store (a crash-safe record) with the URL, the target slot, the size and the server's ETag. The next attempt
asks for the rest with ``Range`` and ``If-Range``: a 206 continues after the last verified sector (only the
sectors after it are erased), a 200 (the file changed) starts from zero. The partial slot is never bootable:
the boot partition is only set once the whole image is written and verified.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ovota.device import fetch
from ovota.device.console.session import Session
from ovota.device.flash import SECTOR_SIZE, Flash
from ovota.device.ota import OtaUpdate
from ovota.formats.partition_table import Partition

PARAM, INSTANCE = "ota", "resume.progress"
SAVE_EVERY = 16 * SECTOR_SIZE


@dataclass(frozen=True)
class Progress:
    url: str
    target: str
    size: int
    etag: str
    done: int  # bytes written and verified, a multiple of the sector size

    def encode(self) -> str:
        return f"{self.done} {self.size} {self.target} {self.etag} {self.url}"

    @classmethod
    def decode(cls, text: str) -> Progress | None:
        parts = text.split(" ", 4)
        if len(parts) != 5 or not parts[0].isdigit() or not parts[1].isdigit():
            return None
        return cls(parts[4], parts[2], int(parts[1]), parts[3], int(parts[0]))


def enabled(session: Session) -> bool:
    return session.module.config.get_bool(PARAM, "resume", False)


def load(session: Session, url: str, target: str) -> Progress | None:
    """The saved progress of an interrupted download of ``url`` into ``target``, if resuming is on."""
    if not enabled(session):
        return None
    progress = Progress.decode(session.module.config.get(PARAM, INSTANCE))
    if progress is None or progress.url != url or progress.target != target or progress.done <= 0:
        return None
    return progress


def range_headers(progress: Progress) -> dict[str, str]:
    return {"Range": f"bytes={progress.done}-", "If-Range": progress.etag}


def continues(resp: fetch.Response, progress: Progress) -> bool:
    """Whether a 206 answer is the rest of the interrupted download (same start, same total size)."""
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", resp.header("Content-Range").strip())
    return match is not None and int(match.group(1)) == progress.done and int(match.group(3)) == progress.size


def clear(session: Session) -> None:
    if session.module.config.get(PARAM, INSTANCE):
        session.module.config.delete(PARAM, INSTANCE)


class Tracker:
    """Writes through an OtaUpdate, verifying each completed sector and saving the progress now and then."""

    def __init__(self, session: Session, update: OtaUpdate, url: str, size: int, etag: str) -> None:
        self.session = session
        self.update = update
        self.url = url
        self.size = size
        self.etag = etag
        self.verified = update.written  # resumed updates start after a verified sector
        self.saved = self.verified
        self._pending = bytearray()
        self._broken = False  # a sector read back wrong: nothing after it counts as verified

    def write(self, data: bytes | memoryview) -> None:
        self.update.write(data)
        self._pending += data
        flash, target = self.update.flash, self.update.target
        whole = len(self._pending) // SECTOR_SIZE * SECTOR_SIZE
        if whole and not self._broken:
            if flash.read(target.offset + self.verified, whole) == self._pending[:whole]:
                self.verified += whole
            else:
                self._broken = True
            del self._pending[:whole]
        if self.verified - self.saved >= SAVE_EVERY:
            self.save()

    def save(self) -> None:
        """Record how far the download got (the verified sectors)."""
        if self.verified > self.saved:
            progress = Progress(self.url, self.update.target.name, self.size, self.etag, self.verified)
            self.session.module.config.set(PARAM, INSTANCE, progress.encode())
            self.saved = self.verified


class SlotTracker:
    """Writes a download to ``region`` onwards in a slot (already erased), verifying each completed sector
    and saving the progress under ``name`` now and then (for a patch kept beside the image)."""

    def __init__(self, session: Session, flash: Flash, target: Partition, region: int, start: int, url: str,
                 name: str, size: int, etag: str) -> None:  # fmt: skip
        self.session = session
        self.flash = flash
        self.base = target.offset + region
        self.url, self.name, self.size, self.etag = url, name, size, etag
        self.written = self.verified = self.saved = start
        self._pending = bytearray()
        self._broken = False

    def write(self, data: bytes | memoryview) -> None:
        self.flash.program(self.base + self.written, data)
        self.written += len(data)
        self._pending += data
        whole = len(self._pending) // SECTOR_SIZE * SECTOR_SIZE
        if whole and not self._broken:
            if self.flash.read(self.base + self.verified, whole) == self._pending[:whole]:
                self.verified += whole
            else:
                self._broken = True
            del self._pending[:whole]
        if self.verified - self.saved >= SAVE_EVERY:
            self.save()

    def save(self) -> None:
        if self.verified > self.saved:
            progress = Progress(self.url, self.name, self.size, self.etag, self.verified)
            self.session.module.config.set(PARAM, INSTANCE, progress.encode())
            self.saved = self.verified
