"""SD card auto-flash (OvmsOTA::CheckFlashSD on sd.mounted): /sd/ovms3.bin is flashed, renamed, and booted."""

from __future__ import annotations

from ovota.device.console.flashing import flash_file
from ovota.device.console.session import Session

SD_IMAGE = "ovms3.bin"
SD_DONE = "ovms3.done"


def check_flash_sd(session: Session) -> None:
    """If the mounted card holds ovms3.bin, flash it (no version check, as on OVMS), rename it, reboot."""
    sd_dir = session.module.sd_dir
    if sd_dir is None or not (sd_dir / SD_IMAGE).is_file():
        return
    session.log("AutoFlash SD: Task is running")
    if not flash_file(session, sd_dir / SD_IMAGE, f"/sd/{SD_IMAGE}"):
        session.log("AutoFlashSD OTA flash failed")
        return
    (sd_dir / SD_DONE).unlink(missing_ok=True)
    (sd_dir / SD_IMAGE).rename(sd_dir / SD_DONE)
    size = (sd_dir / SD_DONE).stat().st_size
    boot = session.module.boot_partition
    session.log(
        f"AutoFlashSD OTA flash successful: Flashed {size} bytes, and booting from '{boot.name if boot else ''}'"
    )
    session.restart()
