"""The update server, started as a user starts it, spoken to over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from http.client import HTTPConnection
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import CliRunner
from tests.loops import run_async
from tests.module_helpers import image, new_module, run_commands
from tests.servers import OvotaServer, raw_get
from tests.stores import Store

MAIN = "3.3.006"
EDGE = "3.3.006-172-g362f87425"
SIZE = 2100352


def http(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, Message, bytes]:
    """One request; the headers come back case-insensitive."""
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


@pytest.fixture
def repo(store: Store, tmp_path: Path, ovota: CliRunner) -> Store:
    """A repository with MAIN on main and EDGE on edge: in a folder, and on PostgreSQL + S3."""
    (tmp_path / "main.bin").write_bytes(image(MAIN, SIZE))
    (tmp_path / "edge.bin").write_bytes(image(EDGE, SIZE))
    (tmp_path / "changes.txt").write_text("Fix the frobnicator\nFaster OTA\n")
    run = ovota("release", "publish", tmp_path / "main.bin", *store.args, "--tag", "main")
    assert run.code == 0, run.err
    run = ovota("release", "publish", tmp_path / "edge.bin", *store.args, "--tag", "edge",
                "--changelog", tmp_path / "changes.txt")  # fmt: skip
    assert run.code == 0, run.err
    assert run.out.startswith(f"Published {EDGE} to v3.3-5/edge (sha256 ")
    return store


@pytest.fixture
def server(repo: Store) -> Iterator[OvotaServer]:
    srv = OvotaServer(repo)
    yield srv
    srv.stop()


def test_emulated_module_updates_from_the_server(tmp_path: Path, server: OvotaServer, ovota: CliRunner) -> None:
    flash = new_module(tmp_path / "m.img", version="3.3.005")
    run_commands(flash, f"config set ota server {server.base}", "config set ota tag edge")
    run = ovota("module", "run", flash, "--", "ota status", "ota flash http", "module reset", "ota status nocheck")
    assert run.code == 0, run.out
    assert f"Server Available:  {EDGE} (is newer)" in run.out
    assert "Fix the frobnicator" in run.out
    assert "Running partition: ota_1" in run.out
    assert f"Firmware:          {EDGE}/ota_1/edge" in run.out


def test_ovms_http10_request(server: OvotaServer) -> None:
    head, body = raw_get(server.port, "/firmware/ota/v3.3-5/main/ovms3.bin")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.") and " 200 " in lines[0]
    assert f"Content-Length: {SIZE}" in lines
    assert hashlib.sha256(body).digest() == hashlib.sha256(image(MAIN, SIZE)).digest()  # and the socket closed
    head, body = raw_get(server.port, "/firmware/ota/v3.3-5/edge/ovms3.ver")
    assert body == f"{EDGE}\nFix the frobnicator\nFaster OTA\n".encode()
    assert b"Content-Length: %d" % len(body) in head


def test_http11_features(server: OvotaServer) -> None:
    url = f"{server.url}/firmware/ota/v3.3-5/main/ovms3.bin"
    status, headers, body = http(url, headers={"Range": "bytes=100-199"})
    assert (status, headers["Content-Range"], body) == (206, f"bytes 100-199/{SIZE}", image(MAIN, SIZE)[100:200])
    status, headers, _ = http(url, method="HEAD")
    assert (status, headers["Content-Length"]) == (200, str(SIZE))
    etag, modified = headers["Etag"], headers["Last-Modified"]
    assert http(url, headers={"If-None-Match": etag})[0] == 304
    assert http(url, headers={"If-Modified-Since": modified})[0] == 304
    ver = f"{server.url}/firmware/ota/v3.3-5/main/ovms3.ver"
    status, headers, body = http(ver)
    assert (status, body) == (200, f"{MAIN}\n".encode())
    assert http(ver, headers={"If-None-Match": headers["Etag"]})[0] == 304
    sha = hashlib.sha256(image(MAIN, SIZE)).hexdigest()
    status, headers, body = http(f"{server.url}/firmware/builds/{sha}/ovms3.bin")
    assert status == 200 and hashlib.sha256(body).hexdigest() == sha
    assert "immutable" in headers["Cache-Control"]


def test_keep_alive(server: OvotaServer) -> None:

    conn = HTTPConnection("127.0.0.1", server.port, timeout=10)
    for tag, version in (("main", MAIN), ("edge", EDGE), ("main", MAIN)):
        conn.request("GET", f"/firmware/ota/v3.3-5/{tag}/ovms3.ver")
        response = conn.getresponse()
        assert response.read().split(b"\n")[0] == version.encode()
    conn.close()


def test_download_area(server: OvotaServer) -> None:
    status, headers, body = http(f"{server.url}/firmware/ota/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'href="/firmware/ota/v3.3-5/"' in body
    status, _, body = http(f"{server.url}/firmware/ota/v3.3-5/")
    assert b'href="/firmware/ota/v3.3-5/edge/"' in body and EDGE.encode() in body
    status, _, body = http(f"{server.url}/firmware/ota/v3.3-5/edge/")
    sha = hashlib.sha256(image(EDGE, SIZE)).hexdigest()
    assert b'href="/firmware/ota/v3.3-5/edge/ovms3.bin"' in body and sha.encode() in body and b"2100352" in body
    status, _, body = http(f"{server.url}/firmware/ota/v3.3-5/", headers={"Accept": "application/json"})
    listing = json.loads(body)
    assert {(c["tag"], c["version"], c["size"]) for c in listing} == {("main", MAIN, SIZE), ("edge", EDGE, SIZE)}
    # Without --public-url the URLs are relative: the Host header, which any client sets, is never used.
    assert listing[0]["url"].startswith("/firmware/ota/v3.3-5/")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/firmware/ota/v3.3-5/nope/ovms3.bin", "Not found: no build published for product 'v3.3-5', tag 'nope'\n"),
        ("/firmware/ota/v9/main/ovms3.ver", "Not found: no build published for product 'v9', tag 'main'\n"),
        ("/firmware/ota/../../etc/passwd", None),
        ("/firmware/ota/v3.3-5/..%2F..%2Frepo.sqlite/ovms3.bin", None),
        ("/firmware/ota/%2e%2e/main/ovms3.bin", None),
    ],
)
def test_unknown_paths(server: OvotaServer, path: str, body: str | None) -> None:
    head, content = raw_get(server.port, path)
    assert b" 404 " in head.split(b"\r\n")[0]
    if body is not None:
        assert content == body.encode()
    assert b"SQLite" not in content and b"root:" not in content


def test_bad_publishes_change_nothing(tmp_path: Path, repo: Store, ovota: CliRunner) -> None:
    before = repo.state()
    html = tmp_path / "page.bin"
    html.write_text("<html>" + "x" * 5000 + "</html>")
    corrupt = bytearray(image("3.3.007", 8192))
    corrupt[500] ^= 1
    (tmp_path / "corrupt.bin").write_bytes(bytes(corrupt))
    (tmp_path / "big.bin").write_bytes(image("3.3.005-900-gaaaaaaa", 0x400000))
    cases = [
        (
            html,
            [],
            "Error: not a valid firmware image: not an ESP32 image: first byte 0x3c, expected 0xe9"
            " (it looks like an HTML page)",
        ),
        (tmp_path / "corrupt.bin", [], "Error: not a valid firmware image: image checksum mismatch"),
        (tmp_path / "big.bin", [], "Error: image of 4194304 bytes does not fit the 4 MB OTA slot of product v3.3"),
        (tmp_path / "corrupt.bin", ["--tag", "../x"], "Error: invalid tag name '../x'"),
    ]
    for path, extra, message in cases:
        args = ["release", "publish", path, *repo.args] + (extra or ["--tag", "edge"])
        run = ovota(*args)
        assert run.code == 2, run.out
        assert run.err.startswith(message), run.err
    assert repo.state() == before


def test_promote_rollback_and_list(repo: Store, ovota: CliRunner) -> None:
    assert ovota("release", "promote", *repo.args, "--product", "v3.3-5", "--from", "edge", "--to", "eap").code == 0
    assert ovota("release", "promote", *repo.args, "--product", "v3.3-5", "--from", "eap", "--to", "main").code == 0
    listing = ovota("release", "list", *repo.args).out.splitlines()
    assert [line.split()[:3] for line in listing] == [
        ["v3.3-5", "eap", EDGE],
        ["v3.3-5", "edge", EDGE],
        ["v3.3-5", "main", EDGE],
    ]
    run = ovota("release", "rollback", *repo.args, "--product", "v3.3-5", "--tag", "main")
    assert run.out == f"Rolled back v3.3-5/main to {MAIN}\n"
    run = ovota("release", "rollback", *repo.args, "--product", "v3.3-5", "--tag", "eap")
    assert (run.code, run.err) == (2, "Error: v3.3-5/eap has no earlier build to roll back to\n")


def test_api_with_tokens(tmp_path: Path, repo: Store, server: OvotaServer, ovota: CliRunner) -> None:
    token = ovota("token", "create", *repo.args, "--name", "ci").out.strip()
    assert token.startswith("ovota_")
    r = repo.repository()
    stored = [str(row) for row in r.db.execute("SELECT * FROM tokens").fetchall()]
    r.close()
    assert stored and not any(token in row for row in stored)
    before = repo.state()
    data = image("3.3.006-200-gbbbbbbb", 8192)
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
        status, headers, body = http(f"{server.url}/api/v1/publish?tag=edge", "POST", auth, data)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert json.loads(body) == {"error": "missing or invalid API token"}
    assert repo.state() == before
    auth = {"Authorization": f"Bearer {token}"}
    status, _, body = http(f"{server.url}/api/v1/publish?tag=edge&changelog=api", "POST", auth, data)
    assert status == 201, body
    assert json.loads(body)["version"] == "3.3.006-200-gbbbbbbb"
    assert http(f"{server.url}/firmware/ota/v3.3-5/edge/ovms3.ver")[2] == b"3.3.006-200-gbbbbbbb\napi\n"
    status, _, body = http(f"{server.url}/api/v1/publish?tag=edge", "POST", auth, b"<html>nope</html>")
    assert status == 400 and "not a valid firmware image" in json.loads(body)["error"]
    promote = json.dumps({"product": "v3.3-5", "from": "edge", "to": "main"}).encode()
    status, _, body = http(
        f"{server.url}/api/v1/promote", "POST", {**auth, "Content-Type": "application/json"}, promote
    )
    assert status == 200 and json.loads(body)["tag"] == "main"
    assert http(f"{server.url}/firmware/ota/v3.3-5/main/ovms3.ver")[2].startswith(b"3.3.006-200-gbbbbbbb\n")
    back = json.dumps({"product": "v3.3-5", "tag": "main"}).encode()
    status, _, body = http(f"{server.url}/api/v1/rollback", "POST", {**auth, "Content-Type": "application/json"}, back)
    assert status == 200 and json.loads(body)["version"] == MAIN
    missing = json.dumps({"product": "v9", "tag": "main"}).encode()
    assert http(f"{server.url}/api/v1/rollback", "POST", auth, missing)[0] == 404


def test_restart_loses_nothing(repo: Store, ovota: CliRunner) -> None:
    first = OvotaServer(repo)
    before = http(f"{first.url}/firmware/ota/v3.3-5/edge/ovms3.ver")[2]
    first.stop()
    second = OvotaServer(repo)
    try:
        assert http(f"{second.url}/firmware/ota/v3.3-5/edge/ovms3.ver")[2] == before
        status, _, body = http(f"{second.url}/firmware/ota/v3.3-5/main/ovms3.bin")
        assert status == 200 and body == image(MAIN, SIZE)
    finally:
        second.stop()


@pytest.mark.parametrize("crash_at", ["os.replace", "_point"])
def test_crash_mid_publish_leaves_no_half_build(tmp_path: Path, repo: Store, crash_at: str) -> None:

    new = tmp_path / "new.bin"
    new.write_bytes(image("3.3.007", SIZE))
    # A real process dies (os._exit) at the named step of a real publish.
    script = f"""
import os, sys
from pathlib import Path
from ovota.server.store import repository
if {crash_at!r} == "os.replace":
    os.replace = lambda *a: os._exit(9)
else:
    repository.Repository._point = lambda *a: os._exit(9)
from ovota.server.store.backends import Backends
fields = json.loads(sys.argv[1])
fields["folder"] = fields["folder"] and Path(fields["folder"])
where = Backends(**fields)
repository.Repository(where).publish(Path(sys.argv[2]).read_bytes(), "edge")
"""
    b = repo.backends
    where = json.dumps({"folder": str(b.folder) if b.folder else None, "db": b.db, "blobs": b.blobs})
    proc = subprocess.run([sys.executable, "-c", "import json\n" + script, where, str(new)], check=False)
    assert proc.returncode == 9
    srv = OvotaServer(repo)
    try:
        assert http(f"{srv.url}/firmware/ota/v3.3-5/edge/ovms3.ver")[2].startswith(EDGE.encode())
        assert http(f"{srv.url}/firmware/ota/v3.3-5/edge/ovms3.bin")[2] == image(EDGE, SIZE)
    finally:
        srv.stop()
    r = repo.repository()
    try:
        assert r.publish(new.read_bytes(), "edge").build.version == "3.3.007"  # the next publish succeeds
    finally:
        r.close()


def test_downloads_during_publishing_match_their_ver(tmp_path: Path, repo: Store, server: OvotaServer) -> None:

    images = {f"3.3.007-{n}-g{n:07x}": image(f"3.3.007-{n}-g{n:07x}", 262144) for n in range(1, 5)}
    expected = {version: hashlib.sha256(data).hexdigest() for version, data in images.items()}
    expected[MAIN] = hashlib.sha256(image(MAIN, SIZE)).hexdigest()
    expected[EDGE] = hashlib.sha256(image(EDGE, SIZE)).hexdigest()
    done = threading.Event()
    changes = 0

    def publisher() -> None:
        nonlocal changes
        r = repo.repository()
        try:
            while not done.is_set() and changes < 400:
                for data in images.values():
                    r.publish(data, "edge")
                    r.promote("v3.3-5", "edge", "main")
                    changes += 2
        finally:
            r.close()

    async def device(number: int, session: aiohttp.ClientSession) -> list[tuple[str, str]]:
        headers = {"User-Agent": f"ovms/v3.3-5 (CAR{number} 3.3.005/ota_0/main)"}
        seen = []
        for round_ in range(4):
            tag = ("edge", "main")[(number + round_) % 2]
            base = f"{server.url}/firmware/ota/v3.3-5/{tag}"
            async with session.get(f"{base}/ovms3.ver", headers=headers) as resp:
                version = (await resp.text()).split("\n")[0]
            async with session.get(f"{base}/ovms3.bin", headers=headers) as resp:
                digest = hashlib.sha256(await resp.read()).hexdigest()
            seen.append((version, digest))
        return seen

    async def fleet() -> list[list[tuple[str, str]]]:
        connector = aiohttp.TCPConnector(limit=64, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            return await asyncio.gather(*(device(n, session) for n in range(64)))

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        results = run_async(fleet())
    finally:
        done.set()
        thread.join()
    downloads = [pair for device_results in results for pair in device_results]
    assert len(downloads) == 256
    assert changes >= 8  # the channels really moved while devices downloaded
    for version, digest in downloads:
        assert expected[version] == digest, version
    print(f"\n{len(downloads)} downloads by 64 devices during {changes} channel changes: all matched their .ver")


def test_range_edge_cases(server: OvotaServer) -> None:
    url = f"{server.url}/firmware/ota/v3.3-5/main/ovms3.bin"
    data = image(MAIN, SIZE)
    status, headers, body = http(url, headers={"Range": "bytes=-16"})
    assert (status, body, headers["Content-Range"]) == (206, data[-16:], f"bytes {SIZE - 16}-{SIZE - 1}/{SIZE}")
    status, _, body = http(url, headers={"Range": f"bytes={SIZE - 10}-"})
    assert (status, body) == (206, data[-10:])
    status, headers, _ = http(url, headers={"Range": f"bytes={SIZE}-"})
    assert (status, headers["Content-Range"]) == (416, f"bytes */{SIZE}")
    status, _, body = http(url, headers={"Range": "bytes=0-1,5-6"})
    assert (status, len(body)) == (200, SIZE)  # multiple ranges are answered with the whole file
    status, _, body = http(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert (status, len(body)) == (200, SIZE)  # the resumed file changed: start over
    etag = http(url, method="HEAD")[1]["ETag"]
    assert etag == f'"{hashlib.sha256(data).hexdigest()}"'
    status, _, body = http(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert (status, body) == (206, data[:10])


def test_several_workers(repo: Store) -> None:
    srv = OvotaServer(repo, workers=2)
    try:
        for _ in range(6):
            assert http(f"{srv.url}/firmware/ota/v3.3-5/main/ovms3.ver")[2] == f"{MAIN}\n".encode()
    finally:
        srv.stop()
