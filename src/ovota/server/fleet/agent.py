"""OVMS User-Agents: what an unchanged module says about itself in every request.

``ovms/<product> (<vehicle id> <version>/<partition>/<tag> (build …))``

The header comes from anyone. An agent is accepted only when every field is one the registry can store and
show as it is: product and tag are repository names, the version is printable ASCII (no space, no '/'), the
partition a short word, the vehicle id printable text (no control characters, no undecodable bytes) of at most
64 characters. Anything else is served like any other client and counted, not registered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ovota.formats import FormatError
from ovota.formats.versions import check_version
from ovota.server.store.images import NAME

MAX_USER_AGENT = 512  # OVMS's is about 120 characters; longer ones are not parsed (nor cached)
MAX_VEHICLE_ID = 64
_USER_AGENT = re.compile(
    r"ovms/(?P<product>[^\s()]+) \((?P<vehicle_id>.*?) (?P<version>[^\s/]+)/(?P<partition>[^\s/]+)"
    r"/(?P<tag>[^\s/()]+)(?: \(build .*\))?\)"
)
_PARTITION = re.compile(r"[A-Za-z0-9_]{1,16}")


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


def parse_user_agent(user_agent: str) -> Agent | None:
    """The Agent for a valid OVMS User-Agent, None for any other client."""
    if len(user_agent) > MAX_USER_AGENT or not user_agent.startswith("ovms/"):
        return None
    return _parse(user_agent)


@lru_cache(maxsize=32768)
def _parse(user_agent: str) -> Agent | None:
    match = _USER_AGENT.fullmatch(user_agent)
    if match is None:
        return None
    agent = Agent(**match.groupdict())
    try:
        check_version(agent.version)
    except (FormatError, UnicodeEncodeError):
        return None
    vehicle_id = agent.vehicle_id
    if not (
        NAME.fullmatch(agent.product)
        and NAME.fullmatch(agent.tag)
        and _PARTITION.fullmatch(agent.partition)
        and len(vehicle_id) <= MAX_VEHICLE_ID
        and vehicle_id.isprintable()
        and vehicle_id == vehicle_id.strip()
        and not vehicle_id.startswith("@")  # the registry keys a module without a vehicle id as @ADDRESS
    ):
        return None
    return agent
