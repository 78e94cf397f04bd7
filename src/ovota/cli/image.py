"""``ovota image``: build and inspect ESP32 app images."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import click

from ovota.files import write_atomic
from ovota.formats.app_image import AppImage, chip_name
from ovota.formats.image_builder import build_app_image
from ovota.formats.version_marker import image_version
from ovota.formats.versions import escape_bytes, escape_text

EXIT_INVALID = 1


@click.group()
def image() -> None:
    """ESP32 app images (ovms3.bin)."""


def _build_time() -> datetime:
    # SOURCE_DATE_EPOCH makes builds reproducible, as in Debian's and ESP-IDF's own build tooling.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    return datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)


@image.command("build")
@click.option("--version", "version", required=True, help="Firmware version, e.g. 3.3.006-12-gabcdef.")
@click.option("--size", type=click.IntRange(min=1), help="Total image size in bytes (a multiple of 16).")
@click.option("--project", default="ovms3", show_default=True, help="Project name in the app descriptor.")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def build(version: str, size: int | None, project: str, out: Path) -> None:
    """Write a synthetic, fully valid ESP32 app image carrying VERSION to OUT."""
    data = build_app_image(version, size=size, project=project, built=_build_time())
    write_atomic(out, data)
    click.echo(f"Wrote {out}: {len(data)} bytes, version {version}, sha256 {hashlib.sha256(data).hexdigest()}")


@image.command("info")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def info(ctx: click.Context, file: Path) -> None:
    """Show and verify an app image. Exit 0 if valid, 1 if invalid, 2 if unreadable."""
    parsed = AppImage.parse(file.read_bytes())
    header = parsed.header
    result = parsed.verify()
    desc = parsed.app_descriptor()
    click.echo(f"File: {file}")
    click.echo(f"Image length: {parsed.length} bytes")
    click.echo(f"Chip: {chip_name(header.chip_id)}")
    click.echo(f"Entry point: 0x{header.entry_addr:08x}")
    click.echo(f"Segments: {len(parsed.segments)}")
    for index, seg in enumerate(parsed.segments):
        click.echo(f"  {index}: load 0x{seg.load_addr:08x}, file offset 0x{seg.offset:06x}, {seg.length} bytes")
    click.echo(f"Project: {escape_text(desc.project_name) if desc else '(no app descriptor)'}")
    click.echo(f"Version: {escape_text(desc.version) if desc else '(no app descriptor)'}")
    ovms_version = image_version(parsed.data[: parsed.length])
    click.echo(f"OVMS version: {'(no OVMS version marker)' if ovms_version is None else escape_bytes(ovms_version)}")
    if desc:
        click.echo(f"Compile time: {escape_text(desc.date)} {escape_text(desc.time)}")
        click.echo(f"ESP-IDF: {escape_text(desc.idf_ver)}")
        click.echo(f"Secure version: {desc.secure_version}")
    click.echo(f"Checksum: 0x{result.checksum_stored:02x} ({'valid' if result.checksum_ok else 'invalid'})")
    if result.hash_stored is None:
        click.echo("Hash: none appended")
    else:
        click.echo(f"Hash: {result.hash_stored.hex()} ({'valid' if result.hash_ok else 'invalid'})")
    failure = result.first_failure()
    if failure:
        click.echo(f"Error: {failure}", err=True)
        ctx.exit(EXIT_INVALID)
