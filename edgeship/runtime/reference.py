"""The deploy-config reference, generated from the config models (their fields, types, defaults,
bounds and ``Field(description=...)``): one home for what every key means.

    python -m edgeship.runtime.reference > docs/deploy-config.md

A test checks that ``docs/deploy-config.md`` is what this prints, so the reference cannot drift
from the models the runtime validates with.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo

HEADER = """# Deploy config reference

Generated from the config models by `python -m edgeship.runtime.reference` (a test checks this file
is current). A deployment is one YAML or TOML file; unknown keys, wrong types and numbers out of
range are refused with one line naming the key. Paths: see "Paths in a deploy config mean one thing"
in the README (workstation files travel in the bundle, `device:PATH` is a file on the device,
relative outputs of a release are written under `DEVICE_ROOT/data`).
"""


def _type_name(t: Any) -> str:
    """A field's type as a reader of the YAML needs it."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (Union, types.UnionType):
        real = [a for a in args if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in real)
        return inner if len(real) == len(args) else f"{inner} (or null)"
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (list, tuple, typing.Sequence):
        return f"list of {_type_name(args[0]) if args else 'values'}"
    if origin is dict:
        return "mapping"
    if isinstance(t, type) and issubclass(t, BaseModel):
        return "section"
    names = {str: "text", int: "integer", float: "number", bool: "true/false"}
    if t in names:
        return names[t]
    name = getattr(t, "__name__", str(t))
    return {"Path": "path", "PosixPath": "path", "Any": "any"}.get(name, name)


def _bounds(f: FieldInfo) -> str:
    out = []
    for m in f.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >=")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym} {v:g}" if isinstance(v, float) else f"{sym} {v}")
    return ", ".join(out)


def _default(f: FieldInfo) -> str:
    if f.is_required():
        return "**required**"
    v = f.get_default(call_default_factory=True)
    if isinstance(v, BaseModel):
        return "(section defaults)"
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"`{v}`" if v not in ([], {}, ()) else f"`{v}`"


def _models(t: Any) -> list[type[BaseModel]]:
    """The config models inside a field's type (a section, a list of sections, a union of them)."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if isinstance(t, type) and issubclass(t, BaseModel):
        return [t]
    return [m for a in args for m in _models(a)] if origin is not None else []


def _tag(model: type[BaseModel]) -> str | None:
    f = model.model_fields.get("type")
    if f is None:
        return None
    args = typing.get_args(f.annotation)
    return str(args[0]) if args else None


def _section(model: type[BaseModel], path: str, out: list[str]) -> list[tuple[type[BaseModel], str]]:
    """One model's table; returns the sections nested in it."""
    doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
    out += ["", f"## `{path or '(top level)'}`" + (f": {doc}" if doc else ""), "",
            "| key | type | default | bounds | what it is |", "|---|---|---|---|---|"]
    nested: list[tuple[type[BaseModel], str]] = []
    for name, f in model.model_fields.items():
        desc = "selects this kind" if name == "type" else " ".join((f.description or "").split())
        out.append(f"| `{name}` | {_type_name(f.annotation)} | {_default(f)} | {_bounds(f)} | {desc} |")
        for m in _models(f.annotation):
            list_of = "list" in _type_name(f.annotation)
            key = f"{path + '.' if path else ''}{name}{'[]' if list_of else ''}"
            tag = _tag(m)
            nested.append((m, f"{key} (type: {tag})" if tag else key))
    return nested


def _sections(root: type[BaseModel], out: list[str]) -> None:
    """Every section, breadth first: a model met again (``cameras[].app`` is ``app``) points to its first table."""
    home: dict[type[BaseModel], str] = {}
    queue: list[tuple[type[BaseModel], str]] = [(root, "")]
    while queue:
        model, path = queue.pop(0)
        if model in home:
            out += ["", f"## `{path}`", "", f"The same keys as `{home[model]}`."]
            continue
        home[model] = path
        queue += _section(model, path, out)


def config_reference() -> str:
    """The whole deploy-config reference as Markdown."""
    from .config import DeployConfig

    out = [HEADER.rstrip()]
    _sections(DeployConfig, out)
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.stdout.write(config_reference())
