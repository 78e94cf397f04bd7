"""``ovota audit``: who changed what, and when."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from ovota.cli.output import row, when
from ovota.cli.repo_access import open_repository, repo_option
from ovota.server.fleet.policy import PolicyError, parse_duration
from ovota.server.store.audit import entries, printable
from ovota.server.store.backends import Backends


def _since(text: str | None, now: float) -> float | None:
    """A duration back from ``now`` (``1d``, ``12h``) or a UTC date or time (``2026-11-29``,
    ``2026-11-29T10:00``)."""
    if text is None:
        return None
    try:
        return now - parse_duration(text)
    except PolicyError:
        pass
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise click.BadParameter("give a duration (1d, 12h) or a UTC date (2026-11-29[T10:00])") from None


@click.command("audit")
@repo_option
@click.option("--since", help="Only entries from this long ago (1d, 12h) or this UTC date (2026-11-29) on.")
@click.option("--actor", help="Only entries by this token name, cli:USER or server.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 100_000), help="The newest N.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects.")
def audit(repo: Backends, since: str | None, actor: str | None, limit: int, as_json: bool) -> None:
    """Every state change (publish, promote, rollback, trust, tokens, rollouts and the server's own rollout
    decisions): when, who, what, to what, and how it ended; oldest first."""
    with open_repository(repo, create=False) as r:
        found = entries(r.db, _since(since, r.clock().now()), actor, limit)
    if as_json:
        click.echo(json.dumps([e.__dict__ for e in found], indent=2))
        return
    for e in found:  # escaped again when shown: entries written before escaping existed may hold anything
        at = when(e.at)
        actor, action, target, outcome = (printable(v) for v in (e.actor, e.action, e.target, e.outcome))
        detail = f"  {printable(e.detail)}" if e.detail else ""
        row(f"{at}  {actor:<16} {action:<16} {target:<16} {outcome}{detail}")
    if not found:
        row("No audit entries.")
