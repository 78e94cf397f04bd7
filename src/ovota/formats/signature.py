"""Secure Boot V2 signatures of app images (ESP32 ECO3+), laid out as ``espsecure sign-data --version 2``.

A signed file is the image padded with 0xFF to a 4 KiB multiple, then one 4 KiB signature sector: up to three
1216-byte signature blocks, then 0xFF. Each block holds the SHA-256 of everything before the sector, the
signer's RSA-3072 public key in the form the chip's RSA peripheral uses (n, e, r⁻¹, m', little-endian) and an
RSA-PSS signature (SHA-256, MGF1-SHA-256, 32-byte salt), then a CRC-32 of the 1196 bytes before it. The chip
trusts a block when the SHA-256 of its key material equals the digest burned into eFuse BLOCK2 (the ESP32 ROM
and bootloader look at the first block only).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from ovota.formats.errors import FormatError

SECTOR_SIZE = 0x1000
BLOCK_MAGIC = 0xE7
VERSION_RSA = 0x02
VERSION_ECDSA = 0x03
MAX_BLOCKS = 3
RSA_BITS = 3072
# ets_secure_boot_sig_block_t: magic, version, 2 reserved, image_digest, then for RSA: n (LE), e, r^-1 (LE),
# m' = -n^-1 mod 2^32, signature (LE); block_crc over the 1196 bytes before it, 16 bytes of zero padding.
BLOCK = struct.Struct("<BBxx32s384sI384sI384sI16x")
BLOCK_SIZE = BLOCK.size  # 1216
CRC_COVERS = BLOCK_SIZE - 20
KEY_MATERIAL = slice(36, 36 + 776)  # n, e, r^-1, m': what the eFuse key digest is the SHA-256 of
ECDSA_KEY_MATERIAL = slice(36, 36 + 65)  # curve id + P-256 point (other chips; never valid on an ESP32)
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


@dataclass(frozen=True)
class SignatureBlock:
    """One well-formed block of a signature sector (magic, version and CRC checked)."""

    index: int
    version: int
    image_digest: bytes
    raw: bytes

    @property
    def kind(self) -> str:
        return f"RSA-{RSA_BITS}" if self.version == VERSION_RSA else "ECDSA"

    @property
    def key_digest(self) -> bytes:
        """The SHA-256 of the block's public key, as ``espsecure digest-sbv2-public-key`` writes it."""
        material = KEY_MATERIAL if self.version == VERSION_RSA else ECDSA_KEY_MATERIAL
        return hashlib.sha256(self.raw[material]).digest()

    def public_key(self) -> rsa.RSAPublicKey | None:
        if self.version != VERSION_RSA:
            return None
        _, _, _, n, e, _, _, _, _ = BLOCK.unpack(self.raw)
        return rsa.RSAPublicNumbers(e, int.from_bytes(n, "little")).public_key()

    def verifies(self, digest: bytes) -> bool:
        """True if the block signs ``digest`` (the SHA-256 of the signed data) with its own RSA key."""
        key = self.public_key()
        if key is None or self.image_digest != digest:
            return False
        signature = BLOCK.unpack(self.raw)[7][::-1]
        try:
            key.verify(signature, digest, PSS, utils.Prehashed(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signatures:
    """The signature sector of a signed image: where it is, the digest it must sign, its blocks."""

    offset: int  # of the signature sector: the image length rounded up to 4 KiB
    digest: bytes  # SHA-256 of the file before the sector
    blocks: tuple[SignatureBlock, ...]

    def valid_blocks(self) -> list[SignatureBlock]:
        return [b for b in self.blocks if b.verifies(self.digest)]

    def trusted_by(self, key_digests: set[bytes] | frozenset[bytes]) -> SignatureBlock | None:
        """The first valid block whose key is one of ``key_digests``, if any."""
        return next((b for b in self.valid_blocks() if b.key_digest in key_digests), None)

    @property
    def end(self) -> int:
        return self.offset + SECTOR_SIZE


def sector_offset(image_length: int) -> int:
    """Where the signature sector of an image of ``image_length`` bytes starts."""
    return -(-image_length // SECTOR_SIZE) * SECTOR_SIZE


def parse_block(raw: bytes, index: int) -> SignatureBlock | None:
    """The block if it is well formed (magic, a known version, CRC), else None: espsecure's rule."""
    magic, version, digest, *_rest, crc = BLOCK.unpack(raw)
    if magic != BLOCK_MAGIC or version not in (VERSION_RSA, VERSION_ECDSA):
        return None
    if crc != zlib.crc32(raw[:CRC_COVERS]):
        return None
    return SignatureBlock(index, version, digest, raw)


def read_signatures(data: bytes | memoryview, image_length: int) -> Signatures | None:
    """The signature sector after an image of ``image_length`` bytes in ``data``; None if ``data`` ends
    before a whole sector or the sector holds no well-formed block."""
    offset = sector_offset(image_length)
    if len(data) < offset + SECTOR_SIZE:
        return None
    sector = bytes(data[offset : offset + SECTOR_SIZE])
    blocks = [parse_block(sector[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE], i) for i in range(MAX_BLOCKS)]
    found = tuple(b for b in blocks if b is not None)
    if not found:
        return None
    return Signatures(offset, hashlib.sha256(memoryview(data)[:offset]).digest(), found)


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    """An RSA-3072 private key from PEM (what ``espsecure generate-signing-key --version 2`` writes)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise FormatError(f"not a PEM private key without a passphrase: {_first_line(err)}") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != RSA_BITS:
        raise FormatError(f"the ESP32 verifies RSA-{RSA_BITS} keys only; this key is {_describe(key)}")
    return key


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """An RSA-3072 public key from a PEM public key, or from a PEM private key."""
    if b"PRIVATE KEY" in pem:
        return load_private_key(pem).public_key()
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise FormatError(f"not a PEM public or private key: {_first_line(err)}") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size != RSA_BITS:
        raise FormatError(f"the ESP32 verifies RSA-{RSA_BITS} keys only; this key is {_describe(key)}")
    return key


def key_material(key: rsa.RSAPublicKey) -> bytes:
    """n, e, r⁻¹ = 2^(2·3072) mod n and m' = -n⁻¹ mod 2^32, little-endian: the chip's form of the key."""
    numbers = key.public_numbers()
    n = numbers.n
    rinv = (1 << (2 * RSA_BITS)) % n
    m_dash = -pow(n, -1, 1 << 32) & 0xFFFFFFFF
    return struct.pack("<384sI384sI", n.to_bytes(384, "little"), numbers.e, rinv.to_bytes(384, "little"), m_dash)


def key_digest(key: rsa.RSAPublicKey) -> bytes:
    """What ``espsecure digest-sbv2-public-key`` writes and ``espefuse burn-key-digest`` burns into BLOCK2."""
    return hashlib.sha256(key_material(key)).digest()


def sign_image(image: bytes, key: rsa.RSAPrivateKey) -> bytes:
    """The image padded with 0xFF to a 4 KiB multiple, followed by a signature sector with one block."""
    body = image + b"\xff" * (-len(image) % SECTOR_SIZE)
    digest = hashlib.sha256(body).digest()
    signature = key.sign(digest, PSS, utils.Prehashed(hashes.SHA256()))
    block = struct.pack("<BBxx32s", BLOCK_MAGIC, VERSION_RSA, digest) + key_material(key.public_key())
    block += signature[::-1]
    block += struct.pack("<I", zlib.crc32(block)) + b"\0" * 16
    return body + block + b"\xff" * (SECTOR_SIZE - len(block))


def _describe(key: object) -> str:
    size = getattr(key, "key_size", None)
    kind = type(key).__name__.lstrip("_").replace("PrivateKey", "").replace("PublicKey", "")
    return f"{kind}-{size}" if size else kind


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__
