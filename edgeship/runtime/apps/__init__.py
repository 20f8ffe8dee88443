"""Use-case apps on the runtime: security zones and events, industrial inspection, robot feed.

An app is a pipeline sink (``open / write / close``) that may bring gates (motion, triggers) and
HTTP routes, and reports ``status()`` for the dashboard. :data:`APPS` maps the config's
``app.type`` to the app class; the class owns its config model (``Config``, next to its code) and
builds itself from it (``from_config``). :mod:`edgeship.runtime.config` assembles the deploy
config's ``app:`` union from this registry.
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError


# registry: the config's ``app.type`` -> "module:Class"; each class owns its ``Config`` model and
# ``from_config``; imported when a config is validated or an app is built
APPS: dict[str, str] = {
    "security": "security:SecurityApp",
    "industrial": "industrial:IndustrialApp",
    "robot": "robot:RobotApp",
}


def app_class(kind: str) -> Any:
    """The app class registered for ``app.type`` ``kind``."""
    import importlib

    try:
        module, _, cls = APPS[kind].partition(":")
    except KeyError:
        raise ConfigError(f"unknown app {kind!r}; expected one of {', '.join(APPS)}") from None
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def app_classes() -> list[Any]:
    return [app_class(k) for k in APPS]


_EXPORTS = {
    "run_config": "deploy", "build_deployment": "deploy", "SecurityApp": "security", "IndustrialApp": "industrial",
    "RobotApp": "robot", "Zone": "zones", "PassRule": "industrial", "DashboardSink": "dashboard",
    "Line": "lines", "Tracker": "tracking",
}


def __getattr__(name: str) -> Any:
    """Lazy access to the public classes (``from edgeship.runtime.apps import run_config``)."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_app(cfg) -> Any:
    """The app for a validated ``app:`` section."""
    return app_class(cfg.type).from_config(cfg)
