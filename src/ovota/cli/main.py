"""``ovota``: the command group. Errors in input become one ``Error:`` line and exit status 2."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ovota import __version__
from ovota.cli.audit import audit
from ovota.cli.delta import delta
from ovota.cli.fleet import fleet
from ovota.cli.image import image
from ovota.cli.module import module
from ovota.cli.otadata import otadata
from ovota.cli.parttable import parttable
from ovota.cli.repo import repo
from ovota.cli.rollout import rollout
from ovota.cli.server import release, server, token
from ovota.cli.targets import add_target_commands
from ovota.formats import FormatError

EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 141  # what a shell reports for a process its pipe's reader ended (128 + SIGPIPE)


class _Group(click.Group):
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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ovota")
def main() -> None:
    """Build, inspect and verify ESP32 firmware and flash structures; run OTA updates."""


main.add_command(image)
main.add_command(parttable)
main.add_command(otadata)
main.add_command(module)
main.add_command(server)
main.add_command(release)
main.add_command(token)
main.add_command(rollout)
main.add_command(fleet)
main.add_command(delta)
main.add_command(repo)
main.add_command(audit)
add_target_commands(fleet, release)
