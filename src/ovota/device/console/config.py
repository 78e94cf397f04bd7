"""``config …`` commands over the module's /store params, with OVMS 3.3.006's output (ovms_config.cpp).

Param names may be abbreviated to a unique prefix, as on OVMS; instance names are exact. While /store is
unmounted (``store unmount``) the commands print nothing, as OVMS's do."""

from __future__ import annotations

from ovota.device.console.session import Session
from ovota.device.console.tree import Command, unique_prefix
from ovota.device.store import PARAMS, UNREADABLE

RM_USAGE = "<param> {<instance> | *}"
BACKUP_USAGE = (
    "<zipfile> [password=module password]\n"
    "Backup system configuration & scripts into password protected ZIP file.\n"
    "Note: user files or directories in /store will not be included.\n"
    '<password> defaults to the current module password, set to "" to disable encryption.\n'
    "Hint: use 7z to unzip/create backup ZIPs on a PC."
)
RESTORE_USAGE = (
    "<zipfile> [password=module password]\n"
    "Restore system configuration & scripts from password protected ZIP file.\n"
    "Note: user files or directories in /store will not be touched.\n"
    "The module will perform a reboot after successful restore.\n"
    "<password> defaults to the current module password.\n"
    "Note: you need to supply the password used for the backup creation."
)


def register(root: Command) -> None:
    config = root.add(Command("config", "CONFIG framework"))
    config.add(Command("list", "Show configuration parameters/instances", config_list, "[<param>]", 0, 1))
    config.add(Command("set", "Set parameter:instance=value", config_set, "<param> <instance> <value>", 3, 3))
    config.add(Command("rm", "Remove parameter:instance", config_rm, RM_USAGE, 2, 2))
    config.add(Command("backup", "Backup to file", config_archive, BACKUP_USAGE, 1, 2))
    config.add(Command("restore", "Restore from file", config_archive, RESTORE_USAGE, 1, 2))


def _params(session: Session) -> dict[str, str]:
    """Every param: the registered ones with their titles, and any other in /store with an empty title."""
    known = dict(PARAMS)
    for name in session.module.config.snapshot():
        known.setdefault(name, "")
    return dict(sorted(known.items(), key=lambda kv: kv[0].encode()))


def _param(session: Session, word: str) -> str | None:
    return unique_prefix(word, _params(session))


def config_list(session: Session, args: list[str]) -> None:
    if not session.module.config.mounted:
        return
    if not args:
        for name, title in _params(session).items():
            session.out.write(f"{name:<20} {title}\n")
        return
    param = _param(session, args[0])
    if param is None:
        session.out.write(f"{args[0]} not found\n")
        return
    # Params only found in /store are registered unreadable, as OVMS's mount does.
    readable = param in PARAMS and param not in UNREADABLE
    session.out.write(f"{args[0]} ({'readable' if readable else 'protected'} writeable)\n")
    for instance, value in session.module.config.instances(param):
        session.out.write(f"  {instance}: {value}\n" if readable else f"  {instance}\n")


def config_set(session: Session, args: list[str]) -> None:
    if not session.module.config.mounted:
        return
    param = _param(session, args[0])
    if param is None:
        session.out.puts("Error: parameter not found")
        return
    session.module.config.set(param, args[1], args[2])
    session.out.puts("Parameter has been set.")


def config_rm(session: Session, args: list[str]) -> None:
    if not session.module.config.mounted:
        return
    param = _param(session, args[0])
    if param is None:
        session.out.puts("Error: parameter not found")
        return
    config = session.module.config
    if config.delete(param, args[1]):
        session.out.write(f"Instance {args[1]} has been removed.\n")
        return
    if args[1] != "*":
        return
    config.update({(param, instance): None for instance, _ in list(config.instances(param))})
    session.out.write(f"Parameter {param} has been removed.\n")


def config_archive(session: Session, args: list[str]) -> None:
    """``config backup`` and ``restore`` are registered for the command tree's sake (``config r`` is ambiguous on
    OVMS too); the emulator does not write OVMS's encrypted ZIP archives."""
    session.out.puts(f"Error: config {session.words[1]} is not emulated (the module's config is in its flash file)")
