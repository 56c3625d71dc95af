"""The console's HTML: escaping, the page layout, tables and forms.

Pages are written on the server as small strings, every value escaped
here (``esc``); the browser gets htmx for the parts that refresh and
uPlot for charts, both served from ``static/`` (no CDN, no build step).
No inline script: the Content-Security-Policy allows only the console's
own files.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from pipelines.console.sections import Action, Field, Listing

PREFIX = "/console"

#: The navigation: (path, label); plugins' sections are added after these.
NAVIGATION = (
    ("/", "Rules"),
    ("/alarms", "Alarms"),
    ("/archives", "Archives"),
    ("/patterns", "Pattern tester"),
    ("/tap", "Live tap"),
)


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def url(path: str, **params: Any) -> str:
    """A console URL, with its query (values None are left out), escaped for an attribute."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return esc(f"{PREFIX}{path}" + (f"?{query}" if query else ""))


def when(seconds: float | None) -> str:
    """A time in UTC to the second, as the console shows times."""
    if seconds is None:
        return ""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}f}"


def page(title: str, body: str, sections: Sequence[tuple[str, str]] = (), current: str = "") -> str:
    """A whole page: head, navigation (the engine's pages, then ``sections``:
    (name, title) of the plugins'), ``body``."""
    links = [(path, label) for path, label in NAVIGATION]
    links += [(f"/s/{name}", label) for name, label in sections]
    nav = "".join(
        f'<a href="{url(path)}"{" class=current" if path == current else ""}>{esc(label)}</a>'
        for path, label in links
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(title)} · pipelines</title>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f'<link rel=stylesheet href="{PREFIX}/static/uPlot.min.css">'
        f'<link rel=stylesheet href="{PREFIX}/static/console.css">'
        f'<script src="{PREFIX}/static/htmx.min.js" defer></script>'
        f'<script src="{PREFIX}/static/uPlot.iife.min.js" defer></script>'
        f'<script src="{PREFIX}/static/console.js" defer></script>'
        f'</head><body><header><a class=brand href="{url("/")}">pipelines</a>'
        f"<nav>{nav}</nav></header><main><h1>{esc(title)}</h1>{body}</main></body></html>"
    )


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    empty: str = "nothing yet",
    classes: str = "",
) -> str:
    """A table of cells already escaped (or HTML made here)."""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    head = "".join(f"<th>{esc(column)}</th>" for column in columns)
    if not body:
        body = f'<tr><td colspan="{len(columns)}" class=empty>{esc(empty)}</td></tr>'
    return (
        f'<table class="{esc(classes)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def listing(found: Listing, link: str | None = None) -> str:
    """A section's ``Listing``; rows with a key link to ``link`` + ``?key=``."""
    keys = list(found.keys) + [None] * (len(found.rows) - len(found.keys))
    rows = []
    for row, key in zip(found.rows, keys, strict=True):
        cells = [cell(row.get(column)) for column in found.columns]
        if key is not None and link is not None and cells:
            cells[0] = f'<a href="{esc(link)}?{esc(urlencode({"key": key}))}">{cells[0]}</a>'
        rows.append(cells)
    return table(found.columns, rows, empty=found.empty)


def cell(value: Any) -> str:
    if isinstance(value, float):
        return esc(number(value, 3))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping | list):
        import orjson

        return f"<code>{esc(orjson.dumps(value).decode())}</code>"
    text = "" if value is None else str(value)
    if len(text) > 300:
        return f'<span title="{esc(text)}">{esc(text[:300])}…</span>'
    return esc(text)


def facts(items: Mapping[str, Any]) -> str:
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{cell(v)}</dd>" for k, v in items.items())
    return f"<dl class=facts>{rows}</dl>"


def field_input(item: Field) -> str:
    if item.choices:
        options = "".join(
            f"<option{' selected' if choice == item.value else ''}>{esc(choice)}</option>"
            for choice in item.choices
        )
        control = f'<select name="{esc(item.name)}">{options}</select>'
    else:
        control = f'<input name="{esc(item.name)}" value="{esc(item.value)}">'
    return f"<label>{esc(item.label)} {control}</label>"


def action_form(post_to: str, key: str, action: Action) -> str:
    fields = "".join(field_input(item) for item in action.fields)
    confirm = f' data-confirm="{esc(action.confirm)}"' if action.confirm else ""
    return (
        f'<form method=post action="{esc(post_to)}" class=action{confirm}>'
        f'<input type=hidden name=key value="{esc(key)}">'
        f'<input type=hidden name=action value="{esc(action.name)}">'
        f'{fields}<button type=submit name=run value="{esc(action.name)}">'
        f"{esc(action.label)}</button></form>"
    )


def notice(text: str | None, kind: str = "done") -> str:
    return f'<p class="notice {esc(kind)}">{esc(text)}</p>' if text else ""
