"""Verify a 7 MB app image (checksum + SHA-256) and compare with hashlib.sha256 over the same bytes.

Goal (issue #2): verification runs at >= 0.8x the speed of a bare SHA-256. Prints both and the ratio.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from ovota.formats.app_image import AppImage
from ovota.formats.image_builder import build_app_image

SIZE = 7 * 1024 * 1024
ROUNDS = 30


def best_of(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    data = build_app_image("3.3.006-bench", size=SIZE, built=datetime(2026, 1, 1, tzinfo=UTC))

    def verify() -> None:
        if not AppImage.parse(data).verify().ok:
            raise SystemExit("benchmark image failed to verify")

    sha = best_of(lambda: hashlib.sha256(data).digest())
    ver = best_of(verify)
    mb = SIZE / 1e6
    print(f"image: {SIZE} bytes, median of {ROUNDS} rounds")
    print(f"hashlib.sha256      : {sha * 1e3:7.2f} ms  {mb / sha:8.1f} MB/s")
    print(f"ovota image verify  : {ver * 1e3:7.2f} ms  {mb / ver:8.1f} MB/s")
    print(f"ratio (verify speed / sha256 speed): {sha / ver:.2f}  (goal >= 0.80)")


if __name__ == "__main__":
    main()
