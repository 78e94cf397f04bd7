"""Real HTTP servers on 127.0.0.1 for the module tests: Python's http.server, and a raw socket server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.stores import Store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20) -> None:
    """Return once ``port`` accepts connections; fail if ``proc`` exits or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                stderr = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"{what} exited: {stderr}") from None
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not start")


def listening_socket() -> tuple[socket.socket, int]:
    """A socket listening on a free loopback port, and the port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock, int(sock.getsockname()[1])


class StaticServer:
    """``python -m http.server`` (HTTP/1.0, Content-Length, close after body) over a folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", str(root), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, "http.server")

    @property
    def base(self) -> str:
        """The `ota server` value OVMS users write: host:port/path, no scheme."""
        return f"127.0.0.1:{self.port}/firmware/ota"

    def publish(self, product: str, tag: str, image: bytes, ver: str) -> None:
        folder = self.root / "firmware" / "ota" / product / tag
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ovms3.bin").write_bytes(image)
        (folder / "ovms3.ver").write_text(ver)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Listener:
    """A TCP listener on 127.0.0.1 that hands each connection to :meth:`answer` (in a thread of its own when
    ``threaded``) until :meth:`stop`. Subclasses set their own attributes before calling ``__init__``: the
    accepting thread starts there."""

    threaded = False

    def __init__(self) -> None:
        self.sock, self.port = listening_socket()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.threaded:
                threading.Thread(target=self.answer, args=(conn,), daemon=True).start()
            else:
                self.answer(conn)

    def answer(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.sock.close()


class RawServer(Listener):
    """Answers every connection with fixed bytes and closes: for broken servers (bad lengths, truncation)."""

    def __init__(self, response: bytes, stall: bool = False) -> None:
        self.response = response
        self.stall = threading.Event() if stall else None  # keep the connection open after sending
        self.requests: list[bytes] = []
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(4096)
                if not data:
                    break
                request += data
            head, _, body = request.partition(b"\r\n\r\n")
            length = next((int(line[15:]) for line in head.split(b"\r\n")
                           if line[:15].lower() == b"content-length:"), 0)  # fmt: skip
            while len(body) < length and (data := conn.recv(4096)):
                body += data
                request += data
            self.requests.append(request)
            with contextlib.suppress(OSError):
                conn.sendall(self.response)
            if self.stall is not None:
                self.stall.wait(30)

    def stop(self) -> None:
        if self.stall is not None:
            self.stall.set()
        super().stop()


class GatedServer(Listener):
    """Serves files by path; a ``.bin`` stops after its first half until ``gate`` is set."""

    threaded = True

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.gate = threading.Event()
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request and (data := conn.recv(4096)):
                request += data
            body = self.files.get(request.split(b" ")[1].decode(), b"")
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            half = len(body) // 2 if request.split(b" ")[1].endswith(b".bin") else len(body)
            conn.sendall(body[:half])
            if half < len(body):
                self.gate.wait(30)
                conn.sendall(body[half:])

    def stop(self) -> None:
        self.gate.set()
        super().stop()


class OvotaServer:
    """``ovota server`` as a user starts it, on a free port."""

    def __init__(
        self,
        repo: Path | Store,
        workers: int = 1,
        extra: tuple[str, ...] = (),
        port: int | None = None,
        deltas: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        """``repo``: a folder, or a Store (folder or PostgreSQL + S3). ``deltas``: make delta patches in the
        background (off here unless a test is about them: they cost seconds of CPU per patch while the other
        tests run). ``env``: extra environment variables (e.g. a blob cache of its own)."""
        self.repo = repo
        where = repo.args if isinstance(repo, Store) else ("--repo", str(repo))
        extra = extra if deltas or "--delta-bases" in extra else (*extra, "--delta-bases", "0")
        self.port = port or free_port()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (open for the server's life, closed by stop())
        script = Path(sys.executable).with_name("ovota")
        self.proc = subprocess.Popen(
            [str(script), "server", *where, "--port", str(self.port), "--workers", str(workers), *extra],
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            # A file, not a pipe nobody reads: a server that logs a lot must never block on a full pipe.
            stderr=self._log,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, self.proc, "ovota server")
        except RuntimeError as err:
            raise RuntimeError(f"{err}: {self.log}") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}/firmware/ota"

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the server: SIGTERM lets it finish cleanly (flushing the fleet registry); SIGKILL is a crash."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=10)
        self._log.close()

    @property
    def log(self) -> str:
        """What the server wrote to stderr so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")


def raw_get(port: int, path: str, user_agent: str = "ovms/v3.3-5 (DEMO 3.3.005/ota_0/main)") -> tuple[bytes, bytes]:
    """OVMS's exact request: HTTP/1.0, Host and User-Agent only; read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: {user_agent}\r\n\r\n".encode())
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return head, body


class CuttingProxy(Listener):
    """A TCP proxy to ``port`` that breaks the first ``cuts`` responses to .bin requests after ``cut_after``
    bytes: a link that drops mid-download. Keeps every request it forwarded."""

    threaded = True

    def __init__(self, port: int, cut_after: int, cuts: int = 1, fresh_only: bool = False) -> None:
        """``fresh_only``: cut only requests without a Range header (resumed downloads get through)."""
        self.target = port
        self.fresh_only = fresh_only
        self.cut_after = cut_after
        self.cuts = cuts
        self.requests: list[bytes] = []
        super().__init__()

    def answer(self, client: socket.socket) -> None:
        # A client that vanished (a power cut in the emulator) or a stalled upstream just ends the relay.
        with contextlib.suppress(OSError):
            self._relay_once(client)

    def _relay_once(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.target), timeout=30) as upstream:
            request = b""
            while b"\r\n\r\n" not in request and (data := client.recv(65536)):
                request += data
            self.requests.append(request)
            upstream.sendall(request)
            limit = None
            fresh = b"\r\nRange:" not in request
            if b".bin " in request.split(b"\r\n", 1)[0] and self.cuts > 0 and (fresh or not self.fresh_only):
                self.cuts -= 1
                limit = self.cut_after
            sent = 0
            while data := upstream.recv(65536):
                if limit is not None and sent + len(data) > limit:
                    client.sendall(data[: limit - sent])
                    client.shutdown(socket.SHUT_RDWR)  # the link drops
                    return
                client.sendall(data)
                sent += len(data)

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}/firmware/ota"
