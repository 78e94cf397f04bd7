"""App images: what ``ovota image build`` makes, checked by esptool itself, and how bad input fails."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovota.formats import FormatError
from ovota.formats.app_image import AppImage
from ovota.formats.image_builder import build_app_image
from ovota.formats.version_marker import image_version
from tests.conftest import CliRunner

BUILT = datetime(2026, 7, 4, 9, 5, 3, tzinfo=UTC)


def esptool_info(path: Path) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "esptool", "--chip", "esp32", "image-info", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def esptool_verdicts(output: str) -> tuple[str, str]:
    checksum = re.search(r"^Checksum: 0x[0-9a-f]{2} \((valid|invalid)", output, re.M)
    digest = re.search(r"^Validation hash: [0-9a-f]{64} \((valid|invalid)", output, re.M)
    assert checksum and digest, output
    return checksum.group(1), digest.group(1)


def ovota_verdicts(output: str) -> tuple[str, str]:
    checksum = re.search(r"^Checksum: 0x[0-9a-f]{2} \((valid|invalid)\)$", output, re.M)
    digest = re.search(r"^Hash: [0-9a-f]{64} \((valid|invalid)\)$", output, re.M)
    assert checksum and digest, output
    return checksum.group(1), digest.group(1)


@pytest.mark.parametrize(
    ("version", "size"),
    [
        ("3.3.006", None),
        ("3.3.005-928-g7f8b5d676", 2_100_000 // 16 * 16),
        ("3.3.006-172-g362f87425-dirty-with-a-long-tail", 4096),
    ],
)
def test_built_images_pass_esptool(tmp_path: Path, ovota: CliRunner, version: str, size: int | None) -> None:
    out = tmp_path / "ovms3.bin"
    args = ["image", "build", "--version", version, out] + (["--size", str(size)] if size else [])
    run = ovota(*args)
    assert run.code == 0, run.err
    if size:
        assert out.stat().st_size == size
    code, output = esptool_info(out)
    assert code == 0, output
    assert esptool_verdicts(output) == ("valid", "valid")
    assert "Project name: ovms3" in output
    assert f"App version: {version[:31]}" in output
    info = ovota("image", "info", out)
    assert info.code == 0, info.err
    assert "Project: ovms3" in info.out.splitlines()
    assert f"Version: {version[:31]}" in info.out.splitlines()
    assert f"OVMS version: {version}" in info.out.splitlines()


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("segment", ("invalid", "invalid")),
        ("checksum", ("invalid", "invalid")),
        ("hash", ("valid", "invalid")),
        ("header", ("valid", "invalid")),
        ("padding", ("valid", "invalid")),
    ],
)
def test_ovota_agrees_with_esptool_on_corruption(
    tmp_path: Path, ovota: CliRunner, where: str, expected: tuple[str, str]
) -> None:
    data = bytearray(build_app_image("3.3.006", size=8192, built=BUILT))
    image = AppImage.parse(bytes(data))
    position = {
        "segment": image.segments[-1].offset + 100,
        "checksum": image.checksum_offset,
        "hash": image.length - 5,
        "header": 5,  # entry address byte: covered by the hash, not by the checksum
        "padding": image.checksum_offset - 3,
    }[where]
    data[position] ^= 0x5A
    path = tmp_path / "corrupt.bin"
    path.write_bytes(bytes(data))
    _, output = esptool_info(path)
    assert esptool_verdicts(output) == expected
    info = ovota("image", "info", path)
    assert ovota_verdicts(info.out) == expected
    assert info.code == 1
    assert info.err.startswith("Error: image ")


def test_image_info_bad_input_exits_2(tmp_path: Path, ovota: CliRunner) -> None:
    html = tmp_path / "error.html"
    html.write_text("<html><body>404 Not Found</body></html>\n")
    run = ovota("image", "info", html)
    assert (run.code, run.out) == (2, "")
    assert run.err == "Error: not an ESP32 image: first byte 0x3c, expected 0xe9 (it looks like an HTML page)\n"

    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(build_app_image("3.3.006", size=4096, built=BUILT)[:3000])
    run = ovota("image", "info", truncated)
    assert run.code == 2
    assert run.err.startswith("Error: image is truncated")

    run = ovota("image", "info", tmp_path / "missing.bin")
    assert run.code == 2
    assert run.err.startswith("Error: No such file or directory")


def test_wrong_chip_is_invalid(tmp_path: Path, ovota: CliRunner) -> None:
    path = tmp_path / "s3.bin"
    path.write_bytes(build_app_image("3.3.006", built=BUILT, chip_id=9))
    run = ovota("image", "info", path)
    assert run.code == 1
    assert "Chip: ESP32-S3" in run.out
    assert run.err == "Error: image is for ESP32-S3, this device is ESP32\n"


def test_build_rejects_bad_arguments(tmp_path: Path, ovota: CliRunner) -> None:
    run = ovota("image", "build", "--version", "3.3.006", "--size", "1000", tmp_path / "x.bin")
    assert run.code == 2 and "not a multiple of 16" in run.err
    run = ovota("image", "build", "--version", "3.3 006", tmp_path / "x.bin")
    assert run.code == 2 and "has a space at offset 3" in run.err
    assert not (tmp_path / "x.bin").exists()


def test_descriptor_and_placement_rules() -> None:
    image = AppImage.parse(build_app_image("3.3.006-12-gabcdef", built=BUILT, project="demo"))
    desc = image.app_descriptor()
    assert desc is not None
    assert (desc.version, desc.project_name, desc.date, desc.time) == (
        "3.3.006-12-gabcdef",
        "demo",
        "Jul  4 2026",
        "09:05:03",
    )
    assert image.verify(partition_offset=0x10000, partition_size=0x400000).ok
    misplaced = image.verify(partition_offset=0x18000)
    assert misplaced.problems == ("Segment 0 load address 0x3f400020, doesn't match data 0x00018020",)
    too_big = image.verify(partition_size=256)
    assert too_big.first_failure() == f"image is {image.length} bytes, larger than the 256-byte partition"


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_give_clean_errors(data: bytes) -> None:
    _exercise(data)
    _exercise(b"\xe9" + data)  # past the magic byte, into the segment parser


_SMALL = build_app_image("3.3.006", built=BUILT)


@given(st.lists(st.tuples(st.integers(0, len(_SMALL) - 1), st.integers(0, 255)), max_size=6), st.integers(0, 600))
def test_mutated_images_give_clean_errors(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_SMALL)
    for position, value in edits:
        data[position] = value
    _exercise(bytes(data[: len(data) - cut]))


def _exercise(data: bytes) -> None:
    try:
        image = AppImage.parse(data)
    except FormatError as err:
        assert str(err) and "\n" not in str(err)
        return
    result = image.verify(partition_offset=0x10000, partition_size=0x700000)
    assert result.ok == (result.first_failure() is None)
    image.app_descriptor()
    image_version(data)
