"""The module's HTTP client is OVMS 3.3.006's ``OvmsHttpClient``: the exact request bytes, plain HTTP even for
``https://``, and one attempt per request. Real servers on 127.0.0.1, no mocks."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
import trustme

from ovota.device import fetch
from ovota.device.fetch import Target
from ovota.device.module import Module
from tests.loops import run_async
from tests.module_helpers import image, new_module, run_commands, snapshot
from tests.servers import Listener, RawServer

UA = "ovms/v3.3-5 (DEMO 3.3.005/ota_0/main)"
BODY = image("3.3.006", 8192)
ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with fetch.get(url, UA, 5, headers) as resp:
        return resp.status, await resp.body()


def _failure(url: str) -> str:
    """The RequestFailed text of one GET of ``url``."""
    with pytest.raises(fetch.RequestFailed) as failed:
        run_async(_get(url))
    return str(failed.value)


@pytest.mark.parametrize("scheme", ["", "http://", "https://"])
def test_the_request_is_exactly_ovms(scheme: str) -> None:
    server = RawServer(ANSWER)
    try:
        status, body = run_async(_get(f"{scheme}127.0.0.1:{server.port}/firmware/ota/v3.3-5/main/ovms3.bin"))
        assert (status, body) == (200, BODY)
        # No Accept, no Connection, no port in Host, no TLS: "https://" is stripped and changes nothing.
        assert server.requests == [
            b"GET /firmware/ota/v3.3-5/main/ovms3.bin HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: " + UA.encode()
            + b"\r\n\r\n"
        ]  # fmt: skip
    finally:
        server.stop()


def test_the_emulators_own_headers_come_after_the_user_agent() -> None:
    server = RawServer(ANSWER)
    try:
        extra = {"Range": "bytes=4096-", "If-Range": '"abc"'}
        run_async(_get(f"https://127.0.0.1:{server.port}/x.bin", extra))
        assert server.requests == [
            b'GET /x.bin HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: %s\r\nRange: bytes=4096-\r\nIf-Range: "abc"\r\n\r\n'
            % UA.encode()
        ]
    finally:
        server.stop()


def test_the_module_sends_the_same_bytes_from_its_console(tmp_path: Path) -> None:
    server = RawServer(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\n3.3.006\nNew\n")
    try:
        flash = new_module(tmp_path / "m.img", version="3.3.005")
        base = f"https://127.0.0.1:{server.port}/firmware/ota"
        out = run_commands(flash, f"config set ota server {base}", "ota status").output
        assert "Server Available:  3.3.006 (is newer)" in out, out
        module = Module.open(flash)
        try:
            agent = module.user_agent.encode()
        finally:
            module.close()
        assert server.requests == [
            b"GET /firmware/ota/v3.3-5/main/ovms3.ver HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: %s\r\n\r\n" % agent
        ]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("https://api.openvehicles.com/firmware/ota/v3.3-5/main/ovms3.bin",
         Target("api.openvehicles.com", 80, "/firmware/ota/v3.3-5/main/ovms3.bin")),
        ("https://example.org:8443/a?b=c", Target("example.org", 8443, "/a?b=c")),
        ("http://Example.org/a", Target("Example.org", 80, "/a")),
        ("example.org:8080", Target("example.org", 8080, "")),
    ],
)  # fmt: skip
def test_urls_split_as_ovms_splits_them(url: str, target: Target) -> None:
    assert Target.parse(url) == target


@pytest.mark.parametrize("url", ["HTTPS://example.org/a", "example.org:http/a", "example.org:0/a", ":80/a", ""])
def test_urls_ovms_could_not_connect_to_are_invalid(url: str) -> None:
    # The prefix is stripped case-sensitively: "HTTPS:" is left as a server with an empty port.
    with pytest.raises(ValueError):
        Target.parse(url)
    assert _failure(url) == f"invalid URL {url}"


class TlsOnlyServer(Listener):
    """A server that only speaks TLS: it records why each handshake failed, then closes the connection."""

    def __init__(self, tmp_path: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        trustme.CA().issue_cert("127.0.0.1").configure_cert(self.context)
        self.handshakes: list[str] = []  # "ok", or the reason OpenSSL gave for the failure
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        try:
            with self.context.wrap_socket(conn, server_side=True):
                self.handshakes.append("ok")
        except ssl.SSLError as err:
            self.handshakes.append(str(err.reason))
        finally:
            conn.close()


def test_a_tls_only_server_gets_plain_http_and_the_module_says_what_happened(tmp_path: Path) -> None:
    server = TlsOnlyServer(tmp_path)
    try:
        flash = new_module(tmp_path / "m.img")
        before = snapshot(flash)
        out = run_commands(flash, f"ota flash http https://127.0.0.1:{server.port}/fw/ovms3.bin").output
        # OpenSSL read a plain HTTP request where a ClientHello should be (SSL_R_HTTP_REQUEST), and dropped it
        # with the rest of the request unread: the kernel resets the connection.
        assert server.handshakes == ["HTTP_REQUEST"]
        assert "Error: Request failed\n" in out, out
        assert f"OTA Flash HTTP: no answer from 127.0.0.1:{server.port}: connection reset by peer\n" in out, out
        assert snapshot(flash) == before
    finally:
        server.stop()


class ClosingListener(Listener):
    """Accepts connections and closes each at once, counting them."""

    def __init__(self) -> None:
        self.accepted = 0
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        self.accepted += 1  # counted before the close the client sees, so it is final when get() fails
        conn.close()


def test_a_request_is_tried_once() -> None:
    listener = ClosingListener()
    try:
        failure = _failure(f"https://127.0.0.1:{listener.port}/fw/ovms3.bin")
        # The request may be reset (it arrived before the close) or see the close: either way, one connection.
        assert failure.startswith(f"no answer from 127.0.0.1:{listener.port}: "), failure
        assert listener.accepted == 1
    finally:
        listener.stop()


def test_a_refused_connection_is_reported_after_one_try() -> None:
    with socket.socket() as closed:  # bound, never listening: connections to it are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        assert _failure(f"https://127.0.0.1:{port}/x.bin") == f"cannot connect to 127.0.0.1:{port}: connection refused"


def test_auto_update_tries_again_at_its_next_tick_not_at_once(tmp_path: Path) -> None:
    listener = ClosingListener()
    try:
        flash = new_module(tmp_path / "m.img")
        out = run_commands(flash, f"config set ota server 127.0.0.1:{listener.port}/firmware/ota", "time advance 24h")
        ticks = out.output.count("AutoFlash: Server version could not be determined")
        assert ticks >= 2, out.output  # every ticker.600 of the update hour tries again
        assert listener.accepted == ticks
    finally:
        listener.stop()
