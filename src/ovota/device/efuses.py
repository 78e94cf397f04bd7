"""The module's eFuses: ``<flash>.efuse`` beside the flash file, in espefuse's virtual-chip format.

A module without that file has no eFuses burned that matter here (OVMS's case: no secure boot, no
anti-rollback). Every burn is one chip operation on the flash's counter, so the power-cut tests can stop it;
a torn burn leaves only the lower half of the new bits burned, as an interrupted eFuse program would.
"""

from __future__ import annotations

from pathlib import Path

from ovota.device.flash import Flash
from ovota.files import write_atomic
from ovota.formats.efuse import SECURE_VERSION, Efuses

SUFFIX = ".efuse"


def efuse_path(flash_path: Path) -> Path:
    return flash_path.with_name(flash_path.name + SUFFIX)


def write_efuses(flash_path: Path, fuses: Efuses) -> None:
    """Provisioning (module creation): write the whole eFuse file."""
    write_atomic(efuse_path(flash_path), fuses.to_file_bytes())


class EfuseFile:
    """The eFuses of a powered-on module; ``current`` is what the chip reads now."""

    def __init__(self, flash: Flash) -> None:
        self.flash = flash
        self.path = efuse_path(flash.path)
        self.current = Efuses.from_file_bytes(self.path.read_bytes())

    @classmethod
    def open(cls, flash: Flash) -> EfuseFile | None:
        """The module's eFuses, or None when it has no eFuse file."""
        return cls(flash) if efuse_path(flash.path).exists() else None

    def raise_secure_version(self, version: int) -> bool:
        """esp_efuse_update_secure_version: burn the counter up to ``version``; True if bits were burned."""
        if version <= self.current.secure_version:
            return False
        new_bits = self.current.secure_version_bits(version) & ~self.current.word(SECURE_VERSION)
        positions = [bit for bit in range(new_bits.bit_length()) if new_bits >> bit & 1]
        lower_half = sum(1 << bit for bit in positions[: len(positions) // 2])
        self.flash.other_operation(
            "efuse",
            SECURE_VERSION,
            lambda: self._burn(SECURE_VERSION, new_bits),
            lambda: self._burn(SECURE_VERSION, lower_half),
        )
        return True

    def _burn(self, offset: int, bits: int) -> None:
        self.current = self.current.burn_word(offset, bits)
        write_atomic(self.path, self.current.to_file_bytes())
