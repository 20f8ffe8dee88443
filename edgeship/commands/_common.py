"""Helpers shared by the CLI commands: JSON output, size parsing, tables."""

from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import click

from ..fileio import to_jsonable


def emit_json(obj: Any) -> None:
    """Print one JSON object on stdout (what ``--json`` promises)."""
    click.echo(json.dumps(to_jsonable(obj), sort_keys=False))


MAX_ROWS = 15  # a longer table shows its first rows and "... and N more"


def human_size(n: int | float | None) -> str:
    """Bytes as B / KiB / MiB / GiB with 3 significant figures (``56.1 KiB``)."""
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} GiB"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, max_rows: int | None = MAX_ROWS) -> str:
    """A plain fixed-width text table; past ``max_rows`` rows, the first ones and a line saying how many more."""
    rows = [[_cell(c) for c in r] for r in rows]
    hidden = 0
    if max_rows is not None and len(rows) > max_rows:
        hidden = len(rows) - (max_rows - 1)
        rows = rows[: max_rows - 1]
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    if hidden:
        out.append(f"... and {hidden} more (--json lists them all)")
    return "\n".join(out)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


class FiniteRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (which compare false with every bound)."""

    name = "float range"

    def _describe_range(self) -> str:
        if self.min is None and self.max is None:
            return "finite"
        return super()._describe_range()

    def convert(self, value, param, ctx):  # noqa: ANN001 - click's signature
        import math

        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


def max_drop_option(ctx: click.Context, param: click.Parameter, value: str | None):
    """click callback: a budget in points (``1.0``) or ``none`` (no budget)."""
    if value is None:
        return None
    if str(value).strip().lower() in ("none", "off", "no"):
        return None
    import math

    try:
        v = float(value)
    except ValueError:
        raise click.BadParameter(f"expected a number of points (e.g. 1.0) or 'none', got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise click.BadParameter(f"expected a non-negative number of points, got {value!r}")
    return v



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


def output_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback for an output file: its folder must exist, or be one new folder inside an
    existing one (a typo in a long path is refused instead of becoming a tree of folders)."""
    if value is None or value == "-":
        return value
    check_output_folder(value, max(param.opts, key=len) if param.opts else param.name)
    return value


def check_output_folder(path: str, flag: str) -> None:
    from pathlib import Path

    folder = Path(path).expanduser().absolute().parent
    if not folder.is_dir() and not folder.parent.is_dir():
        raise click.BadParameter(f"the folder {folder.parent} does not exist: create it first (edgeship makes at most the "
                                 f"last folder of an output path)", param_hint=flag)


def echo_err(msg: str) -> None:
    click.echo(msg, err=True)


