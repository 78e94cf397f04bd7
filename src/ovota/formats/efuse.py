"""The ESP32's eFuse memory, in the file format of ``espefuse --virt --path-efuse-file``.

espefuse keeps the controller's 0x120 bytes of registers as one big-endian bit string whose last 32 bits are
the register at offset 0: the file is the registers' little-endian bytes in reverse order. Only the fields
secure boot and anti-rollback use are modelled; the rest of the file is kept as it is.

eFuse bits can only go from 0 to 1. Burning ORs new bits in, as the chip does.
"""

from __future__ import annotations

from dataclasses import dataclass

from ovota.formats.errors import FormatError

MEM_SIZE = 0x11C + 4  # EFUSE_MEM_SIZE of espefuse's ESP32 definition
BLOCK0 = 0x000  # read registers of BLOCK0 (7 words)
BLOCK2 = 0x058  # BLOCK2: the Secure Boot V2 key digest (8 words)
BLOCK3 = 0x078  # BLOCK3: word 4 is SECURE_VERSION
WR_DIS = BLOCK0  # word 0: write-protect bits
WR_DIS_BLOCK2 = 1 << 8
REV1 = (BLOCK0 + 3 * 4, 1 << 15)  # CHIP_VER_REV1
REV2 = (BLOCK0 + 5 * 4, 1 << 20)  # CHIP_VER_REV2
ABS_DONE_1 = (BLOCK0 + 6 * 4, 1 << 5)  # Secure Boot V2 enabled
SECURE_VERSION = BLOCK3 + 4 * 4
SECURE_VERSION_BITS = 32  # ESP-IDF's CONFIG_BOOTLOADER_APP_SEC_VER_SIZE_EFUSE_FIELD for the ESP32
KEY_DIGEST_SIZE = 32


@dataclass(frozen=True)
class Efuses:
    """An immutable snapshot of the eFuse registers; the burn methods return a new snapshot."""

    mem: bytes = bytes(MEM_SIZE)

    @classmethod
    def from_file_bytes(cls, data: bytes) -> Efuses:
        """Parse an espefuse virtual eFuse file."""
        if len(data) != MEM_SIZE:
            raise FormatError(f"an ESP32 eFuse file is {MEM_SIZE} bytes, this one has {len(data)}")
        return cls(data[::-1])

    def to_file_bytes(self) -> bytes:
        return self.mem[::-1]

    @classmethod
    def blank(cls, chip_revision: int = 3) -> Efuses:
        """A new chip: every eFuse 0 except those that say which silicon revision it is."""
        return cls().with_chip_revision(chip_revision)

    def word(self, offset: int) -> int:
        return int.from_bytes(self.mem[offset : offset + 4], "little")

    def burn_word(self, offset: int, bits: int) -> Efuses:
        """OR ``bits`` into the register at ``offset`` (bits never go back to 0)."""
        value = (self.word(offset) | bits).to_bytes(4, "little")
        return Efuses(self.mem[:offset] + value + self.mem[offset + 4 :])

    # -- chip revision ------------------------------------------------------------------------------------

    def with_chip_revision(self, major: int) -> Efuses:
        """Burn the bits of a major silicon revision (OVMS's ``rev=ESP32/3``). espefuse's virtual chip reads
        the APB date bit as always set, so only revisions 0 and 3 can be represented."""
        if major not in (0, 3):
            raise FormatError(f"an emulated ESP32 is silicon revision 0 or 3, not {major}")
        if major == 0:
            return self
        return self.burn_word(REV1[0], REV1[1]).burn_word(REV2[0], REV2[1])

    @property
    def chip_revision(self) -> int:
        """The major silicon revision as espefuse's virtual chip computes it: 3 with REV1 and REV2, else 0."""
        return 3 if self.word(REV1[0]) & REV1[1] and self.word(REV2[0]) & REV2[1] else 0

    # -- secure boot ------------------------------------------------------------------------------------

    @property
    def secure_boot(self) -> bool:
        """ABS_DONE_1: the ROM and the bootloader accept only images signed by the BLOCK2 key."""
        return bool(self.word(ABS_DONE_1[0]) & ABS_DONE_1[1])

    @property
    def key_digest(self) -> bytes:
        return self.mem[BLOCK2 : BLOCK2 + KEY_DIGEST_SIZE]

    @property
    def key_digest_protected(self) -> bool:
        return bool(self.word(WR_DIS) & WR_DIS_BLOCK2)

    def with_secure_boot(self, digest: bytes) -> Efuses:
        """Burn the key digest into BLOCK2, write-protect it and set ABS_DONE_1 (espefuse burn-key-digest,
        then burn-efuse ABS_DONE_1). Refused if BLOCK2 already holds another digest."""
        if len(digest) != KEY_DIGEST_SIZE:
            raise FormatError(f"a key digest is {KEY_DIGEST_SIZE} bytes, not {len(digest)}")
        current = self.key_digest
        if any(current) and current != digest:
            raise FormatError(f"BLOCK2 already holds key digest {current.hex()}: eFuses cannot be burned twice")
        mem = self.mem[:BLOCK2] + digest + self.mem[BLOCK2 + KEY_DIGEST_SIZE :]
        return Efuses(mem).burn_word(WR_DIS, WR_DIS_BLOCK2).burn_word(ABS_DONE_1[0], ABS_DONE_1[1])

    # -- anti-rollback ----------------------------------------------------------------------------------

    @property
    def secure_version(self) -> int:
        """esp_efuse_read_secure_version: the count of burned bits (a thermometer code)."""
        return (self.word(SECURE_VERSION) & ((1 << SECURE_VERSION_BITS) - 1)).bit_count()

    def secure_version_bits(self, version: int) -> int:
        """The bits to burn so the counter reads ``version`` (the lowest ``version`` bits)."""
        if not 0 <= version <= SECURE_VERSION_BITS:
            raise FormatError(f"secure version {version} is beyond the {SECURE_VERSION_BITS}-bit eFuse counter")
        return (1 << version) - 1
