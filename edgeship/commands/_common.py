"""Helpers shared by the CLI commands: JSON output, size parsing, tables."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence

import click

from ..fileio import to_jsonable


def emit_json(obj: Any) -> None:
    """Print one JSON object on stdout (what ``--json`` promises)."""
    click.echo(json.dumps(to_jsonable(obj), sort_keys=False))


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain fixed-width text table."""
    rows = [[_cell(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def size_option(ctx: click.Context, param: click.Parameter, value: str | None):
    """click callback: parse HxW into (h, w)."""
    if value is None:
        return None
    from ..errors import SpecError
    from ..spec import parse_size

    try:
        return parse_size(value)
    except SpecError as e:
        raise click.BadParameter(str(e)) from None


def echo_err(msg: str) -> None:
    click.echo(msg, err=True)


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
