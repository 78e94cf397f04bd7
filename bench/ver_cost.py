"""What one ``ovms3.ver`` request costs the server, in CPU instructions: `ovota server` against the least an aiohttp
server can do for the same answer (one route, a handler that returns the same bytes), in the same run.

Wall-clock requests/s on this shared VM move by 20% from run to run; instructions counted by valgrind's
callgrind do not (the same total, run after run). Each server runs under callgrind with instrumentation off
while it starts, then counts from zero while a client on keep-alive connections sends the requests, and dumps.
The ratio aiohttp floor / ovota is the share of a request's cost that is aiohttp's own: what ovota's device
path costs on top is 1 minus it. ``--smoke``: 200 requests, to check that the bench still runs (CI does this).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from ovota.formats.image_builder import build_app_image

REQUESTS = 4000
SMOKE_REQUESTS = 200
CONNECTIONS = 4
PATH = "/firmware/ota/v3.3-5/main/ovms3.ver"

FLOOR_APP = """
import sys
from aiohttp import web
HEADERS = {"Content-Type": "text/plain; charset=utf-8", "ETag": '"x"', "Cache-Control": "no-cache",
           "Last-Modified": "Sat, 01 Jan 2026 00:00:00 GMT"}
async def ver(request):
    return web.Response(body=b"3.3.006\\n", headers=HEADERS)
app = web.Application()
app.router.add_get("/firmware/ota/{product}/{tag}/{file}", ver)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, count: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(count):
        conn.request("GET", PATH)
        response = conn.getresponse()
        if response.status != 200 or not response.read().startswith(b"3.3.006"):
            raise SystemExit(f"unexpected answer {response.status} from port {port}")
    conn.close()


def _wait(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {proc.returncode}")
        try:
            _get(port, 1)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"server on port {port} did not answer")


def instructions_per_request(command: list[str], work: Path, requests: int) -> float:
    """Run ``command`` (a server taking the port as its last argument) under callgrind; count only the
    instructions it executes while answering ``requests`` GETs."""
    port = _free_port()
    out = work / f"callgrind.{port}"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    proc = subprocess.Popen([*valgrind, *command, str(port)], cwd=work, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait(port, proc)
        _get(port, 20)  # warm: the first requests fill the server's caches
        control = ["callgrind_control"]
        subprocess.run([*control, "-i", "on", str(proc.pid)], check=True, capture_output=True)
        subprocess.run([*control, "-z", str(proc.pid)], check=True, capture_output=True)
        threads = [threading.Thread(target=_get, args=(port, requests // CONNECTIONS)) for _ in range(CONNECTIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        subprocess.run([*control, "-d", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    dumps = sorted(work.glob(f"callgrind.{port}.*"), key=lambda p: p.stat().st_mtime)
    summary = next(line for line in dumps[-1].read_text().splitlines() if line.startswith("summary:"))
    return int(summary.split()[1]) / (requests // CONNECTIONS * CONNECTIONS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="200 requests")
    requests = SMOKE_REQUESTS if parser.parse_args().smoke else REQUESTS
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian package valgrind; make test installs it)")
    ovota = os.environ.get("OVOTA") or str(Path(sys.executable).with_name("ovota"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        image = work / "ovms3.bin"
        image.write_bytes(build_app_image("3.3.006", built=datetime(2026, 1, 1, tzinfo=UTC)))
        subprocess.run([ovota, "release", "publish", str(image), "--repo", "repo", "--tag", "main"], cwd=work,
                       check=True, capture_output=True)  # fmt: skip
        (work / "floor.py").write_text(FLOOR_APP)
        floor = instructions_per_request([sys.executable, "floor.py"], work, requests)
        served = instructions_per_request(
            [sys.executable, ovota, "server", "--repo", "repo", "--delta-bases", "0", "--port"], work, requests
        )
    print(f"instructions per ovms3.ver request, {requests} requests on {CONNECTIONS} keep-alive connections")
    print(f"aiohttp floor (one route, constant answer): {floor:10.0f}")
    print(f"ovota server                              : {served:10.0f}")
    share = 1 - floor / served
    print(f"ratio aiohttp floor / ovota: {floor / served:.2f}  (ovota's own share of a request: {share:.0%})")


if __name__ == "__main__":
    main()
