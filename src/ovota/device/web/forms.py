"""Untrusted input of the Firmware page, checked once at the edge: each field's rule and its one-line reason.

Every refusal is a :class:`FieldError` whose message names the field and echoes at most a short, quoted
prefix of what was sent. The console commands the page may run (``/api/execute``) are parsed here too and
rebuilt from the checked words, so the shell only ever sees a line this module wrote.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from aiohttp import web

MAX_FORM = 64 * 1024  # a form post (not an upload) is a few hundred bytes; anything near this is an attack
MAX_COMMAND = 800  # OVMS's console line limit
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})(?::(?P<port>\d{1,5}))?"
_SERVER = re.compile(rf"(?:https?://)?{_HOST}(?:/[A-Za-z0-9._~%/-]*)?")
# Path characters of a firmware URL: no space, quote, backslash or control character, so the console line
# stays one word in any tokenizer.
_URL = re.compile(rf"(?:https?://)?{_HOST}/[A-Za-z0-9._~%/?=&+,;:@!$()*-]*")
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VFS = re.compile(r"/[A-Za-z0-9._/-]+")
LIMITS = {"server": 200, "tag": 64, "auto_hour": 40, "flash_http": 512, "flash_vfs": 255}


class FieldError(Exception):
    """Input refused: ``str(err)`` is the one-line reason; ``status`` the HTTP status to answer with."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


def shown(value: str, limit: int = 40) -> str:
    """A value quoted for a message: one line, at most ``limit`` characters of it."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def read_form(request: web.Request) -> dict[str, str]:
    """The posted fields (URL-encoded or multipart), text only, each name once, the body at most MAX_FORM."""
    if request.content_length is None:
        # A chunked body would be read up to the app's 16 MiB upload limit; browsers send forms with a length.
        raise FieldError("Form data must be sent with a Content-Length.", 411)
    if request.content_length > MAX_FORM:
        raise FieldError(f"Form data of {request.content_length} bytes refused: at most {MAX_FORM}.", 413)
    if request.content_type not in FORM_TYPES:
        # request.post() reads any other body as no fields at all: a JSON body would save every setting empty.
        raise FieldError(
            f"Send form fields (application/x-www-form-urlencoded), not {shown(request.content_type)}.", 415
        )
    try:
        data = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise FieldError(f"Form data refused: at most {MAX_FORM} bytes.", 413) from None
    except Exception as err:  # a malformed body is the client's fault, whatever aiohttp raised for it
        raise FieldError(f"Malformed form data: {shown(str(err), 80)}.") from None
    fields: dict[str, str] = {}
    for name, value in data.items():
        if not isinstance(value, str):
            raise FieldError(f"Field {shown(name)} must be text, not a file.")
        if name in fields:
            raise FieldError(f"Field {shown(name)} was sent more than once.")
        fields[name] = value
    return fields


def _text(fields: Mapping[str, str], name: str, label: str) -> str:
    if name not in fields:
        # A browser always sends its text fields, empty or not: a script that leaves one out must not clear it.
        raise FieldError(f"Field {shown(name)} ({label}) is missing.")
    return _limited(fields[name], name, label).strip()


def _limited(value: str, name: str, label: str) -> str:
    """``value`` if it fits the field's length limit."""
    if len(value) > LIMITS[name]:
        raise FieldError(f"{label} is longer than {LIMITS[name]} characters ({len(value)} sent).")
    return value


def checkbox(fields: Mapping[str, str], name: str, label: str) -> bool:
    """A checkbox posts ``yes`` when ticked (OVMS compares with "yes"); absent, empty or ``no`` is off."""
    value = fields.get(name, "")
    if value not in ("", "yes", "no"):
        raise FieldError(f"{label} must be 'yes' or absent, not {shown(value)}.")
    return value == "yes"


def auto_hour(fields: Mapping[str, str]) -> str | None:
    """0 to 23, or empty for OVMS's default (2). OVMS stores any text unchecked; the emulator refuses it."""
    value = _text(fields, "auto_hour", "Auto update hour of day")
    if value == "":
        return None
    if not value.isascii() or not value.isdigit() or int(value) > 23:
        raise FieldError(f"Auto update hour of day must be a whole number from 0 to 23, not {shown(value)}.")
    return str(int(value))


def _port_ok(match: re.Match[str]) -> bool:
    port = match.group("port")
    return port is None or 0 < int(port) < 65536


def server(fields: Mapping[str, str]) -> str | None:
    """The update server, ``[http(s)://]host[:port][/path]``, one trailing ``/`` dropped; empty: the default."""
    value = _text(fields, "server", "Update server").removesuffix("/")
    if value == "":
        return None
    match = _SERVER.fullmatch(value)
    if match is None or not _port_ok(match):
        raise FieldError(f"Update server must look like [http://]host[:port]/path, not {shown(value)}.")
    return value


def tag(fields: Mapping[str, str]) -> str | None:
    value = _text(fields, "tag", "Version tag")
    if value == "":
        return None
    if not _TAG.fullmatch(value):
        raise FieldError(f"Version tag may hold only letters, digits, '.', '_' and '-', not {shown(value)}.")
    return value


def flash_url(value: str) -> str:
    """A firmware URL for ``ota flash http``; empty means the update server's (the command without argument)."""
    value = _limited(value.strip(), "flash_http", "HTTP URL")
    if value == "":
        return ""
    match = _URL.fullmatch(value)
    if match is None or not _port_ok(match):
        raise FieldError(f"HTTP URL must look like http://host[:port]/path/ovms3.bin, not {shown(value)}.")
    return value


def vfs_path(value: str) -> str:
    """A VFS path for ``ota flash vfs`` (the emulator's VFS is the SD card, /sd/…)."""
    value = _limited(value.strip(), "flash_vfs", "File path")
    if value == "":
        raise FieldError("File path is empty: enter the firmware file's path, e.g. /sd/ovms3.bin.")
    if not _VFS.fullmatch(value) or ".." in value.split("/"):
        raise FieldError(f"File path must be a path like /sd/ovms3.bin, not {shown(value)}.")
    return value


def partition(value: str, labels: Collection[str], label: str = "Boot from") -> str:
    if value not in labels:
        raise FieldError(f"{label} must be one of {', '.join(labels)}, not {shown(value)}.")
    return value


def settings(fields: Mapping[str, str]) -> dict[tuple[str, str], str | None]:
    """The config changes OVMS makes on Set (None deletes the instance: OVMS's default applies)."""
    return {
        ("auto", "ota"): "yes" if checkbox(fields, "auto_enable", "Enable auto update") else "no",
        ("ota", "auto.allow.modem"): "yes" if checkbox(fields, "auto_allow_modem", "…allow via modem") else "no",
        ("ota", "auto.hour"): auto_hour(fields),
        ("ota", "server"): server(fields),
        ("ota", "tag"): tag(fields),
    }


@dataclass(frozen=True)
class Setup:
    """The Setup tab's form as OVMS's HandleCfgFirmware reads it for action ``set``/``set-reboot``."""

    boot_old: str
    boot: str
    changes: dict[tuple[str, str], str | None]

    @classmethod
    def parse(cls, fields: Mapping[str, str], labels: Collection[str]) -> Setup:
        return cls(
            boot_old=partition(fields.get("boot_old", ""), labels, "The boot partition shown (boot_old)"),
            boot=partition(fields.get("boot", ""), labels),
            changes=settings(fields),
        )


ALLOWED = "ota status [nocheck], ota flash http [<url>], ota flash vfs <path>, ota boot <partition>, module reset"


def command(line: str, labels: Collection[str]) -> str:
    """The console line ``/api/execute`` may run, rebuilt from its checked words; FieldError for anything else."""
    if len(line) > MAX_COMMAND:
        raise FieldError(f"Command of {len(line)} characters refused: at most {MAX_COMMAND}.")
    words = line.split()
    if words[:3] == ["ota", "flash", "http"]:
        url = flash_url(" ".join(words[3:]))
        return f"ota flash http {url}".rstrip()
    if words[:3] == ["ota", "flash", "vfs"]:
        return f"ota flash vfs {vfs_path(' '.join(words[3:]))}"
    if words[:2] == ["ota", "boot"] and len(words) == 3:
        return f"ota boot {partition(words[2], labels, 'Partition')}"
    if words in (["ota"], ["ota", "status"], ["ota", "status", "nocheck"], ["module", "reset"]):
        return " ".join(words)
    raise FieldError(f"Command {shown(line)} is not run here; only: {ALLOWED}.", 403)
