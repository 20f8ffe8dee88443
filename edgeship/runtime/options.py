"""How a run reads its source, runs its model and reads the outputs: the option groups of
:func:`~edgeship.runtime.runner.build_pipeline`, and the same models the deployment config is
built from (one home for every default and constraint).

    from edgeship.runtime import build_pipeline, RunOptions, SourceOptions, PostOptions
    opts = RunOptions(source=SourceOptions(realtime=True), post=PostOptions(task="detect", threshold=0.4))
    build_pipeline("det.tflite", "rtsp://cam/stream", options=opts, sinks=["jsonl:-"]).run()

Flat keywords (``threshold=0.4``, ``threads=2``, ``open_timeout=5`` ...) still work: :data:`FLAT`
maps each to its group and field. A value out of range or an unknown keyword is a one-line
:class:`~edgeship.errors.InputError` naming it.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, ValidationError, field_validator

from .. import formats
from ..errors import InputError
from ..limits import MAX_OUTPUT_QUEUE, MAX_THREADS
from ..spec import COLOR_ORDERS, INTERPOLATIONS, RESIZE_MODES, implied_channels
from .drift import WatchCfg
from .processing import TASKS
from .schema import Score, Strict, problem


class SourceOptions(Strict):
    """How the source is read (a config's ``source`` section, without its ``uri``)."""

    loop: bool = Field(False, description="restart a video file or folder when it ends")
    realtime: Optional[bool] = Field(None, description="play files at their frame rate, dropping late frames (None: off, or the app's default)")
    timeout_s: float = Field(10.0, gt=0, description="seconds to wait for the source to open")
    reconnect_timeout_s: Optional[float] = Field(None, gt=0, description="give up on a lost stream after this long (None: never)")
    max_fps: Optional[float] = Field(None, gt=0, le=1000, description="cap on the frames taken from a live (or real-time) source per second; the rest are read and not kept (None: every frame)")
    decode_threads: Optional[int] = Field(None, ge=1, le=64, description="FFmpeg decoding threads of a video file or network stream (None: FFmpeg's own choice for one camera; the cameras of a site share the CPUs, at least 1 each, so 16 cameras do not start 16 x CPUs threads)")
    read_ahead: Optional[int] = Field(None, ge=1, le=64, description="frames decoded ahead of the model when every frame of a file or folder is delivered (None: 4 for one camera; the cameras of a site share 4, at least 1 each: each frame held costs memory)")


class BackendOptions(Strict):
    """Which runtime opens the model and how it runs (a config's ``backend`` section)."""

    name: Optional[Literal[formats.backend_names()]] = Field(None, description="the backend (default: from the artifact's format)")  # type: ignore[valid-type]
    threads: Optional[int] = Field(None, ge=1, le=MAX_THREADS, description="inference threads (default: the runtime's choice)")
    device: str = Field("CPU", description="OpenVINO device: CPU, GPU, NPU, AUTO")
    hint: Literal["latency", "throughput"] = Field("latency", description="OpenVINO performance hint")
    precision: Optional[Literal["f32", "f16", "bf16"]] = Field(None, description="OpenVINO inference precision")
    # capture and inference pinned to different CPUs: True, False, or None = when there are 2+ CPUs. From
    # Python the default leaves the caller's threads alone; a deployment (the entry point) pins (DeployBackend)
    pin: Optional[bool] = False
    output_queue: int = Field(2, ge=1, le=MAX_OUTPUT_QUEUE, description="inferred frames waiting for post-processing and sinks")
    workers: Optional[int] = Field(None, ge=1, le=64, description="several cameras: inference workers, each with its own OpenVINO request or LiteRT interpreter (default: OpenVINO's optimal number of requests; LiteRT one per CPU)")


class PostOptions(Strict):
    """How the outputs are read (top-level keys of a config)."""

    task: Optional[Literal[tuple(TASKS)]] = Field(None, description="None: the manifest's, else guessed")  # type: ignore[valid-type]
    threshold: Optional[Score] = Field(None, description="minimum score (default: processing.detect.DETECT_THRESHOLD; classify 0)")
    iou: Optional[Score] = Field(None, description="NMS IoU (default: processing.detect.NMS_IOU, or the anchor layout's)")
    top_k: int = Field(5, ge=1, description="classes reported per frame (classify)")
    anchors: Optional[Any] = Field(None, description="anchor-based SSD head: a preset name, a mapping {type, input_hw, ...} or a layout object")

    @field_validator("anchors")
    @classmethod
    def _anchors(cls, v: Any) -> Any:
        if v is None:
            return v
        from ..errors import SpecError
        from .processing.anchors import anchor_spec

        try:
            anchor_spec(v)
        except (SpecError, TypeError, ValueError) as e:
            raise ValueError(str(e)) from None
        return v


class InputSpecOptions(Strict):
    """How frames become the model's input, for a model without a manifest (or to override it)."""

    resize: Optional[Literal[RESIZE_MODES]] = Field(None, description="how a frame is fitted to the input: stretch, letterbox or center-crop")  # type: ignore[valid-type]
    interpolation: Optional[Literal[INTERPOLATIONS]] = Field(None, description="how frames are shrunk: pyramid, area or linear")  # type: ignore[valid-type]
    color_order: Optional[Literal[COLOR_ORDERS]] = Field(None, description="the model's channel order")  # type: ignore[valid-type]
    scale: Optional[float] = Field(None, allow_inf_nan=False, description="pixel values are multiplied by this (1/255 = 0.00392)")
    mean: Optional[list[float]] = Field(None, description="subtracted after scaling, one value or one per channel")
    std: Optional[list[float]] = Field(None, description="divided by after the mean, one value or one per channel")

    def overrides(self) -> dict[str, Any]:
        """The fields given, as InputSpec keywords (GRAY also sets one channel)."""
        return implied_channels({k: (tuple(v) if isinstance(v, list) else v) for k, v in self.model_dump().items()
                                 if v is not None})


class RunOptions(Strict):
    """Every option of a run, in groups."""

    source: SourceOptions = SourceOptions()
    backend: BackendOptions = BackendOptions()
    post: PostOptions = PostOptions()
    input_spec: Optional[InputSpecOptions] = None
    watch: WatchCfg = WatchCfg()

    def updated(self, **flat: Any) -> "RunOptions":
        """A copy with flat keywords (names of :data:`FLAT`) applied to their groups, validated."""
        unknown = sorted(k for k in flat if k not in FLAT)
        if unknown:
            raise InputError(f"build_pipeline() got unknown option(s) {', '.join(unknown)}; expected one of {', '.join(FLAT)}")
        data = self.model_dump()
        for key, value in flat.items():
            group, name = FLAT[key]
            if name is None:  # spec_overrides: the InputSpec flags' keywords
                data[group] = _spec_overrides(value)
            else:
                data[group][name] = value
        try:
            return RunOptions.model_validate(data)
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            raise InputError(f"{_flat_name(err['loc'])}: {problem(err)}") from None


def _flat_name(loc: tuple) -> str:
    for key, (group, name) in FLAT.items():
        if loc[:2] == (group, name) or (name is None and loc[:1] == (group,)):
            return key
    return ".".join(str(p) for p in loc)


def _spec_overrides(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """``spec_overrides``: the six InputSpec flags (``channels`` only as GRAY implies it); other InputSpec
    fields go in ``spec=InputSpec(...)``."""
    value = dict(value or {})
    channels = value.pop("channels", None)
    implied = implied_channels(value).get("channels")
    if channels is not None and channels != implied:
        raise InputError(f"spec_overrides: channels follows color_order (GRAY: 1), got channels={channels!r}; "
                         "pass spec=InputSpec(...) to set other InputSpec fields")
    unknown = sorted(set(value) - set(InputSpecOptions.model_fields))
    if unknown:
        raise InputError(f"spec_overrides: unknown key(s) {', '.join(unknown)}; expected "
                         f"{', '.join(InputSpecOptions.model_fields)} (other InputSpec fields: spec=InputSpec(...))")
    return value or None


def _flat_names() -> dict[str, tuple[str, str | None]]:
    renamed = {("source", "timeout_s"): "open_timeout", ("source", "reconnect_timeout_s"): "reconnect_timeout",
               ("backend", "name"): "backend"}
    out: dict[str, tuple[str, str | None]] = {}
    for group, cls in (("source", SourceOptions), ("backend", BackendOptions), ("post", PostOptions)):
        for name in cls.model_fields:
            out[renamed.get((group, name), name)] = (group, name)
    out["watch"] = ("watch", "enabled")  # watch=False: no drift watch
    out["spec_overrides"] = ("input_spec", None)  # a dict of InputSpec keywords (scale, mean, std, color_order...)
    return out


# flat keyword of build_pipeline -> (group, field)
FLAT: dict[str, tuple[str, str | None]] = _flat_names()


def run_options(options: RunOptions | None = None, **flat: Any) -> RunOptions:
    """``options`` (default: every default) with flat keywords on top."""
    base = options if options is not None else RunOptions()
    return base.updated(**flat) if flat else base


__all__ = ["RunOptions", "SourceOptions", "BackendOptions", "PostOptions", "InputSpecOptions", "FLAT", "run_options"]
