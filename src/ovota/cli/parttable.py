"""``ovota parttable``: ESP-IDF partition tables, CSV <-> binary, as gen_esp32part converts them."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ovota.files import write_atomic
from ovota.formats import FormatError
from ovota.formats.partition_table import DEFAULT_TABLE_OFFSET, ENTRY_MAGIC, PartitionTable

FLASH_SIZES = {f"{n}MB": n * 0x100000 for n in (1, 2, 4, 8, 16, 32, 64, 128)}


def _read_table(path: Path, table_offset: int, md5: bool) -> PartitionTable:
    """A table from a binary (starts with AA 50) or a CSV file, verified."""
    raw = path.read_bytes()
    if raw[:2] == ENTRY_MAGIC:
        table = PartitionTable.from_binary(raw, md5=md5)
    else:
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            text = "\x00"
        if any(ord(c) < 0x20 and c not in "\t\r\n" for c in text):
            raise FormatError(f"{path} is neither a binary partition table (those start with bytes AA 50) nor CSV text")
        try:
            table = PartitionTable.from_csv(text, table_offset, env=os.environ)
        except FormatError as err:
            raise FormatError(f"{path}: {err}") from None
    table.verify(table_offset)
    return table


def _offset(value: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number") from None


@click.group()
def parttable() -> None:
    """ESP-IDF partition tables."""


@parttable.command("build")
@click.option("--flash-size", type=click.Choice(list(FLASH_SIZES)), help="Fail if the table does not fit.")
@click.option("--offset", default=hex(DEFAULT_TABLE_OFFSET), show_default=True, help="Partition table offset.")
@click.option("--disable-md5sum", is_flag=True, help="Omit the MD5 record (ESP-IDF apps then reject the table).")
@click.argument("csv", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def build(flash_size: str | None, offset: str, disable_md5sum: bool, csv: Path, out: Path) -> None:
    """Convert a partition CSV into the 3072-byte binary table."""
    table = _read_table(csv, _offset(offset), md5=not disable_md5sum)
    if flash_size:
        table.check_fits(FLASH_SIZES[flash_size])
    data = table.to_binary(md5=not disable_md5sum)
    write_atomic(out, data)
    click.echo(f"Wrote {out}: {len(table)} partitions, {len(data)} bytes", err=True)


@parttable.command("show")
@click.option("--offset", default=hex(DEFAULT_TABLE_OFFSET), show_default=True, help="Partition table offset.")
@click.argument("table", type=click.Path(dir_okay=False, path_type=Path))
def show(offset: str, table: Path) -> None:
    """Print a binary (or CSV) partition table as CSV."""
    click.echo(_read_table(table, _offset(offset), md5=True).to_csv(), nl=False)
