"""What this process saw of each module's attempts, so the check-in that shows a failure is answered without the
failed build at once (the database learns it with the next registry batch, other processes after it).

The rule is ``fleet.attempts.after_checkin``; this is only its memory: bounded, the least recently used modules
go first (their attempts are still in the database and in each channel's inputs).
"""

from __future__ import annotations

from collections import OrderedDict

from ovota.server.fleet.attempts import Attempt, after_checkin

MAX_MODULES = 100_000


class AttemptBook:
    """Per module key, its latest attempt as this process saw it."""

    def __init__(self, max_modules: int = MAX_MODULES) -> None:
        self.max_modules = max_modules
        self._attempts: OrderedDict[str, Attempt] = OrderedDict()

    def received(self, module: str, sha256: str, version: str, now: float) -> None:
        """The module has received all of a build's bytes."""
        self._keep(module, Attempt(sha256, version, now))

    def check_in(self, module: str, known: Attempt | None, version: str, now: float, grace: float) -> Attempt | None:
        """Apply a check-in to the module's attempt (``known``: the later of this book's and the database's) and
        return it."""
        if known is None:
            return None
        after = after_checkin(known, version, now, grace)
        if after is None:
            self._attempts.pop(module, None)
        elif after != self._attempts.get(module):
            self._keep(module, after)
        return after

    def get(self, module: str) -> Attempt | None:
        return self._attempts.get(module)

    def _keep(self, module: str, attempt: Attempt) -> None:
        self._attempts[module] = attempt
        self._attempts.move_to_end(module)
        while len(self._attempts) > self.max_modules:
            self._attempts.popitem(last=False)

    def __len__(self) -> int:
        return len(self._attempts)
