"""``ovota otadata``: inspect and write the OTA data partition."""

from __future__ import annotations

from pathlib import Path

import click

from ovota.files import write_atomic
from ovota.formats.otadata import FACTORY, OtaData, OtaState, SelectEntry, choose_boot, seq_crc, set_boot_slot


@click.group()
def otadata() -> None:
    """ESP-IDF otadata (which OTA slot boots)."""


def _describe(entry: SelectEntry) -> str:
    if entry.is_blank:
        return "blank"
    try:
        state = OtaState(entry.state).name
    except ValueError:
        state = f"0x{entry.state:08x}"
    crc = "valid" if entry.crc == seq_crc(entry.seq) else "invalid"
    return f"seq {entry.seq}, state {state}, crc 0x{entry.crc:08x} ({crc})"


@otadata.command("show")
@click.option("--slots", default=2, show_default=True, type=click.IntRange(0, 16), help="Number of OTA slots.")
@click.option("--factory", is_flag=True, help="The partition table has a factory app.")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def show(slots: int, factory: bool, file: Path) -> None:
    """Show both entries and the slot the ESP-IDF bootloader would boot."""
    data = OtaData.from_bytes(file.read_bytes())
    for index, entry in enumerate(data.entries):
        click.echo(f"Sector {index}: {_describe(entry)}")
    click.echo(f"Boot slot: {choose_boot(data, slots, factory).label}")


@otadata.command("init")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def init(out: Path) -> None:
    """Write a blank (erased) otadata partition, as ``idf.py flash`` does."""
    write_atomic(out, OtaData().to_bytes())


@otadata.command("switch")
@click.option("--slots", default=2, show_default=True, type=click.IntRange(1, 16), help="Number of OTA slots.")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("slot")
def switch(slots: int, file: Path, slot: str) -> None:
    """Make SLOT (ota_N or factory) the boot slot, as esp_ota_set_boot_partition does."""
    if slot == FACTORY:
        updated = OtaData()
    else:
        if not (slot.startswith("ota_") and slot[4:].isdigit()):
            raise click.BadParameter(f"{slot!r} is not factory or ota_N", param_hint="SLOT")
        updated = set_boot_slot(OtaData.from_bytes(file.read_bytes()), int(slot[4:]), slots)
    write_atomic(file, updated.to_bytes())
    click.echo(f"Boot slot: {slot}")
