"""The rules of staged rollouts, without I/O: cohorts, inferred health, when to halt and when to advance.

Cohorts. A module's place in a rollout is ``cohort_hash(rollout, vehicle id)``, a number in
[0, 2**32). Each step has a threshold; a module is in the step's cohort when its hash is below it.
Thresholds only grow, so a step only adds modules and a module stays in or out across requests and
restarts. When a step starts, its threshold is set so that exactly its percentage of the channel's
known modules (with a vehicle id) is in, and never below the percentage of the hash space, so
modules the server has not seen yet join in the same proportion.

Health. A module that has received all of the new build's bytes is *updating*. Its next check-in
running the new version makes it *updated*; running another version once ``grace`` has passed
makes it *failed*; no check-in within ``watch`` makes it *silent*.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

HASH_SPACE = 1 << 32
DEFAULT_STEPS = (1, 10, 50, 100)


class RolloutState(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"  # no step advances; the current cohort is still offered the new build
    HALTED = "halted"  # health failed: only modules already running the new build get it
    COMPLETED = "completed"  # the new build is the channel's build
    ABORTED = "aborted"  # the channel stays on its previous build

    @property
    def active(self) -> bool:
        return self in (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.HALTED)


ACTIVE_STATES = tuple(s.value for s in RolloutState if s.active)


class ModuleState(enum.StrEnum):
    PENDING = "pending"  # in the cohort, has not received the whole build yet
    UPDATING = "updating"
    UPDATED = "updated"
    FAILED = "failed"
    SILENT = "silent"


class PolicyError(ValueError):
    """A rollout setting that cannot be used; the message is one line for the user."""


def cohort_hash(rollout_id: int, vehicle_id: str) -> int:
    digest = hashlib.sha256(f"ovota-rollout:{rollout_id}:{vehicle_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def step_threshold(percent: float, previous: int, known_hashes: Sequence[int]) -> int:
    """The threshold for a step of ``percent``: exactly that share of ``known_hashes`` (sorted) falls
    below it, and it is never lower than ``previous`` nor than the same share of the hash space."""
    if percent >= 100:
        return HASH_SPACE
    by_space = int(HASH_SPACE * percent / 100)
    count = math.ceil(len(known_hashes) * percent / 100 - 1e-9)
    by_fleet = known_hashes[count - 1] + 1 if count > 0 else 0
    if count < len(known_hashes):
        # Not past the next known module: that would put more than the share of the fleet in.
        by_space = min(by_space, known_hashes[count])
    return max(previous, by_fleet, by_space)


@dataclass(frozen=True)
class Counts:
    """Modules of a rollout per state (pending excluded: it is not an attempt)."""

    updating: int = 0
    updated: int = 0
    failed: int = 0
    silent: int = 0

    @property
    def attempted(self) -> int:
        return self.updating + self.updated + self.failed + self.silent

    @property
    def outcomes(self) -> int:
        return self.updated + self.failed + self.silent

    def since(self, baseline: Counts) -> Counts:
        """What happened after ``baseline`` (taken when a halted rollout was resumed)."""
        return Counts(
            max(0, self.updating - baseline.updating),
            max(0, self.updated - baseline.updated),
            max(0, self.failed - baseline.failed),
            max(0, self.silent - baseline.silent),
        )


@dataclass(frozen=True)
class Limits:
    halt_failed: float = 0.05  # failed / (updated + failed)
    halt_silent: float = 0.20  # silent / attempted
    min_sample: int = 20  # attempts before either ratio counts


def halt_reason(counts: Counts, limits: Limits) -> str | None:
    """Why the rollout must halt now, with the counts; None while health holds."""
    if counts.attempted < limits.min_sample:
        return None
    decided = counts.updated + counts.failed
    if decided and counts.failed / decided >= limits.halt_failed:
        return (
            f"failed {counts.failed} of {decided} updated or failed ({_pct(counts.failed / decided)}), "
            f"limit {_pct(limits.halt_failed)}; {counts.attempted} attempts"
        )
    if counts.silent / counts.attempted >= limits.halt_silent:
        return (
            f"silent {counts.silent} of {counts.attempted} attempts ({_pct(counts.silent / counts.attempted)}), "
            f"limit {_pct(limits.halt_silent)}"
        )
    return None


def step_halt_reason(step: Counts, offered: int, limits: Limits) -> str | None:
    """Why a step must halt although the rollout has fewer than ``min_sample`` attempts: every one of the
    ``offered`` modules of a step smaller than ``min_sample`` has an outcome (the evidence is as complete as it
    will get) and the failed share among them reaches ``halt_failed``. None otherwise."""
    if not 0 < offered < limits.min_sample or step.outcomes < offered:
        return None
    decided = step.updated + step.failed
    if not decided or step.failed / decided < limits.halt_failed:
        return None
    return (
        f"failed {step.failed} of {decided} updated or failed ({_pct(step.failed / decided)}), limit "
        f"{_pct(limits.halt_failed)}; every one of the step's {offered} modules reported"
    )


def may_advance(counts: Counts, offered: int, limits: Limits, elapsed: float, interval: float,
                resumed: bool = False) -> bool:  # fmt: skip
    """A step widens only with evidence: its interval has passed, at least ``min(min_sample, offered)`` of the
    step's own modules have an outcome (and at least one: a step whose modules are all offline never widens),
    ``offered`` being how many of them are offered the new build, and among those outcomes the failed share is
    below ``halt_failed`` even while there are too few attempts to halt (unless the operator ``resumed`` the
    rollout after a halt: they have judged those failures). (Health over the whole rollout is checked first: a
    rollout whose health fails halts instead.)"""
    if elapsed < interval:
        return False
    if counts.outcomes < max(1, min(limits.min_sample, offered)):
        return False
    decided = counts.updated + counts.failed
    return resumed or not (decided and counts.failed / decided >= limits.halt_failed)


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.1f}%"


# -- settings as users write them ----------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION = 10 * 365 * 86400.0


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``6h``, ``2d`` in seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise PolicyError(f"invalid duration {text!r}: use a number and s, m, h or d (e.g. 1d, 10m)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds <= MAX_DURATION:  # also refuses what float() made infinite
        raise PolicyError(f"invalid duration {text!r}: at most {MAX_DURATION // 86400:.0f}d")
    return seconds


def parse_percent(text: str) -> float:
    """``5%`` or ``5`` as the ratio 0.05."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise PolicyError(f"invalid percentage {text!r}: use e.g. 5%") from None
    if not 0 < value <= 100:
        raise PolicyError(f"invalid percentage {text!r}: must be above 0 and at most 100")
    return value / 100


def parse_steps(text: str) -> tuple[int, ...]:
    """``1,10,50,100``: increasing percentages of the channel's modules, ending at 100."""
    try:
        steps = tuple(int(part.strip().removesuffix("%")) for part in text.split(","))
    except ValueError:
        raise PolicyError(f"invalid steps {text!r}: use increasing percentages such as 1,10,50,100") from None
    if any(b <= a for a, b in itertools.pairwise(steps)) or steps[0] <= 0 or steps[-1] != 100:
        raise PolicyError(f"invalid steps {text!r}: percentages must increase and end at 100")
    return steps
