"""An emulated OVMS module: its flash file, what the bootloader chose to run, its config and links."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from ovota.device.bootloader import BootResult, boot, boot_choice
from ovota.device.clock import Clock, Network
from ovota.device.efuses import EfuseFile, efuse_path, write_efuses
from ovota.device.fetch import TIMEOUT_SECONDS
from ovota.device.flash import DEFAULT_FLASH_SIZE, Flash, PowerCut
from ovota.device.identity import Identity, read_identity, write_identity
from ovota.device.images import partition_descriptor, partition_version
from ovota.device.layout import Layout, LayoutType, read_layout
from ovota.device.layouts import FLASH_SIZES, layout_table
from ovota.device.security import Security, signature_problem
from ovota.device.store import Config
from ovota.device.store_copy import Stores
from ovota.formats import FormatError
from ovota.formats.app_image import AppImage
from ovota.formats.efuse import Efuses
from ovota.formats.image_builder import build_app_image
from ovota.formats.partition_table import Partition
from ovota.formats.signature import read_signatures
from ovota.formats.versions import escape_text, product_name

BOOTLOADER_OFFSET = 0x1000
DEFAULT_TAG = "main"  # CONFIG_OVMS_VERSION_TAG
DEFAULT_SERVER = "api.openvehicles.com/firmware/ota"


class ModuleError(Exception):
    """The flash file cannot be used as a module (no table, no store, no bootable app)."""


def create_module(
    path: Path,
    layout: str,
    firmware: bytes,
    hardware: str | None = None,
    secure_boot_key: bytes | None = None,
    anti_rollback: bool = False,
) -> None:
    """Write a complete module flash: bootloader, table, identity, blank otadata, firmware, empty /store.

    ``secure_boot_key`` (the SHA-256 digest of a signing key) burns Secure Boot V2 into the module's eFuses:
    the firmware must then be signed by that key. ``anti_rollback`` builds the bootloader with the eFuse
    secure-version counter. Either writes ``<flash>.efuse``; without them the module has no eFuse file.
    """
    table = layout_table(layout)
    image = AppImage.parse(firmware)
    first_app = table.factory or table.ota_slots[0]
    problem = image.verify(partition_offset=first_app.offset, partition_size=first_app.size).first_failure()
    if problem:
        raise FormatError(f"firmware cannot go into {first_app.name}: {problem}")
    revision = 3 if hardware is None else _chip_revision(hardware)
    identity = Identity(anti_rollback=anti_rollback)
    if hardware is not None:
        identity = replace(identity, hardware=hardware, chip_revision=revision)
    fuses = _provision(revision, secure_boot_key, anti_rollback)
    if fuses is not None and fuses.secure_boot:
        problem = signature_problem(fuses.key_digest, firmware, image.length)
        if problem:
            raise FormatError(f"firmware cannot boot on this module: {problem}")
    # A signed file goes in whole (padding and signature sector), as `ota flash` writes it.
    signatures = read_signatures(firmware, image.length)
    length = image.length if signatures is None else signatures.end
    if fuses is None:
        efuse_path(path).unlink(missing_ok=True)  # a new module: no eFuses left from one created here before
    with Flash.create(path, FLASH_SIZES.get(layout, DEFAULT_FLASH_SIZE)) as flash:
        bootloader = build_app_image("bootloader", project="bootloader", built=datetime(2026, 1, 1, tzinfo=UTC))
        flash.program(BOOTLOADER_OFFSET, bootloader)
        flash.program(0x8000, table.to_binary())
        nvs = table.find("nvs")
        assert nvs is not None
        write_identity(flash, nvs, identity)
        flash.program(first_app.offset, firmware[:length])
        Config(flash, table.find("store"))  # the first boot's mount formats /store and creates ovms_config
    if fuses is not None:
        write_efuses(path, fuses)


def _provision(revision: int, key_digest: bytes | None, anti_rollback: bool) -> Efuses | None:
    if key_digest is None and not anti_rollback:
        return None
    if key_digest is not None and revision < 3:
        raise FormatError(f"Secure Boot V2 needs ESP32 silicon revision 3 or later; this module is revision {revision}")
    fuses = Efuses.blank(revision)
    return fuses if key_digest is None else fuses.with_secure_boot(key_digest)


def _chip_revision(hardware: str) -> int:
    match = re.search(r"rev=ESP32/(\d+)", hardware)
    return int(match.group(1)) if match else 3


@dataclass
class Module:
    """A powered-on module. ``power_on``/``reset`` run the bootloader over the flash again."""

    flash: Flash
    sd_dir: Path | None = None
    clock: Clock = field(default_factory=Clock)
    network: Network = field(default_factory=Network)

    def __post_init__(self) -> None:
        self.power_on()

    @classmethod
    def open(cls, path: Path, sd_dir: Path | None = None, cut: PowerCut | None = None) -> Module:
        return cls(Flash(path, cut), sd_dir)

    def close(self) -> None:
        self.flash.close()

    def power_on(self) -> None:
        try:
            self.layout: Layout = read_layout(self.flash)
        except FormatError as err:
            raise ModuleError(f"cannot read the partition table: {err}") from None
        self.config = Config(self.flash, self.layout.store, lambda: self.clock.now)
        self.stores = Stores(self.config)  # /store2 is not mounted after a boot
        self.identity = read_identity(self.flash, self.layout.get("nvs"))
        self.security = Security(EfuseFile.open(self.flash), self.identity.anti_rollback)
        # The emulated bootloader is "built" with app rollback when the module's config asks for it, and
        # always with anti-rollback, which ESP-IDF only offers together with app rollback.
        self.rollback = self.identity.anti_rollback or self.config.get_bool("ota", "rollback", False)
        self.boot_result: BootResult = boot(self.flash, self.layout, self.rollback, self.security)
        self.last_check_day: int | None = None
        self.clock.power_on()
        # m.version is set at system.start with the tag of that moment: a new `ota tag` shows after a reboot.
        self.boot_tag = self.tag
        self.partition_update = False  # RTC boot flag: lost on power loss, set only by a restart
        descriptor = partition_descriptor(self.flash, self.running)
        self.build = escape_text(
            f"idf {descriptor.idf_ver} {descriptor.date} {descriptor.time}" if descriptor else self.identity.idf_build
        )

    reset = power_on

    @property
    def running(self) -> Partition:
        return self.boot_result.running

    @property
    def running_version(self) -> str:
        return partition_version(self.flash, self.running)

    @property
    def boot_partition(self) -> Partition | None:
        """esp_ota_get_boot_partition: what the next boot would choose first."""
        choice = boot_choice(self.flash, self.layout)
        if choice.slot is None:
            return self.layout.factory or (self.layout.ota_slots[0] if self.layout.ota_slots else None)
        return next((p for p in self.layout.ota_slots if p.ota_slot == choice.slot), None)

    @property
    def product(self) -> str:
        return product_name(self.identity.chip_revision, self.layout.type is LayoutType.V3_35)

    @property
    def tag(self) -> str:
        return self.config.get("ota", "tag", DEFAULT_TAG)

    @property
    def version_string(self) -> str:
        """GetOVMSVersion as m.version holds it: <version>/<running label>/<tag at boot>."""
        return f"{self.running_version}/{self.running.name}/{self.boot_tag}"

    @property
    def firmware_metric(self) -> str:
        """The m.version metric that `ota status` prints as Firmware."""
        return f"{self.version_string} (build {self.build}, product {self.product})"

    def server_url(self, filename: str) -> str:
        """OVMS URL building: <server>/<product>/<tag>/<file>, no trailing-slash normalisation."""
        server = self.config.get("ota", "server", DEFAULT_SERVER)
        return f"{server}/{self.product}/{self.tag}/{filename}"

    @property
    def http_timeout(self) -> float:
        """Seconds a connect or read may stall (OVMS: a fixed 10 s); emulator param ``ota http.timeout``."""
        return float(self.config.get_int("ota", "http.timeout", int(TIMEOUT_SECONDS)))

    @property
    def user_agent(self) -> str:
        """OVMS's User-Agent; anything odd read from flash or config is escaped, so the header stays valid."""
        vehicle_id = self.config.get("vehicle", "id")
        return escape_text(f"ovms/{self.product} ({vehicle_id} {self.firmware_metric})")
