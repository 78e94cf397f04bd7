"""A paced rollout of a 10,000-module fleet, per simulated hour, against the pace it was configured with.

The fleet lives in Europe/Berlin and checks daily at its ``ota auto.hour`` (spread over the night, 00-05 local),
as the simulator's modules do (OVMS's exact requests, real downloads, image verification, 2% of modules fall
back from the new build). It checks in for a day, then B is rolled out with ``--window 'Mon-Sun 01:00-05:00'
--timezone Europe/Berlin --rate R/h`` and steps 5,25,100 (interval 2h of window time), and the fleet runs for
five days on a driven clock. Per simulated hour it prints: local time, whether the window was open, modules newly
admitted (the server's rate decisions) against the rate, modules offered B at their check-in, updated and failed.

Reference in the same run: the same fleet and days with an unpaced rollout (same steps, no window, no rate):
wall time and check-ins per second side by side. ``--smoke``: 100 modules, half a day, 64 KiB images.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import A, B, Server, ovota, write_images

from ovota.sim.fleet import FailureModel, Simulation, make_fleet, run
from ovota.sim.http import Server as Target

ZONE = ZoneInfo("Europe/Berlin")
WINDOW = "Mon-Sun 01:00-05:00"
HOURS = (0, 1, 2, 3, 4, 5)  # auto.hour of the fleet's modules, local time


def admitted(repo: Path) -> tuple[int, str]:
    """Modules admitted so far, and the rollout's state."""
    with sqlite3.connect(f"file:{repo / 'repo.sqlite'}?mode=ro", uri=True) as db:
        (count,) = db.execute("SELECT count(*) FROM rollout_admissions").fetchone()
        (state,) = db.execute("SELECT state FROM rollouts ORDER BY id DESC LIMIT 1").fetchone()
    return int(count), str(state)


def start_at_midnight(clock: str) -> None:
    """Move the driven clock to the next local midnight: the fleet's auto hours (00-05) come first, whatever the
    time of day the bench runs at (a half-day smoke run from the afternoon would otherwise see no check-in)."""
    with urllib.request.urlopen(clock, timeout=10) as answer:
        now = float(json.loads(answer.read())["now"])
    local = datetime.fromtimestamp(now, ZONE)
    midnight = datetime(local.year, local.month, local.day, tzinfo=ZONE) + timedelta(days=1)
    body = json.dumps({"to": midnight.timestamp()}).encode()
    request = urllib.request.Request(clock, data=body, method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


def one_run(work: Path, name: str, modules: int, days: float, images: dict[str, Path], paced: bool,
            rate: int) -> dict[str, Any]:  # fmt: skip
    repo = work / name
    ovota("release", "publish", images[A], "--repo", repo, "--tag", "main")
    ovota("release", "publish", images[B], "--repo", repo, "--tag", "edge")
    server = Server(repo)
    target = Target.parse(f"127.0.0.1:{server.port}/firmware/ota")
    clock = f"http://127.0.0.1:{server.port}/clock"
    fleet = make_fleet(modules, A, "CAR", HOURS)
    try:
        start_at_midnight(clock)
        asyncio.run(run(Simulation(target, fleet, "v3.3-5", "main", A), clock, 1, zone=ZONE))  # learn the fleet
        pacing = ["--window", WINDOW, "--timezone", "Europe/Berlin", "--rate", f"{rate}/h"] if paced else []
        ovota("rollout", "start", "--repo", repo, "--product", "v3.3-5", "--tag", "main", "--build", B,
              "--steps", "5,25,100", "--step-interval", "2h", "--min-sample", "20", *pacing)  # fmt: skip
        simulation = Simulation(target, fleet, "v3.3-5", "main", A, fail=FailureModel({B: 0.02}))
        last = {"admitted": 0, "offered": 0, "updated": 0, "failed": 0}
        by_hour: dict[int, dict[str, Any]] = {}

        def on_tick(now: float, sim: Simulation) -> None:
            # The tick's requests are done: what changed since the last tick belongs to this tick's hour.
            count, state = admitted(repo)
            seen = {"admitted": count, "offered": sim.stats.offered, "updated": sim.stats.updated,
                    "failed": sim.stats.failed}  # fmt: skip
            local = datetime.fromtimestamp(now, ZONE)
            bucket = by_hour.setdefault(int(now // 3600), {
                "local": f"{local:%a %H}:00", "open": 1 <= local.hour < 5, **dict.fromkeys(last, 0)})  # fmt: skip
            for key, value in seen.items():
                bucket[key] += value - last[key]
            bucket["state"] = state  # at the end of the hour
            last.update(seen)

        start = time.monotonic()
        asyncio.run(run(simulation, clock, days, on_tick, ZONE))
        wall = time.monotonic() - start
        status = ovota("rollout", "status", "--repo", repo, "--product", "v3.3-5", "--tag", "main")
    finally:
        server.stop()
    hours = [by_hour[h] for h in sorted(by_hour)]
    return {"name": name, "wall": wall, "checkins": simulation.stats.checkins, "hours": hours,
            "updated": simulation.stats.updated, "status": status.splitlines()[1]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="100 modules, half a day, 64 KiB images")
    parser.add_argument("--modules", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=500, help="modules newly offered per hour")
    args = parser.parse_args()
    modules, days, size = (100, 0.5, 65536) if args.smoke else (args.modules, 5, 256 * 1024)
    rate = max(1, args.rate * modules // args.modules) if args.smoke else args.rate
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = write_images(work, size)
        smoke = " (smoke run: timings mean nothing)" if args.smoke else ""
        print(f"pacing: {modules} modules in Europe/Berlin checking at auto.hour 0-5, window {WINDOW}, "
              f"rate {rate}/h, steps 5,25,100{smoke}")  # fmt: skip
        paced = one_run(work, "paced", modules, days, images, True, rate)
        plain = one_run(work, "unpaced", modules, days, images, False, rate)
        print(f"{'Hour (local)':<13} {'Window':<7} {'Admitted':>8} {'Allowed':>8} {'Offered':>8} {'Updated':>8} "
              f"{'Failed':>7}  Rollout")  # fmt: skip
        for h in paced["hours"]:
            if h["admitted"] or h["offered"] or h["updated"] or h["open"]:
                allowed = rate if h["open"] else 0
                print(f"{h['local']:<13} {'open' if h['open'] else '-':<7} {h['admitted']:>8} {allowed:>8} "
                      f"{h['offered']:>8} {h['updated']:>8} {h['failed']:>7}  {h['state']}")  # fmt: skip
        over = [h for h in paced["hours"] if h["admitted"] > (rate if h["open"] else 0)]
        running = [h for h in paced["hours"] if h["state"] != "completed"]
        outside = sum(h["offered"] for h in running if not h["open"])
        print(f"hours over the configured pace: {len(over)}; offers outside the window while the rollout ran: "
              f"{outside}")  # fmt: skip
        for r in (paced, plain):
            print(f"{r['name']:<8} {r['wall']:6.1f} s  {r['checkins']:>7} check-ins "
                  f"{r['checkins'] / r['wall']:6.0f}/s  {r['updated']:>6} updated  {r['status']}")  # fmt: skip
        ratio = (paced["checkins"] / paced["wall"]) / (plain["checkins"] / plain["wall"])
        print(f"ratio paced / unpaced rollout: check-ins/s {ratio:.2f}")


if __name__ == "__main__":
    main()
