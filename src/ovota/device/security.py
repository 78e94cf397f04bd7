"""What the module's chip enforces on app images, as ESP-IDF v4.4+ with these options does.

Secure Boot V2 comes from the eFuses (ABS_DONE_1 and the key digest in BLOCK2): an image must carry a first
signature block by that key over its bytes. Anti-rollback is a bootloader build option (recorded in the
module's identity): an image whose app-descriptor ``secure_version`` is below the eFuse counter is refused,
and confirming an image raises the counter to its version. A module with neither is an OVMS module.
"""

from __future__ import annotations

from dataclasses import dataclass

from ovota.device.efuses import EfuseFile
from ovota.formats.signature import read_signatures

ESP_ERR_OTA_SMALL_SEC_VER = 0x1504


@dataclass(frozen=True)
class Security:
    efuses: EfuseFile | None = None
    anti_rollback: bool = False

    @property
    def key_digest(self) -> bytes | None:
        """The trusted signing key's digest when secure boot is on, else None."""
        if self.efuses is None or not self.efuses.current.secure_boot:
            return None
        return self.efuses.current.key_digest

    @property
    def counter(self) -> int | None:
        """The eFuse secure-version counter when anti-rollback is on, else None."""
        if not self.anti_rollback or self.efuses is None:
            return None
        return self.efuses.current.secure_version

    def signature_problem(self, data: bytes | memoryview, image_length: int) -> str | None:
        """None if secure boot is off or ``data`` (an image of ``image_length`` bytes, then whatever follows
        it in the partition) is signed by the trusted key; else the reason, one line."""
        trusted = self.key_digest
        return None if trusted is None else signature_problem(trusted, data, image_length)

    def version_problem(self, secure_version: int) -> str | None:
        """None unless anti-rollback refuses an image of ``secure_version``."""
        counter = self.counter
        if counter is None or secure_version >= counter:
            return None
        return f"anti-rollback: image secure version {secure_version} is below the eFuse counter {counter}"

    def confirm(self, secure_version: int) -> bool:
        """A confirmed image of ``secure_version`` raises the counter to it; True if eFuses were burned."""
        if self.counter is None or self.efuses is None:
            return False
        return self.efuses.raise_secure_version(secure_version)


NO_SECURITY = Security()


def signature_problem(trusted: bytes, data: bytes | memoryview, image_length: int) -> str | None:
    """None if the first signature block after the image is a valid one by the key whose digest is ``trusted``
    (what the ESP32 bootloader accepts: it reads that block only); else the reason, one line."""
    signatures = read_signatures(data, image_length)
    first = signatures.blocks[0] if signatures is not None else None
    if signatures is None or first is None or first.index != 0:
        return "secure boot: the image has no signature block"
    if first.key_digest != trusted:
        return f"secure boot: the image is signed by key {first.key_digest.hex()}, the eFuse holds {trusted.hex()}"
    if not first.verifies(signatures.digest):
        return "secure boot: the signature does not match the image (tampered or corrupt)"
    return None
