"""OVMS User-Agents: what an unchanged module says about itself in every request.

``ovms/<product> (<vehicle id> <version>/<partition>/<tag> (build …))``
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_USER_AGENT = re.compile(
    r"^ovms/(?P<product>[^\s()]+) \((?P<vehicle_id>.*?) (?P<version>[^\s/]+)/(?P<partition>[^\s/]+)"
    r"/(?P<tag>[^\s/()]+)(?: \(build .*\))?\)$"
)


@dataclass(frozen=True)
class Agent:
    """What an OVMS module's User-Agent says about it."""

    product: str
    vehicle_id: str
    version: str
    partition: str
    tag: str

    def module_key(self, address: str) -> str:
        """The registry's key: the vehicle id, or '@' and the address for modules without one
        (modules sharing a vehicle id cannot be told apart and count as one)."""
        return self.vehicle_id or f"@{address}"


@lru_cache(maxsize=65536)
def parse_user_agent(user_agent: str) -> Agent | None:
    """The Agent for an OVMS User-Agent, None for any other client."""
    match = _USER_AGENT.match(user_agent)
    if match is None:
        return None
    return Agent(**match.groupdict())
