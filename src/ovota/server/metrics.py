"""What ``GET /metrics`` reports, in Prometheus's text format: device requests, bytes and latency, the registry's
batches, and, read from the database at each scrape, modules per channel and rollout modules per state.

Labels never carry vehicle ids or anything else a module chooses: only the file (ver, bin), the status code,
and products and tags, which the repository names. Each server process reports its own counters.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ovota.server.store.database import Database

REGISTRY = CollectorRegistry(auto_describe=True)

DEVICE_REQUESTS = Counter(
    "ovota_device_requests", "Requests for ovms3.ver and ovms3.bin", ["file", "status"], registry=REGISTRY
)
DEVICE_BYTES = Counter("ovota_device_bytes_sent", "Bytes of ovms3.bin bodies sent (builds and patches)",
                       registry=REGISTRY)  # fmt: skip
DEVICE_SECONDS = Histogram(
    "ovota_device_request_seconds", "Time to answer a device request (up to its first byte)", ["file"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0), registry=REGISTRY,
)  # fmt: skip
OPERATOR_SECONDS = Histogram(
    "ovota_operator_request_seconds", "Time to answer an API or console request", ["face"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=REGISTRY,
)  # fmt: skip
REGISTRY_BATCH_EVENTS = Histogram(
    "ovota_registry_batch_events", "Check-ins and downloads per registry batch written",
    buckets=(1, 10, 100, 1000, 10_000, 100_000), registry=REGISTRY,
)  # fmt: skip
REGISTRY_BATCH_SECONDS = Histogram("ovota_registry_batch_seconds", "Time to write a registry batch", registry=REGISTRY)
REGISTRY_DROPPED = Counter(
    "ovota_registry_dropped_events", "Events no write could store (each also logged)", registry=REGISTRY
)

BACKEND_FAILURES = Counter(
    "ovota_backend_failures", "Requests answered 503 because a backend was away, by backend and cause",
    ["backend", "cause"], registry=REGISTRY,
)  # fmt: skip

CONNECTIONS_REFUSED = Counter(
    "ovota_connections_refused", "Connections reset on accept, over the total or the per-address cap", ["cap"],
    registry=REGISTRY,
)  # fmt: skip
BODIES_CUT = Counter(
    "ovota_bodies_cut", "Request bodies cut for arriving under 1 KiB/s over --idle-timeout", registry=REGISTRY
)
DOWNLOADS_CUT = Counter(
    "ovota_downloads_cut",
    "Downloads aborted because the client took less than 1 KiB/s over --idle-timeout",
    registry=REGISTRY,
)
IDLE_CLOSED = Counter(
    "ovota_idle_connections_closed",
    "Idle connections closed to make room for a new one at the total cap",
    registry=REGISTRY,
)
CLIENT_DISCONNECTS = Counter(
    "ovota_client_disconnects", "Requests whose client went away before the answer was sent", registry=REGISTRY
)
BACKGROUND_FAILURES = Counter(
    "ovota_background_failures", "Failed rounds of a background worker (registry, rollouts, pruning, deltas)",
    ["worker"], registry=REGISTRY,
)  # fmt: skip
BACKGROUND_FAILING = Gauge(
    "ovota_background_failing", "1 while a background worker's last round failed", ["worker"], registry=REGISTRY
)

_requests: dict[tuple[str, int], Counter] = {}  # bound children: no label lookup per request
SECONDS = {file: DEVICE_SECONDS.labels(file) for file in ("ver", "bin", "build", "other")}


def device_request(file: str, status: int) -> None:
    """Count a device request: ``file`` is ver, bin, build (an immutable URL) or other."""
    child = _requests.get((file, status))
    if child is None:
        child = _requests[(file, status)] = DEVICE_REQUESTS.labels(file, str(status))
    child.inc()


class FleetCollector(Collector):
    """Modules per channel, rollout modules per state and halted rollouts, read from ``db`` at each scrape."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterable[Metric]:
        modules = GaugeMetricFamily("ovota_fleet_modules", "Modules in the registry", labels=["product", "tag"])
        for product, tag, count in _modules_per_channel(self.db):
            modules.add_metric([product, tag], float(count))
        yield modules
        rollouts = GaugeMetricFamily("ovota_rollout_modules", "Modules of active rollouts per state",
                                     labels=["product", "tag", "state"])  # fmt: skip
        for product, tag, state, count in _rollout_states(self.db):
            rollouts.add_metric([product, tag, state], float(count))
        yield rollouts
        halted = GaugeMetricFamily("ovota_rollout_halted", "1 while the channel's rollout is halted, else 0",
                                   labels=["product", "tag"])  # fmt: skip
        for product, tag, state in _active_rollouts(self.db):
            halted.add_metric([product, tag], 1.0 if state == "halted" else 0.0)
        yield halted


def exposition(db: Database) -> bytes:
    """Everything ``/metrics`` shows, in Prometheus's text format (run it off the event loop: it queries ``db``)."""
    fleet = CollectorRegistry(auto_describe=False)
    fleet.register(FleetCollector(db))
    return generate_latest(REGISTRY) + generate_latest(fleet)


def _modules_per_channel(db: Database) -> list[tuple[str, ...]]:
    rows = db.execute("SELECT product, tag, count(*) FROM modules GROUP BY product, tag").fetchall()
    return [(str(p), str(t), str(n)) for p, t, n in rows]


def _rollout_states(db: Database) -> list[tuple[str, ...]]:
    rows = db.execute(
        "SELECT r.product, r.tag, rm.state, count(*) FROM rollouts r JOIN rollout_modules rm ON rm.rollout = r.id "
        "WHERE r.state IN ('running', 'paused', 'halted') GROUP BY r.product, r.tag, rm.state"
    ).fetchall()
    return [(str(p), str(t), str(s), str(n)) for p, t, s, n in rows]


def _active_rollouts(db: Database) -> list[tuple[str, str, str]]:
    rows = db.execute("SELECT product, tag, state FROM rollouts WHERE state IN ('running', 'paused', 'halted')")
    return [(str(p), str(t), str(s)) for p, t, s in rows.fetchall()]
