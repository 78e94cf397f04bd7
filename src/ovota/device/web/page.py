"""HTML of the module's Firmware page: server-rendered; static/firmware.js does the actions and the progress."""

from __future__ import annotations

from html import escape
from typing import Any

SERVERS = ("https://api.openvehicles.com/firmware/ota", "https://ovms.dexters-web.de/firmware/ota")
TAGS = ("main", "eap", "edge")


def _options(values: tuple[str, ...] | list[str]) -> str:
    return "".join(f'<option value="{escape(v)}"></option>' for v in values)


def render_firmware_page(
    status: dict[str, Any], config: dict[str, Any], boot_choices: list[str], default_server: str
) -> str:
    images = "".join(
        f'<dt>{escape(name)} image</dt><dd id="image-{escape(name)}">{escape(version) or "(empty)"}</dd>'
        for name, version in status["images"].items()
    )
    boot_options = "".join(
        f'<option value="{escape(p)}"{" selected" if p == status["boot"] else ""}>{escape(p)}</option>'
        for p in boot_choices
    )
    checked = {True: " checked", False: ""}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Firmware</title><link rel="stylesheet" href="/static/firmware.css">
<script src="/static/firmware.js"></script></head>
<body><main>
<h1>Firmware</h1>
<section aria-labelledby="status-title"><h2 id="status-title">Status</h2><dl>
<dt>Firmware</dt><dd id="firmware">{escape(status["firmware"])}</dd>
<dt>Partition type</dt><dd>{escape(status["partition_type"])}</dd>
<dt>Running partition</dt><dd id="running">{escape(status["running"])}</dd>
<dt>Boot partition</dt><dd id="boot">{escape(status["boot"])}</dd>
{images}
<dt>Server available</dt><dd id="server-version">checking…</dd>
</dl><pre id="changelog" aria-label="Changelog"></pre></section>

<section aria-labelledby="setup-title"><h2 id="setup-title">Automatic updates and server</h2>
<form id="settings" novalidate>
<div class="row"><input type="checkbox" id="auto_enable" name="auto_enable" value="yes"{checked[config["auto"]]}>
<label for="auto_enable">Enable auto update</label></div>
<label for="auto_hour">Auto update hour (0 to 23, module time)</label>
<input type="number" id="auto_hour" name="auto_hour" value="{config["hour"]}" min="0" max="23">
<div class="row">
<input type="checkbox" id="auto_allow_modem" name="auto_allow_modem" value="yes"{checked[config["modem"]]}>
<label for="auto_allow_modem">Allow auto update via modem</label></div>
<label for="server">Update server</label>
<input type="text" id="server" name="server" list="servers" value="{escape(config["server"])}"
 placeholder="{escape(default_server)}"><datalist id="servers">{_options(SERVERS)}</datalist>
<label for="tag">Version tag</label>
<input type="text" id="tag" name="tag" list="tags" value="{escape(config["tag"])}" placeholder="main">
<datalist id="tags">{_options(TAGS)}</datalist>
<button type="submit">Save</button> <span id="settings-message" role="status"></span>
</form></section>

<section aria-labelledby="flash-title"><h2 id="flash-title">Update</h2>
<button type="button" id="update-now">Update now</button> <span id="flash-message" role="status"></span>
<form id="flash-url" novalidate><input type="hidden" name="mode" value="url">
<label for="url">Flash from URL</label>
<input type="text" inputmode="url" id="url" name="url" value="{escape(config["http_mru"])}" placeholder="http://server/firmware/ota/v3.3-5/main/ovms3.bin">
<button type="submit" class="secondary">Flash from URL</button> <span id="url-message" role="status"></span></form>
<form id="flash-file"><label for="file">Firmware file to flash</label>
<input type="file" id="file" name="file" accept=".bin,application/octet-stream">
<button type="submit" class="secondary">Flash from file</button> <span id="file-message" role="status"></span></form>
<div id="job" hidden><h3 id="job-title"></h3>
<progress id="progress" max="100" value="0" aria-labelledby="job-title"></progress> <span id="percent">0%</span>
<p id="job-result" role="status"></p><pre id="job-log" aria-label="Flash log"></pre></div>
</section>

<section aria-labelledby="boot-title"><h2 id="boot-title">Boot</h2>
<form id="boot-form"><label for="partition">Boot partition</label>
<select id="partition" name="partition">{boot_options}</select>
<button type="submit" class="secondary">Set boot partition</button></form>
<button type="button" id="reboot">Reboot</button> <span id="boot-message" role="status"></span>
</section>
</main></body></html>
"""
