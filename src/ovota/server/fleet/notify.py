"""Announcing rollout decisions: a log line each, and a JSON POST to the rollout's notify URL."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from ovota.server.fleet.rollouts import Decision

log = logging.getLogger("ovota.server")


class Notifier:
    """Sends each decision in a task of its own (one attempt, 10 s), so a slow receiver holds up nothing."""

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[None]] = set()

    def announce(self, decisions: list[tuple[Decision, dict[str, Any]]]) -> None:
        """Log each decision and POST it with its rollout's status JSON to the rollout's notify URL."""
        for decision, summary in decisions:
            log.warning("rollout %d of %s/%s %s: %s", decision.rollout.id, decision.rollout.product,
                        decision.rollout.tag, decision.event, decision.message)  # fmt: skip
            if decision.rollout.settings.notify_url:
                task = asyncio.ensure_future(self._post(decision, summary))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def _post(self, decision: Decision, summary: dict[str, Any]) -> None:
        rollout = decision.rollout
        body = {"event": decision.event, "message": decision.message, **summary}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.post(rollout.settings.notify_url, json=body) as response,
            ):
                if response.status >= 300:
                    log.warning("notify URL %s answered %d", rollout.settings.notify_url, response.status)
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning("notify URL %s failed: %s", rollout.settings.notify_url, err)

    async def wait(self) -> None:
        """Wait for notifications still being sent (at shutdown)."""
        if self._pending:
            await asyncio.wait(self._pending, timeout=10)
