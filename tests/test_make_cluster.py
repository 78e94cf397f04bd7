"""``make cluster``'s script, started three times on the same folder as an operator would (Ctrl-C, then again): it
comes up every time (ready means every part answered a real request), serves all three channels, prints every
variable the command line needs, and the console works through its nginx (sessions are shared by both servers
behind it). ``bench/cluster_starts.sh`` starts it many more times."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.engines import default_cluster_ports
from tests.hostile import get
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
NEEDED = ("OVOTA_DB", "OVOTA_BLOBS", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
          "AWS_DEFAULT_REGION")  # fmt: skip


def _tools_missing() -> list[str]:
    found = [shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin"), shutil.which("runuser")]
    pg = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return [name for name, ok in (("nginx", found[0]), ("runuser", found[1]), ("postgresql", pg)) if not ok]


class Cluster:
    def __init__(self, folder: Path, ports: dict[str, int]) -> None:
        env = {**os.environ, "CLUSTER": str(folder), "HOST": "127.0.0.1", "PORT": str(ports["PORT"]),
               **{k: str(v) for k, v in ports.items()}}  # fmt: skip
        env["SERVER_PORTS"] = f"{ports['SERVER_A']} {ports['SERVER_B']}"
        self.log = folder.parent / f"cluster-{time.monotonic_ns()}.log"
        self.out = self.log.open("w")
        self.proc = subprocess.Popen(["bash", "scripts/cluster.sh"], cwd=ROOT, env=env, stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 120
        while "Ctrl-C stops" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"make cluster did not come up:\n{self.log.read_text()}")
            time.sleep(0.5)

    def variables(self) -> dict[str, str]:
        text = self.log.read_text()
        return dict(re.findall(r"\b([A-Z_]+)=(\S+)", "\n".join(line for line in text.splitlines()
                                                               if line.strip().startswith("export "))))  # fmt: skip

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)  # what Ctrl-C sends
        self.proc.wait(60)
        self.out.close()


@pytest.mark.skipif(bool(_tools_missing()) and not os.environ.get("CI"), reason="nginx or PostgreSQL not installed")
def test_make_cluster_starts_every_time_and_the_console_works_through_nginx(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("PORT", "PG_PORT", "SERVER_A", "SERVER_B")}
    folder = tmp_path / "cluster"
    token = ""
    for _ in range(3):  # Ctrl-C, then again
        with default_cluster_ports():
            cluster = Cluster(folder, ports)
            try:
                token = _use(cluster, ports["PORT"], token)
            finally:
                cluster.stop()
    log = cluster.log.read_text()
    assert "did not come up" not in log and "Error" not in log, log


def _use(cluster: Cluster, port: int, token: str) -> str:
    """Check the banner, make a token the first time, log in through nginx; the token."""
    variables = cluster.variables()
    assert set(NEEDED) <= set(variables), cluster.log.read_text()
    if not token:
        command = [str(ROOT / ".venv/bin/ovota"), "token", "create", "--name", "operator"]
        made = subprocess.run(command, env={**os.environ, **variables}, capture_output=True, text=True, check=False)
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
    status, headers, _ = get(port, "/console/login", b"Content-Type: application/x-www-form-urlencoded",
                             method=b"POST", body=f"token={token}".encode())  # fmt: skip
    assert status == 303, headers
    cookie = f"Cookie: {headers['set-cookie'].split(';')[0]}".encode()
    for _ in range(6):  # nginx takes turns between the two servers: both know the session
        status, _, body = get(port, "/console", cookie)
        assert status == 200 and b"Logged in as operator" in body
    for tag, version in (
        ("main", b"3.3.006\n"),
        ("eap", b"3.3.006-52-g1b2c3d4\n"),
        ("edge", b"3.3.006-172-g362f87425\n"),
    ):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/firmware/ota/v3.3-5/{tag}/ovms3.ver") as answer:
            assert answer.read().startswith(version), tag
    return token
