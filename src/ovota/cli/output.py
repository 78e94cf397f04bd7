"""How the CLI prints text that came from elsewhere (modules' User-Agents, build headers, names chosen by token
holders): one line per row, nothing in it that can drive a terminal or pose as another row."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from ovota.server.store.audit import printable


def row(text: str, err: bool = False) -> None:
    """Print ``text`` as one line (on standard error with ``err``), every character that is not printable (a
    newline, an ESC sequence, other C0 and C1 controls) written as its escape (``\\n``, ``\\x1b``)."""
    click.echo(printable(text), err=err)


def when(timestamp: float) -> str:
    """A time as the CLI's tables show it: UTC, to the second."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
