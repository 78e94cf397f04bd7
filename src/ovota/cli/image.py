"""``ovota image``: build and inspect ESP32 app images."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import click

from ovota.files import write_atomic
from ovota.formats import FormatError
from ovota.formats.app_image import AppImage, chip_name
from ovota.formats.efuse import SECURE_VERSION_BITS
from ovota.formats.image_builder import build_app_image
from ovota.formats.signature import key_digest, load_private_key, load_public_key, read_signatures, sign_image
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
@click.option(
    "--secure-version",
    type=click.IntRange(0, SECURE_VERSION_BITS),
    default=0,
    show_default=True,
    help="Anti-rollback secure_version in the app descriptor.",
)
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def build(version: str, size: int | None, project: str, secure_version: int, out: Path) -> None:
    """Write a synthetic, fully valid ESP32 app image carrying VERSION to OUT."""
    data = build_app_image(version, size=size, project=project, built=_build_time(), secure_version=secure_version)
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
    signatures = read_signatures(parsed.data, parsed.length)
    if signatures is None:
        click.echo("Signature: none")
    else:
        for block in signatures.blocks:
            verdict = "valid" if block.verifies(signatures.digest) else "invalid"
            click.echo(f"Signature block {block.index}: {block.kind}, key digest {block.key_digest.hex()} ({verdict})")
    failure = result.first_failure()
    if failure:
        click.echo(f"Error: {failure}", err=True)
        ctx.exit(EXIT_INVALID)


def _read_image(file: Path) -> tuple[bytes, AppImage]:
    data = file.read_bytes()
    return data, AppImage.parse(data)


@image.command("sign")
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="RSA-3072 private key (PEM), e.g. from espsecure generate-signing-key --version 2.")  # fmt: skip
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def sign(key_file: Path, file: Path, out: Path) -> None:
    """Append a Secure Boot V2 signature sector to the image FILE, written to OUT (as espsecure sign-data
    --version 2 does: 0xFF padding to 4 KiB, then one signature block)."""
    key = load_private_key(key_file.read_bytes())
    data, parsed = _read_image(file)
    problem = parsed.verify().first_failure()
    if problem:
        raise FormatError(f"{file} is not a valid image: {problem}")
    if read_signatures(data, parsed.length) is not None:
        raise FormatError(f"{file} is already signed: sign the unsigned image")
    signed = sign_image(bytes(data[: parsed.length]), key)
    write_atomic(out, signed)
    digest = key_digest(key.public_key()).hex()
    click.echo(f"Wrote {out}: {len(signed)} bytes, signed by key digest {digest}")


@image.command("verify-signature")
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The signer's public key (PEM), or its private key.")  # fmt: skip
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def verify_signature(key_file: Path, file: Path) -> None:
    """Exit 0 if FILE carries a valid Secure Boot V2 signature block by KEY, else 1 with the reason."""
    digest = key_digest(load_public_key(key_file.read_bytes()))
    data, parsed = _read_image(file)
    signatures = read_signatures(data, parsed.length)
    if signatures is None:
        raise click.ClickException(f"{file} has no signature sector after its {parsed.length}-byte image")
    block = signatures.trusted_by({digest})
    if block is None:
        found = ", ".join(f"{b.key_digest.hex()} ({'valid' if b.verifies(signatures.digest) else 'invalid'})"
                          for b in signatures.blocks)  # fmt: skip
        raise click.ClickException(f"{file} is not validly signed by key {digest.hex()}; its blocks: {found}")
    click.echo(f"Signature block {block.index} of {file} is valid, key digest {digest.hex()}")
