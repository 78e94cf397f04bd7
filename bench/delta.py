"""Delta updates on a series of generated consecutive builds, and the bytes one update costs over a bad link.

The generator changes builds the way a compiler does: a few functions are inserted or removed, which shifts
every later address that code words refer to; some strings change or are added; the version and build time
change. Per consecutive pair it prints the patch size as a share of the new image for esp_delta_ota (ovota's
`delta create`: detools sequential + heatshrink), detools + lzma, bsdiff4, and the whole image lzma-compressed
(references computed in the same run).

Then one real update: an emulated module on the last-but-one build fetches the last one from `ovota server` through a
proxy that drops every connection after 500 kB, retrying `ota flash http` (at most 12 attempts): whole image,
whole + resume, delta, delta + resume; it prints the bytes that crossed the link.
``--smoke``: small builds and one pair, to check that the bench still runs (CI does this).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import lzma
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import bsdiff4
import detools

from ovota.device.console.shell import Shell
from ovota.device.console.writer import Writer
from ovota.device.module import Module, create_module
from ovota.formats.app_image import AppDescriptor
from ovota.formats.delta import create_patch
from ovota.formats.image_builder import assemble_image
from ovota.formats.version_marker import marker

OVOTA = str(Path(sys.executable).with_name("ovota"))
IROM = 0x400D0000
DROP_EVERY = 500_000
MAX_ATTEMPTS = 12
WORDS = [random.Random(7).getrandbits(32) for _ in range(600)]  # the "instruction set" code is drawn from


class Source:
    """A program as a compiler sees it: functions (code words, some of which are address references) and strings."""

    def __init__(self, rng: random.Random, functions: int, strings: int) -> None:
        self.rng = rng
        self.functions = [self._function() for _ in range(functions)]
        self.strings = [self._string() for _ in range(strings)]

    def _function(self) -> list[tuple[str, int]]:
        # ("op", word) or ("ref", index of the function referred to)
        body = []
        for _ in range(self.rng.randint(20, 400)):
            kind = self.rng.random()
            if kind < 0.08:  # absolute addresses (literal pools); most branches are PC-relative
                body.append(("ref", self.rng.randrange(1 << 16)))
            elif kind < 0.35:
                body.append(("op", self.rng.choice(WORDS)))  # common instructions repeat
            else:
                body.append(("op", self.rng.getrandbits(32)))  # most code words are as good as unique
        return body

    def _string(self) -> bytes:
        vocabulary = [b"error", b"ota", b"vehicle", b"can", b"metric", b"config", b"server", b"%d", b"failed",
                      b"module", b"%s", b"battery", b"charge"]  # fmt: skip
        words = [self.rng.choice(vocabulary) for _ in range(self.rng.randint(2, 9))]
        return b" ".join(words) + b"\0"

    def next_release(self) -> None:
        """What a release changes: functions added, removed and edited; strings changed and added."""
        for _ in range(self.rng.randint(1, 4)):
            self.functions.insert(self.rng.randrange(len(self.functions)), self._function())
        if self.rng.random() < 0.5:
            del self.functions[self.rng.randrange(len(self.functions))]
        for _ in range(self.rng.randint(2, 8)):
            body = self.functions[self.rng.randrange(len(self.functions))]
            body[self.rng.randrange(len(body))] = ("op", self.rng.choice(WORDS))
        for _ in range(self.rng.randint(1, 6)):
            self.strings[self.rng.randrange(len(self.strings))] = self._string()
        self.strings.extend(self._string() for _ in range(self.rng.randint(0, 5)))

    def compile(self, version: str, built: datetime) -> bytes:
        """Link: lay functions out, resolve references to absolute addresses, then assemble the image."""
        date = f"{built:%b} {built.day:2d} {built.year}"
        digest = hashlib.sha256(version.encode()).digest()
        descriptor = AppDescriptor(version, "ovms3", built.strftime("%H:%M:%S"), date, "v3.3.4", digest)
        rodata = descriptor.to_bytes() + b"".join(self.strings) + marker(version.encode())
        rodata += b"\0" * (-len(rodata) % 4)
        # Flash-mapped code must sit at an address congruent to its offset in the image (64 KiB MMU pages).
        code_offset = 24 + 8 + len(rodata) + 8 + 64 + 8
        load = IROM + code_offset % 0x10000
        addresses, position = [], load
        for body in self.functions:
            addresses.append(position)
            position += 4 * len(body)
        code = bytearray()
        for body in self.functions:
            for kind, value in body:
                word = addresses[value % len(addresses)] if kind == "ref" else value
                code += word.to_bytes(4, "little")
        return assemble_image([(0x3F400020, rodata), (0x3FFB0000, bytes(64)), (load, bytes(code))])


def series(count: int, functions: int, strings: int) -> list[bytes]:
    source = Source(random.Random(2026), functions, strings)
    builds = []
    for index in range(count):
        if index:
            source.next_release()
        built = datetime(2026, 1, 1, tzinfo=UTC).replace(day=1 + index % 28, hour=index % 24)
        builds.append(source.compile(f"3.3.{6 + index:03d}", built))
    return builds


def sizes(base: bytes, new: bytes) -> dict[str, int]:
    lz = io.BytesIO()
    detools.create_patch(io.BytesIO(base), io.BytesIO(new), lz, compression="lzma")
    return {
        "esp_delta_ota": len(create_patch(base, new)),
        "detools+lzma": len(lz.getvalue()),
        "bsdiff4": len(bsdiff4.diff(base, new)),
        "whole lzma": len(lzma.compress(new)),
    }


class DroppingLink:
    """A proxy that closes every connection once it has carried ``DROP_EVERY`` bytes, counting them all."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.carried = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with client, socket.create_connection(("127.0.0.1", self.target)) as upstream:
                request = b""
                while b"\r\n\r\n" not in request and (data := client.recv(65536)):
                    request += data
                upstream.sendall(request)
                sent = 0
                while data := upstream.recv(65536):
                    room = DROP_EVERY - sent
                    client.sendall(data[:room])
                    sent += min(room, len(data))
                    self.carried += min(room, len(data))
                    if sent >= DROP_EVERY:
                        break


def update_over_link(work: Path, builds: list[bytes], port: int, settings: list[str]) -> tuple[bool, int, int]:
    """(completed, attempts, bytes carried) for one module updating from the last-but-one build to the last."""
    link = DroppingLink(port)
    flash = work / "module.img"
    create_module(flash, "v3-35", builds[-2])
    module = Module.open(flash)
    shell = Shell(module, Writer(io.StringIO()))
    for command in [f"config set ota server 127.0.0.1:{link.port}/firmware/ota", *settings]:
        shell.execute(command)
    done, attempts = False, 0
    while not done and attempts < MAX_ATTEMPTS:
        attempts += 1
        out = io.StringIO()
        shell.out = Writer(out)
        shell.execute("ota flash http")
        done = "OTA flash was successful" in out.getvalue()
    module.close()
    link.sock.close()
    return done, attempts, link.carried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small builds, two of them")
    args = parser.parse_args()
    count, functions, strings = (2, 200, 300) if args.smoke else (8, 3000, 10000)
    builds = series(count, functions, strings)
    print(f"{count} consecutive builds of about {len(builds[-1]) // 1000} kB"
          f"{' (smoke run: numbers mean little)' if args.smoke else ''}")  # fmt: skip
    rows = [sizes(a, b) for a, b in itertools.pairwise(builds)]
    for name in rows[0]:
        shares = [row[name] / len(new) * 100 for row, new in zip(rows, builds[1:], strict=True)]
        print(f"  {name:<14} median {statistics.median(shares):5.1f}% of the new image "
              f"(min {min(shares):.1f}%, max {max(shares):.1f}%)")  # fmt: skip
    ratio = statistics.median(row["esp_delta_ota"] / row["bsdiff4"] for row in rows)
    print(f"  ratio esp_delta_ota / bsdiff4: {ratio:.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = work / "repo"
        for index in (len(builds) - 2, len(builds) - 1):
            (work / "x.bin").write_bytes(builds[index])
            subprocess.run([OVOTA, "release", "publish", work / "x.bin", "--repo", repo, "--tag", "main",
                            "--product", "v3.3-5"], check=True, capture_output=True)  # fmt: skip
        port = _free_port()
        server = subprocess.Popen([OVOTA, "server", "--repo", str(repo), "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            _wait_for_delta(port)
            print(f"one update, {len(builds[-2])} -> {len(builds[-1])} bytes, over a link that drops every "
                  f"{DROP_EVERY // 1000} kB (at most {MAX_ATTEMPTS} attempts):")  # fmt: skip
            resume, delta = "config set ota resume yes", "config set ota delta yes"
            modes = {"whole": [], "whole+resume": [resume], "delta": [delta], "delta+resume": [delta, resume]}
            for name, settings in modes.items():
                done, attempts, carried = update_over_link(work, builds, port, settings)
                state = f"done in {attempts} attempts" if done else f"not done after {attempts} attempts"
                print(f"  {name:<13} {carried / 1000:9.1f} kB on the wire, {state}")
                shutil.rmtree(work / "sd", ignore_errors=True)
        finally:
            server.terminate()
            server.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_delta(port: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/firmware/ota/v3.3-5/main/",
                                             headers={"Accept": "application/json"})  # fmt: skip
            with urllib.request.urlopen(request, timeout=5) as response:
                if json.loads(response.read())[0].get("deltas"):
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("the server made no delta patch in 5 minutes")


if __name__ == "__main__":
    main()
