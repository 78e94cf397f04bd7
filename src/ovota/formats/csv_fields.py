"""Field syntax of ESP-IDF's partition table CSV (gen_esp32part.py): ``$VARIABLES`` and integers written in
any base, with k/K and m/M suffixes, or as keywords."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ovota.formats.errors import FormatError

_VARIABLE = re.compile(r"(?<!\\)\$(\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)")


def expand_variables(line: str, env: Mapping[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` replaced from ``env`` (``\\$`` stays); FormatError for an unknown name."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1).strip("{}")
        if name not in env:
            raise FormatError(f"unknown variable '{name}'")
        return env[name]

    return _VARIABLE.sub(substitute, line)


def parse_int(text: str, keywords: Mapping[str, int] | None = None) -> int:
    """int(text, 0) with k/K and m/M suffixes (applied repeatedly), else a keyword lookup."""
    try:
        lowered = text.lower()
        for suffix, factor in (("k", 1024), ("m", 1024 * 1024)):
            if lowered.endswith(suffix):
                return parse_int(text[:-1], keywords) * factor
        return int(text, 0)
    except ValueError:
        if not keywords:
            raise FormatError(f"Invalid field value {text}") from None
        try:
            return keywords[text.lower()]
        except KeyError:
            raise FormatError(f"Value '{text}' is not valid. Known keywords: {', '.join(keywords)}") from None
