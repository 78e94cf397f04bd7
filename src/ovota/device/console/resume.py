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
from collections.abc import Callable
from dataclasses import dataclass

from ovota.device import fetch
from ovota.device.console.session import Session
from ovota.device.flash import SECTOR_SIZE
from ovota.device.ota import OtaUpdate

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
    """Writes a download into flash from ``start`` bytes at ``address`` on, reading back and comparing each
    completed sector, and saves the verified length under ``name`` every ``SAVE_EVERY`` bytes and on ``save``.

    ``write`` puts the bytes in place: an OtaUpdate's write for an image, a plain program for a patch kept
    beside the image."""

    def __init__(
        self,
        session: Session,
        address: int,
        start: int,
        write: Callable[[bytes | memoryview], None],
        progress: Progress,
    ) -> None:
        self.session = session
        self.address = address
        self._write = write
        self._progress = progress
        self.written = self.verified = self.saved = start
        self._pending = bytearray()
        self._broken = False  # a sector read back wrong: nothing after it counts as verified

    @classmethod
    def for_update(cls, session: Session, update: OtaUpdate, url: str, size: int, etag: str) -> Tracker:
        progress = Progress(url, update.target.name, size, etag, 0)
        return cls(session, update.target.offset, update.written, update.write, progress)

    def write(self, data: bytes | memoryview) -> None:
        self._write(data)
        self.written += len(data)
        self._pending += data
        whole = len(self._pending) // SECTOR_SIZE * SECTOR_SIZE
        if whole and not self._broken:
            flash = self.session.module.flash
            if flash.read(self.address + self.verified, whole) == self._pending[:whole]:
                self.verified += whole
            else:
                self._broken = True
            del self._pending[:whole]
        if self.verified - self.saved >= SAVE_EVERY:
            self.save()

    def save(self) -> None:
        """Record how far the download got (the verified sectors)."""
        if self.verified > self.saved:
            done = Progress(self._progress.url, self._progress.target, self._progress.size, self._progress.etag,
                            self.verified)  # fmt: skip
            self.session.module.config.set(PARAM, INSTANCE, done.encode())
            self.saved = self.verified
