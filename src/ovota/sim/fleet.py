"""A simulated fleet: N light modules that update themselves as OVMS's daily auto update does.

Each module has a vehicle id, a running version and partition, a tag and a daily check time: its
``ota auto.hour`` on its local clock (the fleet's time zone) and the phase of its 10-minute ticker, so a DST
change moves its checks as it moves a real module's. At that time it sends OVMS's exact ``.ver``
request; if ``buildverscmp`` says the server's build is newer it downloads ``.bin``, verifies it with
the project's image verification, and "reboots": into the new build, or, per the failure model, back
into the old one (the bootloader's fallback), or it goes silent for good.

Time is the server's: the simulation reads it at ``GET /clock``. A driven clock is moved forward tick
by tick (``POST /clock``) once the tick's requests are done, so runs are repeatable; a scaled clock is
followed as it runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp

from ovota.device.fetch import MIN_DOWNLOAD, parse_ver
from ovota.formats import FormatError
from ovota.formats.app_image import AppImage
from ovota.formats.delta import apply_patch_bytes, validation_hash
from ovota.formats.version_marker import image_version
from ovota.formats.versions import buildverscmp, check_version
from ovota.sim.http import HttpFailed, Server, ovms_get

DAY = 86400
TICK = 600  # OVMS's Ticker600
BUILD = "idf v3.3.4-854-g9063c8662c May 13 2026 20:13:48"
CONCURRENCY = 64
HEARTBEAT = 1.0  # seconds of wall time between a run's on_wait calls
ALL_HOURS = tuple(range(24))


def _fraction(*parts: str) -> float:
    """A number in [0, 1) fixed by the parts: the same module always draws the same."""
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class FailureModel:
    """``VERSION:RATE`` rules: a module fails (or goes silent) on a version with that probability."""

    rates: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, rules: tuple[str, ...]) -> FailureModel:
        rates = {}
        for rule in rules:
            version, sep, rate = rule.rpartition(":")
            try:
                value = float(rate.removesuffix("%")) / (100 if rate.endswith("%") else 1)
            except ValueError:
                value = -1.0
            if not sep or not version or not 0 <= value <= 1:
                raise ValueError(f"invalid failure rule {rule!r}: use VERSION:RATE, e.g. 3.3.007:0.3 or 3.3.007:30%")
            rates[version] = value
        return cls(rates)

    def hits(self, kind: str, vehicle_id: str, version: str) -> bool:
        rate = self.rates.get(version, 0.0)
        return rate > 0 and _fraction(kind, vehicle_id, version) < rate


@dataclass
class SimModule:
    vehicle_id: str
    version: str
    partition: str
    check_second: int  # second of the local day of its automatic check (auto.hour and ticker phase)
    silent: bool = False
    failed: bool = False  # a new build fell back to the old one at least once
    received: set[str] = field(default_factory=set)  # versions it downloaded completely

    def user_agent(self, product: str, tag: str) -> str:
        """OVMS's User-Agent: ``ovms/<product> (<vehicle id> <m.version>)``."""
        return f"ovms/{product} ({self.vehicle_id} {self.metric(product, tag)})"

    def metric(self, product: str, tag: str) -> str:
        return f"{self.version}/{self.partition}/{tag} (build {BUILD}, product {product})"


@dataclass(frozen=True)
class DayReport:
    day: int
    versions: dict[str, int]  # running version -> modules (silent ones excluded)
    failed: int
    silent: int
    checkins: int
    downloads: int
    bytes_served: int
    exposed: int  # modules that ever received a build newer than their first


@dataclass
class Stats:
    checkins: int = 0
    downloads: int = 0
    bytes_served: int = 0
    delta_downloads: int = 0
    bytes_saved: int = 0  # whole-image bytes that deltas made unnecessary
    errors: int = 0
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    offered: int = 0  # check-ins whose ovms3.ver named a newer build
    updated: int = 0  # modules that booted into a new build
    failed: int = 0  # modules whose new build fell back to the old one


@dataclass
class Simulation:
    server: Server
    modules: list[SimModule]
    product: str
    tag: str
    first_version: str
    fail: FailureModel = field(default_factory=FailureModel)
    silent: FailureModel = field(default_factory=FailureModel)
    stats: Stats = field(default_factory=Stats)
    days: list[DayReport] = field(default_factory=list)
    delta: bool = False  # modules ask for esp-delta-ota patches (emulator parameter ``ota delta``)
    images: dict[str, bytes] = field(default_factory=dict)  # version -> image, shared by every module

    @property
    def base(self) -> str:
        return f"{self.server.path}/{self.product}/{self.tag}"

    async def check(self, module: SimModule) -> None:
        """One automatic update check (OvmsOTA::AutoFlash), and the reboot after a successful flash."""
        agent = module.user_agent(self.product, self.tag)
        try:
            ver = await ovms_get(self.server, f"{self.base}/ovms3.ver", agent)
            self.stats.checkins += 1
            server_version = parse_ver(ver.body) if ver.status == 200 else None
            if server_version is None:
                return self._error("ver")
            if buildverscmp(server_version.version, module.metric(self.product, self.tag)) <= 0:
                return None
            self.stats.offered += 1
            base = self.images.get(module.version) if self.delta else None
            extra = {"A-IM": "esp-delta-ota", "If-None-Match": f'"{validation_hash(base).hex()}"'} if base else None
            reply = await ovms_get(self.server, f"{self.base}/ovms3.bin", agent, extra=extra)
            self.stats.checkins += 1
        except HttpFailed:
            return self._error("connection")
        self.stats.bytes_served += len(reply.body)
        if reply.status not in (200, 226) or len(reply.body) != reply.content_length:
            return self._error("download")
        image = reply.body
        if reply.status == 226 and base is not None:
            try:
                image = apply_patch_bytes(base, reply.body)
            except FormatError:
                return self._error("delta")
            self.stats.delta_downloads += 1
            self.stats.bytes_saved += len(image) - len(reply.body)
        if len(image) < MIN_DOWNLOAD:
            return self._error("download")
        self.stats.downloads += 1
        new_version = _verified_version(image)
        if new_version is None:
            return self._error("image")
        if self.delta:
            self.images.setdefault(new_version, image)
        module.received.add(new_version)
        if self.silent.hits("silent", module.vehicle_id, new_version):
            module.silent = True
        elif self.fail.hits("fail", module.vehicle_id, new_version):
            module.failed = True  # the bootloader falls back: it keeps running (and reporting) the old build
            self.stats.failed += 1
        else:
            self.stats.updated += 1
            module.version = new_version
            module.partition = "ota_1" if module.partition == "ota_0" else "ota_0"
        return None

    def _error(self, kind: str) -> None:
        self.stats.errors += 1
        self.stats.errors_by_kind[kind] += 1

    def report(self, day: int, before: Stats) -> DayReport:
        running = Counter(m.version for m in self.modules if not m.silent)
        return DayReport(
            day,
            dict(running.most_common()),
            sum(m.failed for m in self.modules),
            sum(m.silent for m in self.modules),
            self.stats.checkins - before.checkins,
            self.stats.downloads - before.downloads,
            self.stats.bytes_served - before.bytes_served,
            sum(1 for m in self.modules if m.received - {self.first_version}),
        )


def _verified_version(image: bytes) -> str | None:
    """The version of a downloaded image that passes verification (checksum, SHA-256, chip), else None."""
    try:
        parsed = AppImage.parse(image)
        if not parsed.verify().ok:
            return None
        raw = image_version(image)
        return check_version(raw) if raw else None
    except FormatError:
        return None


def parse_hours(text: str) -> tuple[int, ...]:
    """``2`` (OVMS's default ``ota auto.hour``), ``0-23`` or ``1,2,3``: the hours modules check at."""
    hours: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.partition("-")
            hours.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        hours = []
    if not hours or not all(0 <= h <= 23 for h in hours):
        raise ValueError(f"invalid auto.hour {text!r}: an hour 0-23, a range such as 0-23, or a list such as 1,2,3")
    return tuple(dict.fromkeys(hours))


def make_fleet(
    count: int, version: str, prefix: str = "SIM", hours: tuple[int, ...] = tuple(range(24))
) -> list[SimModule]:
    """``count`` modules on ``version``, with vehicle ids PREFIX00001… and check times spread over ``hours``
    (their ``ota auto.hour``, local time) and the ticker's ten minutes."""
    modules = []
    for index in range(1, count + 1):
        vehicle_id = f"{prefix}{index:05d}"
        hour = hours[int(_fraction("hour", vehicle_id) * len(hours))]
        phase = int(_fraction("phase", vehicle_id) * TICK)
        modules.append(SimModule(vehicle_id, version, "ota_0", hour * 3600 + phase))
    return modules


class ServerClockClient:
    """The server's clock, read (and, when driven, moved) over HTTP."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.driven = False
        self.scale = 1.0
        self._synced = (0.0, 0.0)  # (server time, monotonic) at the last read

    async def read(self) -> float:
        async with self.session.get(self.url) as response:
            if response.status == 404:  # a server on the real clock has no /clock: time is the wall clock
                self.driven, self.scale = False, 1.0
                self._synced = (time.time(), time.monotonic())
                return self._synced[0]
            response.raise_for_status()
            data = await response.json()
        self.driven, self.scale = bool(data["driven"]), float(data["scale"])
        self._synced = (float(data["now"]), time.monotonic())
        return self._synced[0]

    def estimate(self) -> float:
        """The server's time now: a driven clock's last position, else the last read moved on by the wall time
        since, at the clock's scale."""
        if self.driven:
            return self._synced[0]
        return self._synced[0] + (time.monotonic() - self._synced[1]) * self.scale

    async def reach(self, when: float, retry_for: float = 60.0) -> None:
        """Be at server time ``when``: move a driven clock there, or wait for a running one. A server that
        is down (restarting) is retried for ``retry_for`` seconds."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                if self.driven:
                    async with self.session.post(self.url, json={"to": when}) as response:
                        response.raise_for_status()
                    self._synced = (max(self._synced[0], when), time.monotonic())
                    return
                if self.estimate() < when:
                    await asyncio.sleep(min(1.0, (when - self.estimate()) / self.scale))
                    await self.read()
                    continue
                return
            except (aiohttp.ClientError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def run(
    simulation: Simulation,
    clock_url: str,
    days: float,
    on_tick: Callable[[float, Simulation], None] | None = None,
    zone: ZoneInfo | None = None,
    on_wait: Callable[[float, Simulation], None] | None = None,
) -> list[DayReport]:
    """Run ``days`` simulated days from the server's current time, and end there; a report per completed day.
    Modules check at their local check time in ``zone``. ``on_tick`` is called after each tick's requests;
    ``on_wait`` every HEARTBEAT seconds of wall time with the server's time, also while a tick's requests or a
    clock that runs by itself (the real one: 10 minutes a tick) keep the run waiting."""
    by_tick: dict[int, list[SimModule]] = {}
    for module in simulation.modules:
        by_tick.setdefault(module.check_second // TICK, []).append(module)
    limit = asyncio.Semaphore(CONCURRENCY)

    async def check(module: SimModule) -> None:
        async with limit:
            await simulation.check(module)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        clock = ServerClockClient(session, clock_url)
        start = await clock.read()
        first_tick = int(start // TICK) + 1
        last_tick = first_tick + int(days * DAY / TICK)
        day_start = Stats(**simulation.stats.__dict__)
        beat = asyncio.create_task(_heartbeat(clock, simulation, on_wait)) if on_wait is not None else None
        try:
            for tick in range(first_tick, last_tick):
                now = tick * TICK
                await clock.reach(now)
                due = [m for m in by_tick.get(_local_tick(now, zone), []) if not m.silent]
                await asyncio.gather(*(check(m) for m in due))
                if on_tick is not None:
                    on_tick(now, simulation)
                if (tick + 1 - first_tick) % (DAY // TICK) == 0:
                    simulation.days.append(simulation.report(len(simulation.days) + 1, day_start))
                    day_start = Stats(**simulation.stats.__dict__)
            # The last tick ran at or before start + days: a shorter run than a tick (on the real clock, ten
            # minutes) ends on time rather than at the next tick.
            await clock.reach(min(last_tick * TICK, start + days * DAY))
        finally:
            if beat is not None:
                beat.cancel()
                await asyncio.gather(beat, return_exceptions=True)
    return simulation.days


async def _heartbeat(
    clock: ServerClockClient, simulation: Simulation, on_wait: Callable[[float, Simulation], None]
) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT)
        on_wait(clock.estimate(), simulation)


def _local_tick(now: float, zone: ZoneInfo | None) -> int:
    """The ticker period of the local day ``now`` falls in."""
    if zone is None:
        return int(now % DAY) // TICK
    local = datetime.fromtimestamp(now, zone)
    return (local.hour * 3600 + local.minute * 60 + local.second) // TICK


async def first_image(server: Server, product: str, tag: str) -> bytes:
    """The channel's current image, fetched once as a non-module client: the base of the fleet's first delta."""
    reply = await ovms_get(server, f"{server.path}/{product}/{tag}/ovms3.bin", "ovota-fleet-simulator")
    if reply.status != 200:
        raise HttpFailed(f"no ovms3.bin for {product}/{tag} (status {reply.status})")
    return reply.body


async def first_version(server: Server, product: str, tag: str) -> str:
    """The channel's current version (what the fleet starts on), read as a non-module client."""
    reply = await ovms_get(server, f"{server.path}/{product}/{tag}/ovms3.ver", "ovota-fleet-simulator")
    parsed = parse_ver(reply.body) if reply.status == 200 else None
    if parsed is None:
        raise HttpFailed(f"no ovms3.ver for {product}/{tag} at {server.host}:{server.port} (status {reply.status})")
    return parsed.version
