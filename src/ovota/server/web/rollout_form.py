"""The console's start-rollout form: every setting as on the command line, read back with every error found
(each beside its field), and drawn again with what was typed when the start is refused."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from ovota.server.fleet.policy import PolicyError
from ovota.server.fleet.rollouts import RolloutSettings, parse_settings
from ovota.server.store.repository import Build
from ovota.server.web.text import build_options, selected

FIELDS = (  # (name, label, default): the settings as on the command line
    ("steps", "Steps (percent of the channel's modules)", "1,10,50,100"),
    ("step_interval", "Step interval (at least)", "1d"),
    ("halt_failed", "Halt at failed / (updated + failed)", "5%"),
    ("halt_silent", "Halt at silent / attempted", "20%"),
    ("min_sample", "Minimum attempts before halting", "20"),
    ("watch", "Silent after no check-in for", "2d"),
    ("grace", "Failed when still on the old version after", "10m"),
    ("voters_known_for", "Only modules known this long before the start vote", "0s"),
    ("notify_url", "Notify URL (JSON POST at each step, halt and completion)", ""),
    ("groups", "Only these groups (names, comma-separated; empty: the whole channel)", ""),
    ("vehicles", "Only vehicle ids matching (patterns such as TEST*, comma-separated)", ""),
    ("versions", "Only modules running (e.g. <3.3.006 or >=3.3.005,<3.3.007)", ""),
    ("windows", "Only in these windows (e.g. Mon-Fri 01:00-05:00; several separated by ;)", ""),
    ("timezone", "Windows' time zone (IANA)", "UTC"),
    ("rate", "At most this many modules newly offered per period (e.g. 100/h)", ""),
    ("rate_growth", "Multiply the rate by this after each period", "1"),
)
DEFAULTS = {name: default for name, _, default in FIELDS}
FORM = "form"  # the key of errors that belong to no one field (the channel, the build, the whole)


def _split(text: str, separator: str) -> list[str]:
    return [part.strip() for part in text.split(separator) if part.strip()]


def _parse(text: Mapping[str, str]) -> RolloutSettings:
    min_sample = text["min_sample"]
    if not (min_sample.isascii() and min_sample.isdigit() and len(min_sample) <= 9):
        raise PolicyError(f"invalid minimum sample {min_sample!r}: a whole number")
    try:
        growth = float(text["rate_growth"] or "1")
    except ValueError:
        raise PolicyError(f"invalid rate growth {text['rate_growth']!r}: a number such as 2") from None
    return parse_settings(
        text["steps"], text["step_interval"], text["halt_failed"], text["halt_silent"], int(min_sample), text["watch"],
        text["grace"], text["notify_url"], text["voters_known_for"], _split(text["groups"], ","),
        _split(text["vehicles"], ","), text["versions"], _split(text["windows"], ";"), text["timezone"] or "UTC",
        text["rate"], growth,
    )  # fmt: skip


def read_settings(form: Mapping[str, str]) -> tuple[dict[str, str], RolloutSettings | None, dict[str, str]]:
    """(what was typed, the settings, errors by field name). Each field is checked on its own (the others at
    their defaults), so every wrong field is named at once; what only a combination breaks is a ``FORM`` error.
    Settings are None when there is any error."""
    values = {name: form.get(name, default).strip() for name, _, default in FIELDS}
    errors = {}
    for name, _, _ in FIELDS:
        try:
            _parse({**DEFAULTS, name: values[name]})
        except (PolicyError, ValueError) as err:
            errors[name] = str(err)
    if errors:
        return values, None, errors
    try:
        return values, _parse(values), {}
    except (PolicyError, ValueError) as err:
        return values, None, {FORM: str(err)}


def _error(name: str, errors: Mapping[str, str]) -> tuple[str, str]:
    """(attributes for the field, the message beside it)."""
    if name not in errors:
        return "", ""
    return (f' aria-invalid="true" aria-describedby="{name}-error"',
            f'<p class="error field-error" id="{name}-error">{escape(errors[name])}</p>')  # fmt: skip


def start_form(channels: list[tuple[str, str, str]], builds: list[tuple[Build, frozenset[str]]],
               values: Mapping[str, str] | None = None, errors: Mapping[str, str] | None = None) -> str:  # fmt: skip
    """The form, blank or (after a refusal) with ``values`` and each of ``errors`` beside its field, open."""
    values, errors = values or {}, errors or {}
    chosen_channel, chosen_build = values.get("channel", ""), values.get("build", "")
    channel_options = "".join(
        f'<option value="{escape(p)}/{escape(t)}"{" selected" if f"{p}/{t}" == chosen_channel else ""}>'
        f"{escape(p)}/{escape(t)} (now {escape(v)})</option>"
        for p, t, v in channels
    )
    options = selected(build_options(builds), escape(chosen_build))
    fields = []
    for name, label, default in FIELDS:
        attributes, message = _error(name, errors)
        fields.append(f'<label for="{name}">{label}</label><input type="text" id="{name}" name="{name}" '
                      f'value="{escape(values.get(name, default))}"{attributes}>{message}')  # fmt: skip
    empty = " checked" if values.get("allow_empty") == "yes" else ""
    summary = ""
    if errors:
        count = len(set(errors) - {FORM})
        below = f": {count} {'problem' if count == 1 else 'problems'} below" if count else ""
        summary = f'<p class="error" role="alert">The rollout was not started{below}.</p>'
    _, overall = _error(FORM, errors)
    return f"""<section aria-labelledby="start-title"><details{" open" if errors else ""}>
<summary id="start-title">Start a rollout</summary>{summary}{overall}
<form method="post" action="/console/rollouts/start" class="start">
<label for="channel">Channel</label><select id="channel" name="channel">{channel_options}</select>
<label for="build">Build</label><select id="build" name="build">{options}</select>
{"".join(fields)}<label class="check"><input type="checkbox" name="allow_empty" value="yes"{empty}> Start even if the
target matches no module</label><button type="submit">Start the rollout</button></form></details></section>"""
