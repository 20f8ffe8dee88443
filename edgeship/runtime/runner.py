"""Build a ready-to-run Pipeline from an artifact path and a source: what ``edgeship run`` calls.

    pipe = build_pipeline("model.tflite", "rtsp://cam/stream", sinks=["jsonl:-", "http:8080"])
    summary = pipe.run()

Apps (security, industrial, robot) pass their own sinks and gates; a deployment config builds the
same call from YAML.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

from ..errors import InputError, SpecError
from ..labels import resolve_labels
from ..records import RunSummary
from ..spec import InputSpec
from .backends import Backend, open_backend
from .options import RunOptions, run_options
from .pipeline import Pipeline
from .processing import make_postprocess, resolve_task
from .sinks import make_sink
from .sources import LatestFrameSource, open_source

log = logging.getLogger(__name__)


def input_spec_for(backend: Backend, spec: InputSpec | None = None, overrides: dict[str, Any] | None = None) -> InputSpec:
    """``spec``, else the manifest's InputSpec, else one inferred from the model's input shape (RGB, /255,
    with a warning); ``overrides`` (the InputSpec flags: scale, mean, std, color_order, resize,
    interpolation) go on top, e.g. [-1, 1] for a third-party model without a manifest."""
    from dataclasses import replace

    overrides = dict(overrides or {})
    if spec is None and backend.manifest is not None and backend.manifest.input_spec is not None:
        spec = backend.manifest.input_spec
    if spec is None:
        from ..spec import shape_to_hwc

        h, w, c, layout = shape_to_hwc(backend.inputs[0].shape, str(backend.path))
        spec = InputSpec(height=h, width=w, channels=c, layout=layout)
        if not overrides:
            log.warning("%s has no manifest: feeding it RGB pixels x 1/255 (mean 0, std 1); pass --scale/--mean/--std/"
                        "--color-order (or input_spec: in a config) if it was trained otherwise", backend.path.name)
    if not overrides:
        return spec
    try:
        return replace(spec, **overrides)
    except SpecError as e:
        raise SpecError(f"input_spec (--scale/--mean/--std/--color-order) for {backend.path.name}: {e}") from None


def make_watch(backend: Backend, cfg: Any, *, task: str, camera: str | None = None, spec: Any = None,
               post: Any = None, keep_rows: bool = False) -> Any:
    """The drift watch for this model (None when ``cfg`` turns it off or the manifest has no profile); the one
    place a watch is made, on the device and by ``edgeship drift`` (``keep_rows``: every frame's statistics)."""
    from .drift import DriftProfile, DriftWatch

    manifest = getattr(backend, "manifest", None)
    if cfg is None or not cfg.enabled or manifest is None or not getattr(manifest, "drift", None):
        return None
    try:
        profile = DriftProfile.from_dict(manifest.drift)
        return DriftWatch(profile, cfg, task=task, input_quant=getattr(backend, "input_quantization", None),
                          output_quant=getattr(backend, "output_quantization", None), camera=camera,
                          spec=spec, post=post, keep_rows=keep_rows)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{getattr(backend, 'path', 'the model')}: drift watch: {e}") from None


def build_pipeline(
    artifact: str | os.PathLike | Backend,
    source: str | int | LatestFrameSource,
    *,
    labels: Sequence[str] | str | os.PathLike | None = None,
    sinks: Sequence[Any] = (),
    gates: Sequence[Any] = (),
    max_frames: int | None = None,
    duration: float | None = None,
    options: RunOptions | None = None,
    spec: InputSpec | None = None,
    handle_signals: bool = True,
    keep_freed_frames: bool = False,
    http_token: str | None = None,
    camera: str | None = None,
    **flat: Any,
) -> Pipeline:
    """Open the model and the source and assemble the pipeline (nothing runs until ``.run()``).

    ``options`` groups how the source is read, how the model runs and how its outputs are read
    (:class:`~edgeship.runtime.options.RunOptions`: ``source``, ``backend``, ``post``, ``input_spec``);
    flat keywords such as ``task="detect"``, ``threshold=0.4``, ``threads=2``, ``realtime=True``,
    ``open_timeout=5`` or ``spec_overrides={"scale": 1 / 127.5, "mean": (1, 1, 1)}`` go on top (the names of
    :data:`~edgeship.runtime.options.FLAT`); a value out of range is a one-line InputError naming it.

    Process-wide settings are the entry point's to make (``edgeship run`` makes them): ``pin=None``
    pins capture and inference to different CPUs when there are 2+ (default False: leave the
    caller's threads alone), ``keep_freed_frames=True`` fixes glibc's malloc thresholds (see
    :mod:`edgeship.runtime.allocator`).

    ``source``: source text (see :func:`open_source`) or an unstarted :class:`LatestFrameSource`;
    ``sinks`` items are sink objects or text such as ``"jsonl:-"`` (see :func:`make_sink`; ``http_token``
    guards an ``http:`` one); ``labels`` is a list, a labels file, or None for the manifest's labels;
    ``spec`` replaces the manifest's InputSpec. The backend is closed by ``Pipeline.run`` only if this
    function opened it. ``camera`` names the source in every result (a lane of a multi-camera run,
    :mod:`edgeship.runtime.multi`).
    """
    opts = run_options(options, **flat)
    src_o, be, post = opts.source, opts.backend, opts.post
    own = not isinstance(artifact, Backend)
    b = open_backend(artifact, backend=be.name, threads=be.threads, device=be.device, hint=be.hint,
                     precision=be.precision) if own else artifact
    try:
        names = _labels(labels, b)
        shapes = [o.shape for o in b.outputs]
        chosen = resolve_task(post.task, b.manifest.task if b.manifest else None, shapes)
        sp = input_spec_for(b, spec, opts.input_spec.overrides() if opts.input_spec is not None else None)
        processor = make_postprocess(chosen, spec=sp, labels=names, top_k=post.top_k, threshold=post.threshold,
                                     iou=post.iou, output_shapes=shapes, output_names=[o.name for o in b.outputs],
                                     output_roles=[o.role for o in b.outputs], anchors=post.anchors)
        src = source if isinstance(source, LatestFrameSource) else open_source(
            source, realtime=bool(src_o.realtime), loop=src_o.loop, open_timeout=src_o.timeout_s,
            reconnect_timeout=src_o.reconnect_timeout_s, max_fps=src_o.max_fps, read_ahead=src_o.read_ahead,
            decode_threads=src_o.decode_threads)
        built = [make_sink(s, token=http_token) if isinstance(s, str) else s for s in sinks]
    except BaseException:
        if own:
            b.close()
        raise
    watch = make_watch(b, opts.watch, task=chosen, camera=camera, spec=sp, post=processor)
    pipe = _OwningPipeline(src, b, spec=sp, postprocess=processor, sinks=built, gates=gates, max_frames=max_frames,
                           duration=duration, task=chosen, handle_signals=handle_signals, info={"labels": names},
                           pin=be.pin, output_queue=be.output_queue, keep_freed_frames=keep_freed_frames, camera=camera,
                           watch=watch)
    pipe.owns_backend = own
    return pipe


class _OwningPipeline(Pipeline):
    """A Pipeline that closes the backend it was built with once the run is over."""

    owns_backend = False

    def run(self) -> RunSummary:
        try:
            return super().run()
        finally:
            if self.owns_backend:
                self.backend.close()


def _labels(labels: Sequence[str] | str | os.PathLike | None, b: Backend) -> list[str] | None:
    return resolve_labels(labels, b.manifest.labels if b.manifest is not None else None)


def run(artifact: str | os.PathLike, source: str | int, **options: Any) -> RunSummary:
    """Build and run a pipeline; returns its summary (see :func:`build_pipeline` for the options)."""
    return build_pipeline(artifact, source, **options).run()


__all__ = ["build_pipeline", "run", "input_spec_for"]
