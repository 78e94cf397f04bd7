"""``ovota module``: create an emulated OVMS module's flash, and drive its console."""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import click

from ovota.device.bootloader import NoBootableApp
from ovota.device.console.shell import PROMPT, Shell
from ovota.device.console.writer import Writer
from ovota.device.efuses import efuse_path
from ovota.device.flash import Flash, FlashError
from ovota.device.identity import read_identity
from ovota.device.images import stored_file, verify_partition_image
from ovota.device.layout import read_layout
from ovota.device.layouts import LAYOUTS
from ovota.device.module import Module, ModuleError, create_module
from ovota.device.store import StoreError
from ovota.files import write_atomic
from ovota.formats import FormatError
from ovota.formats.efuse import SECURE_VERSION, Efuses
from ovota.formats.partition_table import APP
from ovota.formats.signature import key_digest, load_public_key

EXIT_COMMAND_ERROR = 1

_flash_arg = click.argument("flash", type=click.Path(dir_okay=False, exists=True, path_type=Path))
_sd_option = click.option(
    "--sd", "sd", type=click.Path(file_okay=False, exists=True, path_type=Path), help="Folder mounted at /sd."
)


@click.group()
def module() -> None:
    """Emulated OVMS modules: a 16 MB flash image file is the device."""


@module.command("create")
@click.argument("flash", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--layout", type=click.Choice(sorted(LAYOUTS)), default="v3-35", show_default=True)
@click.option("--firmware", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True)
@click.option("--hardware", help='Hardware string, e.g. "OVMS WIFI BLE BT cores=2 rev=ESP32/3; MODEM SIM7600".')
@click.option(
    "--secure-boot-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Enable Secure Boot V2 with this RSA-3072 key (PEM, private or public): its digest goes into eFuse BLOCK2.",
)
@click.option("--anti-rollback", is_flag=True, help="Build the bootloader with the eFuse secure-version counter.")
def create(
    flash: Path, layout: str, firmware: Path, hardware: str | None, secure_boot_key: Path | None, anti_rollback: bool
) -> None:
    """Write a complete module flash with FIRMWARE in its first app slot (and FLASH.efuse with security on)."""
    digest = key_digest(load_public_key(secure_boot_key.read_bytes())) if secure_boot_key else None
    create_module(flash, layout, firmware.read_bytes(), hardware, digest, anti_rollback)
    extras = [f"secure boot key digest {digest.hex()}"] if digest else []
    extras += ["anti-rollback"] if anti_rollback else []
    click.echo(f"Created {flash}: layout {layout}, firmware {firmware}" + "".join(f", {e}" for e in extras))


@module.command("efuse")
@_flash_arg
def efuse(flash: Path) -> None:
    """Summarise the module's eFuses (FLASH.efuse, readable by espefuse --virt) without powering it on."""
    path = efuse_path(flash)
    if not path.exists():
        click.echo(f"{flash} has no eFuse file ({path.name}): no secure boot, no anti-rollback (as OVMS)")
        return
    fuses = Efuses.from_file_bytes(path.read_bytes())
    _lock(flash, shared=True)
    try:
        chip = Flash(flash)
    except FlashError as err:
        raise FormatError(str(err)) from None
    with chip:
        nvs = read_layout(chip).get("nvs")
        anti_rollback = read_identity(chip, nvs).anti_rollback
    click.echo(f"eFuse file:      {path}")
    click.echo(f"Chip revision:   {fuses.chip_revision}")
    if fuses.secure_boot:
        protected = "write-protected" if fuses.key_digest_protected else "not write-protected"
        click.echo(
            f"Secure boot:     V2 enabled (ABS_DONE_1), BLOCK2 key digest {fuses.key_digest.hex()} ({protected})"
        )
    else:
        click.echo("Secure boot:     off")
    counter = f"secure version {fuses.secure_version} (SECURE_VERSION 0x{fuses.word(SECURE_VERSION):08x})"
    click.echo(f"Anti-rollback:   {'on' if anti_rollback else 'off'}, {counter}")


_held: list[int] = []  # lock descriptors, held until the process ends


def _lock(flash: Path, shared: bool = False) -> None:
    """Hold the flash file for this process: one module process (run, shell, web) at a time, or readers (dump,
    efuse) while none runs. A second one would write the same chip under the first one's feet."""
    try:
        fd = os.open(flash, os.O_RDONLY)
    except OSError:
        return  # opening the flash itself reports it
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        message = f"{flash} is in use by another ovota module process (module run, shell or web)"
        raise click.ClickException(message) from None
    _held.append(fd)


def _power_on(flash: Path, sd: Path | None) -> Module:
    _lock(flash)
    try:
        return Module.open(flash, sd)
    except (ModuleError, NoBootableApp, FlashError, StoreError, FormatError) as err:
        raise click.ClickException(str(err)) from None


@module.command("run")
@_flash_arg
@_sd_option
@click.argument("commands", nargs=-1, required=True)
def run(flash: Path, sd: Path | None, commands: tuple[str, ...]) -> None:
    """Power on, run each console command in order; exit 1 if any failed (an Error: or Usage: line, or
    Unrecognised command)."""
    device = _power_on(flash, sd)
    out = Writer(sys.stdout)
    shell: Shell | None = None
    try:
        shell = _console(device, out)
        for command in commands:
            out.write(f"{PROMPT}{command}\n")
            shell.execute(command)
        shell.settle()  # the module stays on until its AutoFlash task has ended (and restarts if it flashed)
    finally:
        if shell is not None:
            shell.power_off()
        device.close()
    if out.errors:
        sys.exit(EXIT_COMMAND_ERROR)


@module.command("shell")
@_flash_arg
@_sd_option
def shell(flash: Path, sd: Path | None) -> None:
    """Interactive OVMS# console (exit with Ctrl-D or 'exit')."""
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    device = _power_on(flash, sd)
    console: Shell | None = None
    stop = threading.Event()
    try:
        console = _console(device, Writer(sys.stdout), ask=lambda prompt: input())
        # The module keeps living between lines typed: its timers run and a finished update reboots it.
        threading.Thread(target=_keep_alive, args=(console, stop), daemon=True).start()
        while True:
            try:
                line = input(PROMPT if sys.stdin.isatty() else "")
            except EOFError:
                break
            if line.strip() in ("exit", "quit"):
                break
            console.execute(line)
        console.settle()
    finally:
        stop.set()
        if console is not None:
            console.power_off()
        device.close()


def _console(device: Module, out: Writer, ask: Callable[[str], str] | None = None) -> Shell:
    """The console after power-on; the boot's own writes (/store's FAT) can fail as one error."""
    try:
        return Shell(device, out, ask)
    except StoreError as err:
        raise click.ClickException(str(err)) from None


def _keep_alive(console: Shell, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        console.idle()


@module.command("dump")
@_flash_arg
@click.option("--partition", "label", help="Partition label, e.g. ota_1, factory, store; without it, the whole flash.")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def dump(flash: Path, label: str | None, out: Path) -> None:
    """Write a partition's bytes to OUT; for an app partition with a valid image, just that image (and its
    signature sector, if it is signed). Without --partition, the whole flash, for `esptool write-flash 0 OUT`
    after an update was rehearsed on a module's dump.

    Reads the flash without powering the module on, so nothing on it changes.
    """
    _lock(flash, shared=True)
    try:
        chip = Flash(flash)
    except FlashError as err:
        raise FormatError(str(err)) from None
    with chip:
        if label is None:
            data = chip.read(0, chip.size)
            write_atomic(out, data)
            click.echo(f"Wrote {out}: the whole flash, {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
            return
        layout = read_layout(chip)
        part = layout.get(label)
        if part is None:
            names = ", ".join(p.name for p in layout.table)
            raise FormatError(f"no partition {label!r} in the table (it has {names})")
        image = stored_file(chip, part) if part.type == APP else None
        if image is not None:
            data, what = image, f"app image of {len(image)} bytes"
        else:
            data = chip.read(part.offset, part.size)
            what = f"whole partition, {len(data)} bytes"
            if part.type == APP:
                what += f" (no valid image: {verify_partition_image(chip, part)})"
    write_atomic(out, data)
    click.echo(f"Wrote {out}: {part.name} at 0x{part.offset:x}, {what}, sha256 {hashlib.sha256(data).hexdigest()}")


@module.command("web")
@_flash_arg
@_sd_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8081, show_default=True, type=click.IntRange(0, 65535))
def web_ui(flash: Path, sd: Path | None, host: str, port: int) -> None:
    """Serve the module's Firmware page (power-on first, like the module's web server)."""
    from aiohttp import web

    from ovota.device.web.app import create_module_app

    device = _power_on(flash, sd)
    try:
        click.echo(f"Module web UI on http://{host}:{port}/cfg/firmware")
        web.run_app(create_module_app(device), host=host, port=port, print=None, access_log=None)
    finally:
        device.close()
