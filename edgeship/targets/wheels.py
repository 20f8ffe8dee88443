"""Wheels for bundles: edgeship itself (built reproducibly from its source tree) and the runtime
dependencies for a target's platform and Python (``pip download --only-binary=:all: --platform``)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import DeployError, InputError
from ..fileio import atomic_path
from .profiles import Profile

log = logging.getLogger(__name__)
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01: the earliest time a zip can hold
_TREE_FILES = ("setup.cfg", "setup.py", "pyproject.toml", "README.md", "MANIFEST.in", "LICENSE")


def own_version() -> str:
    from .. import __version__

    return __version__


def source_tree() -> Path | None:
    """The edgeship project folder this package runs from (None when installed from a wheel)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "setup.cfg").is_file() and (root / "edgeship" / "__init__.py").is_file() else None


def _tree_files(root: Path) -> list[Path]:
    files = [root / f for f in _TREE_FILES if (root / f).is_file()]
    files += sorted(p for p in (root / "edgeship").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith((".pyc", ".tmp")))
    return files


def cache_dir() -> Path:
    base = os.environ.get("EDGESHIP_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "edgeship")
    return Path(base)


def edgeship_wheel(explicit: str | os.PathLike | None = None) -> Path:
    """The edgeship wheel to ship: ``explicit`` if given, else built from the source tree.

    The build copies the tree to a temporary folder (the working tree stays clean) and runs
    ``pip wheel --no-deps`` with SOURCE_DATE_EPOCH fixed, so the same sources give the same
    bytes; the result is cached by the sources' hash.
    """
    if explicit is not None:
        p = Path(explicit)
        if not (p.is_file() and p.name.startswith("edgeship-") and p.suffix == ".whl"):
            raise InputError(f"--edgeship-wheel {p} is not an edgeship-*.whl file")
        return p
    root = source_tree()
    if root is None:
        raise DeployError("edgeship is not installed from a source tree, so its wheel cannot be built: "
                          "pass --edgeship-wheel FILE (pip wheel --no-deps edgeship)")
    files = _tree_files(root)
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    cached = cache_dir() / "edgeship-wheels" / h.hexdigest()[:20]
    found = sorted(cached.glob("edgeship-*.whl")) if cached.is_dir() else []
    if found:
        return found[0]
    with tempfile.TemporaryDirectory(prefix="edgeship-wheel-") as tmp:
        src = Path(tmp) / "src"
        for f in files:
            dst = src / f.relative_to(root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)
        out = Path(tmp) / "out"
        env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, PIP_DISABLE_PIP_VERSION_CHECK="1")
        _pip(["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)], env=env, what="build the edgeship wheel")
        built = sorted(out.glob("edgeship-*.whl"))
        if not built:
            raise DeployError(f"pip wheel wrote no edgeship wheel into {out}")
        with atomic_path(cached) as tmp_dir:
            tmp_dir.mkdir()
            shutil.copyfile(built[0], tmp_dir / built[0].name)
    return sorted(cached.glob("edgeship-*.whl"))[0]


def download_argv(profile: Profile, python: str, dest: Path, *, wheelhouse: str | os.PathLike | None = None) -> list[str]:
    """The ``pip download`` options that fetch binary wheels for ``profile``'s platform and ``python``."""
    argv = ["download", "--only-binary=:all:", "--python-version", python, "--implementation", "cp", "-d", str(dest), "-q"]
    for tag in profile.platforms:
        argv += ["--platform", tag]
    if wheelhouse is not None:
        argv += ["--no-index", "--find-links", str(wheelhouse)]
    else:
        for url in profile.extra_index_urls:
            argv += ["--extra-index-url", url]
    return argv


def download(profile: Profile, python: str, requirements: list[str], own_wheel: Path, dest: Path, *,
             wheelhouse: str | os.PathLike | None = None) -> list[Path]:
    """Download into the empty folder ``dest`` every wheel the runtime needs on ``profile`` with
    ``python``: edgeship's dependencies and ``requirements`` (pip keeps its own HTTP cache)."""
    if wheelhouse is not None and not Path(wheelhouse).is_dir():
        raise InputError(f"wheelhouse {wheelhouse} is not a folder of .whl files")
    dest.mkdir(parents=True, exist_ok=True)
    req = dest / "requirements.txt"
    req.write_text("\n".join(requirements) + "\n")
    argv = download_argv(profile, python, dest, wheelhouse=wheelhouse) + ["-r", str(req), str(own_wheel)]
    log.info("pip %s", " ".join(argv))
    _pip(argv, env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"),
         what=f"download runtime wheels for {profile.name} (Python {python}, {profile.architecture})")
    req.unlink()
    return sorted(w for w in dest.glob("*.whl") if w.name != own_wheel.name)


def _pip(args: list[str], *, env: dict, what: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = proc.stdout.decode("utf-8", "replace").strip().splitlines()[-8:]
        raise DeployError(f"could not {what}: pip exited {proc.returncode}: " + " | ".join(tail))
