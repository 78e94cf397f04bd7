"""What the hostile-client tests send: raw bytes on a socket (no client library cleans them up first), and
what they watch on the server (its memory, its log)."""

from __future__ import annotations

import socket
from pathlib import Path

Answer = tuple[int, dict[str, str], bytes]  # status, headers (lower-case names), body


def raw_request(port: int, request: bytes, timeout: float = 10) -> Answer:
    """Send ``request`` as it is and read the answer: until the server closes, or, on a connection it keeps
    open, until the body its Content-Length announces is in (or ``timeout`` passes with the head read).
    (status, headers, body); status 0 if the server closed without an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
                head, found, body = data.partition(b"\r\n\r\n")
                length = _content_length(head) if found else None
                if length is not None and len(body) >= length:
                    break
        except ConnectionResetError:
            pass
        except TimeoutError:
            if b"\r\n\r\n" not in data:
                raise
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        return 0, {}, b""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value)
    return None


def get(port: int, path: str, *headers: bytes, method: bytes = b"GET", body: bytes = b"") -> Answer:
    """An HTTP/1.0 request (the server closes after answering) with the given raw header lines, and a Host
    header unless they have one."""
    host = [] if any(h.lower().startswith(b"host:") for h in headers) else [f"Host: 127.0.0.1:{port}".encode()]
    lines = [method + b" " + path.encode() + b" HTTP/1.0", *host, *headers]
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return raw_request(port, b"\r\n".join(lines) + b"\r\n\r\n" + body)


def rss_kib(pid: int) -> int:
    """The resident memory of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")
