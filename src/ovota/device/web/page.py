"""HTML of the module's Firmware page as OVMS 3.3.006 renders it (``HandleCfgFirmware``): server-rendered,
every value escaped; static/firmware.js adds the tabs, the dialogs and the streamed command output."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

SERVERS = ("https://api.openvehicles.com/firmware/ota", "https://ovms.dexters-web.de/firmware/ota")
TAGS = ("main", "eap", "edge")
PICK = "Specify or select from list (clear to see all options)"
IMAGE_NAMES = {"factory": "Factory image", "ota_0": "OTA_0 image", "ota_1": "OTA_1 image"}


@dataclass(frozen=True)
class PageInfo:
    """What OVMS's GetStatus and config give the page."""

    firmware: str
    running: str
    boot: str
    images: dict[str, str]  # partition label -> image version ("" for none)
    hardware: str
    server_version: str  # "" when the server did not answer (or no network), as on OVMS
    changelog: str
    http_mru: str
    vfs_mru: str
    sd_files: list[str] = field(default_factory=list)
    modem_only: bool = False


@dataclass(frozen=True)
class FormValues:
    """The Setup form's values: the config, or after a refused post what was posted."""

    auto_enable: bool
    auto_hour: str
    auto_allow_modem: bool
    server: str
    tag: str


@dataclass(frozen=True)
class Alert:
    """OVMS's result alert: ``OK!`` or ``Error!`` and what the command printed."""

    ok: bool
    lines: list[str] = field(default_factory=list)
    output: str = ""  # console output, shown as <samp>

    def html(self) -> str:
        kind, lead = ("success", "OK!") if self.ok else ("danger", "Error!")
        body = "".join(f"<p>{escape(line)}</p>" for line in self.lines)
        if self.output:
            body = f"<p><samp>{escape(self.output)}</samp></p>" + body
        return f'<div class="alert alert-{kind}" role="alert"><p class="lead">{lead}</p>{body}</div>'


def _info(label: str, value_html: str, ident: str = "", tall: bool = False) -> str:
    """A label and a value (OVMS's input_info); ``tall``: the value has buttons, the label drops to its text."""
    attr = f' id="{ident}"' if ident else ""
    return (
        f'<div class="form-group"><span class="control-label{" tall" if tall else ""}">{label}:</span>'
        f'<div class="form-control-static"{attr}>{value_html}</div></div>'
    )


def _input(kind: str, label: str, name: str, value: str, placeholder: str, help_html: str = "", extra: str = "") -> str:
    hint = f'<div class="help-block" id="help-{name}">{help_html}</div>' if help_html else ""
    described = f' aria-describedby="help-{name}"' if help_html else ""
    return (
        f'<div class="form-group"><label class="control-label" for="input-{name}">{label}:</label>'
        f'<div class="control"><input type="{kind}" class="form-control" name="{name}" id="input-{name}"'
        f' value="{escape(value)}" placeholder="{escape(placeholder)}"{described}{extra}>{hint}</div></div>'
    )


def _checkbox(label: str, name: str, checked: bool, help_html: str) -> str:
    tick = " checked" if checked else ""
    return (
        f'<div class="form-group"><div class="control offset"><div class="checkbox">'
        f'<input type="checkbox" name="{name}" id="input-{name}" value="yes"{tick} aria-describedby="help-{name}">'
        f'<label for="input-{name}">{label}</label></div>'
        f'<div class="help-block" id="help-{name}">{help_html}</div></div></div>'
    )


def _datalist(ident: str, values: list[str] | tuple[str, ...]) -> str:
    return f'<datalist id="{ident}">' + "".join(f'<option value="{escape(v)}">' for v in values) + "</datalist>"


def _status(info: PageInfo) -> str:
    available = (
        f'<span id="ota-server-version">{escape(info.server_version)}</span> '
        '<button type="button" class="btn btn-default" id="ota-versioninfo-btn" data-dialog="version-dialog">'
        "Version info</button> "
        '<button type="button" class="btn btn-default action-update-now">Update now</button>'
    )
    return _info("Firmware version", escape(info.firmware), "firmware") + _info("…available", available, tall=True)


def _setup(info: PageInfo, form: FormValues) -> str:
    options = "".join(
        f'<option value="{escape(label)}"{" selected" if label == info.boot else ""}>'
        f"{escape(IMAGE_NAMES.get(label, label))}{f' ({escape(version)})' if version else ''}</option>"
        for label, version in info.images.items()
    )
    tag_help = (
        "<p>Default is <code>main</code> for standard user releases. Use <code>eap</code> (early access program) "
        "for stable (beta test) developer builds, or <code>edge</code> for bleeding edge developer builds.</p>"
        '<div class="alert alert-warning"><b class="text-danger">⚠</b> <b>Developer builds are meant for development '
        "and testing, not for regular daily use!</b> Developer versions may contain potentially harmful bugs and "
        "experiments. When running a developer version, it&rsquo;s required you closely follow discussions on the "
        "newly developed features, help in testing them by providing feedback, and <b>closely watch your device and "
        "vehicle for any unusual behaviour.</b></div>"
    )
    return (
        '<form method="post" action="/cfg/firmware" id="setup-form" class="form-horizontal">'
        + _info("Running partition", escape(info.running), "running")
        + f'<input type="hidden" name="boot_old" value="{escape(info.boot)}">'
        '<div class="form-group"><label class="control-label" for="input-boot">Boot from:</label>'
        f'<div class="control"><select class="form-control" name="boot" id="input-boot">{options}</select></div></div>'
        "<hr>"
        + _checkbox(
            "Enable auto update",
            "auto_enable",
            form.auto_enable,
            "<p>Strongly recommended: if enabled, the module will perform automatic firmware updates within the hour "
            "of day specified.</p>",
        )
        + _input(
            "number",
            "Auto update hour of day",
            "auto_hour",
            form.auto_hour,
            "0-23, default: 2",
            extra=' min="0" max="23" step="1" inputmode="numeric"',
        )
        + _checkbox(
            "…allow via modem",
            "auto_allow_modem",
            form.auto_allow_modem,
            "<p>Automatic updates are normally only done if a wifi connection is available at the time. Before "
            "allowing updates via modem, be aware a single firmware image has a size of around 3 MB, which may lead "
            "to additional costs on your data plan.</p>",
        )
        + _datalist("server-list", SERVERS)
        + _datalist("tag-list", TAGS)
        + _input(
            "text",
            "Update server",
            "server",
            form.server,
            PICK,
            "<p>Default is <code>https://api.openvehicles.com/firmware/ota</code>.</p>",
            ' list="server-list"',
        )
        + _input("text", "Version tag", "tag", form.tag, PICK, tag_help, ' list="tag-list"')
        + _info("Hardware version", escape(info.hardware), "hardware")
        + '<hr><div class="form-group"><div class="control offset buttons">'
        '<button type="submit" class="btn btn-default" name="action" value="set">Set</button> '
        '<button type="submit" class="btn btn-default" name="action" value="set-reboot">Set &amp; reboot</button> '
        '<button type="submit" class="btn btn-default" name="action" value="reboot">Reboot</button>'
        "</div></div></form>"
    )


def _flash_http(info: PageInfo) -> str:
    warning = ""
    if info.modem_only:
        warning = (
            '<div class="alert alert-warning"><p class="lead"><strong>Using cellular modem connection for internet.'
            "</strong></p><p>Downloads from public servers will currently be done via cellular network. Be aware "
            "update files are &gt;2 MB, which may exceed your data plan and need some time depending on your link "
            "speed.</p><p>You can also flash locally from a wifi network IP address.</p></div>"
        )
    return (
        warning
        + '<form method="post" action="/cfg/firmware" class="form-horizontal section-flash" id="flash-http-form">'
        + _input(
            "text",
            "HTTP URL",
            "flash_http",
            info.http_mru,
            "optional: URL of firmware file",
            "<p>Leave empty to download the latest firmware from the update server. "
            "Note: currently only http is supported.</p>",
            ' list="urls" inputmode="url" autocomplete="off"',
        )
        + _datalist("urls", [info.http_mru] if info.http_mru else [])
        + '<div class="form-group"><div class="control offset">'
        '<button type="submit" class="btn btn-default" name="action" value="flash-http">Flash now</button>'
        "</div></div></form>"
    )


def _flash_vfs(info: PageInfo) -> str:
    steps = (
        '<ol class="steps"><li>Place the file <code>ovms3.bin</code> in the SD root directory.</li>'
        "<li>Insert the SD card, wait until the module reboots.</li>"
        "<li>Note: after processing the file will be renamed to <code>ovms3.done</code>.</li></ol>"
    )
    upload = (
        '<div class="form-group"><label class="control-label" for="input-upload">Upload:</label>'
        '<div class="control"><input type="file" class="form-control" id="input-upload" accept=".bin"'
        ' aria-describedby="help-upload"> <button type="button" class="btn btn-default action-upload">'
        'Upload &amp; flash</button> <span id="upload-message" class="text-danger" role="status"></span>'
        '<div class="help-block" id="help-upload"><p>Emulator addition: OVMS 3.3.006 says "Not yet implemented. '
        'Please copy your update file to an SD card and enter the path below." The file is checked to be a valid '
        "firmware image before anything is erased.</p></div></div></div>"
    )
    files = ([info.vfs_mru] if info.vfs_mru else []) + [f for f in info.sd_files if f != info.vfs_mru]
    return (
        '<form method="post" action="/cfg/firmware" class="form-horizontal section-flash" id="flash-vfs-form">'
        + _info("Auto flash", steps)
        + upload
        + _input(
            "text",
            "File path",
            "flash_vfs",
            info.vfs_mru,
            "Path to firmware file",
            "<p>SD card root: <code>/sd/</code></p>",
            ' list="files" autocomplete="off"',
        )
        + _datalist("files", files)
        + '<div class="form-group"><div class="control offset">'
        '<button type="submit" class="btn btn-default" name="action" value="flash-vfs">Flash now</button>'
        "</div></div></form>"
    )


def _footer(has_factory: bool) -> str:
    if has_factory:
        return (
            "<p>The module can store up to three firmware images in a factory and two OTA partitions.</p>"
            "<p>Flashing from web or file writes alternating to the OTA partitions, the factory partition remains "
            "unchanged.</p><p>You can flash the factory partition via USB, see developer manual for details.</p>"
        )
    return (
        "<p>The module can store up to two firmware images in a the two OTA partitions.</p>"
        "<p>Flashing from web or file writes alternating to the OTA partitions.</p>"
    )


def _dialogs(info: PageInfo) -> str:
    return (
        '<dialog id="version-dialog" aria-labelledby="version-title"><div class="modal-header">'
        f'<h2 id="version-title">Version info {escape(info.server_version)}</h2></div>'
        f'<div class="modal-body"><pre id="ota-changelog">{escape(info.changelog)}</pre></div>'
        '<div class="modal-footer"><button type="button" class="btn btn-default action-dismiss">Close</button></div>'
        "</dialog>"
        '<dialog id="flash-dialog" aria-labelledby="flash-title"><div class="modal-header">'
        '<h2 id="flash-title">Flashing…</h2></div>'
        '<div class="modal-body"><pre id="output" aria-live="polite" tabindex="0"></pre></div>'
        '<div class="modal-footer"><button type="button" class="btn btn-default action-reboot">Reboot now</button> '
        '<button type="button" class="btn btn-default action-close">Close</button></div></dialog>'
        '<form method="post" action="/cfg/firmware" id="reboot-form" hidden>'
        '<input type="hidden" name="action" value="reboot"></form>'
    )


def _document(body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>Firmware</title>'
        '<link rel="stylesheet" href="/static/firmware.css">'
        "<script>document.documentElement.classList.add('js')</script>"
        '<script src="/static/firmware.js" defer></script></head><body>'
        '<header class="navbar"><span class="brand">OVMS</span>'
        '<span class="crumb">Config &rsaquo; Firmware</span></header>'
        f'<main id="main">{body}</main></body></html>\n'
    )


def render_firmware_page(info: PageInfo, form: FormValues, alert: Alert | None = None) -> str:
    has_factory = "factory" in info.images
    tabs = (
        '<div class="nav-tabs" role="tablist">'
        '<a role="tab" href="#tab-setup" id="tab-link-setup" aria-controls="tab-setup" class="active">Setup</a>'
        '<a role="tab" href="#tab-flash-http" id="tab-link-flash-http" aria-controls="tab-flash-http">'
        "Flash from web</a>"
        '<a role="tab" href="#tab-flash-vfs" id="tab-link-flash-vfs" aria-controls="tab-flash-vfs">Flash from file</a>'
        "</div>"
    )
    panes = (
        '<div class="tab-content">'
        f'<section id="tab-setup" role="tabpanel" aria-labelledby="tab-link-setup" class="tab-pane active">'
        f"{_setup(info, form)}</section>"
        '<section id="tab-flash-http" role="tabpanel" aria-labelledby="tab-link-flash-http" class="tab-pane">'
        f"{_flash_http(info)}</section>"
        '<section id="tab-flash-vfs" role="tabpanel" aria-labelledby="tab-link-flash-vfs" class="tab-pane">'
        f"{_flash_vfs(info)}</section></div>"
    )
    panel = (
        '<div class="panel panel-primary"><div class="panel-heading"><h1>Firmware setup &amp; update</h1></div>'
        f'<div class="panel-body"><div class="form-horizontal status">{_status(info)}</div>{tabs}{panes}</div>'
        f'<div class="panel-footer">{_footer(has_factory)}</div></div>'
    )
    return _document((alert.html() if alert else "") + panel + _dialogs(info))


def render_reboot(alert: Alert) -> str:
    """OVMS's OutputReboot after Set & reboot / Reboot: the page posts ``module reset``, then reloads."""
    rebooting = (
        '<div class="alert alert-warning" id="rebooting" role="status"><p class="lead">Rebooting now.</p>'
        '<p>Please wait a moment until the window reloads.</p><p id="dots">•</p></div>'
    )
    return _document(alert.html() + rebooting)
