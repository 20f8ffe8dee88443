"""Use-case apps on the runtime: security zones and events, industrial inspection, robot feed.

An app is a pipeline sink (``open / write / close``) that may bring gates (motion, triggers) and
HTTP routes, and reports ``status()`` for the dashboard. :data:`APPS` maps the config's
``app.type`` to a builder taking the validated app config (:mod:`edgeship.runtime.config`).
"""

from __future__ import annotations

from typing import Any, Callable

from ...errors import ConfigError


def _event_sinks(cfgs) -> list[Any]:
    from .events import make_event_sink

    return [make_event_sink(c.type, **_plugin_options(c)) for c in cfgs]


def _plugin_options(cfg) -> dict[str, Any]:
    """Constructor keywords of an event sink or reject output from its config entry.

    ``broker: HOST:PORT`` becomes ``host``/``port``; ``timeout_s`` becomes ``timeout``.
    """
    from .mqtt import parse_mqtt_url

    opts = cfg.model_dump(exclude={"type"})
    if "broker" in opts:
        opts["host"], opts["port"] = parse_mqtt_url(opts.pop("broker"))
    if "timeout_s" in opts:
        opts["timeout"] = opts.pop("timeout_s")
    return opts


def _shape_options(cfg) -> dict[str, Any]:
    """A zone or line config entry as constructor keywords (``normalized`` decided when not given)."""
    d = cfg.model_dump()
    if d["normalized"] is None:
        d["normalized"] = all(0.0 <= v <= 1.0 for p in d["points"] for v in p)
    return {**d, "classes": tuple(d["classes"])}


def build_security(cfg) -> Any:
    from .lines import Line
    from .security import SecurityApp
    from .tracking import tracker_from_options
    from .zones import Zone

    tracker = tracker_from_options(cfg.tracker.model_dump())
    return SecurityApp(
        [Zone(**_shape_options(z)) for z in cfg.zones], lines=[Line(**_shape_options(ln)) for ln in cfg.lines],
        tracker=tracker if tracker is not None else False,
        event_sinks=_event_sinks(cfg.events), camera=cfg.camera,
        snapshot_dir=cfg.snapshots.dir if cfg.snapshots else None,
        snapshot_quota_mb=cfg.snapshots.quota_mb if cfg.snapshots else 200.0,
        motion=cfg.motion.model_dump() if cfg.motion else None,
    )


def build_industrial(cfg) -> Any:
    from .industrial import IndustrialApp, PassRule
    from .mqtt import parse_mqtt_url
    from .outputs import make_output
    from .triggers import TRIGGERS

    t = cfg.trigger
    if t.mode == "interval":
        trigger = TRIGGERS["interval"](t.interval_ms)
    elif t.mode == "external":
        mqtt = None
        if t.mqtt is not None:
            host, port = parse_mqtt_url(t.mqtt.broker)
            mqtt = {"host": host, "port": port, "topic": t.mqtt.topic}
        trigger = TRIGGERS["external"](mqtt=mqtt)
    else:
        trigger = TRIGGERS["frame"]()
    outputs = [make_output(o.type, **_plugin_options(o)) for o in cfg.outputs]
    i = cfg.inspect
    rule = PassRule(tuple(i.pass_classes), tuple(i.fail_classes), i.min_score, dict(i.class_thresholds),
                    i.uncertain, i.fail_above)
    return IndustrialApp(rule, counters_db=cfg.counters, trigger=trigger, outputs=outputs,
                         reject_dir=cfg.rejects.dir if cfg.rejects else None,
                         reject_quota_mb=cfg.rejects.quota_mb if cfg.rejects else 500.0,
                         event_sinks=_event_sinks(cfg.events))


def build_robot(cfg) -> Any:
    from .robot import RobotApp

    return RobotApp(rate_hz=cfg.rate_hz, stale_ms=cfg.stale_ms, udp=list(cfg.udp))


# registry: app type -> builder(validated app config) -> app
APPS: dict[str, Callable[[Any], Any]] = {
    "security": build_security,
    "industrial": build_industrial,
    "robot": build_robot,
}

# per-app defaults the deployment applies when the config does not say
DEFAULTS: dict[str, dict[str, Any]] = {
    "security": {"realtime": False, "annotate": True},
    "industrial": {"realtime": False, "annotate": True},
    "robot": {"realtime": True, "annotate": False},  # one-slot live buffer, no drawing, no snapshots
}


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
    try:
        return APPS[cfg.type](cfg)
    except KeyError:
        raise ConfigError(f"unknown app {cfg.type!r}; expected one of {', '.join(APPS)}") from None
