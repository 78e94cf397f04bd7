"""Signing keys made by espsecure, and signed or unsigned images, for the Secure Boot V2 tests."""

from __future__ import annotations

import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

from ovota.formats.image_builder import build_app_image
from ovota.formats.signature import load_private_key, sign_image
from tests.module_helpers import BUILT

BIN = Path(sys.executable).parent
OLD = "3.3.006-1-gaaaaaaa"
NEW = "3.3.006-2-gbbbbbbb"


def tool(name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run one of esptool's console scripts (espsecure, espefuse, esptool) from this environment."""
    return subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True, check=False)


@dataclass(frozen=True)
class Keys:
    signing: Path  # RSA-3072 private key made by espsecure
    other: Path  # a key nobody trusts
    public: Path  # the public half of ``signing``, extracted by espsecure
    digest: bytes  # espsecure digest-sbv2-public-key of ``signing``


def make_keys(root: Path) -> Keys:
    for name in ("signing", "other"):
        made = tool("espsecure", "generate-signing-key", "--version", "2", "--scheme", "rsa3072", root / f"{name}.pem")
        assert made.returncode == 0, made.stdout + made.stderr
    signing = root / "signing.pem"
    public = tool("espsecure", "extract-public-key", "--version", "2", "--keyfile", signing, root / "pub.pem")
    assert public.returncode == 0, public.stdout + public.stderr
    digest = tool("espsecure", "digest-sbv2-public-key", "--keyfile", signing, "-o", root / "digest.bin")
    assert digest.returncode == 0, digest.stdout + digest.stderr
    return Keys(signing, root / "other.pem", root / "pub.pem", (root / "digest.bin").read_bytes())


def unsigned(version: str, secure_version: int = 0, size: int = 8192) -> bytes:
    return build_app_image(version, size=size, built=BUILT, secure_version=secure_version)


def signed(key: Path, version: str, secure_version: int = 0, size: int = 8192) -> bytes:
    return sign_image(unsigned(version, secure_version, size), load_private_key(key.read_bytes()))


def forged(signed_file: bytes) -> bytes:
    """A signed file whose first signature block is still well formed (CRC recomputed) but whose signature
    no longer matches: what an attacker who edits a signature, or a bit flip in one, produces."""
    data = bytearray(signed_file)
    block = len(data) - 4096
    data[block + 812] ^= 0x01  # first byte of the (little-endian) RSA signature
    crc = zlib.crc32(bytes(data[block : block + 1196]))
    data[block + 1196 : block + 1200] = crc.to_bytes(4, "little")
    return bytes(data)
