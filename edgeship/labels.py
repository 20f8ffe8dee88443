"""Class names: the one reader of labels files, used by calibrate, convert, verify, run and bundle.

Accepted forms, told apart by content (not by suffix):

- text, one class name per line; blank lines and lines starting with ``#`` are ignored;
- a JSON list ``["cat", "dog"]`` (index = class id);
- a JSON object ``{"0": "cat", "1": "dog"}`` (integer ids; ids missing from 0..max become their number).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from .errors import InputError

log = logging.getLogger(__name__)

__all__ = ["read_labels", "resolve_labels", "parse_labels"]
MAX_LABEL = 256  # characters in one class name (it is shown in tables, overlays and event payloads)


def _from_json(data: Any, where: str) -> list[str]:
    if isinstance(data, list):
        return [str(x) for x in data]
    if isinstance(data, dict):
        try:
            ids = {int(k): str(v) for k, v in data.items()}
        except (TypeError, ValueError):
            raise InputError(f"labels file {where}: expected integer class ids as keys, got {list(data)[:3]}") from None
        if any(i < 0 for i in ids):
            raise InputError(f"labels file {where}: class ids must be 0 or more, got {min(ids)}")
        top = max(ids, default=-1)
        gaps = [i for i in range(top + 1) if i not in ids]
        if gaps:
            log.warning("labels file %s has no name for class id(s) %s; using the number", where, gaps[:5])
        return [ids.get(i, str(i)) for i in range(top + 1)]
    raise InputError(f"labels file {where}: expected a JSON list or object of class names, got {type(data).__name__}")


def parse_labels(text: str, where: str = "<labels>") -> list[str]:
    """Class names from the text of a labels file (see the module docstring for the forms)."""
    stripped = text.lstrip("\ufeff").strip()
    if stripped[:1] in ("[", "{"):
        try:
            names = _from_json(json.loads(stripped), where)
        except json.JSONDecodeError as e:
            raise InputError(f"labels file {where} is not valid JSON: {e.msg} at line {e.lineno}") from None
    else:
        names = [ln.strip() for ln in stripped.splitlines()]
        names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise InputError(f"labels file {where} has no class names; expected one name per line or a JSON list")
    if any(not n.strip() for n in names):
        raise InputError(f"labels file {where} has an empty class name")
    long = next((i for i, n in enumerate(names) if len(n) > MAX_LABEL), None)
    if long is not None:
        raise InputError(f"labels file {where}: class {long} has a name of {len(names[long])} characters; expected a class "
                         f"name of at most {MAX_LABEL}")
    repeated = sorted({n for n in set(names) if names.count(n) > 1})
    if repeated:
        raise InputError(f"labels file {where} repeats class names: {', '.join(repeated[:5])}")
    return names


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names from a labels file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"labels file {p} does not exist; expected a text file with one class name per line or a JSON list")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"labels file {p} is not UTF-8 text") from None
    except OSError as e:
        raise InputError(f"cannot read labels file {p}: {e.strerror or e}") from None
    return parse_labels(text, str(p))


def resolve_labels(labels: Sequence[str] | str | os.PathLike | None, default: Sequence[str] | None = None) -> list[str] | None:
    """A list of class names from a list, a labels file, or None (then ``default``, e.g. the manifest's)."""
    if labels is None:
        return list(default) if default else None
    if isinstance(labels, (str, os.PathLike)):
        return read_labels(labels)
    return [str(x) for x in labels]
