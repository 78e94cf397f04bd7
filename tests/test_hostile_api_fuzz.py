"""A bounded fuzz of what a token holder can send: every API route and console form with generated parameters
(hostile numbers, Unicode digits, huge and nested values, control characters, wrong types). Whatever is sent, the
answer is never a 5xx (a refusal is a 4xx naming why), the server stays up and answers modules."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovota.server.store.backends import Backends
from tests.conftest import CliRunner
from tests.hostile import get
from tests.servers import OvotaServer
from tests.stores import Store
from tests.test_fleet import A, B, agent, make_setup, ver

TEXTS = st.one_of(
    st.sampled_from(["", "main", "v3.3-5", "3.3.007", "²", "1e400", "NaN", "-1", "9" * 400, "a\nb", "\x1b[2J",
                     "../../etc", "Mon-Fri 01:00-05:00", "5/h", "10%", "x" * 300, "CAR1", "*"]),
    st.text(max_size=40),
)  # fmt: skip
VALUES: st.SearchStrategy[Any] = st.recursive(
    st.one_of(TEXTS, st.integers(-(10**30), 10**30), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
              st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXTS, inner, max_size=4)),
    max_leaves=12,
)  # fmt: skip
FIELDS = ["product", "tag", "build", "from", "to", "steps", "step_interval", "halt_failed", "min_sample", "watch",
          "grace", "windows", "timezone", "rate", "rate_growth", "groups", "vehicles", "versions", "name", "role",
          "force", "new_channel", "allow_empty", "notify_url"]  # fmt: skip
JSON_ROUTES = [
    ("POST", "/api/v1/promote"), ("POST", "/api/v1/rollback"), ("POST", "/api/v1/rollouts"),
    ("POST", "/api/v1/rollouts/v3.3-5/main/{t}"), ("POST", "/api/v1/groups/{t}"), ("POST", "/api/v1/groups/{t}/remove"),
    ("DELETE", "/api/v1/groups/{t}"), ("PUT", "/api/v1/pins/{t}"), ("DELETE", "/api/v1/pins/{t}"),
    ("POST", "/api/v1/waypoints/{t}"), ("DELETE", "/api/v1/waypoints/v3.3-5/{t}"),
    ("DELETE", "/api/v1/assignments/{t}"),
    ("POST", "/api/v1/tokens"), ("DELETE", "/api/v1/tokens/{t}"), ("POST", "/api/v1/fleet/{t}/retry"),
    ("POST", "/api/v1/publish?tag={t}&product={t}"),
]  # fmt: skip
QUERY_ROUTES = ["/api/v1/fleet", "/api/v1/audit", "/api/v1/rollouts/v3.3-5/main/modules", "/console/fleet",
                "/console/audit"]  # fmt: skip
QUERY_KEYS = ["limit", "after", "product", "tag", "q", "since", "actor", "state", "page", "sort", "order"]
FORMS = ["/console/rollouts/start", "/console/targeting/pin", "/console/targeting/group-add",
         "/console/targeting/waypoint-add", "/console/promote", "/console/rollback",
         "/console/fleet/module/CAR1/retry"]  # fmt: skip


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes, bytes]:
    """(method, path, content type, body) of one generated request."""
    kind = draw(st.sampled_from(["json", "query", "form"]))
    if kind == "json":
        method, path = draw(st.sampled_from(JSON_ROUTES))
        path = path.replace("{t}", urllib.parse.quote(draw(TEXTS) or "x", safe=""))
        fields = draw(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=6))
        body = draw(st.one_of(st.just(json.dumps(fields)), st.just(json.dumps(draw(VALUES))), TEXTS)).encode()
        return method, path, b"application/json", body
    if kind == "query":
        query = draw(st.dictionaries(st.sampled_from(QUERY_KEYS), TEXTS, max_size=4))
        return "GET", draw(st.sampled_from(QUERY_ROUTES)) + "?" + urllib.parse.urlencode(query), b"", b""
    form = draw(st.dictionaries(st.sampled_from([*FIELDS, "channel", "ids", "vehicle"]), TEXTS, max_size=8))
    body = urllib.parse.urlencode({k: _text(v) for k, v in form.items()}).encode()
    return "POST", draw(st.sampled_from(FORMS)), b"application/x-www-form-urlencoded", body


def test_token_holders_cannot_make_a_5xx(tmp_path: Path, ovota: CliRunner) -> None:
    setup = make_setup(Store("folder", Backends(folder=tmp_path / "repo")), tmp_path, ovota)
    args = setup.repo.args
    setup.run("release", "publish", setup.builds[B], *args, "--tag", "edge")
    token = setup.run("token", "create", *args, "--name", "fuzz").out.strip()
    server = OvotaServer(setup.repo)
    try:
        assert ver(server, agent("CAR1")) == A
        form = b"Content-Type: application/x-www-form-urlencoded"
        _, headers, _ = get(server.port, "/console/login", form, method=b"POST", body=f"token={token}".encode())
        cookie = f"Cookie: {headers['set-cookie'].split(';')[0]}".encode()
        auth = f"Authorization: Bearer {token}".encode()
        origin = f"Origin: http://127.0.0.1:{server.port}".encode()
        statuses: list[int] = []

        @settings(max_examples=300, database=None, deadline=None, suppress_health_check=list(HealthCheck))
        @given(request=requests())
        def fuzz(request: tuple[str, str, bytes, bytes]) -> None:
            method, path, kind, body = request
            extra = [b"Content-Type: " + kind] if kind else []
            status, _, answer = get(server.port, path, auth, cookie, origin, *extra, method=method.encode(),
                                    body=body)  # fmt: skip
            statuses.append(status)
            assert 0 < status < 500, (method, path, body[:200], status, answer[:300])

        fuzz()
        assert {200, 303, 400, 404} <= set(statuses)  # it reached answers, refusals and the console's redirects
        assert ver(server, agent("CAR2")) in (A, B)
        assert "Traceback" not in server.log, server.log[-3000:]
    finally:
        server.stop()
