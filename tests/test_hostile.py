"""The open internet: requests that must not stop, slow or mislead the fleet for anyone else (issue #18).

Each test sends what an attacker or a broken network would, to a real ``ovota server``, and checks that the
honest modules, the registry, the rollouts and the repository carry on. Numbers refer to the issue's list.
"""

from __future__ import annotations

import contextlib
import getpass
import http.client
import json
import logging
import os
import socket
import sqlite3
import ssl
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from ovota.server.app import ConnectionCaps
from ovota.server.fleet.agent import Agent
from ovota.server.fleet.control import RolloutControl
from ovota.server.fleet.events import CheckIn, Download
from ovota.server.fleet.registry import FleetRecorder
from ovota.server.fleet.rollouts import Rollouts, parse_settings
from ovota.server.store import channels
from ovota.server.store.backends import Backends
from ovota.server.store.repository import Repository
from tests.conftest import CliRunner
from tests.hostile import get, rss_kib
from tests.module_helpers import image as image_of
from tests.module_helpers import new_module, run_commands
from tests.servers import OvotaServer
from tests.stores import Store
from tests.test_fleet import A, B, Setup, agent, http_json, make_setup, ver, wait_for
from tests.test_web_module import ModuleWeb

VER = "/firmware/ota/v3.3-5/main/ovms3.ver"
BIN = "/firmware/ota/v3.3-5/main/ovms3.bin"


@pytest.fixture
def embedded(tmp_path: Path, ovota: CliRunner) -> Setup:
    """Build A on main, in a folder (SQLite: the tests hold its write lock and damage its blob files)."""
    return make_setup(Store("folder", Backends(folder=tmp_path / "repo")), tmp_path, ovota)


@pytest.fixture
def driven(embedded: Setup) -> Iterator[OvotaServer]:
    server = OvotaServer(embedded.repo, extra=("--driven-clock",))
    yield server
    server.stop()


def registered(setup: Setup) -> list[str]:
    return sorted(m["vehicle_id"] for m in json.loads(setup.run("fleet", "list", *setup.repo.args, "--json").out))


def no_traceback(server: OvotaServer) -> None:
    log = server.log
    assert "Traceback" not in log and "Error handling request" not in log.replace("malformed", ""), log[-3000:]


# -- 1 and 10: the registry takes what it can store, in arrival order ------------------------------------------


def test_a_poisoned_user_agent_stops_nothing(embedded: Setup) -> None:
    server = OvotaServer(embedded.repo)
    try:
        poison = b"User-Agent: ovms/v3.3-5 (POISON\xff 3.3.006/ota_0/main (build x))"
        status, _, body = get(server.port, VER, poison)
        assert status == 200 and body.startswith(A.encode())  # served like any client
        c1 = "User-Agent: ovms/v3.3-5 (C1\u0085X 3.3.006/ota_0/main (build x))".encode()
        assert get(server.port, VER, c1)[0] == 200
        assert ver(server, agent("HONEST")) == A
        wait_for(lambda: registered(embedded) == ["HONEST"], "the honest module to be registered")
        assert ver(server, agent("LATER")) == A
        no_traceback(server)
    finally:
        server.stop()  # SIGTERM: the last batch is written
    assert registered(embedded) == ["HONEST", "LATER"]
    assert "\x85" not in embedded.run("fleet", "list", *embedded.repo.args).out


def test_an_event_that_cannot_be_stored_is_dropped_alone(tmp_path: Path) -> None:
    """The edge refuses such bytes; if one still reaches a batch, it alone is dropped and the rest written."""
    repo = Repository(tmp_path / "repo")
    try:
        recorder = FleetRecorder(repo)
        good = [Agent("v3.3-5", f"CAR{n}", A, "ota_0", "main") for n in range(5)]
        bad = Agent("v3.3-5", "BAD\udcff", A, "ota_0", "main")
        for n, who in enumerate([*good[:2], bad, *good[2:]]):
            recorder.check_in(who, "v3.3-5", "main", "10.0.0.1", 1000.0 + n)
        recorder.anonymous("ovms3.ver")
        batch = recorder.take()
        assert batch is not None
        recorder.write(batch)
        rows = repo.db.execute("SELECT vehicle_id FROM modules ORDER BY vehicle_id").fetchall()
        assert [r[0] for r in rows] == [f"CAR{n}" for n in range(5)] and recorder.dropped == 1
        assert repo.db.execute("SELECT count FROM request_counts").fetchone()[0] == 1
    finally:
        repo.close()


def test_a_batch_is_applied_in_arrival_order(tmp_path: Path, embedded: Setup) -> None:
    """A module that receives the new build and then reports the old one after the grace period, both within
    one batch, has failed (applied kind by kind, it stayed 'updating')."""
    embedded.run("release", "publish", embedded.builds[B], *embedded.repo.args, "--tag", "edge")
    repo = Repository(embedded.repo.backends)
    try:
        recorder = FleetRecorder(repo)
        ids = [f"M{n}" for n in range(40)]
        for vehicle_id in ids:
            recorder.check_in(Agent("v3.3-5", vehicle_id, A, "ota_0", "main"), "v3.3-5", "main", "10.0.0.1", 1000.0)
        first = recorder.take()
        assert first is not None
        recorder.write(first)
        settings = parse_settings(steps="50,100", grace="10m")
        rollout = RolloutControl(Rollouts(repo)).start("v3.3-5", "main", repo.find_build(B), settings, 2000.0)
        member = next(v for v in ids if rollout.place(v) < rollout.threshold)
        who = Agent("v3.3-5", member, A, "ota_0", "main")
        recorder.download(who, "v3.3-5", "main", "10.0.0.1", rollout.to_build.sha256, 65536, True, 3000.0)
        recorder.check_in(who, "v3.3-5", "main", "10.0.0.1", 3000.0 + 601)
        second = recorder.take()
        assert second is not None and [type(e) for e in second.events] == [Download, CheckIn]
        recorder.write(second)
        assert Rollouts(repo).counts(rollout.id).failed == 1
    finally:
        repo.close()


# -- 2: memory -------------------------------------------------------------------------------------------------


def test_unknown_names_do_not_grow_the_server(embedded: Setup) -> None:
    server = OvotaServer(embedded.repo)
    try:

        def flood(count: int, start: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            for n in range(start, start + count):
                conn.request("GET", f"/firmware/ota/{'x' * 3000}{n}/main/ovms3.ver")
                response = conn.getresponse()
                assert response.status == 404
                response.read()
            conn.close()

        flood(2000, 0)  # the allocator's and caches' first growth
        before = rss_kib(server.proc.pid)
        flood(10000, 2000)
        grown = rss_kib(server.proc.pid) - before
        # Cached, 10,000 misses of 3 KB names take about 31 MB; bounded, they take nothing.
        assert grown < 8 * 1024, f"the server grew by {grown} KiB"
        assert ver(server, agent("HONEST")) == A
    finally:
        server.stop()


# -- 3: a locked database ---------------------------------------------------------------------------------------


def test_a_locked_database_holds_up_nobody(embedded: Setup) -> None:
    token = embedded.run("token", "create", *embedded.repo.args, "--name", "ci").out.strip()
    embedded.run("release", "publish", embedded.builds[B], *embedded.repo.args, "--tag", "edge")
    before = embedded.repo.state()
    server = OvotaServer(embedded.repo)
    lock = sqlite3.connect(embedded.repo.backends.folder / "repo.sqlite", isolation_level=None)  # type: ignore[operator]
    try:
        lock.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        answer: list[tuple[int, Any, float]] = []

        def promote() -> None:
            started = time.monotonic()
            status, body = http_json(f"{server.url}/api/v1/promote", "POST", token,
                                     {"product": "v3.3-5", "from": "edge", "to": "main"})  # fmt: skip
            answer.append((status, body, time.monotonic() - started))

        writer = threading.Thread(target=promote)
        writer.start()
        time.sleep(0.5)  # the promote is waiting for the lock now
        assert ver(server, agent("WHILE-LOCKED")) == A  # modules are answered meanwhile
        assert not answer, "the promote finished while the lock was held"
        writer.join(60)
        status, body, _ = answer[0]
        assert status == 503 and "locked" in body["error"], (status, body)
        assert embedded.repo.state() == before
        lock.execute("ROLLBACK")
        status, body = http_json(f"{server.url}/api/v1/promote", "POST", token,
                                 {"product": "v3.3-5", "from": "edge", "to": "main"})  # fmt: skip
        assert status == 200 and body["version"] == B
        no_traceback(server)
    finally:
        lock.close()
        server.stop()


# -- 4: forged health --------------------------------------------------------------------------------------------


def _advance(server: OvotaServer, seconds: float) -> None:
    now = float(http_json(f"{server.url}/clock")[1]["now"])
    status, _ = http_json(f"{server.url}/clock", "POST", body={"to": now + seconds})
    assert status == 200


def test_made_up_vehicle_ids_do_not_vote(embedded: Setup, driven: OvotaServer) -> None:
    server = driven
    honest = [f"CAR{n:03d}" for n in range(40)]
    for vehicle_id in honest:
        assert ver(server, agent(vehicle_id)) == A
    _advance(server, 60)
    embedded.run("release", "publish", embedded.builds[B], *embedded.repo.args, "--tag", "edge")
    embedded.run("rollout", "start", *embedded.repo.args, "--product", "v3.3-5", "--tag", "main", "--build", B,
                 "--steps", "50,100", "--min-sample", "5", "--halt-failed", "10%", "--grace", "10m")  # fmt: skip

    def update(vehicle_id: str) -> bool:
        """The module's .ver and whole .bin; True if it was offered B."""
        offered = ver(server, agent(vehicle_id)) == B
        status, _, body = get(server.port, BIN, f"User-Agent: {agent(vehicle_id)}".encode())
        assert status == 200 and len(body) == 65536
        return offered

    fakes = [f"FAKE{n:04d}" for n in range(200)]
    assert sum(update(f) for f in fakes) > 50  # half of them are in the cohort and received B
    _advance(server, 3600)
    for fake in fakes:  # all still report the old version after the grace period: "failed", if they counted
        ver(server, agent(fake))
    _advance(server, 600)
    status = embedded.status()
    assert status["state"] == "running" and status["counts"]["attempted"] == 0, status
    # The honest modules in the cohort fail the same way: that halts it.
    members = [h for h in honest if update(h)]
    assert len(members) >= 5
    _advance(server, 3600)
    for member in members:
        ver(server, agent(member))
    _advance(server, 600)
    status = embedded.status()
    assert status["state"] == "halted" and status["counts"]["failed"] == len(members), status


# -- 5: tokens and sessions --------------------------------------------------------------------------------------


def _login(server: OvotaServer, token: str) -> str:
    status, headers, _ = get(server.port, "/console/login", b"Content-Type: application/x-www-form-urlencoded",
                             method=b"POST", body=f"token={token}".encode())  # fmt: skip
    assert status == 303, headers
    return headers["set-cookie"].split(";")[0]


def test_tokens_are_listed_and_revoked_and_sessions_end_with_them(embedded: Setup, ovota: CliRunner) -> None:
    args = embedded.repo.args
    alice = embedded.run("token", "create", *args, "--name", "alice").out.strip()
    ci = embedded.run("token", "create", *args, "--name", "ci").out.strip()
    duplicate = ovota("token", "create", *args, "--name", "ci")
    assert duplicate.code == 2 and "a token named 'ci' exists" in duplicate.err
    servers = [OvotaServer(embedded.repo), OvotaServer(embedded.repo)]
    try:
        cookie = _login(servers[0], alice)
        page = get(servers[1].port, "/console", f"Cookie: {cookie}".encode())  # the other process knows it
        assert page[0] == 200 and b"Logged in as alice" in page[2]
        assert http_json(f"{servers[1].url}/api/v1/channels", token=ci)[0] == 200
        listed = embedded.run("token", "list", *args).out
        assert "alice" in listed and "ci" in listed and "ovota_" not in listed
        assert [line.split("last used ")[1] != "never" for line in listed.splitlines()] == [False, True]
        embedded.run("token", "revoke", *args, "alice")
        assert get(servers[0].port, "/console", f"Cookie: {cookie}".encode())[0] == 303  # to the login page
        assert http_json(f"{servers[0].url}/api/v1/channels", token=alice)[0] == 401
        assert http_json(f"{servers[0].url}/api/v1/channels", token=ci)[0] == 200
        missing = ovota("token", "revoke", *args, "alice")
        assert missing.code == 2 and "no token named 'alice'" in missing.err
    finally:
        for server in servers:
            server.stop()


# -- 6 and 7: names and bytes refused at the edge, never a 500 ----------------------------------------------------


def test_look_alike_names_and_bad_bytes_are_refused(embedded: Setup) -> None:
    token = embedded.run("token", "create", *embedded.repo.args, "--name", "ci").out.strip()
    before = embedded.repo.state()
    server = OvotaServer(embedded.repo)
    auth = f"Authorization: Bearer {token}".encode()
    image = embedded.builds[B].read_bytes()
    octet = b"Content-Type: application/octet-stream"
    try:
        status, _, body = get(server.port, "/api/v1/publish?tag=main%0A&product=v3.3-5%0A", auth, octet,
                              method=b"POST", body=image)  # fmt: skip
        assert status == 400 and b"invalid tag name" in body, body
        assert get(server.port, "/api/v1/channels", b"Authorization: Bearer ovota_\xff\xfe")[0] == 400
        assert get(server.port, "/api/v1/channels", auth, b"X-Note: \xff")[0] == 400
        login = get(server.port, "/console/login", b"Content-Type: application/x-www-form-urlencoded",
                    method=b"POST", body=b"token=\xff\xfe")  # fmt: skip
        assert login[0] == 400
        cookie = f"Cookie: {_login(server, token)}".encode()
        form = b"multipart/form-data; boundary=XX"
        parts = b'--XX\r\nContent-Disposition: form-data; name="tag"\r\n\r\nma\xffin\r\n--XX--\r\n'
        status, _, body = get(server.port, "/console/publish", cookie, b"Content-Type: " + form, method=b"POST",
                              body=parts)  # fmt: skip
        assert status == 400 and json.loads(body)["error"] == "a form field is not UTF-8 text"
        status, _, body = get(server.port, "/console/publish", cookie, b"Content-Type: " + form + b"; charset=bogus",
                              method=b"POST", body=parts.replace(b"ma\xffin", b"main"))  # fmt: skip
        assert status == 400, body
        status, _, body = get(server.port, "/console/publish", cookie, b"Content-Type: text/plain", method=b"POST",
                              body=b"not a form")  # fmt: skip
        assert status == 400 and not json.loads(body)["ok"]
        assert get(server.port, VER, b"If-None-Match: \xff\xfe", b"Range: bytes=\xff-")[0] == 200
        no_traceback(server)
    finally:
        server.stop()
    assert embedded.repo.state() == before


def test_settings_that_are_not_finite_or_not_numbers_are_refused(embedded: Setup) -> None:
    token = embedded.run("token", "create", *embedded.repo.args, "--name", "ci").out.strip()
    embedded.run("release", "publish", embedded.builds[B], *embedded.repo.args, "--tag", "edge")
    server = OvotaServer(embedded.repo)
    try:
        start = {"product": "v3.3-5", "tag": "main", "build": B}
        for bad in ({"step_interval": "1" + "0" * 400 + "d"}, {"min_sample": True}, {"min_sample": 10**30},
                    {"watch": "nan"}, {"steps": "1e9,100"}, {"surprise": "1"}):  # fmt: skip
            status, body = http_json(f"{server.url}/api/v1/rollouts", "POST", token, {**start, **bad})
            assert status == 400 and isinstance(body, dict) and body["error"], (bad, status, body)
        assert http_json(f"{server.url}/api/v1/rollouts", token=token) == (200, [])
        # A server on the real clock has no /clock at all: its time is not for outsiders to read or move.
        assert http_json(f"{server.url}/clock", "POST", body={"to": "NaN"})[0] == 404
        assert http_json(f"{server.url}/clock")[0] == 404
    finally:
        server.stop()


# -- 8: corrupt or partial blobs ----------------------------------------------------------------------------------


def test_a_damaged_blob_is_never_served_nor_pointed_at(embedded: Setup, ovota: CliRunner) -> None:
    args = embedded.repo.args
    embedded.run("release", "publish", embedded.builds[B], *args, "--tag", "main")  # main: A then B
    folder = embedded.repo.backends.folder
    assert folder is not None
    r = Repository(folder)
    try:
        history = channels.history(r.db, "v3.3-5", "main")
    finally:
        r.close()
    sha_b, sha_a = history[0].sha256, history[1].sha256
    blob_a = folder / "blobs" / sha_a[:2] / sha_a
    data = bytearray(blob_a.read_bytes())
    data[1000] ^= 0xFF  # same size, other bytes: a bad disk, or someone's hand
    blob_a.write_bytes(bytes(data))
    before = embedded.repo.state()
    rollback = ovota("release", "rollback", *args, "--product", "v3.3-5", "--tag", "main")
    assert rollback.code == 2 and f"blob {sha_a} is damaged" in rollback.err
    assert embedded.repo.state() == before
    partial = folder / "blobs" / sha_b[:2] / f".{sha_b}.x1y2z3"
    partial.write_bytes(b"half a publish")
    os.utime(partial, (time.time() - 3600, time.time() - 3600))
    server = OvotaServer(embedded.repo)
    try:
        assert not partial.exists()  # removed at start
        status, headers, _ = get(server.port, f"/firmware/builds/{sha_a}/ovms3.bin")
        assert status == 503 and headers["retry-after"]
        assert get(server.port, BIN)[0] == 200  # the channel's own build is fine
        wait_for(lambda: f"blob {sha_a} is damaged ({blob_a})" in server.log, "the damaged blob to be logged")
    finally:
        server.stop()
    embedded.run("release", "publish", embedded.builds[A], *args, "--tag", "eap")  # the same bytes repair it
    assert blob_a.read_bytes() == embedded.builds[A].read_bytes()
    embedded.run("release", "rollback", *args, "--product", "v3.3-5", "--tag", "main")
    os.remove(folder / "blobs" / sha_b[:2] / sha_b)  # a blob missing on disk
    server = OvotaServer(embedded.repo)
    try:
        status, _, body = get(server.port, f"/firmware/builds/{sha_b}/ovms3.bin")
        assert status == 503 and b"cannot be read" in body
        no_traceback(server)
    finally:
        server.stop()


# -- 9: the smaller holes -----------------------------------------------------------------------------------------


def test_logins_are_throttled_and_listings_ignore_host(embedded: Setup) -> None:
    token = embedded.run("token", "create", *embedded.repo.args, "--name", "ci").out.strip()
    server = OvotaServer(embedded.repo, extra=("--public-url", "https://ota.example.com"))
    try:
        form = b"Content-Type: application/x-www-form-urlencoded"
        answers = Counter(get(server.port, "/console/login", form, method=b"POST", body=b"token=guess")[0]
                          for _ in range(12))  # fmt: skip
        assert answers == {401: 10, 429: 2}
        status, headers, _ = get(server.port, "/console/login", form, method=b"POST", body=f"token={token}".encode())
        assert status == 429 and int(headers["retry-after"]) > 0  # the address waits, even with the right token
        status, _, body = get(server.port, "/firmware/ota/", b"Host: evil.example", b"Accept: application/json")
        assert status == 200 and b"evil" not in body
        assert json.loads(body)[0]["url"] == "https://ota.example.com/firmware/ota/v3.3-5/main/ovms3.bin"
    finally:
        server.stop()


def test_a_foreign_page_cannot_log_a_browser_in(embedded: Setup) -> None:
    """Login CSRF: a page on another site posting the login form (with the attacker's own token) would log the
    victim's browser into the attacker's session; the console refuses cross-site posts to its login too."""
    token = embedded.run("token", "create", *embedded.repo.args, "--name", "attacker").out.strip()
    server = OvotaServer(embedded.repo)
    try:
        form, body = b"Content-Type: application/x-www-form-urlencoded", f"token={token}".encode()
        status, headers, text = get(server.port, "/console/login", form, b"Origin: https://evil.example",
                                    method=b"POST", body=body)  # fmt: skip
        assert status == 403 and "set-cookie" not in headers and b"Cross-site" in text
        own = f"Origin: http://127.0.0.1:{server.port}".encode()
        status, headers, _ = get(server.port, "/console/login", form, own, method=b"POST", body=body)
        assert status == 303 and "ovota_session" in headers["set-cookie"]
    finally:
        server.stop()


def test_audit_lines_cannot_be_forged(embedded: Setup) -> None:
    """A refused action's name comes from the request: a newline and an ESC sequence in it are written escaped, so
    ``ovota audit`` shows one line per entry and nothing that drives a terminal."""
    token = embedded.run("token", "create", *embedded.repo.args, "--name", "ci", "--role", "release").out.strip()
    server = OvotaServer(embedded.repo)
    try:
        forged = "v3.3-5\n2026-12-01 03:00:00  admin  promote  v3.3-5/main  ok\x1b[2J"
        body = {"product": forged, "tag": "main", "build": "3.3.006"}
        status, answer = http_json(f"{server.url}/api/v1/rollouts", "POST", token, body)
        assert status in (400, 404), answer
    finally:
        server.stop()
    out = embedded.run("audit", *embedded.repo.args).out
    listed = json.loads(embedded.run("audit", *embedded.repo.args, "--json").out)
    lines = out.splitlines()
    assert len(lines) == len(listed)  # one line per entry: none forged
    assert all(line.split("  ")[1].strip() in ("cli:" + getpass.getuser(), "ci") for line in lines), out
    refused = next(line for line in lines if " ci " in line and "rollout start" in line)
    assert refused.split("rollout start")[1].lstrip().startswith("v3.3-5\\n2026-12-01")  # kept, escaped
    assert all(entry["target"].isprintable() for entry in listed)


def test_cli_tables_print_one_line_per_row_whatever_the_database_holds(embedded: Setup) -> None:
    """Rows written before today's validation (or by a hostile proxy's X-Forwarded-For) may hold anything: every
    CLI table escapes what is not printable, so each row is one line and no ESC sequence reaches the terminal."""
    hostile = "EV\x1b]0;pwned\x07\n2026-12-01 03:00:00 fake row"
    db = sqlite3.connect(embedded.repo.backends.folder / "repo.sqlite")  # type: ignore[operator]
    with db:
        db.execute("INSERT INTO modules VALUES ('evil', ?, 'v3.3-5', 'main', ?, 'ota_0', ?, 1e9, 1e9, 1)",
                   (hostile, "3.3.0\x1b[2J", "10.0.0.1\r\nx"))  # fmt: skip
        db.execute("INSERT INTO vehicle_groups VALUES ('g', ?, 1e9)", (hostile,))
    db.close()
    for command, rows in ((("fleet", "list"), 1), (("fleet", "group", "list", "g"), 1)):
        out = embedded.run(*command, *embedded.repo.args).out
        assert "\x1b" not in out and "\x07" not in out and "\r" not in out, out
        assert "fake row" in out and len([line for line in out.splitlines() if "pwned" in line]) == rows, out
        assert "EV\\x1b]0;pwned\\x07\\n2026" in out, out


def test_hostile_numbers_and_json_are_400s_not_500s(embedded: Setup) -> None:
    """Deeply nested JSON, a 5,000-digit integer, 10**400 as a rate growth, a body over the limit, Unicode digits and
    a page number past 64 bits: each a 4xx naming what is wrong, never a 500, and the server goes on."""
    token = embedded.run("token", "create", *embedded.repo.args, "--name", "ci", "--role", "admin").out.strip()
    server = OvotaServer(embedded.repo)
    auth = f"Authorization: Bearer {token}".encode()
    json_type = b"Content-Type: application/json"
    start = b'{"product": "v3.3-5", "tag": "main", "build": "3.3.006", '
    try:
        for body, expected in (
            (b"[" * 100_000 + b"]" * 100_000, b"nested"),
            (start + b'"min_sample": ' + b"9" * 5000 + b"}", b"at most 18 digits"),
            (start + b'"rate": "5/h", "rate_growth": 1' + b"0" * 400 + b"}", b"at most 18 digits"),
            (start + b'"rate": "5/h", "rate_growth": 1e400}', b"finite"),
            (start + b'"rate": "5/h", "rate_growth": NaN}', b"not JSON"),
            (b'{"name": "x", "role": "read", "pad": "' + b"x" * (2 << 20) + b'"}', b"body size 1048576"),
        ):
            path = "/api/v1/tokens" if b'"name"' in body[:20] else "/api/v1/rollouts"
            status, _, answer = get(server.port, path, auth, json_type, method=b"POST", body=body)
            assert status in (400, 413) and expected in answer, (path, status, answer[:200])
        login = f"token={token}".encode()
        form = b"Content-Type: application/x-www-form-urlencoded"
        status, headers, _ = get(server.port, "/console/login", form, method=b"POST", body=login)
        cookie = f"Cookie: {headers['set-cookie'].split(';')[0]}".encode()
        for page in ("%C2%B2", "99999999999999999999", "-1", "1e3"):
            assert get(server.port, f"/console/fleet?page={page}", cookie)[0] == 200, page
        origin = f"Origin: http://127.0.0.1:{server.port}".encode()
        fields = b"channel=v3.3-5%2Fmain&build=3.3.006&min_sample=%C2%B2"
        status, headers, body = get(server.port, "/console/rollouts/start", cookie, form, origin, method=b"POST",
                                    body=fields)  # fmt: skip
        assert status == 400 and b"invalid minimum sample" in body  # the form again, the error beside its field
        assert ver(server, agent("STILL")) == A
        assert "Traceback" not in server.log
    finally:
        server.stop()


def test_oversized_settings_and_multipart_bombs_are_refused_before_parsing(embedded: Setup) -> None:
    """A megabyte of window text is refused at once (it used to be parsed, stored and shown, stalling devices), and
    so is a publish body of 50,000 tiny multipart parts or a changelog over its limit; devices are answered
    meanwhile."""
    token = embedded.run("token", "create", *embedded.repo.args, "--name", "ci", "--role", "release").out.strip()
    embedded.run("release", "publish", embedded.builds[B], *embedded.repo.args, "--tag", "edge")
    server = OvotaServer(embedded.repo)
    try:
        start = {"product": "v3.3-5", "tag": "main", "build": B}
        for bad, named in (({"windows": ["Mon," * 250_000 + "Tue 01:00-05:00"]}, "windows is 1000015 characters"),
                           ({"steps": "1," * 200 + "100"}, "steps is 403 characters")):  # fmt: skip
            started = time.monotonic()
            status, body = http_json(f"{server.url}/api/v1/rollouts", "POST", token, {**start, **bad})
            assert status == 400 and named in body["error"] and time.monotonic() - started < 2, body
        boundary = b"x"
        parts = b"".join(b'--x\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % n for n in range(50_000))
        auth = f"Authorization: Bearer {token}".encode()
        kind = b"Content-Type: multipart/form-data; boundary=" + boundary
        started = time.monotonic()
        status, _, answer = get(server.port, "/api/v1/publish", auth, kind, method=b"POST", body=parts + b"--x--\r\n")
        assert status == 400 and b"at most 16 parts" in answer and time.monotonic() - started < 2, answer
        changelog = (
            b'--x\r\nContent-Disposition: form-data; name="changelog"\r\n\r\n' + b"y" * (70 << 10) + b"\r\n--x--\r\n"
        )
        status, _, answer = get(server.port, "/api/v1/publish", auth, kind, method=b"POST", body=changelog)
        assert status == 400 and b"over 65536 bytes" in answer, answer
        assert ver(server, agent("STILL")) == A
        assert http_json(f"{server.url}/api/v1/rollouts", token=token) == (200, [])  # nothing was started
    finally:
        server.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB file system (tmpfs), for a repository whose disk fills up; needs root (CI runs as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                          check=False)  # fmt: skip
    if made.returncode:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs: {made.stderr.decode()}")
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_refuses_a_publish_cleanly(small_disk: Path, tmp_path: Path, ovota: CliRunner) -> None:
    """Disk full: the publish answers 507 with one line, the refusal is audited, nothing of the image stays
    behind, the channel keeps its build, modules keep being answered; the CLI says the same and exits 2."""
    repo = small_disk / "repo"
    (tmp_path / "a.bin").write_bytes(image_of(A, 65536))
    assert ovota("release", "publish", tmp_path / "a.bin", "--repo", repo, "--tag", "main").code == 0
    token = ovota("token", "create", "--repo", repo, "--name", "ci", "--role", "release").out.strip()
    server = OvotaServer(repo)
    try:
        big = image_of(B, 3 << 20)
        auth = f"Authorization: Bearer {token}".encode()
        status, _, body = get(server.port, "/api/v1/publish?tag=main", auth, method=b"POST", body=big)
        assert status == 507 and b"No space left on device" in body, (status, body)
        assert ver(server, agent("CAR1")) == A
        assert "Traceback" not in server.log
    finally:
        server.stop()
    (tmp_path / "b.bin").write_bytes(big)
    run = ovota("release", "publish", tmp_path / "b.bin", "--repo", repo, "--tag", "main")
    assert run.code == 2 and run.err.strip().splitlines() == ["Error: cannot store the image: No space left on device"]
    assert not [p for p in (repo / "blobs").rglob(".*") if p.is_file()]  # no partial file left
    audit = ovota("audit", "--repo", repo).out
    assert audit.count("refused: cannot store the image: No space left on device") == 2, audit


def test_a_slow_login_body_is_cut_off_within_the_idle_timeout(embedded: Setup) -> None:
    """A login that announces a body and trickles it (or stops) held its connection for ever: it is answered 408
    and closed within --idle-timeout; a login body over 4 KiB is refused without being read."""
    server = OvotaServer(embedded.repo, extra=("--idle-timeout", "2"))
    try:
        head = (b"POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 100\r\n\r\ntoken=")  # fmt: skip
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head)
            started = time.monotonic()
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                for _ in range(8):  # a byte now and then, never the whole body
                    sock.sendall(b"x")
                    time.sleep(0.5)
                    sock.setblocking(False)
                    with contextlib.suppress(BlockingIOError):
                        answer += sock.recv(4096)
                    sock.setblocking(True)
                    if answer:
                        break
            waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408") and waited < 4, (answer[:80], waited)
        status, _, body = get(server.port, "/console/login", b"Content-Type: application/x-www-form-urlencoded",
                              method=b"POST", body=b"token=" + b"x" * 5000)  # fmt: skip
        assert status == 413, (status, body)
        assert ver(server, agent("STILL")) == A
    finally:
        server.stop()


def test_one_address_cannot_take_every_connection(embedded: Setup) -> None:
    """A client that holds connections open (slow bodies, idle keep-alives) from one address reaches its cap and
    gets resets from then on; a module from another address is answered meanwhile, and the held ones, once
    closed, free their places."""
    server = OvotaServer(embedded.repo, extra=("--max-per-address", "10", "--idle-timeout", "60"))
    held = []
    try:
        holder = ("127.0.0.3", 0)  # an address of its own: the test harness's probes come from 127.0.0.1
        for _ in range(10):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5, source_address=holder)
            sock.sendall(b"POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                         b"\r\nContent-Length: 50\r\n\r\n")  # and no body: held until the idle timeout  # fmt: skip
            held.append(sock)
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=5, source_address=holder)
        with extra, contextlib.suppress(ConnectionResetError, BrokenPipeError):
            extra.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert extra.recv(100) == b""  # reset, or closed, before anything was read
        with socket.create_connection(("127.0.0.1", server.port), source_address=("127.0.0.2", 0), timeout=5) as own:
            own.sendall(f"GET /firmware/ota/v3.3-5/main/ovms3.ver HTTP/1.0\r\nUser-Agent: {agent('OTHER')}\r\n\r\n"
                        .encode())  # fmt: skip
            assert own.recv(200).startswith(b"HTTP/1.0 200")
        for sock in held:
            sock.close()
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", server.port), source_address=holder, timeout=5) as again:
            again.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert again.recv(100).startswith(b"HTTP/1.0 200")  # its places are free again
    finally:
        for sock in held:
            sock.close()
        server.stop()


def _from(port: int, address: str, request: bytes) -> bytes:
    """What the server answers ``request`` sent from ``address`` (b"" if it reset or closed the connection)."""
    with socket.create_connection(("127.0.0.1", port), source_address=(address, 0), timeout=5) as sock:
        try:
            sock.sendall(request)
            return sock.recv(300)
        except (ConnectionResetError, BrokenPipeError):
            return b""


def test_at_the_total_cap_idle_connections_go_first_and_modules_come_first(embedded: Setup) -> None:
    """At --max-connections the connection idle longest (here a head still arriving) is closed to make room for a
    module; near the cap the console answers 503 while modules are served."""
    server = OvotaServer(embedded.repo, extra=("--max-connections", "20", "--idle-timeout", "60"))
    module = f"GET {VER} HTTP/1.0\r\nUser-Agent: {agent('OTHER')}\r\n\r\n".encode()
    console = b"GET /console/login HTTP/1.0\r\n\r\n"
    held: list[socket.socket] = []

    def hold(request: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5, source_address=("127.0.0.3", 0))
        sock.sendall(request)
        held.append(sock)
        return sock

    slow_body = (b"POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                 b"Content-Length: 50\r\n\r\n")  # fmt: skip
    half_head = b"GET /healthz HTTP/1.1\r\n"
    try:
        oldest = hold(half_head)
        for _ in range(16):
            hold(slow_body)  # requests in progress, not idle
        time.sleep(0.3)
        answer = _from(server.port, "127.0.0.2", console)  # the 18th connection: near the cap
        assert answer.startswith(b"HTTP/1.0 503") and b"modules first" in answer, answer
        assert _from(server.port, "127.0.0.2", module).startswith(b"HTTP/1.0 200")
        next_oldest = hold(half_head)
        hold(half_head)
        hold(half_head)  # 20 open: at the cap
        time.sleep(0.2)
        assert _from(server.port, "127.0.0.2", module).startswith(b"HTTP/1.0 200")
        assert oldest.recv(100) == b""  # closed to make room
        hold(half_head)  # at the cap again
        time.sleep(0.2)
        assert _from(server.port, "127.0.0.2", module).startswith(b"HTTP/1.0 200")
        assert next_oldest.recv(100) == b""
        for sock in held:
            sock.close()
        time.sleep(0.3)
        assert _from(server.port, "127.0.0.2", console).startswith(b"HTTP/1.0 200")
        token = embedded.run("token", "create", *embedded.repo.args, "--name", "ci", "--role", "read").out.strip()
        metrics = get(server.port, "/metrics", f"Authorization: Bearer {token}".encode())[2].decode()
        assert "ovota_idle_connections_closed_total 2.0" in metrics
        assert "Traceback" not in server.log  # the held bodies' resets are a line each
    finally:
        for sock in held:
            sock.close()
        server.stop()


class _Busy:
    """A connection's handler, as far as the caps see it."""

    transport = None

    def __init__(self) -> None:
        self.closed = False

    def force_close(self) -> None:
        self.closed = True


def test_the_caps_close_the_longest_idle_and_refuse_when_none_is() -> None:
    """The rule the test above drives through a server, with the cases it cannot reach: a new connection at the
    total cap closes the one idle longest, is refused when every open one has a request in progress, and one over
    the per-address cap is refused whatever is idle."""
    caps = ConnectionCaps(total=3, per_address=2)
    first, second, third, fourth = (_Busy() for _ in range(4))
    for address, handler in (("a", first), ("b", second), ("c", third)):
        assert caps.admit(address, handler)  # type: ignore[arg-type]
    assert caps.crowded()
    caps.busy(first)  # type: ignore[arg-type]
    caps.busy(third)  # type: ignore[arg-type]
    assert caps.admit("d", fourth)  # type: ignore[arg-type]
    handlers = (first, second, third, fourth)
    assert [h.closed for h in handlers] == [False, True, False, False]
    caps.release("b", second)  # type: ignore[arg-type]
    caps.busy(fourth)  # type: ignore[arg-type]
    assert not caps.admit("e", _Busy())  # type: ignore[arg-type]
    assert caps.count == 3 and [h.closed for h in handlers] == [False, True, False, False]
    caps.rest(first)  # type: ignore[arg-type]
    assert caps.admit("a", _Busy())  # type: ignore[arg-type]
    assert [h.closed for h in handlers] == [True, True, False, False]
    # "a" holds 2 connections (one of them closing): its cap
    assert not caps.admit("a", _Busy())  # type: ignore[arg-type]


def test_a_download_its_client_stops_taking_is_cut_and_resets_cost_no_traceback(
    embedded: Setup, tmp_path: Path
) -> None:
    """A client that asks for a 6 MB image (more than the kernel buffers: the server's sending stays busy) and
    then takes a few bytes now and then held its connection (busy, so the caps could not close it) for as long as
    it liked: it is cut once it acknowledges under 1 KiB/s over --idle-timeout. Clients that reset or close
    mid-download cost a line each, no traceback."""
    big = tmp_path / "big.bin"
    big.write_bytes(image_of("3.3.008", 6 * 1024 * 1024))
    assert embedded.run("release", "publish", big, *embedded.repo.args, "--tag", "big", "--new-channel").code == 0
    server = OvotaServer(embedded.repo, extra=("--idle-timeout", "2"))
    try:
        request = b"GET /firmware/ota/v3.3-5/big/ovms3.bin HTTP/1.0\r\n\r\n"
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # a small window: the server's buffer fills
        slow.settimeout(20)
        slow.connect(("127.0.0.1", server.port))
        slow.sendall(request)
        taken, started = 0, time.monotonic()
        with slow, contextlib.suppress(ConnectionResetError):
            while time.monotonic() - started < 30 and (chunk := slow.recv(256)):
                taken += len(chunk)
                time.sleep(0.5)  # 512 B/s, then what its own buffer held when the server reset it
        assert time.monotonic() - started < 30 and taken < 1024 * 1024  # cut, long before the 6 MB
        for _ in range(20):  # and clients that go away mid-download: a reset, a close
            for linger in (True, False):
                with socket.create_connection(("127.0.0.1", server.port), timeout=5) as gone:
                    if linger:
                        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    gone.sendall(request)
                    gone.recv(2048)
        assert ver(server, agent("HONEST")) == A
        token = embedded.run("token", "create", *embedded.repo.args, "--name", "ops", "--role", "read").out.strip()
        metrics = get(server.port, "/metrics", f"Authorization: Bearer {token}".encode())[2].decode()
        assert "ovota_downloads_cut_total 1.0" in metrics
        time.sleep(0.5)
        log = server.log
        assert "Traceback" not in log and "Unhandled exception" not in log, log[-3000:]
        assert log.count("Error handling request") <= 21, log[-2000:]  # a line each, at most a burst a minute
    finally:
        server.stop()


def test_no_module_can_pose_as_another_and_changelogs_carry_no_escapes(embedded: Setup) -> None:
    """A module without a vehicle id is keyed @ADDRESS: a vehicle id of that form from elsewhere is refused (it
    would write that module's failures); a changelog that would put an ESC sequence on a terminal through OVMS's
    ``ota status`` is refused at publish."""
    token = embedded.run("token", "create", *embedded.repo.args, "--name", "ci", "--role", "release").out.strip()
    server = OvotaServer(embedded.repo)
    try:
        assert ver(server, agent("@127.0.0.2")) == A  # served like any module, as anyone is
        status, _, body = get(server.port, "/api/v1/publish?tag=edge&changelog=%1b%5b2Jgone",
                              f"Authorization: Bearer {token}".encode(), method=b"POST",
                              body=embedded.builds[B].read_bytes())  # fmt: skip
        assert status == 400 and b"control character" in body, (status, body)
    finally:
        server.stop()
    assert "@127.0.0.2" not in registered(embedded)
    refused = embedded.ovota("fleet", "group", "add", *embedded.repo.args, "g", "@127.0.0.2")
    assert refused.code != 0 and "not starting with @" in refused.err


def test_a_stalled_upload_is_cut_and_a_steady_one_is_not(embedded: Setup) -> None:
    """A token holder's upload that stops (or trickles under 1 KiB/s) held its connection for ever: it is cut
    after --idle-timeout; a whole upload at any honest speed is published."""
    token = embedded.run("token", "create", *embedded.repo.args, "--name", "ci", "--role", "release").out.strip()
    server = OvotaServer(embedded.repo, extra=("--idle-timeout", "2"))
    try:
        data = embedded.builds[B].read_bytes()
        head = (f"POST /api/v1/publish?tag=edge HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()  # fmt: skip
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
            sock.sendall(head + data[:1000])  # then nothing more
            started = time.monotonic()
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(100) == b""
            assert time.monotonic() - started < 8
        status, _, body = get(server.port, "/api/v1/publish?tag=edge", f"Authorization: Bearer {token}".encode(),
                              method=b"POST", body=data)  # fmt: skip
        assert status == 201, body
    finally:
        server.stop()


def test_malformed_and_slow_requests_cost_one_line_and_a_bounded_time(embedded: Setup) -> None:
    server = OvotaServer(embedded.repo, extra=("--idle-timeout", "1"))
    try:
        for _ in range(30):
            status, _, _ = get(server.port, VER, b"Bad Header Without Colon")
            assert status == 400
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as slow:
            slow.sendall(b"GET " + VER.encode() + b" HTTP/1.1\r\nHost: x\r\n")  # and never the end of the head
            assert slow.recv(100) == b""  # closed by the server, not by our 20 s timeout
        assert ver(server, agent("HONEST")) == A
        log = server.log
        assert "Traceback" not in log and log.count("Error handling request") <= 20, log[-2000:]
    finally:
        server.stop()


def test_download_records_are_pruned_after_their_retention(embedded: Setup) -> None:
    server = OvotaServer(embedded.repo, extra=("--driven-clock", "--retention", "30d"))
    try:
        status, _, _ = get(server.port, BIN, f"User-Agent: {agent('CAR')}".encode())
        assert status == 200
        _advance(server, 60)
        r = Repository(embedded.repo.backends)
        try:
            assert r.db.execute("SELECT count(*) FROM downloads").fetchone()[0] == 1
            _advance(server, 31 * 86400)
            assert r.db.execute("SELECT count(*) FROM downloads").fetchone()[0] == 0
            assert r.db.execute("SELECT count(*) FROM modules").fetchone()[0] == 1  # the module stays known
        finally:
            r.close()
    finally:
        server.stop()


def test_under_tls_cookies_are_secure_and_browsers_are_told_to_stay(embedded: Setup, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    token = embedded.run("token", "create", *embedded.repo.args, "--name", "ci").out.strip()
    pem = str(tmp_path / "server.pem")
    server = OvotaServer(embedded.repo, extra=("--tls-cert", pem, "--tls-key", pem))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    try:
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
        conn.request("POST", "/console/login", body=f"token={token}",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        response = conn.getresponse()
        response.read()
        cookie = response.getheader("Set-Cookie") or ""
        assert response.status == 303 and "Secure" in cookie and "HttpOnly" in cookie, cookie
        assert response.getheader("Strict-Transport-Security") == "max-age=31536000"
        conn.request("GET", VER)
        response = conn.getresponse()
        assert response.read().startswith(A.encode()) and response.getheader("Strict-Transport-Security")
        conn.close()
    finally:
        server.stop()
    plain = OvotaServer(embedded.repo)
    try:
        assert "strict-transport-security" not in get(plain.port, VER)[1]
    finally:
        plain.stop()


def test_the_module_page_refuses_posts_from_other_sites(tmp_path: Path) -> None:
    flash = new_module(tmp_path / "m.img", version=A, size=65536)
    web = ModuleWeb(flash)
    try:
        setting = b"auto_hour=2&server=evil.example/firmware/ota&tag=main"
        form = b"Content-Type: application/x-www-form-urlencoded"
        for source in (b"Origin: https://evil.example", b"Referer: https://evil.example/page",
                       b"Sec-Fetch-Site: cross-site"):  # fmt: skip
            status, _, _ = get(web.port, "/api/firmware/settings", form, source, method=b"POST", body=setting)
            assert status == 403, source
        assert "evil" not in run_commands(flash, "config list ota").output
        own = f"Origin: http://127.0.0.1:{web.port}".encode()
        status, _, _ = get(web.port, "/api/firmware/settings", form, own, method=b"POST", body=setting)
        assert status != 403
    finally:
        web.stop()


def test_a_failing_background_worker_is_logged_once_counted_and_shown(caplog: pytest.LogCaptureFixture) -> None:
    """A worker that fails every round (a full disk under the delta maker) logs once per reason, not every two
    seconds; the metrics count the rounds and say it is failing; /readyz lists it (see health.readyz)."""
    from ovota.server.loops import WorkerHealth
    from ovota.server.metrics import REGISTRY as METRICS

    health = WorkerHealth()
    with caplog.at_level(logging.WARNING, logger="ovota.server"):
        for _ in range(50):
            health.failed("delta patches", OSError(28, "No space left on device"))
        health.failed("delta patches", OSError(5, "Input/output error"))
        health.ok("delta patches")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "delta patches failed, retrying later: OSError: [Errno 28] No space left on device",
        "delta patches failed, retrying later: OSError: [Errno 5] Input/output error",
        "delta patches works again",
    ]
    assert (METRICS.get_sample_value("ovota_background_failures_total", {"worker": "delta patches"}) or 0) >= 51
    assert METRICS.get_sample_value("ovota_background_failing", {"worker": "delta patches"}) == 0
    assert health.failing == {}


def test_client_resets_are_one_line_each_counted_and_bounded() -> None:
    """aiohttp logs a client that resets mid-request with a traceback (ConnectionResetError, "Transport is
    closing"); anyone can make those cheaply. One line each, at most 20 a minute, counted in the metrics."""
    from ovota.server.app import _QuietRequestErrors
    from ovota.server.metrics import REGISTRY as METRICS

    quiet = _QuietRequestErrors()
    before = METRICS.get_sample_value("ovota_client_disconnects_total") or 0
    kept = []
    for n in range(100):
        error = ConnectionResetError("Connection lost") if n % 2 else RuntimeError("Transport is closing")
        record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (),
                                   (type(error), error, None))  # fmt: skip
        if quiet.filter(record):
            kept.append(record)
    assert len(kept) == 20 and all(r.exc_info is None and "\n" not in r.getMessage() for r in kept)
    assert kept[0].getMessage() == "Error handling request: RuntimeError: Transport is closing"
    assert (METRICS.get_sample_value("ovota_client_disconnects_total") or 0) - before == 100
    bug = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (),
                            (KeyError, KeyError("x"), None))  # fmt: skip
    assert quiet.filter(bug) and bug.exc_info is not None  # a handler's bug keeps its traceback
