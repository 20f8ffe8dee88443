"""Atomic writes, hashes and sizes: a failed step never leaves a half-written file."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import InputError


def ensure_dir(folder: str | os.PathLike, what: str | None = None) -> Path:
    """Create ``folder`` (and its parents); a folder that cannot be made is one InputError line."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{what or f'cannot create folder {folder}'}: {folder}: {e.strerror or e}") from None
    if not folder.is_dir():
        raise InputError(f"{what or f'cannot create folder {folder}'}: {folder} is not a folder")
    return folder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


def owned_temp_prefix(prefix: str) -> str:
    """``PREFIX<pid>.``: temporary names carry their owner's pid, so a later run can tell leftovers
    of a killed run (owner gone) from the work of one still running."""
    return f"{prefix}{os.getpid()}."


_OWNED_TAIL = re.compile(r"^(\d+)\.[A-Za-z0-9_]+(\.tmp[\w.]*)?$")  # <pid>.<random>[.tmp<suffix>]
STALE_AFTER_S = 60.0


def sweep_stale(folder: str | os.PathLike, prefix: str, *, min_age: float = STALE_AFTER_S) -> list[Path]:
    """Remove ``folder/PREFIX<pid>.<random>[.tmp...]`` entries (edgeship's own temporary names, exactly)
    whose process is gone and that are older than ``min_age`` seconds: what a killed run left behind."""
    import time

    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    now = time.time()
    for entry in folder.iterdir():
        if not entry.name.startswith(prefix):
            continue
        m = _OWNED_TAIL.match(entry.name[len(prefix):])
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        try:
            if now - entry.lstat().st_mtime < min_age:
                continue
        except OSError:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the same folder as ``final``; rename it over ``final`` on success.

    Works for files and for folders (a SavedModel, an IR pair is written file by file with
    :func:`atomic_path` each). On any exception the temporary path is removed and nothing
    appears at ``final``.
    """
    final = Path(final)
    ensure_dir(final.parent, f"cannot write {final}")
    sweep_stale(final.parent, f".{final.name}.")  # a killed earlier run's temporary file
    try:
        fd, tmp = tempfile.mkstemp(prefix=owned_temp_prefix(f".{final.name}."), suffix=".tmp" + suffix, dir=final.parent)
    except OSError as e:
        raise InputError(f"cannot write {final}: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if not tmp_path.exists():
            raise FileNotFoundError(f"nothing was written to {tmp_path}")
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp_path, final)
    except BaseException:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()
        raise


def replace_files(pairs: Iterable[tuple[Path, Path]]) -> None:
    """Copy each (source, destination) over the destination atomically; the pairs are applied last to first (an
    artifact's companion files before the file that names them)."""
    import shutil

    for src, dst in reversed(list(pairs)):
        tmp = Path(dst).with_name(f".{Path(dst).name}.replace.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        np = None
    if np is not None:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if callable(getattr(obj, "to_dict", None)):  # typed records (edgeship.records)
        return obj.to_dict()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def to_jsonable(obj: Any) -> Any:
    """Round-trip through JSON so numpy scalars and paths become plain Python values."""
    return json.loads(json.dumps(obj, default=_json_default))


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """sha256 of a file, or of every file in a folder (sorted relative paths and contents)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
    return h.hexdigest()


def file_size(path: str | os.PathLike) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def gzip_size(path: str | os.PathLike, *, level: int = 9) -> int:
    """Size in bytes after gzip: what unstructured sparsity actually buys on disk and over the wire."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return sum(len(gzip.compress(f.read_bytes(), compresslevel=level, mtime=0)) for f in files)
