"""Where each path of a deploy config lives: on the workstation, in the release, or on the device.

A deploy config is written on a workstation and run on a device, so its paths name three places:

- **Files that travel in the bundle**: the artifact, its labels, and a video or image folder used
  as a source (a test clip). ``edgeship bundle`` packs them and rewrites them to their path inside
  the release (``model/``, ``media/``); relative ones resolve against the config's folder.
- **Files that are only on the device**: a source written ``device:PATH`` (absolute, or relative
  to the device's data folder) is not looked for on the workstation; the device's preflight and
  the runtime check it there.
- **Outputs** (``sinks:`` files, event files and queues, snapshot and reject folders, counters):
  written where the config runs. Relative ones resolve against the config's folder, except in a
  release (a config next to its ``release.json`` under ``DEVICE_ROOT/releases/``), where they
  resolve under ``DEVICE_ROOT/data`` with any leading ``../`` dropped: what the runtime writes
  never lands inside ``releases/``, so pruning old releases never deletes it.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

DEVICE_PREFIX = "device:"  # a source path that exists only on the device
RELEASE_FILE = "release.json"  # marks a release folder (written by edgeship bundle)
RELEASES_DIR = "releases"  # DEVICE_ROOT/releases/<version>
DATA_DIR = "data"  # DEVICE_ROOT/data: the runtime's persistent outputs and working directory
MEDIA_DIR = "media"  # where a bundle packs a workstation file used as a source


def device_root_of(config_dir: str | os.PathLike) -> Path | None:
    """The device root when ``config_dir`` is a release folder (``ROOT/releases/V`` holding
    ``release.json``), else None."""
    d = Path(config_dir).resolve()
    if (d / RELEASE_FILE).is_file() and d.parent.name == RELEASES_DIR:
        return d.parent.parent
    return None


def data_dir_of(config_dir: str | os.PathLike) -> Path | None:
    """Where a release's relative outputs go (``DEVICE_ROOT/data``); None outside a release."""
    root = device_root_of(config_dir)
    return root / DATA_DIR if root is not None else None


def under(parts: tuple[str, ...]) -> tuple[str, ...]:
    """Path parts with ``.`` and leading ``..`` removed (``../out/x`` -> ``out/x``)."""
    out = [p for p in PurePosixPath(os.path.normpath("/".join(parts))).parts if p not in (".", "")]
    while out and out[0] == "..":
        out.pop(0)
    return tuple(out)


def output_path(p: str | os.PathLike, *, base: str | os.PathLike, data: str | os.PathLike | None) -> Path:
    """An output path as the runtime writes it: absolute as given; relative against ``base`` (the
    config's folder), or under ``data`` (a release's data folder, leading ``../`` dropped)."""
    p = Path(os.path.expanduser(str(p)))
    if p.is_absolute():
        return p
    if data is None:
        return (Path(base) / p).resolve()
    return Path(data).joinpath(*under(p.parts))


def split_device(text: str) -> tuple[bool, str]:
    """``(True, PATH)`` for ``device:PATH``, else ``(False, text)``."""
    text = str(text).strip()
    if text.startswith(DEVICE_PREFIX):
        return True, text[len(DEVICE_PREFIX):].strip()
    return False, text


def device_path(path: str, *, base: str | os.PathLike, data: str | os.PathLike | None) -> Path:
    """A ``device:`` path on the device itself: absolute as given, relative under the data folder
    (or the config's folder outside a release)."""
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else Path(data if data is not None else base).joinpath(*under(p.parts))
