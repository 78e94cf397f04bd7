"""A 10,000-module fleet against a real `ovota server` on loopback: a healthy staged rollout, then a failing one.

Each run: the fleet checks in for a simulated day (the server learns it), a build B is published with
`--rollout 1,10,50,100`, then the fleet runs day by day (OVMS's exact requests, real downloads of B,
image verification). The server's clock is driven by the simulator, a simulated day per ~tens of
seconds. Reference in the same run: the same fleet and days against a server with the registry off
(`--no-fleet`) and B published at once, i.e. plain serving.

Prints per run: wall time, check-ins/s, server CPU per check-in, bytes served, share of the fleet that
ever received B, and the rollout's end state. Goal (issue #10): each run under 5 minutes of wall time.
``--smoke``: 200 modules, 64 KiB images and two days, to check that the bench still runs (CI does this).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ovota.formats.image_builder import build_app_image

A, B = "3.3.006", "3.3.007"
BUILT = datetime(2026, 1, 1, tzinfo=UTC)
OVOTA = str(Path(sys.executable).with_name("ovota"))
GOAL_SECONDS = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ovota(*args: str | Path) -> str:
    proc = subprocess.run([OVOTA, *map(str, args)], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"ovota {' '.join(map(str, args))} failed: {proc.stderr}")
    return proc.stdout


class Server:
    def __init__(self, repo: Path, *extra: str, log: Path | None = None) -> None:
        """``log``: a file for the server's standard error (its log), else discarded."""
        self.port = free_port()
        self._log = log.open("wb") if log else None
        stderr = self._log or subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [OVOTA, "server", "--repo", str(repo), "--port", str(self.port), "--driven-clock",
             "--delta-bases", "0", *extra],
            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )  # fmt: skip
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("ovota server did not start")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)
        if self._log is not None:
            self._log.close()


def write_images(work: Path, size: int) -> dict[str, Path]:
    """Builds A and B of ``size`` bytes in ``work``: version -> file."""
    images = {}
    for version in (A, B):
        images[version] = work / f"{version}.bin"
        images[version].write_bytes(build_app_image(version, size=size, built=BUILT))
    return images


def one_run(work: Path, name: str, modules: int, days: int, images: dict[str, Path], rollout: bool,
            fail: str | None) -> dict[str, Any]:  # fmt: skip
    repo = work / name
    ovota("release", "publish", images[A], "--repo", repo, "--tag", "main")
    server = Server(repo, *([] if rollout else ["--no-fleet"]))
    simulate: list[str | Path] = ["fleet", "simulate", "--server", f"127.0.0.1:{server.port}/firmware/ota",
                                  "--modules", str(modules), "--version", A]  # fmt: skip
    try:
        ovota(*simulate, "--days", "1", "--report", work / f"{name}-day0.json")
        publish: list[str | Path] = ["release", "publish", images[B], "--repo", repo, "--tag", "main"]
        ovota(*publish, *(["--rollout", "1,10,50,100"] if rollout else []))
        cpu_before, start = cpu_seconds(server.proc.pid), time.monotonic()
        report_path = work / f"{name}.json"
        ovota(*simulate, "--days", str(days), "--report", report_path, *(["--fail", fail] if fail else []))
        wall, cpu = time.monotonic() - start, cpu_seconds(server.proc.pid) - cpu_before
    finally:
        server.stop()
    summary = json.loads(report_path.read_text())["summary"]
    status = {"state": "(no rollout)", "step": "-", "reason": ""}
    if rollout:
        status = json.loads(
            ovota("rollout", "status", "--repo", repo, "--product", "v3.3-5", "--tag", "main", "--json")
        )
    return {"name": name, "wall": wall, "server_cpu": cpu, **summary, "rollout": status}


def show(run: dict[str, Any]) -> None:
    checkins = run["checkins"]
    rollout = run["rollout"]
    print(
        f"{run['name']:<10} {run['wall']:7.1f} s  {checkins:>7} check-ins {checkins / run['wall']:7.0f}/s  "
        f"server CPU {run['server_cpu'] / checkins * 1e6:6.0f} us/check-in  {run['bytes_served'] / 1e6:8.1f} MB  "
        f"exposed {run['exposed_share'] * 100:5.1f}%  rollout {rollout['state']} at step {rollout['step']}"
    )
    if rollout.get("reason"):
        print(f"{'':<10} halted: {rollout['reason']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="200 modules, 64 KiB images")
    parser.add_argument("--modules", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, default=1 << 20, help="bytes per image (a multiple of 16)")
    args = parser.parse_args()
    modules, size = (200, 65536) if args.smoke else (args.modules, args.image_size)
    days = 2 if args.smoke else 8  # the smoke run only checks that the bench still runs
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = write_images(work, size)
        smoke = " (smoke run: timings mean nothing)" if args.smoke else ""
        print(f"fleet: {modules} modules, images of {size} bytes{smoke}")
        runs = [
            one_run(work, "healthy", modules, days, images, rollout=True, fail=None),
            one_run(work, "failing", modules, min(days, 6), images, rollout=True, fail=f"{B}:0.3"),
            one_run(work, "plain", modules, days, images, rollout=False, fail=None),
        ]
        for run in runs:
            show(run)
        healthy, _, plain = runs
        ratio = (healthy["checkins"] / healthy["wall"]) / (plain["checkins"] / plain["wall"])
        cpu_ratio = (healthy["server_cpu"] / healthy["checkins"]) / (plain["server_cpu"] / plain["checkins"])
        print(f"ratio healthy rollout / plain serving (registry off): check-ins/s {ratio:.2f}, "
              f"server CPU per check-in {cpu_ratio:.2f}")  # fmt: skip
        slowest = max(run["wall"] for run in runs[:2])
        print(f"slowest rollout run: {slowest:.0f} s (goal < {GOAL_SECONDS} s)")


if __name__ == "__main__":
    main()
