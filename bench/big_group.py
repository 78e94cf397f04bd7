"""A targeted rollout over a group of 1,000,000 vehicle ids, under steady check-in traffic (issue #27): ``ovms3.ver``
latency (p50, p99) of modules while other modules check in, and the server's memory, against the same channel and
traffic with an untargeted rollout, in the same run.

Every check-in is written to the registry twice a second; the channel's cached answer, with the group's members in
it, must not be read again for that (only when a group, pin, rollout or channel changes). ``--smoke``: 10,000 ids.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import A, B, Server, ovota, write_images


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ver(port: int, vehicle: str) -> float:
    """One OVMS .ver request; its latency in ms."""
    agent = f"ovms/v3.3-5 ({vehicle} {A}/ota_0/main (build idf, product v3.3-5))"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/firmware/ota/v3.3-5/main/ovms3.ver",
                                     headers={"User-Agent": agent})  # fmt: skip
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()
    return (time.perf_counter() - started) * 1000


def advance(port: int, seconds: float) -> None:
    """Move the bench server's driven clock."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/clock", timeout=10) as answer:
        now = json.loads(answer.read())["now"]
    body = json.dumps({"to": now + seconds}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/clock", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    urllib.request.urlopen(request, timeout=30).close()


def one_run(work: Path, name: str, ids: int, images: dict[str, Path], targeted: bool, seconds: float) -> dict[str, Any]:
    repo = work / name
    ovota("release", "publish", images[A], "--repo", repo, "--tag", "main")
    ovota("release", "publish", images[B], "--repo", repo, "--tag", "edge")
    server = Server(repo)
    try:
        for n in range(50):  # a fleet that has checked in
            ver(server.port, f"CAR{n:05d}")
        if targeted:
            csv = work / f"{name}.csv"
            # ids in all, two of them modules that check in (a group holds at most 1,000,000)
            csv.write_text("vehicle_id\n" + "".join(f"G{n:07d}\n" for n in range(ids - 2)) + "CAR00001\nCAR00002\n")
            ovota("fleet", "group", "add", "--repo", repo, "big", "--from-file", csv)
        target = ["--group", "big"] if targeted else []
        advance(server.port, 60)  # the fleet's check-ins are in the registry before the start: the rollout's voters
        ovota("rollout", "start", "--repo", repo, "--product", "v3.3-5", "--tag", "main", "--build", B,
              "--steps", "50,100", *target)  # fmt: skip
        ver(server.port, "CAR00001")  # the answer is loaded
        stop = time.monotonic() + seconds
        background = threading.Thread(target=lambda: [ver(server.port, f"BG{n % 500}") for n in range(10**9)
                                                      if time.monotonic() < stop or exit()])  # fmt: skip
        background.daemon = True
        background.start()  # steady check-ins from other modules: registry writes twice a second
        latencies: list[float] = []
        while time.monotonic() < stop:
            latencies.append(ver(server.port, f"CAR{len(latencies) % 50:05d}"))
            time.sleep(0.01)
        memory = rss_mib(server.proc.pid)
    finally:
        server.stop()
    latencies.sort()
    return {"name": name, "p50": statistics.median(latencies), "p99": latencies[int(len(latencies) * 0.99) - 1],
            "requests": len(latencies), "rss": memory}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="10,000 ids, 3 seconds of traffic")
    args = parser.parse_args()
    ids, seconds = (10_000, 3.0) if args.smoke else (1_000_000, 20.0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = write_images(work, 65536)
        smoke = " (smoke run: timings mean nothing)" if args.smoke else ""
        print(f"big group: {ids:,} vehicle ids in a targeted rollout's group, {seconds:g} s of check-ins{smoke}")
        plain = one_run(work, "untargeted", ids, images, False, seconds)
        big = one_run(work, "group", ids, images, True, seconds)
        for r in (plain, big):
            print(f"{r['name']:<11} .ver p50 {r['p50']:6.2f} ms  p99 {r['p99']:7.2f} ms  ({r['requests']} requests)  "
                  f"server RSS {r['rss']:6.0f} MiB")  # fmt: skip
        print(f"memory for the group's ids: {big['rss'] - plain['rss']:.0f} MiB")
        print(f"ratio group / untargeted: p50 {big['p50'] / plain['p50']:.2f}, p99 {big['p99'] / plain['p99']:.2f}")


if __name__ == "__main__":
    main()
