"""``config …`` commands over the module's /store params."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ovota.device.console.tree import Command
from ovota.device.store import PARAMS

if TYPE_CHECKING:
    from ovota.device.console.shell import Shell


def register(root: Command) -> None:
    config = root.add(Command("config", "CONFIG framework"))
    config.add(Command("list", "Show configuration parameters/instances", config_list, "[<param>]", 0, 1))
    config.add(Command("get", "Get parameter:instance value", config_get, "<param> <instance>", 2, 2))
    config.add(Command("set", "Set parameter:instance=value", config_set, "<param> <instance> <value>", 3, 3))
    config.add(Command("rm", "Remove parameter:instance", config_rm, "<param> <instance>", 2, 2))


def _known(shell: Shell, param: str) -> bool:
    if param not in PARAMS:
        shell.out.puts("Error: Parameter not found")
        return False
    return True


def config_list(shell: Shell, args: list[str]) -> None:
    if not args:
        for name in sorted(PARAMS):
            shell.out.puts(name)
        return
    if not _known(shell, args[0]):
        return
    shell.out.puts(f"{args[0]} (readable writeable)")
    for instance, value in shell.module.config.instances(args[0]):
        shell.out.puts(f"  {instance}: {value}")


def config_get(shell: Shell, args: list[str]) -> None:
    if _known(shell, args[0]):
        shell.out.puts(shell.module.config.get(args[0], args[1]))


def config_set(shell: Shell, args: list[str]) -> None:
    if _known(shell, args[0]):
        shell.module.config.set(args[0], args[1], args[2])
        shell.out.puts("Parameter has been set.")


def config_rm(shell: Shell, args: list[str]) -> None:
    if _known(shell, args[0]):
        if shell.module.config.delete(args[0], args[1]):
            shell.out.puts("Parameter has been removed.")
        else:
            shell.out.puts("Error: Instance not found")
