"""Device profiles: one JSON data file per target in ``edgeship/targets/profiles/``.

A profile says what a device is (architecture, supported Pythons, wheel platform tags), what
it runs best (artifact format, precision, threads), which runtime packages it needs for each
Python version, how to open its cameras, and how its service is set up. ``convert --target``
reads the format and precision; ``bundle`` reads the packages, platforms and service; ``flash``
checks the device against the architecture and Python versions.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .. import formats
from ..errors import InputError

PROFILE_DIR = Path(__file__).with_name("profiles")
FORMATS = formats.names()
PRECISIONS = formats.all_precisions()
ARCHITECTURES = ("aarch64", "x86_64", "armv7l")
# pip's OpenCV distributions: a bundle that uses the device's system OpenCV (built with GStreamer)
# leaves them out, or their cv2 would shadow the system one in the venv.
OPENCV_DISTS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
# The distributions' python3-opencv for these Pythons (Debian 11/12, Raspberry Pi OS, Ubuntu 20.04-24.10,
# JetPack 5/6) is compiled against NumPy 1.x and fails to import under NumPy 2: a system-OpenCV venv
# must keep NumPy 1 (pip then also picks runtime wheels that accept it). Python 3.13+ distributions
# (Debian 13, Ubuntu 25.04) ship NumPy 2. The agent adds the device's exact bound at install time.
SYSTEM_OPENCV_NUMPY = {"3.8": "numpy<2", "3.9": "numpy<2", "3.10": "numpy<2", "3.11": "numpy<2", "3.12": "numpy<2"}
_REQUIRED = ("name", "description", "architecture", "format", "precision", "glibc", "python", "packages")


@dataclass(frozen=True)
class Profile:
    """One device profile (read-only; load with :func:`get_target`)."""

    name: str
    description: str
    architecture: str
    format: str
    precision: str
    glibc: str
    python: str  # the stock Python of the device's OS image: the default for bundles with --wheels
    packages: dict[str, Any]
    threads: int = 0
    backend_device: str = "CPU"
    min_glibc: dict[str, str] = field(default_factory=dict)
    extra_index_urls: tuple[str, ...] = ()
    camera: dict[str, Any] = field(default_factory=dict)
    service: dict[str, Any] = field(default_factory=dict)
    min_free_mb: int = 500
    # bundles use the device's system OpenCV (apt python3-opencv / JetPack's: built with GStreamer,
    # which CSI cameras need) instead of pip's opencv-python-headless; `bundle` can override it
    system_opencv: bool = False

    # ---- runtime packages ----------------------------------------------------------------
    @property
    def formats(self) -> tuple[str, ...]:
        """Artifact formats this device can run (the ones with runtime packages), preferred first."""
        return tuple(sorted((f for f in FORMATS if f in self.packages), key=lambda f: f != self.format))

    def python_versions(self, format: str | None = None) -> tuple[str, ...]:
        """Python versions ("3.11") with runtime wheels for ``format`` (default: the preferred one)."""
        return tuple(self.packages.get(format or self.format, {}))

    def supports_python(self, version: str, format: str | None = None) -> bool:
        """True when ``version`` ("3.11" or "3.11.2") has a runtime for ``format`` on this device."""
        return _major_minor(version) in self.python_versions(format)

    def check_format(self, format: str) -> None:
        """Raise when this device has no runtime for artifacts of ``format``."""
        if format not in self.packages:
            raise InputError(
                f"target {self.name} cannot run {format} artifacts: it has runtimes for {', '.join(self.formats)}"
            )

    def requirements(self, python: str, format: str | None = None, *, system_opencv: bool = False) -> list[str]:
        """Runtime requirement lines for ``python`` ("3.11") and artifact ``format``: one line per package.

        With ``system_opencv`` pip's OpenCV is left out (the venv sees the system's cv2) and NumPy
        is kept at the major version the distributions' cv2 for that Python is built against.
        """
        format = format or self.format
        self.check_format(format)
        py = _major_minor(python)
        per_py = self.packages[format]
        if py not in per_py:
            raise InputError(
                f"target {self.name} has no {format} runtime for Python {py}: "
                f"supported are {', '.join(per_py)}"
            )
        lines = [*self.packages.get("common", ()), *per_py[py]]
        if system_opencv:
            lines = [line for line in lines if requirement_name(line) not in OPENCV_DISTS]
            lines += [SYSTEM_OPENCV_NUMPY[py]] if py in SYSTEM_OPENCV_NUMPY else []
        return merge_requirements(lines)

    @property
    def platforms(self) -> tuple[str, ...]:
        """pip ``--platform`` tags for wheels that run on this device: every manylinux tag up to its glibc.

        pip does not expand ``manylinux_2_31`` to the older tags itself, so all are listed.
        """
        major, minor = (int(x) for x in self.glibc.split("."))
        arch = self.architecture
        tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)]
        tags.append(f"manylinux2014_{arch}")
        if self.extra_index_urls:  # piwheels and similar publish plain linux_* wheels built for the device
            tags.append(f"linux_{arch}")
        return tuple(tags)

    # ---- cameras ----------------------------------------------------------------------------
    def camera_source(self, kind: str | None = None, *, index: int = 0, width: int = 1280, height: int = 720, fps: int = 30) -> str:
        """The source string for this device's camera of ``kind`` ("csi", "usb", "picamera2"; default: the profile's)."""
        kind = kind or self.camera.get("default", "usb")
        template = self.camera.get(kind)
        if not isinstance(template, str):
            kinds = sorted(k for k, v in self.camera.items() if isinstance(v, str) and k != "default")
            raise InputError(f"target {self.name} has no camera kind {kind!r}: expected one of {', '.join(kinds)}")
        return template.format(index=index, width=width, height=height, fps=fps)

    @property
    def camera_devices(self) -> tuple[str, ...]:
        """Device nodes the preflight looks for (a camera is optional: missing ones are reported, not fatal)."""
        return tuple(self.camera.get("devices", ()))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["extra_index_urls"] = list(self.extra_index_urls)
        d["formats"] = list(self.formats)
        d["platforms"] = list(self.platforms)
        return json.loads(json.dumps(d))


def _major_minor(version: str) -> str:
    m = re.match(r"^\s*(\d+)\.(\d+)", str(version))
    if not m:
        raise InputError(f"expected a Python version like 3.11, got {version!r}")
    return f"{m.group(1)}.{m.group(2)}"


_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$")


def requirement_name(line: str) -> str:
    """The normalised distribution name of a requirement line (``OpenCV_Python>=4`` -> ``opencv-python``)."""
    m = _NAME_RE.match(line)
    return re.sub(r"[-_.]+", "-", m.group(1)).lower() if m else ""


def merge_requirements(lines: list[str]) -> list[str]:
    """Merge requirement lines naming the same package (``numpy>=1.23`` + ``numpy<2`` -> ``numpy<2,>=1.23``).

    Keeps first-seen order; environment markers are not supported in profiles (one file per
    Python version instead).
    """
    merged: dict[str, tuple[str, str, list[str]]] = {}
    for line in lines:
        m = _NAME_RE.match(line)
        if not m or ";" in line:
            raise InputError(f"expected a requirement like 'name>=1.0' in a target profile, got {line!r}")
        name, extras, spec = m.group(1), m.group(2) or "", m.group(3).replace(" ", "")
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key not in merged:
            merged[key] = (name, extras, [])
        specs = merged[key][2]
        for part in filter(None, spec.split(",")):
            if part not in specs:
                specs.append(part)
    return [f"{n}{e}{','.join(sorted(s))}" for n, e, s in merged.values()]


def _validate(d: dict[str, Any], source: Path) -> None:
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise InputError(f"target profile {source} is missing keys {missing}")
    checks = (("format", FORMATS), ("precision", PRECISIONS), ("architecture", ARCHITECTURES))
    for key, allowed in checks:
        if d[key] not in allowed:
            raise InputError(f"target profile {source}: {key} must be one of {', '.join(allowed)}, got {d[key]!r}")
    unknown = [k for k in d["packages"] if k != "common" and k not in FORMATS]
    if unknown or d["format"] not in d["packages"]:
        raise InputError(
            f"target profile {source}: packages must hold 'common' and per-format tables for "
            f"{', '.join(FORMATS)} including the preferred format {d['format']!r}, got {sorted(d['packages'])}"
        )
    if not isinstance(d.get("system_opencv", False), bool):
        raise InputError(f"target profile {source}: system_opencv must be true or false, got {d['system_opencv']!r}")
    if not re.fullmatch(r"\d+\.\d+", str(d["glibc"])):
        raise InputError(f"target profile {source}: glibc must look like 2.31, got {d['glibc']!r}")


def load_profile(path: str | Path) -> Profile:
    """Read and validate one profile JSON file."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read target profile {path}: {e}") from e
    _validate(d, path)
    known = set(Profile.__dataclass_fields__)
    d = {k: v for k, v in d.items() if k in known}
    d["extra_index_urls"] = tuple(d.get("extra_index_urls", ()))
    return Profile(**d)


@lru_cache(maxsize=None)
def _all() -> dict[str, Profile]:
    profiles = {}
    for path in sorted(PROFILE_DIR.glob("*.json")):
        p = load_profile(path)
        profiles[p.name] = p
    return profiles


def list_targets() -> list[Profile]:
    """Every built-in device profile, sorted by name."""
    return [p for _, p in sorted(_all().items())]


def get_target(name: str) -> Profile:
    """The profile called ``name`` (e.g. ``rpi5``), or an InputError listing the valid names."""
    if isinstance(name, Profile):
        return name
    profiles = _all()
    if name not in profiles:
        raise InputError(f"unknown target {name!r}: expected one of {', '.join(sorted(profiles))}")
    return profiles[name]
