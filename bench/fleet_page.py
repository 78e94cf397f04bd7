"""The console's Fleet page and ``GET /api/v1/fleet`` over a registry of 100,000 modules: time to answer and bytes
sent, beside a plain listing of the same registry read whole (``fleet list --json`` through the library: what a
page that showed every module would have to read) in the same run.

Goal (issue #19): each page under 1 s and 300 KB at 100,000 modules. ``--smoke``: 1,000 modules, to check that the
bench still runs (CI does this).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from http.cookiejar import CookieJar
from pathlib import Path

from ovota.formats.image_builder import build_app_image
from ovota.server.fleet.modules import list_modules, module_json
from ovota.server.store.repository import Repository

OVOTA = str(Path(sys.executable).with_name("ovota"))
VERSIONS = ("3.3.005", "3.3.006", "3.3.006-12-gabcdef0", "3.3.007")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill(repo: Path, modules: int) -> None:
    """``modules`` registry rows, as many check-ins would have left them."""
    r = Repository(repo)
    try:
        now = time.time()
        rows = [(f"CAR{n:06d}", f"CAR{n:06d}", "v3.3-5", "main", VERSIONS[n % len(VERSIONS)], "ota_0",
                 f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", now - 86400 * (n % 90), now - n % 86400, 1 + n % 50)
                for n in range(modules)]  # fmt: skip
        with r.transaction() as db:
            db.executemany("INSERT INTO modules VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    finally:
        r.close()


def timed_get(url: str, headers: dict[str, str], rounds: int) -> tuple[float, int]:
    """Median seconds to the whole answer, and its size in bytes."""
    times, size = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as response:
            size = len(response.read())
        times.append(time.perf_counter() - started)
    return statistics.median(times), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1,000 modules, one round")
    smoke = parser.parse_args().smoke
    modules, rounds = (1000, 1) if smoke else (100_000, 7)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = work / "repo"
        (work / "a.bin").write_bytes(build_app_image("3.3.006", built=datetime(2026, 1, 1, tzinfo=UTC)))
        subprocess.run([OVOTA, "release", "publish", work / "a.bin", "--repo", repo, "--tag", "main"], check=True,
                       capture_output=True)  # fmt: skip
        token = subprocess.run([OVOTA, "token", "create", "--repo", repo, "--name", "bench"], check=True,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        fill(repo, modules)
        port = _free_port()
        command = [OVOTA, "server", "--repo", str(repo), "--port", str(port), "--delta-bases", "0"]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            base = f"http://127.0.0.1:{port}"
            login = urllib.request.Request(f"{base}/console/login", data=f"token={token}".encode(), method="POST")
            jar = CookieJar()
            urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)).open(login, timeout=30).read()
            cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
            page = timed_get(f"{base}/console/fleet", {"Cookie": cookie}, rounds)
            searched = timed_get(
                f"{base}/console/fleet?q=CAR0999&sort=last_seen&order=desc", {"Cookie": cookie}, rounds
            )
            api = timed_get(f"{base}/api/v1/fleet?limit=1000", {"Authorization": f"Bearer {token}"}, rounds)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
        r = Repository(repo)
        try:
            started = time.perf_counter()
            whole = json.dumps([module_json(m) for m in list_modules(r.db)]).encode()
            read_whole = time.perf_counter() - started
        finally:
            r.close()
    note = " (smoke run: timings mean nothing)" if smoke else ""
    print(f"registry of {modules} modules, median of {rounds} rounds{note}")
    for label, (seconds, size) in (("Fleet page (first 100)", page), ("Fleet page, searched and sorted", searched),
                                   ("GET /api/v1/fleet?limit=1000", api)):  # fmt: skip
        print(f"{label:<34} {seconds * 1000:8.1f} ms {size / 1024:9.1f} KiB")
    print(f"{'reference: every module read whole':<34} {read_whole * 1000:8.1f} ms {len(whole) / 1024:9.1f} KiB")
    worst = max(page[0], searched[0])
    print(f"ratio page/whole-read time: {worst / read_whole:.3f}; goal: under 1 s and 300 KiB "
          f"({'met' if worst < 1 and max(page[1], searched[1]) < 300 * 1024 else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
