"""``ovota``: the command group. Errors in input become one ``Error:`` line and exit status 2."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ovota import __version__
from ovota.cli.lazy import LazyGroup
from ovota.formats import FormatError

COMMANDS = {  # each command's module is imported when that command runs
    "image": "ovota.cli.image:image",
    "parttable": "ovota.cli.parttable:parttable",
    "otadata": "ovota.cli.otadata:otadata",
    "module": "ovota.cli.module:module",
    "server": "ovota.cli.server:server",
    "release": "ovota.cli.server:release",
    "token": "ovota.cli.server:token",
    "rollout": "ovota.cli.rollout:rollout",
    "fleet": "ovota.cli.fleet:fleet",
    "delta": "ovota.cli.delta:delta",
    "repo": "ovota.cli.repo:repo",
    "audit": "ovota.cli.audit:audit",
}

EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 141  # what a shell reports for a process its pipe's reader ended (128 + SIGPIPE)


class _Group(LazyGroup):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # Its reader went away (`ovota … | head`): stop quietly, as Unix tools do, and keep Python from
            # complaining when it flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_BROKEN_PIPE)
        except (FormatError, OSError) as err:
            message = f"{err.strerror}: {err.filename}" if isinstance(err, OSError) and err.strerror else err
            click.echo(f"Error: {message}", err=True)
            sys.exit(EXIT_BAD_INPUT)


@click.group(cls=_Group, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ovota")
def main() -> None:
    """Build, inspect and verify ESP32 firmware and flash structures; run OTA updates."""
