"""Progress bars for long steps, on a terminal only: off one (a log file, a pipe, a service's
journal) a long step writes no bar, as pip and tqdm's ``disable=None`` do. ``EDGESHIP_PROGRESS=1``
forces bars on, ``=0`` off."""

from __future__ import annotations

import os
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def enabled() -> bool:
    forced = os.environ.get("EDGESHIP_PROGRESS")
    if forced is not None and forced.strip():
        return forced.strip().lower() not in ("0", "false", "no")
    from .native_stderr import stderr_is_terminal

    return stderr_is_terminal()


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None, unit: str = "it"):
    """A tqdm bar on stderr (or a silent pass-through when tqdm is absent or progress is off)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a base dependency
        return _Silent(iterable, total)
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not enabled(), leave=False, dynamic_ncols=True)


class _Silent:
    def __init__(self, iterable, total):
        self._it = iterable
        self.total = total

    def __iter__(self) -> Iterator:
        return iter(self._it or ())

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix_str(self, s: str) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
