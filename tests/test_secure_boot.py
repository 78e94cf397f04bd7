"""Secure Boot V2 and anti-rollback: images signed by ovota and by espsecure, eFuses read by espefuse, and a
module that refuses what its eFuses do not allow, with nothing it relies on changed."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from ovota.device.efuses import efuse_path
from ovota.device.flash import Flash, PowerCut, PowerLoss
from ovota.device.layout import read_layout
from ovota.device.module import Module, create_module
from ovota.formats.app_image import AppImage
from ovota.formats.efuse import Efuses
from ovota.formats.signature import key_digest, load_private_key, sign_image
from tests.conftest import CliRunner
from tests.module_helpers import REPLAY_CLOCK, fat_windows, logged, run_commands, snapshot, store_of
from tests.real_builds import real_shaped_build
from tests.servers import OvotaServer, StaticServer
from tests.signing import NEW, OLD, Keys, forged, signed, tool, unsigned

# -- images -----------------------------------------------------------------------------------------------


def test_ovota_signature_passes_espsecure(tmp_path: Path, keys: Keys, ovota: CliRunner) -> None:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(unsigned(NEW))
    out = tmp_path / "signed.bin"
    run = ovota("image", "sign", "--key", keys.signing, plain, out)
    assert run.code == 0, run.err
    data = out.read_bytes()
    image_length = AppImage.parse(data).length
    # espsecure's layout: 0xFF to a 4 KiB boundary, then one 4 KiB sector, 0xFF after the 1216-byte block.
    assert len(data) % 4096 == 0 and len(data) == -(-image_length // 4096) * 4096 + 4096
    assert data[image_length:-4096] == b"\xff" * (len(data) - 4096 - image_length)
    assert data[-4096] == 0xE7 and data[-4096 + 1216 :] == b"\xff" * (4096 - 1216)
    verified = tool("espsecure", "verify-signature", "--version", "2", "--keyfile", keys.public, out)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Signature block 0 verification successful" in verified.stdout
    refused = tool("espsecure", "verify-signature", "--version", "2", "--keyfile", keys.other, out)
    assert refused.returncode != 0


def test_espsecure_signature_reads_in_ovota(tmp_path: Path, keys: Keys, ovota: CliRunner) -> None:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(unsigned(NEW, secure_version=4))
    out = tmp_path / "signed.bin"
    made = tool("espsecure", "sign-data", "--version", "2", "--keyfile", keys.signing, "-o", out, plain)
    assert made.returncode == 0, made.stdout + made.stderr
    info = ovota("image", "info", out)
    assert info.code == 0, info.err
    assert "Secure version: 4" in info.out
    assert f"Signature block 0: RSA-3072, key digest {keys.digest.hex()} (valid)" in info.out.splitlines()
    assert ovota("image", "verify-signature", "--key", keys.public, out).code == 0
    assert ovota("image", "verify-signature", "--key", keys.signing, out).code == 0  # a private key works too
    other = ovota("image", "verify-signature", "--key", keys.other, out)
    assert other.code == 1
    assert f"its blocks: {keys.digest.hex()} (valid)" in other.err
    # A forged signature: the block still parses, but it no longer verifies.
    bad = tmp_path / "tampered.bin"
    bad.write_bytes(forged(out.read_bytes()))
    assert f"key digest {keys.digest.hex()} (invalid)" in ovota("image", "info", bad).out
    assert ovota("image", "verify-signature", "--key", keys.public, bad).code == 1
    assert ovota("image", "info", plain).out.count("Signature: none") == 1


def test_key_digest_matches_espsecure(keys: Keys) -> None:
    assert key_digest(load_private_key(keys.signing.read_bytes()).public_key()) == keys.digest


def test_sign_refuses_bad_input(tmp_path: Path, keys: Keys, ovota: CliRunner) -> None:
    html = tmp_path / "page.bin"
    html.write_bytes(b"<html>not firmware</html>" * 40)
    run = ovota("image", "sign", "--key", keys.signing, html, tmp_path / "out.bin")
    assert run.code != 0 and "looks like an HTML page" in run.err
    assert not (tmp_path / "out.bin").exists()
    twice = tmp_path / "signed.bin"
    twice.write_bytes(signed(keys.signing, NEW))
    again = ovota("image", "sign", "--key", keys.signing, twice, tmp_path / "out.bin")
    assert again.code != 0 and "already signed" in again.err
    public_only = ovota("image", "sign", "--key", keys.public, twice, tmp_path / "out.bin")
    assert public_only.code != 0 and "private key" in public_only.err
    assert not (tmp_path / "out.bin").exists()


# -- eFuses -----------------------------------------------------------------------------------------------


def espefuse_summary(flash: Path) -> str:
    run = tool("espefuse", "--chip", "esp32", "--virt", "--path-efuse-file", efuse_path(flash), "summary")
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def summary_value(summary: str, name: str) -> str:
    line = next(line for line in summary.splitlines() if line.startswith(f"{name} ("))
    return line.split("=", 1)[1].strip()


def test_efuses_read_by_espefuse(tmp_path: Path, keys: Keys, ovota: CliRunner) -> None:
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(signed(keys.signing, OLD, secure_version=2))
    flash = tmp_path / "m.img"
    created = ovota("module", "create", flash, "--firmware", firmware, "--secure-boot-key", keys.public,
                    "--anti-rollback")  # fmt: skip
    assert created.code == 0, created.err
    assert flash.stat().st_size == 16 * 1024 * 1024
    summary = espefuse_summary(flash)
    assert summary_value(summary, "ABS_DONE_1").startswith("True")
    assert summary_value(summary, "CHIP_VER_REV1").startswith("True")
    block2 = summary.split("BLOCK2 (BLOCK2)", 1)[1].splitlines()[1]
    assert " ".join(f"{b:02x}" for b in keys.digest) in block2
    assert summary_value(summary, "SECURE_VERSION").startswith("0 ")
    # The first boot confirms the firmware: the counter is burned to its secure version (a thermometer code).
    assert ovota("module", "run", flash, "ota status nocheck").code == 0
    assert summary_value(espefuse_summary(flash), "SECURE_VERSION").startswith("3 R/W (0x00000003)")
    efuse = ovota("module", "efuse", flash)
    assert f"BLOCK2 key digest {keys.digest.hex()} (write-protected)" in efuse.out
    assert "Anti-rollback:   on, secure version 2" in efuse.out


def test_espefuse_burned_file_reads_the_same(tmp_path: Path, keys: Keys) -> None:
    """A virtual chip provisioned by espefuse itself holds what ovota's module creation writes."""
    path = tmp_path / "chip.efuse"
    base: list[str | Path] = ["--chip", "esp32", "--virt", "--path-efuse-file", path, "--do-not-confirm"]
    commands: list[list[str | Path]] = [
        ["burn-efuse", "CHIP_VER_REV1", "1", "CHIP_VER_REV2", "1"],
        ["burn-key-digest", keys.signing],
        ["burn-efuse", "ABS_DONE_1", "1", "SECURE_VERSION", "7"],
    ]
    for command in commands:
        run = tool("espefuse", *base, *command)
        assert run.returncode == 0, run.stdout + run.stderr
    theirs = Efuses.from_file_bytes(path.read_bytes())
    ours = Efuses.blank(3).with_secure_boot(keys.digest)
    ours = ours.burn_word(0x88, ours.secure_version_bits(3))
    for fuses in (theirs, ours):
        assert (fuses.chip_revision, fuses.secure_boot, fuses.key_digest, fuses.key_digest_protected) == (
            3, True, keys.digest, True)  # fmt: skip
        assert fuses.secure_version == 3


def test_plain_module_has_no_efuse_file(tmp_path: Path, ovota: CliRunner) -> None:
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(unsigned(OLD))
    flash = tmp_path / "m.img"
    efuse_path(flash).write_bytes(b"left over from an earlier module")
    assert ovota("module", "create", flash, "--firmware", firmware).code == 0
    assert not efuse_path(flash).exists()
    assert "no secure boot, no anti-rollback" in ovota("module", "efuse", flash).out


def test_create_refuses_firmware_the_chip_would_not_boot(tmp_path: Path, keys: Keys, ovota: CliRunner) -> None:
    firmware = tmp_path / "fw.bin"
    flash = tmp_path / "m.img"
    for data, reason in ((unsigned(OLD), "no signature block"), (signed(keys.other, OLD), "is signed by key")):
        firmware.write_bytes(data)
        run = ovota("module", "create", flash, "--firmware", firmware, "--secure-boot-key", keys.signing)
        assert run.code != 0 and reason in run.err, run.err
        assert not flash.exists() and not efuse_path(flash).exists()
    firmware.write_bytes(signed(keys.signing, OLD))
    rev1 = ovota("module", "create", flash, "--firmware", firmware, "--secure-boot-key", keys.signing,
                 "--hardware", "OVMS WIFI BLE BT cores=2 rev=ESP32/1")  # fmt: skip
    assert rev1.code != 0 and "revision 3" in rev1.err


# -- enforcement on the module ----------------------------------------------------------------------------


def secure_module(tmp_path: Path, keys: Keys, anti_rollback: bool = False, secure_version: int = 1) -> Path:
    flash = tmp_path / "m.img"
    create_module(flash, "v3-35", signed(keys.signing, OLD, secure_version), None, keys.digest, anti_rollback)
    run_commands(flash, "config set vehicle id DEMO")
    return flash


def test_module_refuses_unsigned_and_foreign_images(tmp_path: Path, keys: Keys) -> None:
    flash = secure_module(tmp_path, keys)
    sd = tmp_path / "sd"
    sd.mkdir()
    tampered = forged(signed(keys.signing, NEW))
    (sd / "unsigned.bin").write_bytes(unsigned(NEW))
    (sd / "foreign.bin").write_bytes(signed(keys.other, NEW))
    (sd / "tampered.bin").write_bytes(tampered)
    before = snapshot(flash)
    efuses = efuse_path(flash).read_bytes()
    reasons = {
        "unsigned": "the image has no signature block",
        "foreign": f"is signed by key {key_digest(load_private_key(keys.other.read_bytes()).public_key()).hex()}",
        "tampered": "the signature does not match the image",
    }
    for name, reason in reasons.items():
        out = run_commands(flash, f"ota flash vfs /sd/{name}.bin", sd=sd).output
        errors = [line for line in out.splitlines() if line.startswith("Error:")]
        assert errors == ["Error: ESP32 error #5379 finalising OTA operation - state is inconsistent"], out
        assert reason in out
        assert snapshot(flash) == before
        assert efuse_path(flash).read_bytes() == efuses
    # espsecure's own signature is accepted, and the module boots it.
    (tmp_path / "plain.bin").write_bytes(unsigned(NEW))
    made = tool("espsecure", "sign-data", "--version", "2", "--keyfile", keys.signing, "-o", sd / "good.bin",
                tmp_path / "plain.bin")  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    out = run_commands(flash, "ota flash vfs /sd/good.bin", "module reset", sd=sd).output
    assert "OTA flash was successful" in out
    module = Module.open(flash)
    assert (module.running.name, module.running_version) == ("ota_1", NEW)
    module.close()


def test_boot_falls_back_past_unsigned_slot(tmp_path: Path, keys: Keys) -> None:
    flash = secure_module(tmp_path, keys)
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "copy.bin").write_bytes(signed(keys.signing, NEW))
    run_commands(flash, "ota flash vfs /sd/copy.bin", sd=sd)
    # Replace ota_1's image behind the module's back (as a flasher would): a valid image, but unsigned.
    with Flash(flash) as chip:
        slot = read_layout(chip).get("ota_1")
        assert slot is not None
        chip.erase(slot.offset, 0x10000)
        chip.program(slot.offset, unsigned(NEW))
    module = Module.open(flash)
    assert module.boot_partition is not None and module.boot_partition.name == "ota_1"
    assert (module.running.name, module.running_version) == ("ota_0", OLD)
    module.close()
    out = run_commands(flash, "ota boot ota_1").output
    assert "Error: partition contained invalid app image, or signature validation failed" in out.splitlines()


def test_anti_rollback_raises_counter_and_refuses_downgrade(tmp_path: Path, keys: Keys) -> None:
    flash = secure_module(tmp_path, keys, anti_rollback=True, secure_version=1)
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "v2.bin").write_bytes(signed(keys.signing, NEW, secure_version=2))
    (sd / "v1.bin").write_bytes(signed(keys.signing, "3.3.006-3-gccccccc", secure_version=1))
    assert Efuses.from_file_bytes(efuse_path(flash).read_bytes()).secure_version == 1
    # Booted but not confirmed yet: the counter stays, so the old image can still be rolled back to.
    out = run_commands(flash, "ota flash vfs /sd/v2.bin", "module reset", "ota status nocheck", sd=sd).output
    assert "OTA flash was successful" in out and "Running partition: ota_1" in out.splitlines()
    assert Efuses.from_file_bytes(efuse_path(flash).read_bytes()).secure_version == 1
    assert boots(flash) == ("ota_0", OLD)  # a reset without confirming rolls back
    out = run_commands(flash, "ota boot ota_1", "module reset", "ota rollback confirm").output
    assert "Firmware in ota_1 confirmed valid" in out
    assert Efuses.from_file_bytes(efuse_path(flash).read_bytes()).secure_version == 2
    summary = espefuse_summary(flash)
    assert summary_value(summary, "SECURE_VERSION").startswith("3 R/W (0x00000003)")
    before = snapshot(flash)
    # ota_0 still holds the secure-version-1 image: `ota boot` refuses it (and erases it, as ESP-IDF does).
    out = run_commands(flash, "ota boot ota_0").output
    assert "Error: cannot set OTA boot partition (error 5380)" in out.splitlines()
    assert snapshot(flash) == before
    out = run_commands(flash, "ota flash vfs /sd/v1.bin", sd=sd).output
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: ESP32 error #5380 when writing to flash - state is inconsistent"], out
    assert snapshot(flash) == before
    module = Module.open(flash)
    assert (module.running.name, module.running_version) == ("ota_1", NEW)
    module.close()


def test_rollback_cannot_be_disabled_with_anti_rollback(tmp_path: Path, keys: Keys) -> None:
    flash = secure_module(tmp_path, keys, anti_rollback=True)
    out = run_commands(flash, "ota rollback disable").output
    assert out.startswith("Error:") and "anti-rollback" in out


# -- power loss -------------------------------------------------------------------------------------------


def boots(flash: Path) -> tuple[str, str]:
    module = Module.open(flash)
    try:
        return module.running.name, module.running_version
    finally:
        module.close()


@pytest.mark.parametrize("torn", [False, True])
def test_power_cut_during_signed_update_and_counter_raise(tmp_path: Path, keys: Keys, torn: bool) -> None:
    pristine = secure_module(tmp_path, keys, anti_rollback=True, secure_version=1)
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "v2.bin").write_bytes(signed(keys.signing, NEW, secure_version=2))
    commands = ["ota flash vfs /sd/v2.bin", "module reset", "ota rollback confirm", "module reset"]
    work = tmp_path / "work.img"

    def fresh() -> None:
        shutil.copyfile(pristine, work)
        shutil.copyfile(efuse_path(pristine), efuse_path(work))

    fresh()
    uncut = run_commands(work, *commands, sd=sd, clock_at=REPLAY_CLOCK)
    total, windows = uncut.ops, fat_windows(uncut.trace, [store_of(pristine)])
    assert boots(work) == ("ota_1", NEW)
    efuse_ops = 0
    for at in range(total):
        fresh()
        with pytest.raises(PowerLoss):
            run_commands(work, *commands, sd=sd, cut=PowerCut(at, torn), clock_at=REPLAY_CLOCK)
        running, version = boots(work)  # the power comes back: something valid boots
        counter = Efuses.from_file_bytes(efuse_path(work).read_bytes()).secure_version
        assert (running, version) in {("ota_0", OLD), ("ota_1", NEW)}, at
        assert counter in (1, 2)
        if counter == 2:
            assert version == NEW, f"cut at {at}: counter raised but the old image runs"
        store = Module.open(work)
        # A config sector half-written by the cut is lost, as on a real module (see SectorWindows).
        assert store.config.get("vehicle", "id") == "DEMO" or (at, torn) in windows
        store.close()
        efuse_ops += counter != 1
    assert efuse_ops > 0  # some cuts came after the counter was raised
    assert total >= 10


# -- the other flash paths --------------------------------------------------------------------------------


def test_secure_module_updates_by_delta_from_a_trusting_server(tmp_path: Path, keys: Keys, ovota: CliRunner) -> None:
    private = load_private_key(keys.signing.read_bytes())
    builds = {v: sign_image(real_shaped_build(v.encode(), rodata=300_000, seed=b"tree"), private) for v in (OLD, NEW)}
    repo = tmp_path / "repo"
    assert ovota("release", "trust", "--repo", repo, "--product", "v3.3-5", "--key", keys.public).code == 0
    for version in (OLD, NEW):
        (tmp_path / "x.bin").write_bytes(builds[version])
        run = ovota("release", "publish", tmp_path / "x.bin", "--repo", repo, "--tag", "main")
        assert run.code == 0, run.err
    server = OvotaServer(repo, deltas=True)
    try:
        deadline = time.monotonic() + 60
        while not delta_listed(server):
            assert time.monotonic() < deadline, "no delta patch was made"
            time.sleep(0.2)
        flash = tmp_path / "m.img"
        create_module(flash, "v3-35", builds[OLD], None, keys.digest)
        run_commands(flash, f"config set ota server {server.base}", "config set ota delta yes")
        out = run_commands(flash, "ota flash http", "module reset", "ota status nocheck").output
        assert "Delta applied" in out and "OTA flash was successful" in out, out
        assert "Running partition: ota_1" in out and f"Firmware:          {NEW}/ota_1/main" in out
        with Flash(flash) as chip:
            slot = read_layout(chip).get("ota_1")
            assert slot is not None
            assert chip.read(slot.offset, len(builds[NEW])) == builds[NEW]  # signature sector included
    finally:
        server.stop()


def delta_listed(server: OvotaServer) -> bool:
    request = urllib.request.Request(f"{server.url}/firmware/ota/v3.3-5/main/", headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return bool(json.loads(response.read())[0].get("deltas"))


def test_sd_card_and_automatic_update_refuse_unsigned(tmp_path: Path, keys: Keys, ovota: CliRunner) -> None:
    flash = secure_module(tmp_path, keys)
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "ovms3.bin").write_bytes(unsigned(NEW))
    before = snapshot(flash)
    run = ovota("module", "run", flash, "--sd", sd, "--", "ota status nocheck")
    assert logged(run.out, "AutoFlashSD OTA flash failed"), run.out
    assert "Running partition: ota_0" in run.out
    assert snapshot(flash) == before and (sd / "ovms3.bin").exists()
    root = tmp_path / "www"
    static = StaticServer(root)
    try:
        static.publish("v3.3-5", "main", unsigned(NEW), f"{NEW}\n")
        run_commands(flash, f"config set ota server {static.base}")
        before = snapshot(flash)
        out = run_commands(flash, "ota flash auto force").output
        assert "AutoFlash: ESP32 error #5379: secure boot: the image has no signature block" in out, out
        assert snapshot(flash) == before
        out = run_commands(flash, "ota flash http").output
        errors = [line for line in out.splitlines() if line.startswith("Error:")]
        assert errors == ["Error: ESP32 error #5379 finalising OTA operation - state is inconsistent"], out
        assert snapshot(flash) == before
    finally:
        static.stop()
