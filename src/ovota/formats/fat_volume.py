"""The FAT volume OVMS formats its /store with: ChaN FatFs's ``f_mkfs(FM_ANY | FM_SFD, 4096)`` on the sectors
that wear levelling leaves (ovms-twin §6). Pure code.

FAT12 for both OVMS store partitions, no partition table (SFD), one FAT, 512 root entries, one sector per
cluster, 4,096-byte sectors, volume label ``NO NAME``. For the v3-35 store's 490 sectors: data from sector 6,
484 clusters.
"""

from __future__ import annotations

import struct

SECTOR = 4096
ROOT_ENTRIES = 512
MEDIA = 0xF8


def device_format(sectors: int, volume_id: int) -> bytes:
    """The first sectors of a freshly formatted volume (boot sector, FAT, root directory), to be written at
    the volume's start; the rest of the volume's contents do not matter to FatFs. FAT12 only (up to 4,084
    clusters, 16 MB at this sector size), which covers every OVMS store."""
    root_sectors = ROOT_ENTRIES * 32 // SECTOR
    fat_sectors = 1
    while True:  # the smallest FAT that maps every cluster (12 bits per entry, 2 reserved entries)
        clusters = sectors - 1 - fat_sectors - root_sectors
        if (clusters + 2) * 3 // 2 + 1 <= fat_sectors * SECTOR:
            break
        fat_sectors += 1
    if clusters > 4084 or clusters < 1:
        raise ValueError(f"{sectors} sectors of 4 KiB do not make a FAT12 volume")
    boot = bytearray(SECTOR)
    boot[0:3] = b"\xeb\xfe\x90"
    boot[3:11] = b"MSDOS5.0"
    struct.pack_into(
        "<HBHBHHBHHHII", boot, 11, SECTOR, 1, 1, 1, ROOT_ENTRIES, sectors, MEDIA, fat_sectors, 63, 255, 0, 0
    )
    struct.pack_into("<BBBI11s8s", boot, 36, 0x80, 0, 0x29, volume_id & 0xFFFFFFFF, b"NO NAME    ", b"FAT12   ")
    boot[510:512] = b"\x55\xaa"
    fat = bytearray(fat_sectors * SECTOR)
    fat[0:3] = bytes((MEDIA, 0xFF, 0xFF))
    return bytes(boot) + bytes(fat) + bytes(root_sectors * SECTOR)


def has_filesystem(boot: bytes) -> bool:
    """Whether FatFs finds a volume in this first sector (``check_fs`` and ``find_volume``): the 0x55AA
    signature, a jump instruction, a FAT type string, and this device's sector size. Where it does not,
    ``f_mount`` fails with FR_NO_FILESYSTEM and ESP-IDF formats the partition (format_if_mount_failed)."""
    if len(boot) < 512 or boot[510:512] != b"\x55\xaa" or boot[0] not in (0xE9, 0xEB, 0xE8):
        return False
    if boot[54:57] != b"FAT" and boot[82:87] != b"FAT32":
        return False
    return int.from_bytes(boot[11:13], "little") == SECTOR
