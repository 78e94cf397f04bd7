"""What the store refuses, as exceptions whose message is one line for the user."""

from __future__ import annotations


class RepositoryError(Exception):
    """A request the repository refuses; the message is one line for the user."""


class NotFound(RepositoryError):
    """No such build, channel or rollout."""


class Unavailable(RepositoryError):
    """A backend (PostgreSQL, the object store) cannot be reached now: retry later. ``cause``: a short name for
    what went wrong (metrics, logs)."""

    def __init__(self, message: str, cause: str = "unavailable") -> None:
        super().__init__(message)
        self.cause = cause


class StorageFull(RepositoryError):
    """The disk (or the blob cache's) is full or failing: nothing was written; the message is one line."""


class RolloutInTheWay(RepositoryError):
    """A channel change refused because the channel has an active rollout (``rollout``, in ``state``); forcing
    it aborts the rollout. Each face says how it forces."""

    def __init__(self, channel: str, rollout: int, state: str) -> None:
        super().__init__(f"{channel} has a {state} rollout (id {rollout}): abort it first, or force the change "
                         "(the CLI's --force, the API's \"force\": true), which aborts it")  # fmt: skip
        self.channel, self.rollout, self.state = channel, rollout, state
