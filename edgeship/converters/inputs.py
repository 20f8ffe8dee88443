"""What convert() starts from: the model, the calibration set, the InputSpec, labels, task, fine-tune data.

Each function checks its input against the others and raises an :mod:`edgeship.errors` error that
names the file or value, what was expected and what was found.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, SpecError
from ..fileio import sha256_file
from ..spec import InputSpec, shape_to_hwc
from . import keras_io

log = logging.getLogger(__name__)


def load_source(model: Any) -> tuple[Any, dict[str, Any]]:
    """The model object and a description for the manifest (path, flavor, sha256)."""
    obj = keras_io.load_keras_model(model)
    flavor = keras_io.model_flavor(obj)
    if flavor != "saved_model":
        keras_io.check_graph_model(obj, "convert")
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        return obj, {"path": str(path.resolve()), "name": path.stem if path.is_file() else path.name, "flavor": flavor,
                     "sha256": sha256_file(path)}
    return obj, {"path": None, "name": getattr(obj, "name", "model"), "flavor": flavor, "sha256": _model_sha256(obj)}


def _model_sha256(model: Any) -> str:
    """Hash of an in-memory model: architecture JSON plus every weight array."""
    h = hashlib.sha256(model.to_json().encode())
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def load_calibration(calib: Any) -> Any:
    if calib is None:
        return None
    from ..calibration import RepresentativeDataset

    if isinstance(calib, RepresentativeDataset):
        return calib
    if isinstance(calib, (str, os.PathLike)):
        return RepresentativeDataset.load(calib)
    raise InputError(f"calib must be a RepresentativeDataset or a path to calib.npz, got {type(calib).__name__}")


def resolve_spec(model: Any, dataset: Any, spec: InputSpec | None, size: tuple[int, int] | None,
                 overrides: dict[str, Any] | None = None) -> InputSpec:
    """The InputSpec: from the calibration set, else ``spec``, else the model's input (+ ``size``), with
    ``overrides`` (the InputSpec flags) on top; checked against the model. A calibration set's spec is
    what the samples were made with: flags that contradict it are an error."""
    from dataclasses import replace

    overrides = dict(overrides or {})
    shape = keras_io.input_shape(model)
    if dataset is not None:
        if spec is not None and spec != dataset.spec:
            raise SpecError(f"the InputSpec given ({spec.to_json()}) differs from the calibration set's ({dataset.spec.to_json()})")
        spec = dataset.spec
        wanted = replace(spec, **overrides)
        if wanted != spec:
            raise SpecError(f"the InputSpec flags ({', '.join(f'{k}={v}' for k, v in overrides.items())}) differ from the "
                            f"calibration set's {spec.to_json()}: make the set again with them (edgeship calibrate)")
        if size is not None and tuple(size) != spec.size:
            raise SpecError(f"--input-size {size[0]}x{size[1]} differs from the calibration set's {spec.height}x{spec.width}")
    elif spec is None:
        spec = spec_from_model(model, size, **overrides)
        if not overrides:
            log.warning("no --calib and no InputSpec flags: the manifest says RGB, pixels x 1/255, mean 0, std 1; if the "
                        "model was trained otherwise (e.g. [-1, 1] or ImageNet mean/std) pass --scale/--mean/--std/--color-order")
    else:
        spec = replace(spec, **overrides)
        if size is not None and tuple(size) != spec.size:
            spec = spec.with_size(*size)
    want = tuple(spec.sample_shape)
    have = shape[1:]
    if len(have) != len(want) or any(h is not None and h != w for h, w in zip(have, want)):
        source = "calibration set" if dataset is not None else "InputSpec"
        raise SpecError(f"the {source} has samples of shape {list(want)} but the model expects {list(shape)}")
    return spec


def spec_from_model(model: Any, size: tuple[int, int] | None = None, **overrides: Any) -> InputSpec:
    """An InputSpec with the size and channels of ``model``'s input (a Keras model or file, a .tflite or an
    OpenVINO .xml), ``size`` (H, W) for a dynamic one; other fields keep their defaults unless in ``overrides``."""
    from .. import formats

    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise SpecError(f"model {path} does not exist")
        fmt = formats.for_path(path)
        if fmt is not None:
            inputs, _ = fmt.read_tensors(path)
            if not inputs:
                raise SpecError(f"{path} has no input tensor")
            shape, where = inputs[0].shape, str(path)
        else:
            model = keras_io.load_keras_model(path)
    if not isinstance(model, (str, os.PathLike)):
        shape, where = keras_io.input_shape(model), getattr(model, "name", "model")
    h, w, c, layout = shape_to_hwc(shape, where, size)
    kw: dict[str, Any] = {"height": h, "width": w, "channels": c, "layout": layout}
    if c == 1:
        kw["color_order"] = "GRAY"
    return InputSpec(**{**kw, **overrides})


def resolve_labels(labels: Any, dataset: Any) -> list[str] | None:
    """The labels given (list or file, read by :func:`edgeship.labels.read_labels`), else the calibration set's."""
    from ..labels import resolve_labels as resolve

    return resolve(labels, dataset.labels if dataset is not None else None)


def output_roles(model: Any, dataset: Any, spec: InputSpec, overrides: Any = ()) -> tuple[list[str], list[np.ndarray]]:
    """Each output's role (:mod:`edgeship.roles`), guessed from the float model's outputs on the calibration
    samples (or random inputs in the InputSpec's range) and overridden by ``NAME=ROLE`` / ``INDEX=ROLE``;
    and those outputs."""
    from .. import roles as R

    outs = keras_io.predict(model, probe_inputs(dataset, spec, 32))
    roles = R.guess_roles(outs)
    names = [str(n) for n in (getattr(model, "output_names", None) or [])]
    names = names if len(names) == len(outs) else [f"output_{i}" for i in range(len(outs))]
    for i, role in R.parse_role_overrides(list(overrides or ()), names).items():
        roles[i] = role
    return roles, outs


def collapsing_softmax(roles: list[str], outs: list[np.ndarray]) -> list[int]:
    """Class-score outputs that int8 would collapse (most probabilities rounded to 0): they keep a float softmax."""
    from .. import roles as R

    return [i for i, (r, y) in enumerate(zip(roles, outs))
            if r == "class_scores" and R.int8_lost_mass(y, True) > R.LOST_MASS_LIMIT]


def probe_inputs(dataset: Any, spec: InputSpec, n: int) -> np.ndarray:
    """Up to ``n`` inputs to look at the float model's outputs with: calibration samples, else random
    inputs in the InputSpec's value range (seeded)."""
    if dataset is not None:
        return dataset.split("all")[0][:n]
    lo, hi = spec.value_range()
    return np.random.default_rng(0).uniform(lo, hi, (max(1, n // 4), *spec.sample_shape)).astype(np.float32)


def infer_task(roles: list[str]) -> str:
    """``classify`` when the model has one output and it holds class scores, else ``raw``."""
    return "classify" if roles == ["class_scores"] else "raw"


def finetune_data(root: Path, spec: InputSpec, labels: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
    from ..calibration import build_dataset
    from ..calibration.folder import list_images

    if not root.is_dir():
        raise InputError(f"--finetune {root} is not a folder; expected a labelled image folder root/<class>/*.png")
    n = len(list_images(root)[0])
    if n == 0:
        raise InputError(f"--finetune {root} has no images; expected root/<class>/*.png")
    ds = build_dataset([str(root)], spec=spec, count=n, holdout=0.0, dedup=False, labels=labels)
    x, y = ds.split("calib")
    if y is None:
        raise InputError(f"--finetune {root} is not labelled; expected one sub-folder per class")
    return x, y
