"""One home for each default and each set of choices (issue 26): the CLI builds its Choices, ranges and
defaults from the library; a plugin's defaults live in its config model only; the deploy-config
reference is generated from the models. Each test fails when the two places can disagree."""

from __future__ import annotations

import inspect

import click
import pytest

from edgeship.commands.convert import convert as convert_cmd
from edgeship.commands.prune import prune as prune_cmd
from edgeship.converters import channels as C
from edgeship.converters.openvino import PRESETS
from edgeship.converters.options import GateOptions, IOOptions, PruneOptions
from edgeship.converters.plan import ArtifactPlan
from edgeship.converters.prune import SCHEDULES
from edgeship.converters.structured import MAX_CYCLES, MAX_DISTILL_EPOCHS, MAX_SPEEDUP, prune_structured
from edgeship.converters.tflite import IO_TYPES


def option(cmd: click.Command, name: str) -> click.Option:
    return next(p for p in cmd.params if p.name == name)


def choices(cmd: click.Command, name: str) -> tuple[str, ...]:
    return tuple(option(cmd, name).type.choices)


def test_convert_flags_come_from_the_option_groups():
    assert choices(convert_cmd, "io") == IO_TYPES and option(convert_cmd, "io").default == IOOptions.io
    assert choices(convert_cmd, "preset") == PRESETS and option(convert_cmd, "preset").default == GateOptions.preset
    assert choices(convert_cmd, "prune_trunks") == C.TRUNK_MODES and option(convert_cmd, "prune_trunks").default == PruneOptions.trunks
    assert choices(convert_cmd, "prune_schedule") == SCHEDULES and option(convert_cmd, "prune_schedule").default == PruneOptions.schedule
    assert option(convert_cmd, "distill_epochs").type.max == MAX_DISTILL_EPOCHS
    assert option(convert_cmd, "prune_cycles").type.max == MAX_CYCLES
    assert option(convert_cmd, "epochs").default == PruneOptions.epochs
    assert float(option(convert_cmd, "max_drop").default) == GateOptions.max_drop
    # the plan the builders and the gate read starts from the same defaults
    plan = ArtifactPlan(precision="int8")
    assert (plan.io, plan.preset, plan.max_drop, plan.min_sqnr) == (IOOptions.io, GateOptions.preset, GateOptions.max_drop,
                                                                    GateOptions.min_sqnr)


def test_prune_flags_come_from_the_library():
    assert choices(prune_cmd, "criterion") == C.CRITERIA and option(prune_cmd, "criterion").default == C.DEFAULT_CRITERION
    assert choices(prune_cmd, "trunks") == C.TRUNK_MODES and option(prune_cmd, "trunks").default == C.DEFAULT_TRUNKS
    assert option(prune_cmd, "round_to").default == C.ROUND_TO and option(prune_cmd, "min_channels").default == C.MIN_CHANNELS
    assert option(prune_cmd, "distill_epochs").type.max == MAX_DISTILL_EPOCHS and option(prune_cmd, "cycles").type.max == MAX_CYCLES
    assert option(prune_cmd, "speedup").type.max == MAX_SPEEDUP
    for fn in (prune_structured, C.prune_channels, C.plan, C.plan_for_flops):
        sig = inspect.signature(fn)
        assert sig.parameters["criterion"].default == C.DEFAULT_CRITERION
        assert sig.parameters["round_to"].default == C.ROUND_TO and sig.parameters["min_channels"].default == C.MIN_CHANNELS
        assert sig.parameters["trunks"].default == C.DEFAULT_TRUNKS


def test_the_library_enforces_the_bounds_the_cli_shows():
    from edgeship.converters.structured import check_epochs
    from edgeship.errors import InputError

    assert check_epochs(MAX_DISTILL_EPOCHS) == MAX_DISTILL_EPOCHS
    with pytest.raises(InputError, match=f"0 to {MAX_DISTILL_EPOCHS}"):
        check_epochs(MAX_DISTILL_EPOCHS + 1)


def test_detection_defaults_have_one_home():
    from edgeship.commands.run import run as run_cmd
    from edgeship.runtime.processing import Detect, make_postprocess
    from edgeship.runtime.processing.detect import DETECT_THRESHOLD, NMS_IOU, decode_yolo, nms
    from edgeship.spec import InputSpec

    assert Detect.threshold == DETECT_THRESHOLD
    assert inspect.signature(nms).parameters["iou_threshold"].default == NMS_IOU
    assert inspect.signature(decode_yolo).parameters["iou_threshold"].default == NMS_IOU
    post = make_postprocess("detect", spec=InputSpec(64, 64), output_shapes=[(1, 84, 100)])
    assert post.threshold == DETECT_THRESHOLD
    assert f"{DETECT_THRESHOLD:g}" in option(run_cmd, "threshold").help and f"{NMS_IOU:g}" in option(run_cmd, "iou").help


def _plugins():
    from edgeship.runtime.apps import app_classes
    from edgeship.runtime.apps.events import EVENT_SINKS
    from edgeship.runtime.apps.motion import MotionGate
    from edgeship.runtime.apps.outputs import OUTPUTS
    from edgeship.runtime.apps.snapshots import SnapshotStore
    from edgeship.runtime.apps.tracking import Tracker

    return [*app_classes(), *EVENT_SINKS.values(), *OUTPUTS.values(), MotionGate, SnapshotStore, Tracker]


@pytest.mark.parametrize("cls", _plugins(), ids=lambda c: c.__name__)
def test_a_plugin_constructor_writes_no_default_of_its_config(cls):
    """Every constructor keyword that is a field of the plugin's config model takes the model's default: the
    constructor itself writes none (those that take built objects, not config values, are listed)."""
    cfg = getattr(cls, "config_model", None) or cls.Config
    raw = inspect.signature(getattr(cls.__init__, "__wrapped__", cls.__init__))
    built_objects = {"zones", "lines", "tracker", "trigger", "outputs", "events", "motion"}
    written = {n: p.default for n, p in raw.parameters.items()
               if n in cfg.model_fields and n not in built_objects and p.default is not inspect.Parameter.empty}
    assert written == {}
    # and what the constructor fills in is the model's default
    for name, f in cfg.model_fields.items():
        if name in raw.parameters and name not in built_objects and not f.is_required():
            assert name in [n for n, p in raw.parameters.items() if p.default is inspect.Parameter.empty]


def test_zone_and_line_dataclasses_take_their_configs_defaults():
    from dataclasses import fields

    from edgeship.runtime.apps.lines import Line, LineCfg
    from edgeship.runtime.apps.zones import Zone, ZoneCfg

    for dc, cfg in ((Zone, ZoneCfg), (Line, LineCfg)):
        for f in fields(dc):
            if f.name in cfg.model_fields and not cfg.model_fields[f.name].is_required():
                want = cfg.model_fields[f.name].default
                assert f.default == (tuple(want) if isinstance(want, list) else want), (dc.__name__, f.name)


def test_the_deploy_config_reference_is_generated_from_the_models():
    from pathlib import Path

    from edgeship.runtime.reference import config_reference

    doc = Path(__file__).resolve().parents[1] / "docs" / "deploy-config.md"
    text = config_reference()
    assert doc.read_text() == text, "docs/deploy-config.md is stale: python -m edgeship.runtime.reference > docs/deploy-config.md"
    for key in ("max_queued", "max_queue_mb", "optional", "driver", "hysteresis_px", "cooldown_s"):
        assert f"| `{key}` |" in text
    assert "|  |\n" not in text  # every key says what it is
