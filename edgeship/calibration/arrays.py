"""``.npz`` / ``.npy`` arrays as calibration sources.

Two kinds of content are accepted:

* uint8 frames, (N, H, W) or (N, H, W, C) with C in 1, 3, 4: preprocessed with the InputSpec
  like any camera frame (colour order given by ``array_color``, BGR by default as OpenCV delivers);
* float samples already preprocessed, (N, *spec.sample_shape): used as they are.

In an ``.npz`` the images are the array named x / images / frames / data (or the only array);
integer labels come from y / labels / targets and class names from label_names / classes /
class_names. An edgeship calibration file (``edgeship calibrate --out``) is read back with its labels.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import CalibrationError, EdgeshipError, InputError, SpecError
from ..spec import InputSpec
from .sources import Candidate, SourceOptions, SourceStats, evenly_spaced, interleave_by_class

IMAGE_KEYS = ("x", "images", "frames", "data", "samples", "arr_0")
LABEL_KEYS = ("y", "labels", "targets", "label")
NAME_KEYS = ("label_names", "classes", "class_names")


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array in a .npy (as ``x``) or .npz, without ever unpickling."""
    from .dataset import check_npz_magic  # noqa: PLC0415 - dataset imports nothing from here

    check_npz_magic(path, npy_ok=True)
    try:
        obj = np.load(path, allow_pickle=False)
        if isinstance(obj, np.ndarray):
            return {"x": obj}
        with obj:
            return {k: obj[k] for k in obj.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise CalibrationError(f"array file {path} could not be read as .npy/.npz without pickles: {e}") from None


def _pick(arrays: dict[str, np.ndarray], keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in arrays), None)


def _edgeship_file(arrays: dict[str, np.ndarray], path: Path, spec: InputSpec):
    """(x, y, names) from an edgeship calibration .npz, checking its InputSpec matches."""
    from .dataset import read_meta

    meta = read_meta(arrays["meta"], path)
    try:
        theirs = InputSpec.from_dict(meta["spec"])
    except (KeyError, TypeError, ValueError, EdgeshipError) as e:
        raise CalibrationError(f"{path}: its InputSpec (meta.spec) is not valid: {e}") from None
    if theirs != spec:
        raise SpecError(f"calibration file {path} was preprocessed with {theirs.to_json()}, expected {spec.to_json()}")
    x = np.concatenate([arrays["x_calib"], arrays["x_holdout"]])
    y = None
    if "y_calib" in arrays:
        y = np.concatenate([arrays["y_calib"], arrays["y_holdout"]])
    return x, y, meta.get("labels")


class ArraySource:
    """Frames or preprocessed samples from a .npz/.npy file."""

    kind = "array"

    def __init__(self, target: str, options: SourceOptions):
        self.name = str(target)
        self.path = Path(target)
        if not self.path.is_file():
            raise InputError(f"array file {self.path} does not exist")
        self.options = options
        spec = options.spec
        arrays = load_arrays(self.path)
        if "meta" in arrays and "x_calib" in arrays:
            x, y, names = _edgeship_file(arrays, self.path, spec)
        else:
            key = _pick(arrays, IMAGE_KEYS) or (next(iter(arrays)) if len(arrays) == 1 else None)
            if key is None:
                raise CalibrationError(
                    f"array file {self.path} has arrays {sorted(arrays)}; expected one named {' / '.join(IMAGE_KEYS)}"
                )
            x = arrays[key]
            ykey = _pick(arrays, LABEL_KEYS)
            y = arrays[ykey] if ykey else None
            nkey = _pick(arrays, NAME_KEYS)
            names = [str(n) for n in arrays[nkey].tolist()] if nkey else None
        self.x, self.preprocessed = self._check_images(x, spec)
        self.labels = self._label_names(y, names, options.label_names)
        self.stats = SourceStats(source=self.name, kind=self.kind)
        self.stats.details.update(samples=int(len(self.x)), content="samples" if self.preprocessed else "frames")
        if len(self.x) == 0:
            raise CalibrationError(f"array file {self.path} holds no samples")

    def _check_images(self, x: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, bool]:
        if x.dtype == np.uint8 and (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] in (1, 3, 4))):
            return x, False
        if np.issubdtype(x.dtype, np.floating) and tuple(x.shape[1:]) == spec.sample_shape:
            bad = int(np.count_nonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))) if x.size else 0
            if bad:
                raise CalibrationError(f"array file {self.path}: {bad} of {len(x)} samples hold NaN or infinite values; "
                                       "expected real pixel values")
            return x.astype(np.float32, copy=False), True
        raise SpecError(
            f"array file {self.path}: expected uint8 frames (N, H, W[, C]) or float samples "
            f"(N, {', '.join(map(str, spec.sample_shape))}) matching the InputSpec; found {x.dtype} {tuple(x.shape)}"
        )

    def _label_names(self, y, names, label_file) -> list[str | None]:
        n = len(self.x)
        if y is None:
            return [None] * n
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] > 1:  # one-hot
            y = y.argmax(axis=1)
        y = y.reshape(-1)
        if y.shape[0] != n or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
            raise CalibrationError(
                f"array file {self.path}: expected {n} non-negative integer labels, found {y.dtype} {tuple(y.shape)}"
            )
        table = names or (list(label_file) if label_file else None)
        if table is not None and y.size and int(y.max()) >= len(table):
            raise CalibrationError(
                f"array file {self.path}: label {int(y.max())} has no class name; {len(table)} names given"
            )
        return [str(table[i]) if table is not None else str(i) for i in y.tolist()]

    def available(self) -> int:
        return len(self.x)

    def candidates(self, want: int, rng: np.random.Generator) -> Iterator[Candidate]:
        if self.labels[0] is not None:
            chosen = interleave_by_class(self.labels, rng)[:want]
        else:
            chosen = evenly_spaced(len(self.x), want).tolist()
        flip = self.options.array_color == "RGB" and not self.preprocessed
        for i in chosen:
            img = self.x[i]
            if flip and img.ndim == 3 and img.shape[2] in (3, 4):
                img = np.ascontiguousarray(img[:, :, [2, 1, 0] + ([3] if img.shape[2] == 4 else [])])
            self.stats.read += 1
            yield Candidate(img, self.labels[i], f"{self.path}[{i}]", preprocessed=self.preprocessed)
