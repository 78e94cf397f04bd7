"""https URLs get real, verified TLS (OVMS strips the scheme and fetches plain http on port 80)."""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from tests.conftest import CliRunner
from tests.module_helpers import image, new_module

NEW = "3.3.006"


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    root = tmp_path / "www"
    (root / "fw").mkdir(parents=True)
    (root / "fw" / "ovms3.bin").write_bytes(image(NEW, 8192))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    yield server.server_address[1], ca_file
    server.shutdown()
    server.server_close()


def test_https_is_verified(tmp_path: Path, https_server: tuple[int, Path], ovota: CliRunner) -> None:
    port, ca_file = https_server
    flash = new_module(tmp_path / "m.img")
    url = f"https://127.0.0.1:{port}/fw/ovms3.bin"
    untrusted = ovota("module", "run", flash, "--", f"ota flash http {url}")
    assert untrusted.code == 1
    assert "Error: Request failed" in untrusted.out.splitlines()
    assert "certificate verify failed" in untrusted.out
    trusted = ovota(
        "module", "run", flash, "--", f"ota flash http {url}", env={**os.environ, "SSL_CERT_FILE": str(ca_file)}
    )
    assert trusted.code == 0, trusted.out
    assert "OTA flash was successful" in trusted.out
