"""A bounded fuzz of everything the server answers without a login: malformed request lines, headers, bodies
and User-Agents on the device paths, the download area, the API and the console, sent as raw bytes.

Whatever comes in: never a 500, never a traceback in the log; afterwards the registry still registers honest
modules, a control rollout is still there and readable, and the server has not grown without bound.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovota.server.store.backends import Backends
from tests.conftest import CliRunner
from tests.hostile import raw_request, rss_kib
from tests.servers import OvotaServer
from tests.stores import Store
from tests.test_fleet import A, B, agent, http_json, make_setup, ver, wait_for

PATHS = [
    "/firmware/ota/v3.3-5/main/ovms3.ver",
    "/firmware/ota/v3.3-5/main/ovms3.bin",
    "/firmware/ota/v3.3-5/main/",
    "/firmware/ota/",
    "/firmware/builds/" + "0" * 64 + "/ovms3.bin",
    "/api/v1/channels",
    "/api/v1/publish?tag=main",
    "/api/v1/promote",
    "/api/v1/rollouts",
    "/api/v1/rollouts/v3.3-5/main/pause",
    "/api/v1/fleet?product=v3.3-5",
    "/console/login",
    "/console/publish",
    "/console/rollouts/abort",
    "/clock",
    "/",
]
HEADERS = ["User-Agent", "Authorization", "Range", "If-Range", "If-None-Match", "A-IM", "Content-Type", "Cookie",
           "X-Forwarded-For", "Origin", "Accept", "If-Modified-Since", "Transfer-Encoding", "Connection"]  # fmt: skip

CONTENT_TYPES = [b"multipart/form-data; boundary=X", b"application/json", b"multipart/form-data",
                 b"application/x-www-form-urlencoded; charset=bogus", b"text/plain"]  # fmt: skip
BODIES = [b"token=\xff\xfe", b'{"product": "v3.3-5", "tag": "main"}', b"{]", b"--X\r\n\r\n--X--"]


def _one_line(raw: bytes) -> bytes:
    return raw.replace(b"\r", b"").replace(b"\n", b"")


def _ovms_agent(vehicle_id: str, version: str, tag: str) -> bytes:
    return f"ovms/v3.3-5 ({vehicle_id} {version}/ota_0/{tag} (build x))".encode("utf-8", "surrogatepass")


_value_bytes = st.binary(max_size=120).map(_one_line)
_user_agents = st.one_of(
    _value_bytes,
    st.builds(
        _ovms_agent,
        st.text(max_size=80),
        st.sampled_from([A, B, "3.3.005", "", "x/y", "3.3.006\x00"]),
        st.sampled_from(["main", "main\x0b", "eap", "", "../x"]),
    ),
)
_header_values = {
    "User-Agent": _user_agents,
    "Authorization": st.one_of(_value_bytes, _value_bytes.map(lambda b: b"Bearer ovota_" + b)),
    "Range": st.one_of(_value_bytes, st.from_regex(rb"bytes=[0-9]{0,12}-[0-9]{0,12}(,[0-9]{0,3}-)?", fullmatch=True)),
    "Content-Type": st.one_of(_value_bytes, st.sampled_from(CONTENT_TYPES)),
}
_suffixes = st.one_of(st.just(b""), st.binary(max_size=60).map(lambda b: _one_line(b).replace(b" ", b"%20")))
_bodies = st.one_of(st.just(b""), st.binary(max_size=300), st.sampled_from(BODIES))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(min_size=1, max_size=400)) + b"\r\n\r\n"  # not HTTP at all
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"G\xffT"]))
    path = draw(st.sampled_from(PATHS)).encode() + draw(_suffixes)
    version = draw(st.sampled_from([b"HTTP/1.0", b"HTTP/1.1", b"HTTP/2.0", b"HTTP/1.x"]))
    lines = [method + b" " + path + b" " + version, b"Host: 127.0.0.1"]
    for name in draw(st.lists(st.sampled_from(HEADERS), max_size=6)):
        lines.append(name.encode() + b": " + draw(_header_values.get(name, _value_bytes)))
    body = draw(_bodies)
    if body or method == b"POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def test_fuzzed_requests_never_break_the_server(tmp_path: Path, ovota: CliRunner) -> None:
    setup = make_setup(Store("folder", Backends(folder=tmp_path / "repo")), tmp_path, ovota)
    args = setup.repo.args
    token = setup.run("token", "create", *args, "--name", "ci").out.strip()
    setup.run("release", "publish", setup.builds[B], *args, "--tag", "edge")
    server = OvotaServer(setup.repo)
    try:
        for n in range(10):
            assert ver(server, agent(f"CAR{n}")) == A
        wait_for(lambda: len(json.loads(setup.run("fleet", "list", *args, "--json").out)) == 10, "the fleet")
        setup.run("rollout", "start", *args, "--product", "v3.3-5", "--tag", "main", "--build", B, "--steps", "50,100")
        for _ in range(50):  # warm the allocator and the caches before measuring
            raw_request(server.port, b"GET /firmware/ota/v3.3-5/main/ovms3.ver HTTP/1.0\r\n\r\n")
        before = rss_kib(server.proc.pid)
        statuses: list[int] = []

        @settings(max_examples=400, database=None, deadline=None, suppress_health_check=list(HealthCheck))
        @given(request=requests())
        def fuzz(request: bytes) -> None:
            status, _, body = raw_request(server.port, request, timeout=15)  # slack for a loaded machine
            statuses.append(status)
            assert status != 500 and status < 600, (request, status, body[:300])

        fuzz()
        assert len({s for s in statuses if s}) >= 5  # the fuzz reached more than one kind of answer
        assert ver(server, agent("AFTER")) == A or ver(server, agent("AFTER")) == B
        wait_for(lambda: "AFTER" in setup.run("fleet", "list", *args).out, "a module registered after the fuzz")
        status, body = http_json(f"{server.url}/api/v1/rollouts/v3.3-5/main", token=token)
        assert status == 200 and body["state"] == "running", body  # nothing unauthenticated changed it
        grown = rss_kib(server.proc.pid) - before
        assert grown < 30 * 1024, f"the server grew by {grown} KiB"
        log = server.log
        assert "Traceback" not in log, log[-4000:]
    finally:
        server.stop()
