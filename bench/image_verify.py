"""Verify a 7 MB app image (checksum + SHA-256) and compare with hashlib.sha256 over the same bytes.

Goal (issue #2): verification runs at >= 0.8x the speed of a bare SHA-256. Prints both and the ratio.
Then the Secure Boot V2 check of the same image signed (what a secure-boot module does at esp_ota_end and
at boot), against espsecure's own verify-signature code in the same process.
``--smoke``: a 64 KiB image and one round, to check that the bench still runs (CI does this).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from ovota.formats.app_image import AppImage
from ovota.formats.image_builder import build_app_image
from ovota.formats.signature import key_digest, read_signatures, sign_image

SIZE = 7 * 1024 * 1024
ROUNDS = 30
SMOKE_SIZE = 65536


def median_time(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny image, one round")
    smoke = parser.parse_args().smoke
    size, rounds = (SMOKE_SIZE, 1) if smoke else (SIZE, ROUNDS)
    data = build_app_image("3.3.006-bench", size=size, built=datetime(2026, 1, 1, tzinfo=UTC))

    def verify() -> None:
        if not AppImage.parse(data).verify().ok:
            raise SystemExit("benchmark image failed to verify")

    sha = median_time(lambda: hashlib.sha256(data).digest(), rounds)
    ver = median_time(verify, rounds)
    mb = size / 1e6
    print(f"image: {size} bytes, median of {rounds} rounds{' (smoke run: timings mean nothing)' if smoke else ''}")
    print(f"hashlib.sha256      : {sha * 1e3:7.2f} ms  {mb / sha:8.1f} MB/s")
    print(f"ovota image verify  : {ver * 1e3:7.2f} ms  {mb / ver:8.1f} MB/s")
    print(f"ratio (verify speed / sha256 speed): {sha / ver:.2f}  (goal >= 0.80)")
    signature_bench(data, rounds)


def signature_bench(data: bytes, rounds: int) -> None:
    import espsecure
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(65537, 3072)
    signed = sign_image(data, key)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    trusted = key_digest(key.public_key())
    length = AppImage.parse(signed).length

    def ovota_check() -> None:
        signatures = read_signatures(signed, length)
        if signatures is None or signatures.trusted_by({trusted}) is None:
            raise SystemExit("benchmark signature failed to verify")

    def espsecure_check() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            espsecure.verify_signature_v2(False, None, io.BytesIO(pem), io.BytesIO(signed))

    ours = median_time(ovota_check, rounds)
    theirs = median_time(espsecure_check, rounds)
    print(f"signed: {len(signed)} bytes (RSA-3072 block)")
    print(f"espsecure verify_signature_v2 : {theirs * 1e3:7.2f} ms")
    print(f"ovota signature check         : {ours * 1e3:7.2f} ms")
    print(f"ratio (ovota speed / espsecure speed): {theirs / ours:.2f}")


if __name__ == "__main__":
    main()
