"""The OVMS 16 MB partition layouts a module can be created with (OVMS's partitions.csv files)."""

from __future__ import annotations

from ovota.formats.partition_table import PartitionTable

_COMMON = """\
nvs,      data, nvs,     0x9000,  0x4000
otadata,  data, ota,     0xd000,  0x2000
phy_init, data, phy,     0xf000,  0x1000
"""

# Up to 3.3.005: factory + two 4 MB OTA slots, 1 MB store.
V3_30_CSV = (
    _COMMON
    + """\
factory,  app,  factory, 0x10000,  4M
ota_0,    app,  ota_0,   ,         4M
ota_1,    app,  ota_1,   ,         4M
store,    data, fat,     ,         1M
"""
)

# From 3.3.006: two 7 MB OTA slots, no factory, 0x1f0000 store.
V3_35_CSV = (
    _COMMON
    + """\
ota_0,    app,  ota_0,   0x010000, 7M
ota_1,    app,  ota_1,   0x710000, 7M
store,    data, fat,     0xe10000, 0x1f0000
"""
)

# Boards with smaller flash (support/partitions8M.csv, partitions4M.csv): no room for the v3-35 layout.
BOARD_8MB_CSV = (
    _COMMON
    + """\
factory,  app,  factory, 0x10000,  3M
ota_0,    app,  ota_0,   ,         3M
store,    data, fat,     ,         1M
"""
)
BOARD_4MB_CSV = (
    _COMMON
    + """\
factory,  app,  factory, 0x10000,  0x2f0000
store,    data, fat,     ,         1M
"""
)

LAYOUTS = {"v3-30": V3_30_CSV, "v3-35": V3_35_CSV, "8MB": BOARD_8MB_CSV, "4MB": BOARD_4MB_CSV}
FLASH_SIZES = {"8MB": 8 * 1024 * 1024, "4MB": 4 * 1024 * 1024}


def layout_table(name: str) -> PartitionTable:
    table = PartitionTable.from_csv(LAYOUTS[name])
    table.verify()
    return table
