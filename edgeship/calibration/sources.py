"""Calibration sources: one registry of source kinds, each turning a user's text into frames.

A source text is matched against the kinds in :data:`SOURCE_KINDS`, in order, unless it names a
kind explicitly (``video:cam1.bin``, ``folder:data``, ``stream:0``, ``array:x.npz``). Every
kind yields :class:`Candidate` frames (BGR uint8) or already-preprocessed float samples, and
counts what it read and what it had to skip in a :class:`SourceStats`.
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from ..errors import InputError, SourceError
from ..spec import InputSpec

log = logging.getLogger(__name__)

ARRAY_SUFFIXES = frozenset((".npz", ".npy"))


@dataclass
class Candidate:
    """One frame or sample offered by a source.

    ``image`` is a BGR (or grayscale) uint8 frame, or, when ``preprocessed`` is true, a float
    sample already of ``spec.sample_shape``. ``label`` is a class name or None.
    """

    image: np.ndarray
    label: str | None
    origin: str
    preprocessed: bool = False


@dataclass
class SourceStats:
    """What one source delivered: counts for the summary table and the metadata."""

    source: str
    kind: str
    read: int = 0
    unreadable: int = 0
    not_images: int = 0
    duplicates: int = 0
    kept: int = 0
    selected: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SourceOptions:
    """Options every source kind may use."""

    spec: InputSpec
    duration: float = 5.0
    timeout: float = 10.0
    folder_labels: bool = True
    array_color: str = "BGR"
    label_names: tuple[str, ...] | None = None


class Source(Protocol):
    """What every source kind provides."""

    kind: str
    name: str
    stats: SourceStats

    def available(self) -> int | None:
        """How many candidates the source can offer (None: unknown, e.g. a live stream)."""

    def candidates(self, want: int, rng: np.random.Generator) -> Iterator[Candidate]:
        """Yield up to ``want`` candidates spread over the whole source (deterministic for ``rng``)."""


# ---- matching a source text to a kind ---------------------------------------------------------
# The device's resolver (edgeship.runtime.sources) decides what a source text is; calibration
# adds arrays of frames. Live kinds (camera, RTSP/RTMP/HTTP stream, MJPEG, GStreamer) are all
# captured by StreamSource through the device's own readers, so a calibration set is made from
# the frames the device will see.
def _is_array(text: str) -> bool:
    return Path(text).suffix.lower() in ARRAY_SUFFIXES


# calibration kind -> "module:Class"
SOURCE_KINDS: dict[str, str] = {
    "stream": "edgeship.calibration.video:StreamSource",
    "array": "edgeship.calibration.arrays:ArraySource",
    "folder": "edgeship.calibration.folder:FolderSource",
    "video": "edgeship.calibration.video:VideoSource",
}


def source_kind(text: str) -> tuple[str, str]:
    """Return (calibration kind, target) for a source text; raise InputError naming it when nothing matches."""
    from ..runtime.sources import LIVE_KINDS, parse_source

    text = str(text)
    m = re.match(r"^(array):(?!//)(.+)$", text)
    if m:
        return "array", m.group(2)
    if _is_array(text) and not text.startswith(("video:", "folder:")):
        return "array", text
    try:
        kind, target = parse_source(text)
    except SourceError as e:
        raise InputError(f"calibration source: {e}") from None
    if kind in LIVE_KINDS:
        return "stream", text
    if not Path(target).exists():
        raise InputError(
            f"calibration source {text!r} does not exist; expected an image folder, a video file, "
            f"a .npz/.npy array, a stream URL (rtsp://, http://), a gst: pipeline or a camera index"
        )
    return kind, target


def open_source(text: str, options: SourceOptions) -> Source:
    """Open one source through the registry. Checks that it exists; streams connect later."""
    kind, target = source_kind(text)
    module_name, attr = SOURCE_KINDS[kind].split(":")
    cls = getattr(importlib.import_module(module_name), attr)
    return cls(target, options)


def open_sources(texts, options: SourceOptions) -> list[Source]:
    """Open every source; an empty list is an error."""
    texts = [str(t) for t in texts]
    if not texts:
        raise InputError("no calibration source given; pass image folders, videos, streams or arrays")
    return [open_source(t, options) for t in texts]


# ---- small helpers shared by the kinds ---------------------------------------------------------
def evenly_spaced(n: int, want: int) -> np.ndarray:
    """``want`` sorted unique indices spread evenly over ``range(n)`` (centred in each stride)."""
    if want <= 0 or n <= 0:
        return np.zeros(0, dtype=np.int64)
    if want >= n:
        return np.arange(n, dtype=np.int64)
    return np.unique(((np.arange(want) + 0.5) * (n / want)).astype(np.int64).clip(0, n - 1))


def interleave_by_class(labels: list[str | None], rng: np.random.Generator) -> list[int]:
    """Indices shuffled within each class, then taken round-robin across classes.

    Any prefix of the result is as balanced across classes as the data allows.
    """
    groups: dict[Any, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    queues = []
    for key in sorted(groups, key=lambda k: natural_key(k)):
        idx = np.asarray(groups[key])
        queues.append(list(idx[rng.permutation(idx.size)]))
    out: list[int] = []
    depth = 0
    while True:
        row = [q[depth] for q in queues if depth < len(q)]
        if not row:
            return out
        out.extend(int(i) for i in row)
        depth += 1


def natural_key(name: Any) -> tuple:
    """Sort class names numerically when they are numbers (2 before 10), else alphabetically."""
    if name is None:
        return (2, "")
    s = str(name)
    return (0, int(s), "") if s.isdigit() else (1, 0, s)
