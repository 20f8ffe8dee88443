"""The building blocks of every plugin's config model: strict models, checked paths, scores, ports.

Each app, event sink and reject output owns its pydantic model next to its code (``Config`` on
the class) and is built from it by ``PluginClass(**cfg.options())``: config keys *are* constructor
keywords, so there is no renaming layer. :mod:`edgeship.runtime.config` assembles the deploy
config's discriminated unions from the plugin registries.

Paths resolve against the config file's folder (passed as the validation context's ``base``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Callable

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from ..errors import ConfigError


class Strict(BaseModel):
    """Unknown keys are errors; a validated config is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def options(self) -> dict[str, Any]:
        """The constructor keywords of the plugin this config builds (every field but ``type``)."""
        return {k: getattr(self, k) for k in type(self).model_fields if k != "type"}


def checked(check: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a constructor-side check so its ConfigError becomes a pydantic error (one home per rule)."""

    def run(*args: Any) -> Any:
        try:
            return check(*args)
        except ConfigError as e:
            raise ValueError(str(e)) from None

    return run


def _base(info: ValidationInfo) -> Path:
    return Path((info.context or {}).get("base", "."))


def resolve_path(p: Path, info: ValidationInfo) -> Path:
    """``p`` with ``~`` expanded, relative to the config file's folder."""
    p = Path(os.path.expanduser(str(p)))
    return p if p.is_absolute() else (_base(info) / p).resolve()


def _existing_file(p: Path, info: ValidationInfo) -> Path:
    p = resolve_path(p, info)
    if not p.is_file():
        raise ValueError(f"file not found: {p}")
    return p


def _queue_file(p: Path, info: ValidationInfo) -> Path:
    p = resolve_path(p, info)
    if p.is_dir():
        raise ValueError(f"{p} is a folder; expected a file name for the SQLite event queue")
    return p


def _broker(v: str) -> str:
    from .apps.mqtt import parse_mqtt_url

    checked(parse_mqtt_url)(v)
    return v


InFile = Annotated[Path, AfterValidator(_existing_file)]
OutPath = Annotated[Path, AfterValidator(resolve_path)]
QueueFile = Annotated[Path, AfterValidator(_queue_file)]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
Port = Annotated[int, Field(ge=0, le=65535)]
Broker = Annotated[str, AfterValidator(_broker)]  # HOST[:PORT] or mqtt://HOST[:PORT]


def tagged_union(classes: Any) -> Any:
    """A ``type``-discriminated union of the ``Config`` models of a plugin registry's classes."""
    from typing import Union

    configs = tuple(c.Config for c in classes)
    return Annotated[Union[configs], Field(discriminator="type")]  # type: ignore[valid-type]


def tags(classes: Any) -> set[str]:
    """The ``type`` tags of a plugin registry (what a config's key path leaves out)."""
    from typing import get_args

    return {get_args(c.Config.model_fields["type"].annotation)[0] for c in classes}
