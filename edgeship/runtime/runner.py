"""Build a ready-to-run Pipeline from an artifact path and a source: what ``edgeship run`` calls.

    pipe = build_pipeline("model.tflite", "rtsp://cam/stream", sinks=["jsonl:-", "http:8080"])
    summary = pipe.run()

Apps (security, industrial, robot) pass their own sinks and gates; a deployment config builds the
same call from YAML.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError
from ..spec import InputSpec
from .backends import Backend, open_backend
from .pipeline import Pipeline
from .processing import make_postprocess, resolve_task
from .sinks import make_sink
from .sources import LatestFrameSource, open_source


def load_labels(path: str | os.PathLike) -> list[str]:
    """Class names from a text file (one per line) or a JSON list / {id: name} object."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"labels file {p} does not exist")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"labels file {p} is not valid JSON: {e}") from None
        if isinstance(data, dict):
            try:
                return [str(data[k]) for k in sorted(data, key=lambda k: int(k))]
            except ValueError:
                raise InputError(f"labels file {p}: expected integer keys, got {list(data)[:3]}") from None
        if isinstance(data, list):
            return [str(x) for x in data]
        raise InputError(f"labels file {p}: expected a JSON list or object, got {type(data).__name__}")
    labels = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not labels:
        raise InputError(f"labels file {p} is empty")
    return labels


def input_spec_for(backend: Backend, spec: InputSpec | None = None) -> InputSpec:
    """The manifest's InputSpec, else one inferred from the model's input shape (RGB, /255)."""
    if spec is not None:
        return spec
    if backend.manifest is not None and backend.manifest.input_spec is not None:
        return backend.manifest.input_spec
    from ..spec import _shape_to_hwc

    h, w, c, layout = _shape_to_hwc(backend.inputs[0].shape, str(backend.path))
    return InputSpec(height=h, width=w, channels=c, layout=layout)


def build_pipeline(
    artifact: str | os.PathLike | Backend,
    source: str | int | LatestFrameSource,
    *,
    task: str | None = None,
    labels: Sequence[str] | str | os.PathLike | None = None,
    sinks: Sequence[Any] = (),
    gates: Sequence[Any] = (),
    max_frames: int | None = None,
    duration: float | None = None,
    threads: int | None = None,
    backend: str | None = None,
    device: str = "CPU",
    hint: str = "latency",
    precision: str | None = None,
    realtime: bool = False,
    loop: bool = False,
    open_timeout: float = 10.0,
    reconnect_timeout: float | None = None,
    top_k: int = 5,
    threshold: float | None = None,
    iou: float = 0.45,
    spec: InputSpec | None = None,
    handle_signals: bool = True,
    pin: bool | None = None,
    output_queue: int = 2,
    keep_freed_frames: bool = True,
) -> Pipeline:
    """Open the model and the source and assemble the pipeline (nothing runs until ``.run()``).

    ``source``: source text (see :func:`open_source`) or an unstarted :class:`LatestFrameSource`;
    ``sinks`` items are sink objects or text such as ``"jsonl:-"`` (see :func:`make_sink`);
    ``labels`` is a list, a labels file, or None for the manifest's labels. The backend is
    closed by ``Pipeline.run`` only if this function opened it.
    """
    own = not isinstance(artifact, Backend)
    b = open_backend(artifact, backend=backend, threads=threads, device=device, hint=hint, precision=precision) if own else artifact
    try:
        names = _labels(labels, b)
        shapes = [o.shape for o in b.outputs]
        chosen = resolve_task(task, b.manifest.task if b.manifest else None, shapes)
        sp = input_spec_for(b, spec)
        post = make_postprocess(chosen, spec=sp, labels=names, top_k=top_k, threshold=threshold, iou=iou,
                                output_shapes=shapes, output_names=[o.name for o in b.outputs])
        src = source if isinstance(source, LatestFrameSource) else open_source(source, realtime=realtime, loop=loop, open_timeout=open_timeout, reconnect_timeout=reconnect_timeout)
        built = [make_sink(s) if isinstance(s, str) else s for s in sinks]
    except BaseException:
        if own:
            b.close()
        raise
    pipe = _OwningPipeline(src, b, spec=sp, postprocess=post, sinks=built, gates=gates, max_frames=max_frames,
                           duration=duration, task=chosen, handle_signals=handle_signals, info={"labels": names}, pin=pin,
                           output_queue=output_queue, keep_freed_frames=keep_freed_frames)
    pipe.owns_backend = own
    return pipe


class _OwningPipeline(Pipeline):
    """A Pipeline that closes the backend it was built with once the run is over."""

    owns_backend = False

    def run(self) -> dict[str, Any]:
        try:
            return super().run()
        finally:
            if self.owns_backend:
                self.backend.close()


def _labels(labels: Sequence[str] | str | os.PathLike | None, b: Backend) -> list[str] | None:
    if labels is None:
        return list(b.manifest.labels) if b.manifest is not None and b.manifest.labels else None
    if isinstance(labels, (str, os.PathLike)):
        return load_labels(labels)
    return [str(x) for x in labels]


def run(artifact: str | os.PathLike, source: str | int, **options: Any) -> dict[str, Any]:
    """Build and run a pipeline; returns its summary (see :func:`build_pipeline` for the options)."""
    return build_pipeline(artifact, source, **options).run()


__all__ = ["build_pipeline", "run", "load_labels", "input_spec_for"]
