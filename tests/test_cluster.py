"""Several ``ovota server`` processes on one PostgreSQL and one S3 store (SeaweedFS): changes reach every
process within a second, decisions are made once, and backends that go away cost availability, never data."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import pytest

from ovota.device.module import create_module
from ovota.server.store.backends import Backends
from tests.conftest import CliRunner, Engines
from tests.engines import PostgresServer, SeaweedServer
from tests.loops import run_async
from tests.module_helpers import image, run_commands
from tests.real_builds import real_shaped_build
from tests.servers import OvotaServer
from tests.signing import Keys
from tests.stores import Store
from tests.test_server import http

A = "3.3.006"
B = "3.3.006-12-gbbbbbbb"
C = "3.3.006-13-gccccccc"
SIZE = 1_048_576
MODULES = 30


def publish(ovota: CliRunner, store: Store, tmp_path: Path, version: str, tag: str = "main") -> str:
    path = tmp_path / f"{version}.bin"
    path.write_bytes(image(version, SIZE))
    run = ovota("release", "publish", path, *store.args, "--tag", tag)
    assert run.code == 0, run.err
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cluster_store(tmp_path: Path, engines: Engines) -> Store:
    db = engines.postgres.new_database()
    prefix = db.rsplit("/", 1)[1]
    return Store("cluster", Backends(db=db, blobs=f"s3://{engines.bucket}/{prefix}", cache=tmp_path / "cache"))


def two_servers(store: Store, tmp_path: Path, extra: tuple[str, ...] = ()) -> list[OvotaServer]:
    """Two server processes, each with a blob cache of its own (as on two hosts)."""
    return [OvotaServer(store, extra=extra, env={"OVOTA_CACHE": str(tmp_path / f"cache{n}")}) for n in (1, 2)]


def ver(server: OvotaServer, tag: str = "main") -> str:
    return http(f"{server.url}/firmware/ota/v3.3-5/{tag}/ovms3.ver")[2].decode().split("\n")[0]


def test_publish_through_one_process_is_served_by_the_other(tmp_path: Path, cluster_store: Store,
                                                            ovota: CliRunner) -> None:  # fmt: skip
    publish(ovota, cluster_store, tmp_path, A)
    token = ovota("token", "create", *cluster_store.args, "--name", "ci").out.strip()
    first, second = two_servers(cluster_store, tmp_path)
    try:
        assert ver(first) == ver(second) == A
        data = image(B, SIZE)
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
        status, _, body = http(f"{first.url}/api/v1/publish?tag=main", "POST", auth, data)
        assert status == 201, body
        published = time.monotonic()
        while ver(second) != B:
            assert time.monotonic() - published < 1.0, "the second process still serves the old build after 1 s"
            time.sleep(0.02)
        status, _, served = http(f"{second.url}/firmware/ota/v3.3-5/main/ovms3.bin")
        assert status == 200 and served == data
        sha = hashlib.sha256(data).hexdigest()
        cached = list((tmp_path / "cache2").rglob(sha))
        assert len(cached) == 1 and cached[0].read_bytes() == data  # filled on first request, by its SHA-256
        # Promote and rollback travel the same way.
        promote = json.dumps({"product": "v3.3-5", "from": "main", "to": "eap"}).encode()
        assert http(f"{second.url}/api/v1/promote", "POST", {**auth, "Content-Type": "application/json"},
                    promote)[0] == 200  # fmt: skip
        deadline = time.monotonic() + 1.0
        while ver(first, "eap") != B:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        first.stop()
        second.stop()


def test_check_ins_from_every_process_land_in_one_registry(tmp_path: Path, cluster_store: Store,
                                                           ovota: CliRunner) -> None:  # fmt: skip
    publish(ovota, cluster_store, tmp_path, A)
    servers = two_servers(cluster_store, tmp_path)
    try:
        for n in range(20):
            server = servers[n % 2]
            headers = {"User-Agent": f"ovms/v3.3-5 (CAR{n:02d} 3.3.005/ota_0/main (build idf, product v3.3-5))"}
            assert http(f"{server.url}/firmware/ota/v3.3-5/main/ovms3.ver", headers=headers)[0] == 200
    finally:
        for server in servers:
            server.stop()  # SIGTERM flushes the batch
    run = ovota("fleet", "list", *cluster_store.args, "--json")
    assert run.code == 0, run.err
    assert sorted(m["vehicle_id"] for m in json.loads(run.out)) == [f"CAR{n:02d}" for n in range(20)]


@pytest.fixture
def notices() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A notify URL that records the JSON notices posted to it."""
    received: list[dict[str, object]] = []

    class Notices(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Notices)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", received
    server.shutdown()
    server.server_close()


def test_rollout_halts_once(tmp_path: Path, cluster_store: Store, ovota: CliRunner,
                            notices: tuple[str, list[dict[str, object]]]) -> None:  # fmt: skip
    url, received = notices
    publish(ovota, cluster_store, tmp_path, A)
    servers = two_servers(cluster_store, tmp_path)
    try:
        # The fleet is known before the rollout starts (only such modules count for its health).
        for n in range(MODULES):
            headers = {"User-Agent": f"ovms/v3.3-5 (FAIL{n} 3.3.005/ota_0/main (build idf, product v3.3-5))"}
            assert http(f"{servers[n % 2].url}/firmware/ota/v3.3-5/main/ovms3.ver", headers=headers)[0] == 200
        deadline = time.monotonic() + 10
        while len(json.loads(ovota("fleet", "list", *cluster_store.args, "--json").out)) < MODULES:
            assert time.monotonic() < deadline, "the fleet was not registered"
            time.sleep(0.2)
        (tmp_path / "b.bin").write_bytes(image(B, SIZE))
        run = ovota("release", "publish", tmp_path / "b.bin", *cluster_store.args, "--tag", "main",
                    "--rollout", "50,100", "--min-sample", "4", "--halt-failed", "10%", "--grace", "1s",
                    "--notify-url", url)  # fmt: skip
        assert run.code == 0, run.err
        time.sleep(1.5)  # both processes hear of the rollout within a second (LISTEN/NOTIFY)

        # Every module downloads B through one process, then reports the old version through the other:
        # the update failed everywhere, and both processes see it.
        async def fleet() -> None:
            async with aiohttp.ClientSession() as session:
                for n in range(MODULES):
                    agent = {"User-Agent": f"ovms/v3.3-5 (FAIL{n} 3.3.005/ota_0/main (build idf, product v3.3-5))"}
                    base = f"{servers[n % 2].url}/firmware/ota/v3.3-5/main"
                    async with session.get(f"{base}/ovms3.ver", headers=agent) as resp:
                        assert (await resp.text()).split("\n")[0] in (A, B)  # B for the first step's cohort
                    async with session.get(f"{base}/ovms3.bin", headers=agent) as resp:
                        assert len(await resp.read()) == SIZE
                await asyncio.sleep(2.5)  # past the grace period: still the old version means failed
                for n in range(MODULES):
                    agent = {"User-Agent": f"ovms/v3.3-5 (FAIL{n} 3.3.005/ota_0/main (build idf, product v3.3-5))"}
                    async with session.get(f"{servers[(n + 1) % 2].url}/firmware/ota/v3.3-5/main/ovms3.ver",
                                           headers=agent) as resp:  # fmt: skip
                        await resp.read()

        run_async(fleet())
        deadline = time.monotonic() + 15
        while "halted" not in ovota("rollout", "status", *cluster_store.args, "--product", "v3.3-5",
                                    "--tag", "main").out:  # fmt: skip
            assert time.monotonic() < deadline, "the rollout did not halt"
            time.sleep(0.3)
        time.sleep(2)  # both processes keep evaluating: nothing more may be decided or announced
    finally:
        for server in servers:
            server.stop()
    halts = [n for n in received if n.get("event") == "halted"]
    assert len(halts) == 1, received
    r = cluster_store.repository()
    try:
        events = [row[0] for row in r.db.execute("SELECT message FROM rollout_events").fetchall()]
    finally:
        r.close()
    assert sum("halt" in e for e in events) == 1, events


# -- faults -----------------------------------------------------------------------------------------------


@pytest.fixture
def own_engines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[PostgresServer, SeaweedServer, Store]]:
    """Engines of this test's own, which it may stop and start (the AWS variables point at its SeaweedFS)."""
    postgres = PostgresServer()
    seaweed = SeaweedServer()
    for key, value in seaweed.env().items():
        monkeypatch.setenv(key, value)
    bucket = seaweed.new_bucket()
    store = Store("cluster", Backends(db=postgres.new_database(), blobs=f"s3://{bucket}/repo", cache=tmp_path / "c"))
    yield postgres, seaweed, store
    seaweed.close()
    postgres.close()


def test_postgres_restart_during_downloads(tmp_path: Path, own_engines: tuple[PostgresServer, SeaweedServer, Store],
                                           ovota: CliRunner) -> None:  # fmt: skip
    postgres, _, store = own_engines
    (tmp_path / "a.bin").write_bytes(image(A, SIZE))
    assert ovota("release", "publish", tmp_path / "a.bin", *store.args, "--tag", "main").code == 0
    token = ovota("token", "create", *store.args, "--name", "ci").out.strip()
    server = OvotaServer(store, env={"OVOTA_CACHE": str(tmp_path / "cache")})
    expected = hashlib.sha256(image(A, SIZE)).hexdigest()
    try:
        assert ver(server) == A

        async def device(n: int, session: aiohttp.ClientSession, stop: float) -> list[str]:
            agent = {"User-Agent": f"ovms/v3.3-5 (DL{n:02d} 3.3.005/ota_0/main (build idf, product v3.3-5))"}
            seen = []
            while time.monotonic() < stop:
                async with session.get(f"{server.url}/firmware/ota/v3.3-5/main/ovms3.ver", headers=agent) as r:
                    assert r.status == 200 and (await r.text()).startswith(A)
                async with session.get(f"{server.url}/firmware/ota/v3.3-5/main/ovms3.bin", headers=agent) as r:
                    assert r.status == 200
                    seen.append(hashlib.sha256(await r.read()).hexdigest())
            return seen

        async def downloads() -> list[list[str]]:
            stop = time.monotonic() + 6
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
                return await asyncio.gather(*(device(n, session, stop) for n in range(32)))

        results: list[list[list[str]]] = []
        runner = threading.Thread(target=lambda: results.append(asyncio.run(downloads())))
        runner.start()
        time.sleep(1)
        postgres.stop()
        data = image(B, SIZE)
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
        status, headers, body = http(f"{server.url}/api/v1/publish?tag=main", "POST", auth, data)
        assert status == 503 and headers["Retry-After"], body
        assert http(f"{server.url}/readyz")[0] == 503  # out of the load balancer's rotation
        assert http(f"{server.url}/healthz")[0] == 200  # but alive
        time.sleep(2)
        postgres.start()
        runner.join(60)
        assert results, "the downloads did not finish"
        digests = [d for device_digests in results[0] for d in device_digests]
        assert len(digests) > 32 and set(digests) == {expected}  # none failed, none torn
        deadline = time.monotonic() + 10
        while True:
            status, _, body = http(f"{server.url}/api/v1/publish?tag=main", "POST", auth, data)
            if status == 201:
                break
            assert status == 503 and time.monotonic() < deadline, body
            time.sleep(0.5)
        deadline = time.monotonic() + 2
        while ver(server) != B:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert http(f"{server.url}/readyz")[0] == 200
    finally:
        server.stop()
    listed = json.loads(ovota("fleet", "list", *store.args, "--json").out)
    assert {m["vehicle_id"] for m in listed} == {f"DL{n:02d}" for n in range(32)}  # check-ins kept and written


def test_object_store_unreachable(tmp_path: Path, own_engines: tuple[PostgresServer, SeaweedServer, Store],
                                  ovota: CliRunner) -> None:  # fmt: skip
    _, seaweed, store = own_engines
    for version, tag in ((A, "main"), (B, "edge")):
        (tmp_path / "x.bin").write_bytes(image(version, SIZE))
        assert ovota("release", "publish", tmp_path / "x.bin", *store.args, "--tag", tag).code == 0
    server = OvotaServer(store, env={"OVOTA_CACHE": str(tmp_path / "cache")})
    try:
        assert http(f"{server.url}/firmware/ota/v3.3-5/main/ovms3.bin")[2] == image(A, SIZE)  # now cached
        before = store.state()[0]
        seaweed.stop()
        status, _, body = http(f"{server.url}/firmware/ota/v3.3-5/main/ovms3.bin")
        assert status == 200 and body == image(A, SIZE)
        status, headers, body = http(f"{server.url}/firmware/ota/v3.3-5/edge/ovms3.bin")
        assert status == 503 and headers["Retry-After"] and body.startswith(b"Service unavailable: object store")
        (tmp_path / "c.bin").write_bytes(image(C, SIZE))
        run = ovota("release", "publish", tmp_path / "c.bin", *store.args, "--tag", "main")
        assert run.code == 2 and run.err.startswith("Error: object store:"), run.err
        seaweed.start()
        deadline = time.monotonic() + 30  # SeaweedFS answers "try again" while its volumes load
        while (answer := http(f"{server.url}/firmware/ota/v3.3-5/edge/ovms3.bin"))[0] == 503:
            assert time.monotonic() < deadline, answer[2]
            time.sleep(0.5)
        assert answer[2] == image(B, SIZE)
        assert store.state()[0] == before
    finally:
        server.stop()


def test_a_frozen_object_store_costs_503s_within_a_bounded_time_then_nothing(
    tmp_path: Path, own_engines: tuple[PostgresServer, SeaweedServer, Store], ovota: CliRunner
) -> None:
    """SeaweedFS stopped with SIGSTOP (it accepts connections and answers nothing, as a hung store does): device
    requests for a blob not cached yet and an API publish get 503 with Retry-After within bounded times, not a hang
    or a 500; cached blobs and .ver keep being served; after SIGCONT everything works without a restart."""
    _, seaweed, store = own_engines
    for version, tag in ((A, "main"), (B, "edge")):
        (tmp_path / "x.bin").write_bytes(image(version, SIZE))
        assert ovota("release", "publish", tmp_path / "x.bin", *store.args, "--tag", tag).code == 0
    token = ovota("token", "create", *store.args, "--name", "ci").out.strip()
    server = OvotaServer(store, env={"OVOTA_CACHE": str(tmp_path / "cache")})
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
    assert seaweed.proc is not None
    try:
        assert http(f"{server.url}/firmware/ota/v3.3-5/main/ovms3.bin")[2] == image(A, SIZE)  # now cached
        os.killpg(seaweed.proc.pid, signal.SIGSTOP)
        started = time.monotonic()
        status, headers, body = http(f"{server.url}/firmware/ota/v3.3-5/edge/ovms3.bin")
        waited = time.monotonic() - started
        assert status == 503 and headers["Retry-After"] and waited < 15, (status, waited, body)  # < --idle-timeout
        assert http(f"{server.url}/firmware/ota/v3.3-5/main/ovms3.bin")[2] == image(A, SIZE)  # cached: served
        assert http(f"{server.url}/firmware/ota/v3.3-5/edge/ovms3.ver")[2].startswith(B.encode())
        started = time.monotonic()
        status, headers, body = http(f"{server.url}/api/v1/publish?tag=main", "POST", auth, image(C, SIZE))
        waited = time.monotonic() - started
        assert status == 503 and headers["Retry-After"] and b"object store" in body and waited < 40, (status, waited)
        assert http(f"{server.url}/readyz")[0] == 503
        metrics = http(f"{server.url}/metrics", headers={"Authorization": f"Bearer {token}"})[2].decode()
        assert 'ovota_backend_failures_total{backend="blobs"' in metrics
        assert ver_of(server, "main") == A  # the refused publish changed nothing
    finally:
        os.killpg(seaweed.proc.pid, signal.SIGCONT)
    try:
        deadline = time.monotonic() + 30
        while (answer := http(f"{server.url}/firmware/ota/v3.3-5/edge/ovms3.bin"))[0] == 503:
            assert time.monotonic() < deadline, answer[2]
            time.sleep(0.5)
        assert answer[2] == image(B, SIZE)
        deadline = time.monotonic() + 30
        while (published := http(f"{server.url}/api/v1/publish?tag=main", "POST", auth, image(C, SIZE)))[0] != 201:
            assert published[0] == 503 and time.monotonic() < deadline, published
            time.sleep(0.5)
        wait_until(lambda: ver_of(server, "main") == C and http(f"{server.url}/readyz")[0] == 200)
        assert "Traceback" not in server.log
    finally:
        server.stop()


def ver_of(server: OvotaServer, tag: str) -> str:
    return http(f"{server.url}/firmware/ota/v3.3-5/{tag}/ovms3.ver")[2].decode().split("\n")[0]


def wait_until(done: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_repo_migrate_round_trip(tmp_path: Path, cluster_store: Store, keys: Keys, ovota: CliRunner) -> None:
    folder = Store("folder", Backends(folder=tmp_path / "embedded"))
    publish(ovota, folder, tmp_path, A)
    publish(ovota, folder, tmp_path, B, tag="edge")
    assert ovota("release", "promote", *folder.args, "--product", "v3.3-5", "--from", "edge", "--to", "eap").code == 0
    token = ovota("token", "create", *folder.args, "--name", "ci").out.strip()
    assert ovota("release", "trust", *folder.args, "--product", "v9", "--key", keys.public).code == 0
    (tmp_path / "c.bin").write_bytes(image(C, SIZE))
    assert (
        ovota("release", "publish", tmp_path / "c.bin", *folder.args, "--tag", "main", "--rollout", "10,100").code == 0
    )
    server = OvotaServer(folder)
    try:
        for n in range(5):
            agent = {"User-Agent": f"ovms/v3.3-5 (MIG{n} 3.3.005/ota_0/main (build idf, product v3.3-5))"}
            assert http(f"{server.url}/firmware/ota/v3.3-5/main/ovms3.ver", headers=agent)[0] == 200
    finally:
        server.stop()
    before = {
        "list": ovota("release", "list", *folder.args).out,
        "fleet": json.loads(ovota("fleet", "list", *folder.args, "--json").out),
        "rollout": ovota("rollout", "status", *folder.args, "--product", "v3.3-5", "--tag", "main").out,
        "trust": ovota("release", "trust", *folder.args, "--list").out,
    }
    first = ovota("repo", "migrate", "--from", folder.backends.folder, *cluster_store.args)
    assert first.code == 0, first.err
    assert "blob 3/3" in first.out and "verified" in first.out
    counts = cluster_store.state()
    again = ovota("repo", "migrate", "--from", folder.backends.folder, *cluster_store.args)
    assert again.code == 0, again.err
    assert cluster_store.state() == counts  # a second run changes nothing
    after = {
        "list": ovota("release", "list", *cluster_store.args).out,
        "fleet": json.loads(ovota("fleet", "list", *cluster_store.args, "--json").out),
        "rollout": ovota("rollout", "status", *cluster_store.args, "--product", "v3.3-5", "--tag", "main").out,
        "trust": ovota("release", "trust", *cluster_store.args, "--list").out,
    }
    assert after == before
    server = OvotaServer(cluster_store, env={"OVOTA_CACHE": str(tmp_path / "cache1")})
    try:
        assert http(f"{server.url}/firmware/ota/v3.3-5/eap/ovms3.bin")[2] == image(B, SIZE)
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        status, _, body = http(f"{server.url}/api/v1/channels", headers=auth)
        assert status == 200 and {c["tag"] for c in json.loads(body)} == {"main", "edge", "eap"}
    finally:
        server.stop()
    # New rows get fresh ids after the copied ones.
    assert ovota("token", "create", *cluster_store.args, "--name", "second").code == 0


def test_delta_patches_on_the_cluster(tmp_path: Path, cluster_store: Store, ovota: CliRunner) -> None:
    """The background patch maker claims its work in PostgreSQL and stores patches in S3; a module updates by
    delta from a server that has never seen the patch before (read-through)."""
    images = {v: real_shaped_build(v, rodata=400_000, seed=b"ovms3-tree") for v in (A.encode(), B.encode())}
    for data in images.values():
        (tmp_path / "x.bin").write_bytes(data)
        assert ovota("release", "publish", tmp_path / "x.bin", *cluster_store.args, "--tag", "main").code == 0
    maker = OvotaServer(cluster_store, deltas=True, env={"OVOTA_CACHE": str(tmp_path / "maker")})
    try:
        deadline = time.monotonic() + 60
        while not delta_listing(maker)[0].get("deltas"):
            assert time.monotonic() < deadline, "no delta patch was made"
            time.sleep(0.2)
    finally:
        maker.stop()
    server = OvotaServer(cluster_store, env={"OVOTA_CACHE": str(tmp_path / "other")})
    try:
        flash = tmp_path / "module.img"
        create_module(flash, "v3-35", images[A.encode()])
        run_commands(flash, f"config set ota server {server.base}", "config set ota delta yes")
        out = run_commands(flash, "ota flash http", "module reset", "ota status nocheck").output
        assert "Delta applied" in out and f"Firmware:          {B}/ota_1/main" in out, out
    finally:
        server.stop()


def delta_listing(server: OvotaServer) -> list[dict[str, object]]:
    status, _, body = http(f"{server.url}/firmware/ota/v3.3-5/main/", headers={"Accept": "application/json"})
    assert status == 200
    return list(json.loads(body))


def test_modules_behind_a_load_balancer_keep_their_addresses(tmp_path: Path, cluster_store: Store,
                                                             ovota: CliRunner) -> None:  # fmt: skip
    publish(ovota, cluster_store, tmp_path, A)
    anonymous = {"User-Agent": "ovms/v3.3-5 ( 3.3.005/factory/main (build idf, product v3.3-5))"}
    plain = OvotaServer(cluster_store)
    trusting = OvotaServer(cluster_store, extra=("--forwarded-by", "127.0.0.1"))
    try:
        for server, address in ((trusting, "10.0.0.7"), (trusting, "1.1.1.1, 10.0.0.8"), (plain, "10.0.0.9"),
                                (trusting, "<script>x" * 500), (trusting, "1.1.1.1,")):  # fmt: skip
            headers = {**anonymous, "X-Forwarded-For": address}
            assert http(f"{server.url}/firmware/ota/v3.3-5/main/ovms3.ver", headers=headers)[0] == 200
    finally:
        trusting.stop()
        plain.stop()
    listed = json.loads(ovota("fleet", "list", *cluster_store.args, "--json").out)
    # The address the trusted proxy appended (only an IP address: else the proxy's own); a server that trusts
    # nobody keeps the peer's.
    assert sorted(m["module"] for m in listed) == ["@10.0.0.7", "@10.0.0.8", "@127.0.0.1"]
