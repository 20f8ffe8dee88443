"""An offline wheelhouse for the flash tests: the installed distributions repacked as wheels.

``pip download`` would fetch the runtime's wheels from PyPI (slow, and tests must not need the
network). Every file of an installed distribution is listed in its RECORD, so a wheel can be
rebuilt from site-packages exactly as pip unpacked it (binary wheels included: numpy, opencv,
ai-edge-litert carry their shared libraries inside the package folders).

    wheelhouse(dest, ["opencv-python-headless", "ai-edge-litert", "click", ...])  # + dependencies
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata as md
import io
import re
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: list[str]) -> list[md.Distribution]:
    """The distributions ``names`` and everything they require (markers evaluated here, no extras)."""
    env = default_environment()
    seen: dict[str, md.Distribution] = {}
    todo = list(names)
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        dist = md.distribution(name)
        seen[name] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                todo.append(req.name)
    return [seen[k] for k in sorted(seen)]


def repack(dist: md.Distribution, dest: Path) -> Path:
    """Rebuild ``dist``'s wheel from its installed files (RECORD) into ``dest``."""
    files = [f for f in dist.files or [] if not str(f).endswith(".pyc") and "__pycache__" not in str(f)]
    dist_info = next(str(f).split("/")[0] for f in files if str(f).endswith(".dist-info/METADATA"))
    wheel_meta = (Path(dist.locate_file(dist_info)) / "WHEEL").read_text()
    tags = [line.split(":", 1)[1].strip().split("-") for line in wheel_meta.splitlines() if line.startswith("Tag:")]
    tag = "-".join(".".join(dict.fromkeys(t[i] for t in tags)) for i in range(3))  # py2.py3-none-any
    name = re.sub(r"[-.]+", "_", dist.metadata["Name"])
    out = dest / f"{name}-{dist.version}-{tag}.whl"
    if out.exists():
        return out
    record_name = f"{dist_info}/RECORD"
    rows = []
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for f in sorted(files, key=str):
            rel = str(f)
            if rel == record_name or rel.startswith("..") or rel.endswith(("INSTALLER", "REQUESTED", "direct_url.json")):
                continue
            path = Path(dist.locate_file(f))
            if not path.is_file():
                continue
            data = path.read_bytes()
            z.writestr(rel, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append((rel, f"sha256={digest}", str(len(data))))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows + [(record_name, "", "")])
        z.writestr(record_name, buf.getvalue())
    tmp.rename(out)
    return out


def wheelhouse(dest: Path, names: list[str]) -> Path:
    """A folder of wheels for ``names`` and their dependencies, rebuilt from this environment."""
    dest.mkdir(parents=True, exist_ok=True)
    for dist in closure(names):
        repack(dist, dest)
    return dest
