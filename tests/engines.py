"""Real PostgreSQL (Debian's package) and SeaweedFS (``weed server -s3``) on free ports in temp dirs.

initdb refuses to run as root, so as root the cluster is made and run by the ``postgres`` user. SeaweedFS may
ignore SIGTERM: it is stopped with SIGKILL after a short grace.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.servers import free_port, wait_for_port

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
WEED = Path(sys.executable).with_name("weed")


def pg_bin() -> Path:
    found = sorted(glob.glob(PG_BIN_GLOB))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (Debian package postgresql; `make` installs it)")
    return Path(found[-1])


def free_port_pair(offset: int = 10000) -> int:
    """A free port whose ``port + offset`` is free too (SeaweedFS listens on its gRPC ports there)."""
    while True:
        port = free_port()
        if port + offset >= 65536:
            continue
        with socket.socket() as other:
            try:
                other.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
        return port


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PostgresServer:
    """A throw-away PostgreSQL cluster; ``url(db)`` for a database in it, ``new_database()`` for a fresh one."""

    def __init__(self, port: int | None = None) -> None:
        self.bin = pg_bin()
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ovota-pg-", dir="/tmp"))
        self.dir.chmod(0o755)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        subprocess.run(
            _as_postgres([str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "ovota",
                          "-E", "UTF8", "--no-sync"]),
            check=True, capture_output=True,
        )  # fmt: skip
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run(
            _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-o", options,
                          "-l", str(self.dir / "log"), "-w", "start"]),
            check=True, capture_output=True,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", mode, "-w", "stop"]),
            check=False, capture_output=True,
        )  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://ovota@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class SeaweedServer:
    """``weed server -s3``: master, volume, filer and S3 gateway in one process; anonymous S3 access."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ovota-weed-", dir="/tmp"))
        self.s3_port = free_port_pair()
        self.proc: subprocess.Popen[bytes] | None = None
        ports = [free_port_pair() for _ in range(3)]
        self.args = [
            str(WEED), "server", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports[0]}", f"-volume.port={ports[1]}", f"-filer.port={ports[2]}",
            "-s3", f"-s3.port={self.s3_port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64", "-volume.max=100",
        ]  # fmt: skip
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=(self.dir / "log").open("ab"), start_new_session=True
        )
        wait_for_port(self.s3_port, self.proc, "SeaweedFS S3 gateway", timeout=60)
        self._wait_ready()

    def _wait_ready(self) -> None:
        import boto3

        client = self.client(boto3)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def client(self, boto3: Any) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id="ovota", aws_secret_access_key="ovota",
            region_name="us-east-1",
        )  # fmt: skip

    def new_bucket(self) -> str:
        import boto3

        name = "t-" + uuid.uuid4().hex[:12]
        deadline = time.monotonic() + 30
        client = self.client(boto3)
        while True:
            try:
                client.create_bucket(Bucket=name)
                return name
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "ovota",
            "AWS_SECRET_ACCESS_KEY": "ovota",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # it may ignore SIGTERM
            self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def default_cluster_ports() -> Iterator[None]:
    """Hold SeaweedFS's ports of ``make cluster`` (19333, 18380, 18888, 18333) for this test process: its
    script and bench/cluster.sh use them (SeaweedFS would not grow volumes on some other ports we tried)."""
    with open("/tmp/ovota-make-cluster-ports.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
