"""A soak: two minutes of hostile traffic beside 1,000 honest simulated OVMS modules on one `ovota server`.

Hostile, all at once: `.ver` requests with User-Agents that are not UTF-8, unknown products with 1-3 KB names,
connections that send their headers one byte a second, console logins that send their body a byte every 2 s,
connections reset in the middle of a download or of a request body, API calls and console logins with made-up
tokens, and a fake fleet of made-up vehicle ids that download the new build and report the old version. Honest: a
probe that sends OVMS's exact `.ver` request (a new HTTP/1.0 connection each time) every 50 ms, and a 1,000-module
fleet simulation (`ovota fleet simulate`) through a rollout of a build that fails on 30% of the modules, targeted
at a group of 1,000,000 vehicle ids that holds the fleet's.

Prints the probe's `.ver` latency (p50, p99; the goal is a p99 under 50 ms) and the server's resident memory before,
during and after the hostile traffic, what the attackers sent, the server's log size, and the rollout's outcome
against the same simulation on a server that nobody attacks (reference, same run): it must halt at the same step
with the same counts.
``--smoke``: 20 modules, a group of 10,000, one simulated day and seconds per phase, to check that the bench still
runs (CI does this).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ovota.formats.image_builder import build_app_image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import Server, ovota

A, B = "3.3.006", "3.3.007"
VER = "/firmware/ota/v3.3-5/main/ovms3.ver"
HONEST = "ovms/v3.3-5 (PROBE 3.3.006/ota_0/main (build idf v3.3.4, product v3.3-5))"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _source(kind: str) -> tuple[str, int]:
    """The address a kind of hostile traffic comes from: one of its own (127.0.0.2 and up), as attackers on the
    internet have theirs; the honest probe and fleet come from 127.0.0.1."""
    return f"127.0.0.{2 + sum(map(ord, kind)) % 200}", 0


async def _exchange(port: int, request: bytes, kind: str, timeout: float = 10) -> bytes:
    opening = asyncio.open_connection("127.0.0.1", port, local_addr=_source(kind))
    reader, writer = await asyncio.wait_for(opening, timeout)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


class Attack:
    """The hostile traffic, one task per kind, until ``stop`` is set; counts what it sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent: Counter[str] = Counter()
        self.stop = asyncio.Event()

    async def _loop(self, kind: str, request: Any, pause: float) -> None:
        while not self.stop.is_set():
            try:
                await _exchange(self.port, request(), kind)
                self.sent[kind] += 1
            except (OSError, TimeoutError):
                self.sent[kind + " (failed)"] += 1
            await asyncio.sleep(pause)

    async def _slow_headers(self, connections: int) -> None:
        async def one() -> None:
            while not self.stop.is_set():
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=_source("head"))
                    self.sent["slow header connections"] += 1
                    writer.write(f"GET {VER} HTTP/1.1\r\n".encode())
                    while not self.stop.is_set() and not writer.is_closing():
                        writer.write(b"X")  # one byte a second, never the end of the head
                        await writer.drain()
                        await asyncio.sleep(1)
                except OSError:
                    await asyncio.sleep(1)

        await asyncio.gather(*(one() for _ in range(connections)))

    async def _slow_bodies(self, connections: int) -> None:
        """Console logins that announce 50 bytes of body and send one every 2 s: cut after --idle-timeout."""
        head = (b"POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 50\r\n\r\n")  # fmt: skip

        async def one() -> None:
            while not self.stop.is_set():
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=_source("body"))
                    self.sent["slow body connections"] += 1
                    writer.write(head)
                    while not self.stop.is_set():
                        writer.write(b"t")
                        await writer.drain()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(reader.read(100), 2)  # the server's 408, or its close
                            self.sent["slow bodies cut by the server"] += 1
                            await asyncio.sleep(1)  # then again (at once would be a connection flood)
                            break
                    writer.close()
                except OSError:
                    await asyncio.sleep(1)

        await asyncio.gather(*(one() for _ in range(connections)))

    async def _resets(self, pause: float) -> None:
        """Connections reset (RST, not FIN) in the middle of a `.bin` download or of a request body."""
        requests = (f"GET {VER.replace('.ver', '.bin')} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
                    b"POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\ntoken=")  # fmt: skip
        while not self.stop.is_set():
            request = requests[self.sent["resets"] % 2]
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=_source("reset"))
                writer.write(request)
                if request.startswith(b"GET"):
                    await asyncio.wait_for(reader.read(1), 10)  # the answer has begun
                else:
                    await asyncio.sleep(0.05)  # the handler waits for the body
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                self.sent["resets"] += 1
            except (OSError, TimeoutError):
                self.sent["resets (failed)"] += 1
            await asyncio.sleep(pause)

    async def run(self) -> None:
        def poison() -> bytes:
            return (f"GET {VER} HTTP/1.0\r\nUser-Agent: ovms/v3.3-5 (P".encode() + random.randbytes(2) + b"\xff"
                    + b" 3.3.006/ota_0/main (build x))\r\n\r\n")  # fmt: skip

        def unknown() -> bytes:
            name = "".join(random.choices("abcdefghijklmnop", k=random.randint(1000, 3000)))
            return f"GET /firmware/ota/{name}/main/ovms3.ver HTTP/1.0\r\n\r\n".encode()

        def bad_token() -> bytes:
            token = f"ovota_{random.randbytes(24).hex()}"
            return f"GET /api/v1/channels HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n".encode()

        def bad_login() -> bytes:
            body = f"token=ovota_{random.randbytes(24).hex()}".encode()
            return (b"POST /console/login HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)  # fmt: skip

        async def fake_module() -> None:
            while not self.stop.is_set():
                agent = f"ovms/v3.3-5 (FAKE{random.randrange(10**9)} {A}/ota_0/main (build x))"
                for path in (VER, VER.replace(".ver", ".bin"), VER):
                    try:
                        request = f"GET {path} HTTP/1.0\r\nUser-Agent: {agent}\r\n\r\n".encode()
                        await _exchange(self.port, request, "fake fleet")
                        self.sent["fake fleet requests"] += 1
                    except (OSError, TimeoutError):
                        self.sent["fake fleet requests (failed)"] += 1
                await asyncio.sleep(0.02)

        await asyncio.gather(
            self._loop("poisoned User-Agents", poison, 0.005),
            self._loop("unknown names", unknown, 0.005),
            self._loop("made-up API tokens", bad_token, 0.02),
            self._loop("made-up console logins", bad_login, 0.05),
            self._slow_headers(100),
            self._slow_bodies(100),
            *(self._resets(0.01) for _ in range(2)),
            *(fake_module() for _ in range(4)),
        )


def probe(port: int, stop: threading.Event, latencies: list[tuple[float, float]]) -> None:
    """OVMS's exact `.ver` request every 50 ms on a new connection: (when, seconds to the whole answer)."""
    request = f"GET {VER} HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: {HONEST}\r\n\r\n".encode()
    while not stop.is_set():
        started = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(request)
                while sock.recv(65536):
                    pass
            latencies.append((started, time.monotonic() - started))
        except OSError:
            latencies.append((started, 30.0))
        time.sleep(0.05)


def rollout_run(work: Path, name: str, modules: int, images: dict[str, Path], attacked: bool,
                phase: float, days: int, group: int) -> dict[str, Any]:  # fmt: skip
    repo = work / name
    ovota("release", "publish", images[A], "--repo", repo, "--tag", "main")
    ovota("token", "create", "--repo", repo, "--name", "ci")
    members = work / f"{name}.csv"  # the simulated fleet's ids among (group - modules) others
    members.write_text("vehicle_id\n" + "".join(f"G{n:07d}\n" for n in range(group - modules))
                       + "".join(f"SIM{n:05d}\n" for n in range(1, modules + 1)))  # fmt: skip
    ovota("fleet", "group", "add", "--repo", repo, "fleet", "--from-file", members)
    log = work / f"{name}.log"
    server = Server(repo, log=log)
    simulate: list[str | Path] = ["fleet", "simulate", "--server", f"127.0.0.1:{server.port}/firmware/ota",
                                  "--modules", str(modules), "--version", A]  # fmt: skip
    result: dict[str, Any] = {"name": name}
    try:
        ovota(*simulate, "--days", "1", "--report", work / f"{name}-day0.json")
        ovota("release", "publish", images[B], "--repo", repo, "--tag", "main", "--rollout", "10,50,100",
              "--group", "fleet")  # fmt: skip
        if attacked:
            result.update(asyncio.run(_attacked(server, [*simulate, "--days", str(days)], work, name, phase)))
        else:
            ovota(*simulate, "--days", str(days), "--fail", f"{B}:0.3", "--report", work / f"{name}.json")
    finally:
        server.stop()
    result["rollout"] = json.loads(
        ovota("rollout", "status", "--repo", repo, "--product", "v3.3-5", "--tag", "main", "--json")
    )
    text = log.read_text(errors="replace")
    result["log"] = (len(text.encode()), text.count("\n"), text.count("Traceback"))
    return result


async def _attacked(server: Server, simulate: list[str | Path], work: Path, name: str,
                    phase: float) -> dict[str, Any]:  # fmt: skip
    latencies: list[tuple[float, float]] = []
    stop_probe = threading.Event()
    prober = threading.Thread(target=probe, args=(server.port, stop_probe, latencies))
    prober.start()
    memory: dict[str, list[float]] = {"before": [], "during": [], "after": []}

    async def sample(label: str, seconds: float) -> tuple[float, float]:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            memory[label].append(rss_mb(server.proc.pid))
            await asyncio.sleep(0.5)
        return start, time.monotonic()

    windows = {"before": await sample("before", phase)}
    attack = Attack(server.port)
    attacking = asyncio.create_task(attack.run())
    started = time.monotonic()
    simulation = asyncio.create_task(asyncio.to_thread(
        ovota, *simulate, "--fail", f"{B}:0.3", "--report", work / f"{name}.json"
    ))  # fmt: skip
    while time.monotonic() - started < 4 * phase or not simulation.done():
        memory["during"].append(rss_mb(server.proc.pid))
        await asyncio.sleep(0.5)
    windows["during"] = (started, time.monotonic())
    attack.stop.set()
    await asyncio.wait_for(attacking, 30)
    await simulation
    windows["after"] = await sample("after", phase)
    stop_probe.set()
    await asyncio.to_thread(prober.join)
    probe_ms = {}
    for label, (begin, end) in windows.items():
        seen = sorted(took for when, took in latencies if begin <= when < end)
        probe_ms[label] = (statistics.median(seen) * 1000, seen[int(0.99 * (len(seen) - 1))] * 1000, len(seen))
    return {"probe": probe_ms, "memory": {k: (min(v), max(v)) for k, v in memory.items()}, "sent": attack.sent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="20 modules, one day, short phases")
    smoke = parser.parse_args().smoke
    modules, phase, days, group = (20, 0.5, 1, 10_000) if smoke else (1000, 30.0, 3, 1_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = {}
        for version in (A, B):
            images[version] = work / f"{version}.bin"
            images[version].write_bytes(build_app_image(version, size=65536, built=datetime(2026, 1, 1, tzinfo=UTC)))
        alone = rollout_run(work, "alone", modules, images, attacked=False, phase=phase, days=days, group=group)
        attacked = rollout_run(work, "attacked", modules, images, attacked=True, phase=phase, days=days, group=group)
    note = " (smoke run: figures mean nothing)" if smoke else ""
    print(f"soak: {modules} honest modules in a group of {group:,} ids, hostile traffic for {4 * phase:.0f} s or more"
          f"{note}")  # fmt: skip
    print(f"{'phase':<8} {'probe .ver p50 ms':>18} {'p99 ms':>8} {'probes':>7} {'server RSS MB (min-max)':>25}")
    for label in ("before", "during", "after"):
        p50, p99, count = attacked["probe"][label]
        low, high = attacked["memory"][label]
        print(f"{label:<8} {p50:18.1f} {p99:8.1f} {count:7d} {low:12.1f} - {high:6.1f}")
    print("hostile requests sent: " + ", ".join(f"{k} {v}" for k, v in sorted(attacked["sent"].items())))
    for run in (alone, attacked):
        size, lines, tracebacks = run["log"]
        print(f"server log {run['name']:<9}: {size:,} bytes, {lines:,} lines, {tracebacks} tracebacks")
    for run in (alone, attacked):
        r = run["rollout"]
        print(f"rollout {run['name']:<9}: {r['state']} at step {r['step']} ({r['percent']}%), counts {r['counts']}")
    same = all(alone["rollout"][k] == attacked["rollout"][k] for k in ("state", "step", "counts"))
    before_p99, during_p99 = attacked["probe"]["before"][1], attacked["probe"]["during"][1]
    print(f"ratio attacked/alone rollout outcome identical: {same}; probe p99 during/before: "
          f"{during_p99 / before_p99:.2f}; p99 during under 50 ms: {during_p99 < 50}")  # fmt: skip


if __name__ == "__main__":
    main()
