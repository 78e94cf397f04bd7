"""What a module's request tells the fleet: a check-in (every ``.ver`` and ``.bin`` with an OVMS User-Agent)
and a download (every ``.bin`` response: the build, the bytes sent, whether the whole image went out)."""

from __future__ import annotations

from dataclasses import dataclass

from ovota.server.fleet.agent import Agent


@dataclass(frozen=True)
class CheckIn:
    module: str
    agent: Agent
    product: str
    tag: str
    address: str
    at: float
    offered: str = ""  # the SHA-256 of the build the answer named ("" for none)


@dataclass(frozen=True)
class Download:
    module: str
    agent: Agent
    product: str
    tag: str
    sha256: str
    sent: int
    completed: bool
    at: float
