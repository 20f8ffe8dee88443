"""Image folders (recursive) and single image files as calibration sources.

``root/<class>/.../image.png``: when every image sits in a sub-folder, the first-level sub-folder
names become class labels. Files that are not images (by suffix) and images that fail to decode
are skipped and counted, never fatal.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import CalibrationError, InputError
from ..progress import progress
from ..runtime.sources.readers import IMAGE_SUFFIXES
from .sources import Candidate, SourceOptions, SourceStats, interleave_by_class
from .video import import_cv2

log = logging.getLogger(__name__)


def list_images(root: Path) -> tuple[list[Path], int]:
    """Image files under ``root`` (sorted, hidden files ignored) and the number of non-image files."""
    if root.is_file():
        return [root], 0
    images, others = [], 0
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        else:
            others += 1
    return images, others


def folder_labels(root: Path, files: list[Path]) -> list[str | None]:
    """First-level sub-folder of each file as its class, or all None when any file sits at the root."""
    if root.is_file():
        return [None] * len(files)
    rel = [f.relative_to(root).parts for f in files]
    if not rel or any(len(parts) < 2 for parts in rel):
        return [None] * len(files)
    return [parts[0] for parts in rel]


def read_image(path: Path) -> np.ndarray | None:
    """Decode an image file to BGR uint8 (None when it is corrupt). Works with any path encoding."""
    cv2 = import_cv2()
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return img if img is not None and img.size else None


class FolderSource:
    """A folder of images (recursive) or one image file."""

    kind = "folder"

    def __init__(self, target: str, options: SourceOptions):
        self.name = str(target)
        self.root = Path(target)
        if not self.root.exists():
            raise InputError(f"image folder {self.root} does not exist")
        self.files, others = list_images(self.root)
        if not self.files:
            raise CalibrationError(
                f"image folder {self.root} has no images (expected {', '.join(sorted(IMAGE_SUFFIXES)[:6])}...; "
                f"found {others} other files)"
            )
        self.labels = folder_labels(self.root, self.files) if options.folder_labels else [None] * len(self.files)
        self.stats = SourceStats(source=self.name, kind=self.kind, not_images=others)
        classes = sorted({lab for lab in self.labels if lab is not None})
        self.stats.details.update(files=len(self.files), classes=len(classes))
        if others:
            log.info("%s: skipping %d files that are not images", self.root, others)

    def available(self) -> int:
        return len(self.files)

    def candidates(self, want: int, rng: np.random.Generator) -> Iterator[Candidate]:
        """Yield up to ``want`` decodable images, shuffled within each class and balanced across classes."""
        order = interleave_by_class(self.labels, rng)
        yielded = 0
        bar = progress(total=min(want, len(order)), desc=f"images {self.root.name}", unit="img")
        try:
            for i in order:
                if yielded >= want:
                    return
                img = read_image(self.files[i])
                if img is None:
                    self.stats.unreadable += 1
                    log.info("skipping unreadable image %s", self.files[i])
                    continue
                self.stats.read += 1
                yielded += 1
                bar.update(1)
                yield Candidate(img, self.labels[i], str(self.files[i]))
        finally:
            bar.close()
