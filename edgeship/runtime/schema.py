"""The building blocks of every plugin's config model: strict models, checked paths, scores, ports.

Each app, event sink and reject output owns its pydantic model next to its code (``Config`` on
the class) and is built from it by ``PluginClass(**cfg.options())``: config keys *are* constructor
keywords, so there is no renaming layer. :mod:`edgeship.runtime.config` assembles the deploy
config's discriminated unions from the plugin registries.

Inputs resolve against the config file's folder (the validation context's ``base``); outputs
resolve there too, or under a release's data folder (the context's ``data``): see
:mod:`edgeship.runtime.places`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Callable

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo

from ..errors import ConfigError
from .places import DEVICE_PREFIX, device_path, output_path, split_device


class Strict(BaseModel):
    """Unknown keys are errors; a validated config is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # no NaN or infinite numbers

    def options(self) -> dict[str, Any]:
        """The constructor keywords of the plugin this config builds (every field but ``type``)."""
        return {k: getattr(self, k) for k in type(self).model_fields if k != "type"}


def default_of(model: type[BaseModel], name: str) -> Any:
    """The default of ``model``'s field ``name`` (a list as a tuple, for frozen dataclasses): a plugin's dataclass
    takes its defaults from its config model, where each is written once."""
    value = model.model_fields[name].get_default(call_default_factory=True)
    return tuple(value) if isinstance(value, list) else value


def config_defaults(model: type[BaseModel] | None = None) -> Callable[[type], type]:
    """Class decorator: every constructor keyword named like a field of ``model`` (default: the class's own
    ``Config``), written without a default and left out by the caller, gets that field's default. The
    constructor writes no default of its own, so a plugin's defaults live in its config model only, for a
    config file and for Python alike (a keyword that takes built objects rather than the config's values,
    such as the security app's ``zones``, keeps its own)."""
    import copy
    import functools
    import inspect

    def wrap(cls: type) -> type:
        cfg = model or cls.Config
        init = cls.__init__
        sig = inspect.signature(init)
        filled = [n for n, prm in sig.parameters.items() if n in cfg.model_fields and n != "type"
                  and prm.default is inspect.Parameter.empty and not cfg.model_fields[n].is_required()]

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kw: Any) -> None:
            given = sig.bind_partial(self, *args, **kw).arguments
            for n in filled:
                if n not in given:
                    kw[n] = copy.deepcopy(cfg.model_fields[n].get_default(call_default_factory=True))
            init(self, *args, **kw)

        cls.__init__ = __init__
        cls.config_model = cfg
        return cls

    return wrap


def checked(check: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a constructor-side check so its ConfigError becomes a pydantic error (one home per rule)."""

    def run(*args: Any) -> Any:
        try:
            return check(*args)
        except ConfigError as e:
            raise ValueError(str(e)) from None

    return run


def problem(err: dict) -> str:
    """One pydantic error as the text after a key path: ``required key is missing``, ``unknown key``..."""
    kind, msg = err.get("type", ""), str(err.get("msg", ""))
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        return f"type must be one of {ctx.get('expected_tags', '')}, got {ctx.get('tag', err.get('input'))!r}"
    if kind == "union_tag_not_found":
        return "needs a 'type' key"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if kind not in ("value_error",) and "input" in err and not isinstance(err["input"], (dict, list)):
        msg += f", got {err['input']!r}"
    return msg


def validated(model: type[Strict], where: str, **values: Any) -> Strict:
    """``model(**values)``, its first problem a one-line ConfigError: a plugin built from Python gets the
    same checks as one built from a config file (each constraint is written once, in the model)."""
    try:
        return model(**values)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        raise ConfigError(f"{where}: {loc + ': ' if loc else ''}{problem(err)}") from None


def _base(info: ValidationInfo) -> Path:
    return Path((info.context or {}).get("base", "."))


def resolve_path(p: Path, info: ValidationInfo) -> Path:
    """``p`` with ``~`` expanded, relative to the config file's folder."""
    p = Path(os.path.expanduser(str(p)))
    return p if p.is_absolute() else (_base(info) / p).resolve()


def resolve_output(p: Path, info: ValidationInfo) -> Path:
    """An output path: absolute as given, relative against the config's folder, or, for a config in
    a release, under the device's data folder (never inside ``releases/``)."""
    ctx = info.context or {}
    return output_path(p, base=ctx.get("base", "."), data=ctx.get("data"))


def _existing_file(p: Path, info: ValidationInfo) -> Path:
    p = resolve_path(p, info)
    if not p.is_file():
        raise ValueError(f"file not found: {p}")
    return p


def _output_file(p: Path, info: ValidationInfo) -> Path:
    p = resolve_output(p, info)
    if p.is_dir():
        raise ValueError(f"{p} is a folder; expected a file name")
    return p


def check_http_url(url: str, what: str = "url") -> str:
    """A webhook or reject-output address: http:// or https:// (one-line ConfigError)."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{what} must start with http:// or https://, got {url!r}")
    return url


def on_device_or_here(v: str, info: ValidationInfo, what: str) -> str | None:
    """A ``device:PATH`` kept as written for a bundle (``for_device``), else the path it names here; None when ``v``
    is not a device path."""
    ctx = info.context or {}
    on_device, text = split_device(v)
    if not on_device:
        return None
    if not text:
        raise ValueError(f"{DEVICE_PREFIX} needs a path on the device, e.g. {DEVICE_PREFIX}{what}")
    if ctx.get("for_device"):
        return v
    p = device_path(text, base=ctx.get("base", "."), data=ctx.get("data"))
    if not p.exists():
        raise ValueError(f"file not found on this device: {p}")
    return str(p)


class DevicePath(str):
    """A ``device:PATH`` value of a config validated for a bundle: a file the release reads on the device (the
    flash preflight checks it is there, :func:`device_files`)."""


def device_files(value: Any) -> set[str]:
    """The paths of every :class:`DevicePath` in a validated config (models, lists and dicts walked)."""
    if isinstance(value, DevicePath):
        return {split_device(value)[1]}
    if isinstance(value, BaseModel):
        return set().union(set(), *(device_files(getattr(value, k)) for k in type(value).model_fields))
    if isinstance(value, dict):
        return set().union(set(), *(device_files(v) for v in value.values()))
    if isinstance(value, (list, tuple)):
        return set().union(set(), *(device_files(v) for v in value))
    return set()


def _device_only_file(v: str, info: ValidationInfo) -> str:
    """A file that stays on the device (a TLS key): ``device:PATH`` in a bundle, any existing file when run here."""
    here = on_device_or_here(v, info, "/etc/edgeship/tls/key.pem")
    if here is not None:
        return DevicePath(here) if (info.context or {}).get("for_device") else here
    if (info.context or {}).get("for_device"):
        raise ValueError(f"{v} would travel in the bundle: put it on the device and write {DEVICE_PREFIX}PATH")
    p = resolve_path(Path(v), info)
    if not p.is_file():
        raise ValueError(f"file not found: {p}")
    return str(p)


# a file that stays on the device (a TLS key): device:PATH in a bundle, any existing file when run here
DeviceOnlyFile = Annotated[str, AfterValidator(_device_only_file)]
InFile = Annotated[Path, AfterValidator(_existing_file)]
OutPath = Annotated[Path, AfterValidator(resolve_output)]
OutFile = Annotated[Path, AfterValidator(_output_file)]  # an output file (not a folder): counters, event files, queues
QueueFile = OutFile
Score = Annotated[float, Field(ge=0.0, le=1.0)]
Port = Annotated[int, Field(ge=0, le=65535)]
HttpUrl = Annotated[str, AfterValidator(lambda v: checked(check_http_url)(v))]


def tagged_union(classes: Any) -> Any:
    """A ``type``-discriminated union of the ``Config`` models of a plugin registry's classes."""
    from typing import Union

    configs = tuple(c.Config for c in classes)
    return Annotated[Union[configs], Field(discriminator="type")]  # type: ignore[valid-type]


def tags(classes: Any) -> set[str]:
    """The ``type`` tags of a plugin registry (what a config's key path leaves out)."""
    from typing import get_args

    return {get_args(c.Config.model_fields["type"].annotation)[0] for c in classes}
