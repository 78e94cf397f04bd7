"""OVMS's flashing mutex (``m_flashing``): one flash or partition-table operation at a time, never waited for."""

from __future__ import annotations

import functools

from ovota.device.console.session import Session
from ovota.device.console.tree import Handler

BUSY = "Error: Flash operation already in progress - cannot flash again"
BUSY_TABLE = "Error: Flash operation already in progress - cannot access partition table"


def exclusive(handler: Handler, busy: str = BUSY) -> Handler:
    """``handler`` run holding the mutex; while another operation holds it, the ``busy`` line instead."""

    @functools.wraps(handler)
    def run(session: Session, args: list[str]) -> None:
        if not session.flashing.acquire(blocking=False):
            session.out.puts(busy)
            return
        try:
            handler(session, args)
        finally:
            session.status.clear()
            session.flashing.release()

    return run
