"""``config …`` commands over the module's /store params."""

from __future__ import annotations

from ovota.device.console.session import Session
from ovota.device.console.tree import Command
from ovota.device.store import PARAMS


def register(root: Command) -> None:
    config = root.add(Command("config", "CONFIG framework"))
    config.add(Command("list", "Show configuration parameters/instances", config_list, "[<param>]", 0, 1))
    config.add(Command("get", "Get parameter:instance value", config_get, "<param> <instance>", 2, 2))
    config.add(Command("set", "Set parameter:instance=value", config_set, "<param> <instance> <value>", 3, 3))
    config.add(Command("rm", "Remove parameter:instance", config_rm, "<param> <instance>", 2, 2))


def _known(session: Session, param: str) -> bool:
    if param not in PARAMS:
        session.out.puts("Error: Parameter not found")
        return False
    return True


def config_list(session: Session, args: list[str]) -> None:
    if not args:
        for name in sorted(PARAMS):
            session.out.puts(name)
        return
    if not _known(session, args[0]):
        return
    session.out.puts(f"{args[0]} (readable writeable)")
    for instance, value in session.module.config.instances(args[0]):
        session.out.puts(f"  {instance}: {value}")


def config_get(session: Session, args: list[str]) -> None:
    if _known(session, args[0]):
        session.out.puts(session.module.config.get(args[0], args[1]))


def config_set(session: Session, args: list[str]) -> None:
    if _known(session, args[0]):
        session.module.config.set(args[0], args[1], args[2])
        session.out.puts("Parameter has been set.")


def config_rm(session: Session, args: list[str]) -> None:
    if _known(session, args[0]):
        if session.module.config.delete(args[0], args[1]):
            session.out.puts("Parameter has been removed.")
        else:
            session.out.puts("Error: Instance not found")
