"""Artifact formats: the one table of what each format is, and where its code lives.

    name      suffix   files             precisions                          backend (runtime)
    tflite    .tflite  .tflite           fp32 fp16 dynamic int16x8 int8      LiteRT (ai-edge-litert)
    openvino  .xml     .xml + .bin       fp32 fp16 dynamic int8              OpenVINO (also opens .onnx)

Every fact about a format is written here or in its module (``formats/tflite.py``,
``formats/openvino.py``): suffix and companion files, precisions, how the file is opened and its
tensors read (names, shapes, dtypes, quantization), the precision a float artifact must run in, and
which runtime backend opens it. Nothing else in edgeship names a suffix or branches on a format
name; it asks this table. This package is the bottom of the house: it imports no other edgeship
layer (converters register their builders in :mod:`edgeship.converters.builders`, the runtime its
backends in :mod:`edgeship.runtime.backends`). A new format is one module, one row and one builder.

The table imports nothing heavy: the device runtime reads it without TensorFlow.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from ..errors import ModelError
from .tensors import TensorInfo

__all__ = ["Format", "FORMATS", "TensorInfo", "get", "for_path", "resolve", "names", "is_artifact",
           "artifact_suffixes", "backend_names"]


@dataclass(frozen=True)
class Format:
    """One artifact format (a row of :data:`FORMATS`)."""

    name: str  # the manifest's ``format`` and the backend registry key
    title: str  # for messages
    suffix: str  # the artifact file edgeship writes
    companions: tuple[str, ...]  # files that sit beside it with the same stem (an IR's .bin)
    precisions: tuple[str, ...]  # what convert can produce
    module: str  # the format's module (opening the file, reading its tensors)
    backend: str  # "module:Class" of the runtime backend
    aliases: tuple[str, ...] = ()  # other names users may type (--backend litert)
    also_opens: tuple[str, ...] = ()  # further suffixes the backend reads (not written by convert)

    def impl(self) -> ModuleType:
        """The format's module (imports nothing heavy until one of its functions runs)."""
        return importlib.import_module(self.module)

    def files(self, path: str | os.PathLike) -> list[Path]:
        """The artifact file first, then its companions (for ``model.xml``: ``model.xml``, ``model.bin``)."""
        p = Path(path)
        return [p] + [p.with_suffix(s) for s in self.companions if p.suffix.lower() == self.suffix]

    def missing_files(self, path: str | os.PathLike) -> list[Path]:
        return [f for f in self.files(path) if not f.is_file()]

    def path(self, folder: str | os.PathLike, stem: str) -> Path:
        return Path(folder) / f"{stem}{self.suffix}"

    @property
    def suffixes(self) -> tuple[str, ...]:
        return (self.suffix,) + self.also_opens

    def read_tensors(self, path: str | os.PathLike) -> tuple[list[TensorInfo], list[TensorInfo]]:
        """Inputs and outputs of the artifact at ``path`` (in the order the converter wrote them)."""
        return self.impl().read_tensors(Path(path))

    def check_files(self, path: str | os.PathLike) -> None:
        missing = self.missing_files(path)
        if missing:
            raise ModelError(f"{self.title} artifact {path} is incomplete: {', '.join(str(m) for m in missing)} missing")


# ---- the table ----------------------------------------------------------------------------------------
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("tflite", "TFLite", ".tflite", (), ("fp32", "fp16", "dynamic", "int16x8", "int8"), "edgeship.formats.tflite",
               "edgeship.runtime.backends.litert:LiteRTBackend", aliases=("litert",)),
        Format("openvino", "OpenVINO IR", ".xml", (".bin",), ("fp32", "fp16", "dynamic", "int8"), "edgeship.formats.openvino",
               "edgeship.runtime.backends.openvino:OpenVINOBackend", aliases=("ov",), also_opens=(".onnx",)),
    )
}


def names() -> tuple[str, ...]:
    return tuple(FORMATS)


def all_precisions() -> tuple[str, ...]:
    """Every precision some format can produce, in table order."""
    return tuple(dict.fromkeys(p for f in FORMATS.values() for p in f.precisions))


def backend_names() -> tuple[str, ...]:
    """Every name ``--backend`` accepts (format names and their aliases)."""
    return tuple(n for f in FORMATS.values() for n in (f.name, *f.aliases))


def artifact_suffixes() -> tuple[str, ...]:
    """Every suffix some format's backend opens (``.tflite``, ``.xml``, ``.onnx``)."""
    return tuple(s for f in FORMATS.values() for s in f.suffixes)


def describe_suffixes() -> str:
    """``.tflite or .xml`` for messages: the files edgeship writes."""
    return " or ".join(f.suffix for f in FORMATS.values())


def get(name: str) -> Format:
    """The format called ``name`` (or one of its aliases)."""
    key = str(name).lower()
    for f in FORMATS.values():
        if key == f.name or key in f.aliases:
            return f
    raise ModelError(f"unknown format {name!r}; expected one of {', '.join(backend_names())}")


def for_path(path: str | os.PathLike) -> Format | None:
    """The format a file's suffix says, or None."""
    suffix = Path(path).suffix.lower()
    return next((f for f in FORMATS.values() if suffix in f.suffixes), None)


def is_artifact(path: str | os.PathLike) -> bool:
    return for_path(path) is not None


def resolve(path: str | os.PathLike, manifest: Any = None, explicit: str | None = None) -> Format:
    """Which format ``path`` is: the explicit choice, else the manifest's ``format``, else the suffix."""
    if explicit:
        return get(explicit)
    if manifest is not None and getattr(manifest, "format", None) in FORMATS:
        return FORMATS[manifest.format]
    fmt = for_path(path)
    if fmt is None:
        raise ModelError(
            f"cannot tell the format of {path}: expected a file ending in {', '.join(artifact_suffixes())} "
            f"or a manifest next to it, got suffix {Path(path).suffix or '(none)'!r}"
        )
    return fmt


def check_precision(fmt: Format, precision: str) -> None:
    from ..errors import InputError

    if precision not in fmt.precisions:
        raise InputError(f"precision {precision!r} is not available for {fmt.name}; expected one of {', '.join(fmt.precisions)}")


def validate_formats(requested: Sequence[str], precision: str) -> list[Format]:
    """The formats of one convert call, checked: known, not repeated, and able to produce ``precision``."""
    from ..errors import InputError

    if not requested:
        raise InputError("no output format given; expected one or more of " + ", ".join(FORMATS))
    out = []
    for name in requested:
        if str(name).lower() not in FORMATS:
            raise InputError(f"unknown format {name!r}; expected one of {', '.join(FORMATS)}")
        fmt = FORMATS[str(name).lower()]
        check_precision(fmt, precision)
        out.append(fmt)
    if len({f.name for f in out}) != len(out):
        raise InputError(f"format given twice: {list(requested)}")
    return out
