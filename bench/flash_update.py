"""`ota flash vfs` of a 7 MB image (erase, write, verify, switch) against a plain copy + SHA-256 of the
same bytes into a file, in the same run; then `ota flash http` of the image served by nginx over loopback.

Goal (issue #3): vfs ratio >= 0.5. Prints the ratio and the HTTP throughput.
``--smoke``: a 64 KiB image and one round, to check that the bench still runs (CI does this).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from ovota.device.console.shell import Shell
from ovota.device.console.writer import Writer
from ovota.device.module import Module, create_module
from ovota.formats.image_builder import build_app_image

IMAGE_SIZE = 7_000_000  # 7 MB; a full 0x700000 image cannot be flashed (IDF erases one sector more)
ROUNDS = 5
SMOKE_SIZE = 65536
# Not /sd/ovms3.bin: a module flashes that file at every power-on and renames it (OVMS's SD auto-flash).
SD_NAME = "bench.bin"
BUILT = datetime(2026, 1, 1, tzinfo=UTC)


def copy_and_hash(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    hashlib.sha256(data).digest()
    dst.write_bytes(data)


def flash_once(flash: Path, sd: Path, command: str) -> float:
    module = Module.open(flash, sd)
    out = io.StringIO()
    shell = Shell(module, Writer(out))
    start = time.perf_counter()
    shell.execute(command)
    elapsed = time.perf_counter() - start
    module.close()
    if "OTA flash was successful" not in out.getvalue():
        raise SystemExit(out.getvalue())
    return elapsed


def nginx_serving(root: Path, port: int, work: Path) -> subprocess.Popen[bytes] | None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        return None
    conf = work / "nginx.conf"
    conf.write_text(
        f"""daemon off; worker_processes 1; pid {work}/nginx.pid; error_log {work}/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; sendfile on; client_body_temp_path {work}; proxy_temp_path {work};
  fastcgi_temp_path {work}; uwsgi_temp_path {work}; scgi_temp_path {work};
  server {{ listen 127.0.0.1:{port}; root {root}; }} }}
"""
    )
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(work)], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny image, one round")
    smoke = parser.parse_args().smoke
    size, rounds = (SMOKE_SIZE, 1) if smoke else (IMAGE_SIZE, ROUNDS)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sd = work / "sd"
        sd.mkdir()
        image = build_app_image("3.3.006-bench", size=size, built=BUILT)
        (sd / SD_NAME).write_bytes(image)
        pristine = work / "pristine.img"
        create_module(pristine, "v3-35", build_app_image("3.3.005", size=4096, built=BUILT))
        flash = work / "module.img"

        reference, vfs = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            copy_and_hash(sd / SD_NAME, work / "copy.bin")
            reference.append(time.perf_counter() - start)
            shutil.copyfile(pristine, flash)
            vfs.append(flash_once(flash, sd, f"ota flash vfs /sd/{SD_NAME}"))
        mb = size / 1e6
        ref, ota = statistics.median(reference), statistics.median(vfs)
        print(f"image: {size} bytes, median of {rounds} rounds{' (smoke run: timings mean nothing)' if smoke else ''}")
        print(f"copy + sha256 into a file : {ref * 1e3:8.1f} ms  {mb / ref:7.1f} MB/s")
        print(f"ota flash vfs             : {ota * 1e3:8.1f} ms  {mb / ota:7.1f} MB/s")
        print(f"ratio (ota flash vfs speed / copy+sha256 speed): {ref / ota:.2f}  (goal >= 0.50)")

        www = work / "www"
        www.mkdir()
        (www / "ovms3.bin").write_bytes(image)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = nginx_serving(www, port, work)
        if proc is None:
            print("ota flash http from nginx: skipped (nginx not installed; `apt-get install nginx`)")
            return
        try:
            http = []
            for _ in range(rounds):
                shutil.copyfile(pristine, flash)
                http.append(flash_once(flash, sd, f"ota flash http 127.0.0.1:{port}/ovms3.bin"))
            best = statistics.median(http)
            print(f"ota flash http from nginx : {best * 1e3:8.1f} ms  {mb / best:7.1f} MB/s")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
