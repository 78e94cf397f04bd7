"""The banner every console page shows while a rollout is halted."""

from __future__ import annotations

from html import escape

from ovota.server.fleet.policy import RolloutState
from ovota.server.fleet.rollouts import Rollouts


def halt_banner(rollouts: Rollouts) -> str:
    """An alert per halted rollout, linking to its page; empty when none is halted."""
    halted = [r for r in rollouts.all_active() if r.state is RolloutState.HALTED]
    return "".join(
        f'<p class="banner" role="alert"><strong>Rollout {r.id} of {escape(r.product)}/{escape(r.tag)} halted</strong>'
        f" ({escape(r.to_build.version)}): {escape(r.reason)}. "
        f'<a href="/console/rollouts#rollout-{r.id}">Review it</a></p>'
        for r in halted
    )
