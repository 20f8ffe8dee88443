"""RepresentativeDataset: preprocessed calibration and holdout samples with their InputSpec.

Saved as an ``.npz`` of plain arrays (``x_calib``, ``x_holdout``, optional ``y_calib`` /
``y_holdout``) and one JSON string ``meta`` (InputSpec, labels, sources, counts, statistics):
``np.load(path, allow_pickle=False)`` reads it anywhere, no pickles.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import CalibrationError, EdgeshipError, InputError, SpecError
from ..fileio import atomic_path, to_jsonable
from ..spec import InputSpec
from ..preprocess import preprocess
from .select import split_holdout

log = logging.getLogger(__name__)

FORMAT = "edgeship-calibration"
FORMAT_VERSION = 1
SPLITS = ("calib", "holdout", "all")


class RepresentativeDataset:
    """Calibration samples (``x_calib``) and held-out samples (``x_holdout``) for one InputSpec.

    Samples are float32 arrays of ``spec.sample_shape`` in the model's input domain, exactly as
    :func:`edgeship.preprocess.preprocess` produces them. ``y_*`` are int class indices into
    ``labels`` (or None when the data is unlabelled).
    """

    def __init__(
        self,
        spec: InputSpec,
        x_calib: np.ndarray,
        x_holdout: np.ndarray | None = None,
        *,
        y_calib: np.ndarray | None = None,
        y_holdout: np.ndarray | None = None,
        labels: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
    ):
        self.spec = spec
        shape = tuple(spec.sample_shape)
        self.x_calib = _samples(x_calib, shape, "x_calib")
        self.x_holdout = _samples(np.zeros((0,) + shape, np.float32) if x_holdout is None else x_holdout, shape, "x_holdout")
        if (y_calib is None and y_holdout is not None) or (
                y_calib is not None and y_holdout is None and len(self.x_holdout)):
            raise InputError("labels must be given for both splits or for neither (y_calib / y_holdout)")
        self.y_calib = None if y_calib is None else _labels(y_calib, len(self.x_calib), "y_calib")
        self.y_holdout = None if y_calib is None else _labels(
            np.zeros(0, np.int64) if y_holdout is None else y_holdout, len(self.x_holdout), "y_holdout")
        self.labels = list(labels) if labels is not None else None
        if self.labels is not None and self.y_calib is not None:
            top = max([int(a.max()) for a in (self.y_calib, self.y_holdout) if a.size] or [-1])
            if top >= len(self.labels):
                raise InputError(f"label index {top} has no class name; {len(self.labels)} labels given")
        self.meta = dict(meta or {})

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        x: np.ndarray,
        y: np.ndarray | None = None,
        *,
        spec: InputSpec,
        labels: Sequence[str] | None = None,
        holdout: float = 0.2,
        seed: int = 0,
    ) -> "RepresentativeDataset":
        """Split arrays into calib/holdout (stratified when ``y`` is given).

        ``x`` is either float samples of ``spec.sample_shape`` or uint8 BGR frames (N, H, W[, C]);
        uint8 frames are always preprocessed with ``spec``.
        """
        _check_fraction(holdout)
        x = np.asarray(x)
        if x.dtype == np.uint8:  # camera frames: always through the one preprocess
            x = np.stack([preprocess(f, spec) for f in x]).astype(np.float32) if len(x) else x
        x = _samples(x, tuple(spec.sample_shape), "x")
        if y is not None:
            y = _labels(y, len(x), "y")
        calib, hold = split_holdout(None if y is None else y.tolist(), len(x), holdout, np.random.default_rng(seed))
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "spec": spec.to_dict(), "labels": labels,
                "options": {"holdout": holdout, "seed": seed}, "sources": [{"source": "arrays", "kind": "array"}]}
        return cls(spec, x[calib], x[hold], y_calib=None if y is None else y[calib],
                   y_holdout=None if y is None else y[hold], labels=labels, meta=meta)

    # ---- access -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.x_calib) + len(self.x_holdout)

    def __repr__(self) -> str:
        return (f"RepresentativeDataset(calib={len(self.x_calib)}, holdout={len(self.x_holdout)}, "
                f"shape={self.spec.sample_shape}, labels={len(self.labels) if self.labels else None})")

    def split(self, name: str = "calib") -> tuple[np.ndarray, np.ndarray | None]:
        """``(x, y)`` of "calib", "holdout" or "all" (calib then holdout)."""
        if name == "calib":
            return self.x_calib, self.y_calib
        if name == "holdout":
            return self.x_holdout, self.y_holdout
        if name == "all":
            y = None if self.y_calib is None else np.concatenate([self.y_calib, self.y_holdout])
            return np.concatenate([self.x_calib, self.x_holdout]), y
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")

    @property
    def sha256(self) -> str:
        """Content hash of the samples, labels and InputSpec (what manifests record)."""
        h = hashlib.sha256()
        h.update(self.spec.to_json().encode())
        h.update(json.dumps(self.labels).encode())
        for a in (self.x_calib, self.x_holdout, self.y_calib, self.y_holdout):
            if a is None:
                h.update(b"none")
            else:
                h.update(str((a.dtype.str, a.shape)).encode())
                h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    # ---- converters' formats --------------------------------------------------------------------
    def to_tflite(self, split: str = "calib", limit: int | None = None) -> Callable[[], Iterator[list[np.ndarray]]]:
        """A generator factory for ``TFLiteConverter.representative_dataset``.

        Each item is a list holding one float32 array of batch 1, ``(1, *spec.sample_shape)``.
        """
        x, _ = self.split(split)
        x = x[:limit] if limit is not None else x

        def representative_dataset() -> Iterator[list[np.ndarray]]:
            for sample in x:
                yield [np.ascontiguousarray(sample[None], dtype=np.float32)]

        return representative_dataset

    def to_nncf(self, split: str = "calib", limit: int | None = None, on_sample: Any = None):
        """An ``nncf.Dataset`` of float32 batch-1 inputs (for ``nncf.quantize`` on an OpenVINO model);
        ``on_sample()`` is called for every sample NNCF takes (a progress bar)."""
        from ..formats.openvino import no_telemetry

        no_telemetry()  # nncf imports OpenVINO, whose telemetry phones home unless stubbed out first
        import nncf

        x, _ = self.split(split)
        x = x[:limit] if limit is not None else x
        samples = [np.ascontiguousarray(s[None], dtype=np.float32) for s in x]
        if on_sample is None:
            return nncf.Dataset(samples)

        def counted(item: np.ndarray) -> np.ndarray:
            on_sample()
            return item

        return nncf.Dataset(samples, counted)

    # ---- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the dataset atomically as an .npz (metadata as a JSON string, no pickles)."""
        path = Path(path)
        meta = dict(self.meta)
        meta.update(format=FORMAT, version=FORMAT_VERSION, spec=self.spec.to_dict(), labels=self.labels,
                    sha256=self.sha256)
        arrays = {"x_calib": self.x_calib, "x_holdout": self.x_holdout,
                  "meta": np.asarray(json.dumps(to_jsonable(meta), sort_keys=True))}
        if self.y_calib is not None:
            arrays.update(y_calib=self.y_calib, y_holdout=self.y_holdout)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        self.meta = meta
        log.info("wrote %s (%d calib, %d holdout samples)", path, len(self.x_calib), len(self.x_holdout))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RepresentativeDataset":
        """Read a dataset written by :meth:`save`; the content hash is checked."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"calibration file {path} does not exist")
        check_npz_magic(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (ValueError, OSError, EOFError, AttributeError, zipfile.BadZipFile) as e:
            raise CalibrationError(f"{path} is not a readable .npz calibration file ({type(e).__name__}: {e}); "
                                   "a truncated copy? Make it again with `edgeship calibrate`") from None
        missing = {"x_calib", "x_holdout", "meta"} - set(arrays)
        if missing:
            raise CalibrationError(
                f"{path} is not an edgeship calibration file (missing {sorted(missing)}); turn a plain array of frames "
                f"into one with `edgeship calibrate {path} --input-size HxW --out calib.npz`")
        meta = read_meta(arrays["meta"], path)
        if meta.get("format") != FORMAT:
            raise CalibrationError(f"{path}: expected format {FORMAT!r}, found {meta.get('format')!r}")
        try:
            spec = InputSpec.from_dict(meta["spec"])
        except (KeyError, TypeError, ValueError, EdgeshipError) as e:
            raise CalibrationError(f"{path}: its InputSpec (meta.spec) is not valid: {e}; make it again with "
                                   "`edgeship calibrate`") from None
        ds = cls(spec, arrays["x_calib"], arrays["x_holdout"],
                 y_calib=arrays.get("y_calib"), y_holdout=arrays.get("y_holdout"), labels=meta.get("labels"), meta=meta)
        if meta.get("sha256") and meta["sha256"] != ds.sha256:
            raise CalibrationError(f"{path} is corrupt: content hash {ds.sha256[:12]} does not match the stored {meta['sha256'][:12]}")
        return ds


NPZ_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive (an empty one too)
NPY_MAGIC = b"\x93NUMPY"


def check_npz_magic(path: Path, *, npy_ok: bool = False) -> None:
    """Refuse a file that is not a NumPy archive before NumPy reads it (it takes anything else for a pickle)."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    if head.startswith(NPZ_MAGIC) or (npy_ok and head.startswith(NPY_MAGIC)):
        return
    kind = "empty" if not head else ("text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "binary data")
    raise CalibrationError(f"{path} is not a NumPy .npz{'/.npy' if npy_ok else ''} archive (it holds {kind}); "
                           "make a calibration set with `edgeship calibrate`")


def read_meta(value: np.ndarray, path: Path) -> dict:
    """The ``meta`` entry of an edgeship .npz (JSON text), or one CalibrationError naming the file."""
    try:
        meta = json.loads(str(value))
    except ValueError as e:
        raise CalibrationError(f"{path}: its metadata (meta) is not valid JSON ({e}); make it again with "
                               "`edgeship calibrate`") from None
    if not isinstance(meta, dict):
        raise CalibrationError(f"{path}: its metadata (meta) is not a JSON object; make it again with `edgeship calibrate`")
    return meta


def _check_fraction(holdout: float) -> None:
    if not 0.0 <= float(holdout) < 1.0:
        raise InputError(f"holdout must be a fraction in [0, 1), got {holdout}")


def _samples(x: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise SpecError(f"{name}: expected samples of shape (N, {', '.join(map(str, shape))}), found {tuple(x.shape)}")
    if not (np.issubdtype(x.dtype, np.floating) or x.dtype == np.uint8):
        raise SpecError(f"{name}: expected float32 samples, found {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = int(np.count_nonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))) if x.size else 0
    if bad:
        raise SpecError(f"{name}: {bad} of {len(x)} samples hold NaN or infinite values; a calibration set needs real "
                        "pixel values")
    return x


def _labels(y: np.ndarray, n: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{name}: expected {n} integer class indices, found {y.dtype} {tuple(y.shape)}")
    return y.astype(np.int64)
