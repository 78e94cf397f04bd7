"""Delta patches in the esp_delta_ota format: byte-identical to Espressif's generator, applied and refused right."""

from __future__ import annotations

import io
import re
from pathlib import Path

import detools

from ovota.formats.delta import MAGIC
from tests.conftest import CliRunner
from tests.real_builds import real_shaped_build
from tests.test_app_image import esptool_info, esptool_verdicts

SEED = b"ovms3-tree"


def builds(tmp_path: Path) -> tuple[Path, Path]:
    base = tmp_path / "base.bin"
    new = tmp_path / "new.bin"
    base.write_bytes(real_shaped_build(b"3.3.006", seed=SEED))
    new.write_bytes(real_shaped_build(b"3.3.006-12-g0123abc", seed=SEED))
    return base, new


def espressif_patch(base: Path, new: Path) -> bytes:
    """What Espressif's esp_delta_ota_patch_gen.py writes: esptool's validation hash, then detools' patch."""
    code, output = esptool_info(base)
    assert code == 0
    match = re.search(r"^Validation hash: ([0-9a-f]{64}) \(valid\)", output, re.M)
    assert match, output
    body = io.BytesIO()
    with base.open("rb") as b, new.open("rb") as n:
        detools.create_patch(b, n, body, compression="heatshrink")
    return MAGIC.to_bytes(4, "little") + bytes.fromhex(match.group(1)) + bytes(28) + body.getvalue()


def test_create_is_byte_identical_to_espressifs_generator(tmp_path: Path, ovota: CliRunner) -> None:
    base, new = builds(tmp_path)
    patch = tmp_path / "patch.bin"
    run = ovota("delta", "create", base, new, patch)
    assert run.code == 0, run.err
    assert patch.read_bytes() == espressif_patch(base, new)
    assert len(patch.read_bytes()) < new.stat().st_size * 0.05
    assert run.out.startswith(f"Wrote {patch}: {patch.stat().st_size} bytes (")


def test_apply_rebuilds_the_new_image(tmp_path: Path, ovota: CliRunner) -> None:
    base, new = builds(tmp_path)
    patch, out = tmp_path / "patch.bin", tmp_path / "out.bin"
    assert ovota("delta", "create", base, new, patch).code == 0
    run = ovota("delta", "apply", base, patch, out)
    assert run.code == 0, run.err
    assert out.read_bytes() == new.read_bytes()
    code, output = esptool_info(out)
    assert code == 0 and esptool_verdicts(output) == ("valid", "valid")
    info = ovota("delta", "info", patch)
    assert info.code == 0
    assert info.out.splitlines()[0] == f"Base image hash: {base.read_bytes()[-32:].hex()}"
    assert "Compression: heatshrink" in info.out and f"To size: {new.stat().st_size}" in info.out


def test_wrong_base_and_bad_patches_are_refused(tmp_path: Path, ovota: CliRunner) -> None:
    base, new = builds(tmp_path)
    patch, out = tmp_path / "patch.bin", tmp_path / "out.bin"
    assert ovota("delta", "create", base, new, patch).code == 0
    run = ovota("delta", "apply", new, patch, out)  # made for base, applied to new
    assert run.code == 2 and run.err.startswith("Error: delta patch is for base ") and not out.exists()
    data = bytearray(patch.read_bytes())
    data[0] ^= 0xFF
    (tmp_path / "magic.bin").write_bytes(bytes(data))
    run = ovota("delta", "apply", base, tmp_path / "magic.bin", out)
    assert (run.code, run.err) == (2, "Error: not an esp_delta_ota patch: magic 0xfccddeef, expected 0xfccdde10\n")
    (tmp_path / "cut.bin").write_bytes(patch.read_bytes()[:100])
    run = ovota("delta", "apply", base, tmp_path / "cut.bin", out)
    assert run.code == 2 and run.err.count("\n") == 1 and not out.exists()
    html = tmp_path / "page.bin"
    html.write_text("<html>" + "x" * 100 + "</html>")
    run = ovota("delta", "create", html, new, patch)
    assert run.code == 2 and "not an ESP32 image" in run.err
