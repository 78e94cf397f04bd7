"""``ovota delta``: esp_delta_ota patches between two app images."""

from __future__ import annotations

import hashlib
from pathlib import Path

import click

from ovota.files import write_atomic
from ovota.formats import FormatError
from ovota.formats.app_image import AppImage
from ovota.formats.delta import apply_patch_bytes, create_patch, patch_info

_file = click.Path(dir_okay=False, exists=True, path_type=Path)
_out = click.Path(dir_okay=False, path_type=Path)


@click.group()
def delta() -> None:
    """Delta patches in Espressif's esp_delta_ota format (detools, sequential, heatshrink)."""


@delta.command("create")
@click.argument("base", type=_file)
@click.argument("new", type=_file)
@click.argument("out", type=_out)
def create(base: Path, new: Path, out: Path) -> None:
    """Write the patch from the app image BASE to the app image NEW."""
    new_data = new.read_bytes()
    patch = create_patch(base.read_bytes(), new_data)
    write_atomic(out, patch)
    share = len(patch) / len(new_data) * 100
    click.echo(
        f"Wrote {out}: {len(patch)} bytes ({share:.1f}% of the new image), sha256 {hashlib.sha256(patch).hexdigest()}"
    )


@delta.command("apply")
@click.argument("base", type=_file)
@click.argument("patch", type=_file)
@click.argument("out", type=_out)
def apply(base: Path, patch: Path, out: Path) -> None:
    """Apply PATCH to BASE and write the verified image to OUT (refused if PATCH was made for another base)."""
    image = apply_patch_bytes(base.read_bytes(), patch.read_bytes())
    problem = AppImage.parse(image).verify().first_failure()
    if problem is not None:
        raise FormatError(f"the patched image is not valid: {problem}")
    write_atomic(out, image)
    click.echo(f"Wrote {out}: {len(image)} bytes, sha256 {hashlib.sha256(image).hexdigest()}")


@delta.command("info")
@click.argument("patch", type=_file)
def info(patch: Path) -> None:
    """Show a patch's base image hash and its detools parameters."""
    header, details = patch_info(patch.read_bytes())
    click.echo(f"Base image hash: {header.base_hash.hex()}")
    for key, value in details.items():
        click.echo(f"{key.replace('_', ' ').capitalize()}: {value}")
