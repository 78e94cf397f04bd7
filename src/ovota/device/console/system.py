"""The console's other commands: ``module reset``, ``store``, ``echo``, ``sleep``; and the emulator's own
``time`` and ``network`` commands, which stand for what a real module's clock and links do by themselves."""

from __future__ import annotations

import re
import time
from datetime import timedelta

from ovota.device.console import auto
from ovota.device.console.session import Session
from ovota.device.console.tree import Command

_DURATION = re.compile(r"([0-9]{1,12})([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_FLOAT = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
MAX_ADVANCE = 3650 * 86400  # ten years: enough for any schedule, and the clock stays within datetime's range
ECHO_USAGE = "[<text>] […]\nOutputs up to 10 arguments as separate lines, just a newline if no text is given."
SLEEP_USAGE = "<seconds>\nFractions of seconds are supported, e.g. 0.2 = 200 ms"


HELP = (
    'Enter a single "?" to get the root command list.\n'
    "Commands can have multiple levels of subcommands.\n"
    'Use "command [...] ?" to get the list of subcommands and parameters.\n'
    "Commands can be abbreviated, push <TAB> for auto completion at any level\n"
    "including at the start of a subcommand to get a list of subcommands.\n"
    'Use "enable" to enter secure (admin) mode.\n'
)


def register(root: Command) -> None:
    root.add(Command("help", "Ask for help", lambda session, args: session.out.write(HELP)))
    module = root.add(Command("module", "MODULE framework"))
    module.add(Command("reset", "Reset module", module_reset))
    store = root.add(Command("store", "STORE framework"))
    store.add(Command("mount", "Mount STORE", store_mount))
    store.add(Command("unmount", "Unmount STORE", store_unmount))
    root.add(Command("echo", "Script utility: output text", echo, ECHO_USAGE, 0, 10))
    root.add(Command("sleep", "Script utility: pause execution", sleep, SLEEP_USAGE, 1, 1))
    clock = root.add(Command("time", "Emulated clock (emulator)"))
    clock.add(Command("status", "Show the emulated time", time_status))
    clock.add(Command("advance", "Fast-forward the clock, running timers", time_advance, "<N>[s|m|h|d]", 1, 1))
    network = root.add(Command("network", "Emulated network links (emulator)"))
    for link in ("modem", "wifi"):
        network.add(Command(link, f"Switch the emulated {link} link", network_link, "on|off", 1, 1))


def module_reset(session: Session, args: list[str]) -> None:
    session.out.puts("Resetting system...")
    session.restart()


def store_mount(session: Session, args: list[str]) -> None:
    if not session.module.config.mounted:
        session.module.config.mount()
    session.out.puts("Mounted STORE")


def store_unmount(session: Session, args: list[str]) -> None:
    session.module.config.unmount()
    session.out.puts("Unmounted STORE")


def echo(session: Session, args: list[str]) -> None:
    session.out.write("".join(f"{arg}\n" for arg in args) or "\n", counted=False)  # text, not a failed command


def atof(text: str) -> float:
    """C's atof: the longest leading number, 0.0 when there is none."""
    match = _FLOAT.match(text)
    return float(match.group(0)) if match else 0.0


def sleep(session: Session, args: list[str]) -> None:
    """cmd_sleep: vTaskDelay of whole 10 ms ticks; the clock runs on, and an AutoFlash task with it."""
    seconds = atof(args[0])
    if 0 <= seconds < float("inf"):
        # pdMS_TO_TICKS of an int: a C int holds at most 2**31 - 1 ms.
        time.sleep(min(int(seconds * 1000), 2**31 - 1) // 10 / 100)


def time_status(session: Session, args: list[str]) -> None:
    m = session.module
    local = auto.local_time(m)
    zone = m.config.get("vehicle", "timezone") or "UTC"
    session.out.puts(f"Time: {m.clock.now:%Y-%m-%d %H:%M:%S} UTC, local {local:%Y-%m-%d %H:%M:%S} ({zone})")
    session.out.puts(f"Uptime: {int(m.clock.uptime)} s")


def time_advance(session: Session, args: list[str]) -> None:
    match = _DURATION.fullmatch(args[0])
    if match is None:
        session.out.puts(f"Error: invalid duration {args[0]!r} (use e.g. 90s, 15m, 24h, 2d)")
        return
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds > MAX_ADVANCE:
        session.out.puts(f"Error: at most {MAX_ADVANCE // 86400}d at a time")
        return
    auto.advance(session, timedelta(seconds=seconds))
    time_status(session, [])


def network_link(session: Session, args: list[str]) -> None:
    if args[0] not in ("on", "off"):
        session.out.puts(f"Usage: network {session.words[1]} on|off")
        return
    setattr(session.module.network, session.words[1], args[0] == "on")
    session.out.puts(f"{session.words[1]} {'connected' if args[0] == 'on' else 'disconnected'}")
