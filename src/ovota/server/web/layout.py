"""The frame every server page shares: title, navigation, stylesheet."""

from __future__ import annotations

from html import escape


def page(title: str, body: str, nav: str = "", script: str = "") -> str:
    script_tag = f'<script src="{escape(script)}" defer></script>' if script else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><link rel="stylesheet" href="/static/site.css">{script_tag}</head>
<body><header><a class="brand" href="/firmware/ota/">ovota</a>
<nav aria-label="Site"><a href="/firmware/ota/">Download area</a> <a href="/console">Release console</a></nav></header>
<main>{nav}<h1>{escape(title)}</h1>{body}</main></body></html>
"""
