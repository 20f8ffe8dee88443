"""The real-time pipeline: source -> preprocess -> infer -> postprocess -> sinks, in three threads.

1. The source's capture thread decodes and preprocesses; the inference loop always takes the
   newest frame, so decoding overlaps inference and latency never builds up. For an int8/uint8
   model it produces the quantized input tensor directly (one look-up table per channel).
2. The inference loop (the caller's thread) runs the gates and the model, nothing else.
3. The output thread dequantizes, post-processes, records the metrics and writes the sinks, in
   frame order, while the model already runs on the next frame. A slow sink (video encoding, a
   webhook) therefore costs no inference time until the small hand-off queue (``output_queue``
   results) is full; then the model waits for it, so no result is ever lost.

SIGINT / SIGTERM stop the loop cleanly: the results already inferred are written and every sink is
closed (flushed, files renamed into place) before ``run`` returns.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import EdgeshipError
from ..limits import MAX_OUTPUT_QUEUE
from ..spec import InputSpec
from ..preprocess import preprocess
from ..records import RunSummary
from . import allocator
from .affinity import allowed_cpus, pin_current_thread, plan
from .metrics import Metrics
from .sources import Captured, LatestFrameSource, open_source
from .types import Frame, Result

log = logging.getLogger(__name__)

PostProcess = Callable[[Sequence[np.ndarray], tuple[int, int]], dict]


class Pipeline:
    """Run ``backend`` on frames from ``source`` until the source ends, ``max_frames`` frames were
    taken (processed or skipped by a gate), ``duration`` seconds passed, or :meth:`stop` / a signal.

    ``source``: a :class:`LatestFrameSource` (not started) or source text for :func:`open_source`.
    ``postprocess(outputs, frame_hw) -> dict`` of Result fields (see :mod:`edgeship.runtime.processing`).
    ``gates``: objects with ``should_infer(frame) -> bool``; a False skips the frame (counted).
    ``pin``: pin the capture thread to one CPU and this loop to the others while it runs (default:
    when the process may use 2 CPUs or more; see :mod:`edgeship.runtime.affinity`).
    ``preprocess_in_capture``: preprocess in the capture thread (default True: the inference loop
    then never waits for preprocessing; with a source faster than the model the frames it drops were
    preprocessed for nothing, which costs ~0.2 ms of a spare core per 640x480 frame).
    ``output_queue``: how many inferred frames may wait for the output thread (post-processing and
    sinks) before the model waits for it (default 2).
    ``keep_freed_frames``: fix glibc's malloc thresholds for this process when the run starts, so
    freed frame buffers are reused instead of page-faulting back in (see
    :mod:`edgeship.runtime.allocator`; default False (``edgeship run`` turns it on), a no-op off glibc; process-wide, so it stays
    for later runs in the process). The summary's ``allocator`` says what is in effect.
    """

    def __init__(self, source: LatestFrameSource | str | int, backend: Any, *, spec: InputSpec, postprocess: PostProcess,
                 sinks: Sequence[Any] = (), gates: Sequence[Any] = (), max_frames: int | None = None,
                 duration: float | None = None, task: str = "raw", preprocess_in_capture: bool | None = None,
                 handle_signals: bool = True, info: dict[str, Any] | None = None, pin: bool | None = False,
                 output_queue: int = 2, keep_freed_frames: bool = False, camera: str | None = None,
                 watch: Any = None) -> None:
        self.source = source if isinstance(source, LatestFrameSource) else open_source(source)
        self.backend, self.spec, self.postprocess = backend, spec, postprocess
        self.sinks, self.gates = list(sinks), list(gates)
        self.max_frames, self.duration, self.task = max_frames, duration, task
        self.quant = getattr(backend, "input_quantization", None) if spec.dtype == "float32" else None
        if preprocess_in_capture is None:
            preprocess_in_capture = True
        if preprocess_in_capture and self.source.prepare is None:
            self.source.prepare = self._prepare
        self.handle_signals = handle_signals
        self.pin = pin
        self.keep_freed_frames = keep_freed_frames
        self.allocator: dict[str, Any] | None = None
        self.cpu_plan: dict[str, list[int]] | None = None
        self.extra_info = dict(info or {})
        self.camera = camera
        self.watch = watch  # a DriftWatch (runtime.drift), fed by the output thread
        self.metrics = Metrics()
        self.metrics.source = self.source
        self._stop = threading.Event()
        self.stopped_by: str | None = None
        self.summary: RunSummary | None = None
        self._failed_sinks: set[int] = set()
        if not 1 <= int(output_queue) <= MAX_OUTPUT_QUEUE:
            raise EdgeshipError(f"output_queue must be 1-{MAX_OUTPUT_QUEUE}, got {output_queue}")
        self._out_q: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        self._out_capacity, self._out_pending = int(output_queue), 0  # frames handed off and not yet emitted
        self._out_room = threading.Condition()
        self.on_output_room: Callable[[], None] | None = None  # called (output thread) each time a slot frees
        self._out_thread: threading.Thread | None = None
        self._out_error: BaseException | None = None
        self._out_cpus: frozenset[int] | None = None
        inputs = getattr(backend, "inputs", None) or []
        self._in_dtype = np.dtype(inputs[0].dtype) if len(inputs) == 1 else None
        self._checked_shape: tuple[int, ...] | None = None

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        """Frame -> model input: the quantized tensor for an int8/uint8 model, else the float sample."""
        return preprocess(image, self.spec, self.quant)

    def stop(self, reason: str = "stop") -> None:
        """Ask the loop to finish after the current frame (thread- and signal-safe)."""
        if self.stopped_by is None:
            self.stopped_by = reason
        self._stop.set()

    @property
    def info(self) -> dict[str, Any]:
        """What sinks get in ``open(info)``."""
        model = getattr(self.backend, "path", None)
        return {
            "source": self.source.name, "fps": getattr(self.source.reader, "fps", None), "model": str(model) if model else None,
            "model_name": getattr(model, "stem", None), "task": self.task, "spec": self.spec,
            "labels": getattr(getattr(self.backend, "manifest", None), "labels", None), "metrics": self.metrics,
            "backend": self.backend.describe() if hasattr(self.backend, "describe") else {},
            **({"camera": self.camera} if self.camera is not None else {}),
            "watch": self.watch,
            **self.extra_info,
        }

    # ---- run -------------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Process frames until done; returns the summary (fps, latency percentiles, skipped, reconnects...)."""
        restore = self._install_signals()
        if self.keep_freed_frames:
            allocator.keep_freed_frames()
        self.allocator = allocator.in_effect()
        unpin = self._pin()
        opened: list[Any] = []
        error: BaseException | None = None
        try:
            self.begin(opened)
            self._loop()
        except BaseException as e:  # noqa: BLE001 - re-raised below after every sink is closed
            error = e
            if isinstance(e, KeyboardInterrupt):
                self.stop("signal")
        finally:
            close_error = self.end(opened)
            restore()
            unpin()
        return self.finish_summary(error, close_error)

    # ---- the lane: what a multi-camera scheduler drives, camera by camera ------------------------------
    def begin(self, opened: list[Any], *, start_source: bool = True) -> None:
        """Start the source (unless it already runs), open every sink (appended to ``opened``), start the output
        thread and the clock."""
        if start_source:
            self.source.start()
        info = self.info
        for sink in self.sinks:
            sink.open(info)
            opened.append(sink)
        self.metrics.t_start = time.monotonic()
        self._start_output()

    def step(self, item: Captured, run: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None) -> None:
        """One frame taken from the source: skipped by a gate, or inferred (``run``: the model call to use, default the
        backend's own) and handed to the output thread."""
        if self.gates and not all([g.should_infer(item.frame) for g in self.gates]):  # every gate sees every frame
            self.metrics.skipped_gate += 1
            self._hand_off(("skip", item.frame))
        else:
            self._hand_off(self._infer(item, run))

    def end(self, opened: list[Any]) -> BaseException | None:
        """Stop the source, let the output thread finish, close the sinks; the first close error, if any."""
        self.source.stop()
        self._finish_output()
        self.metrics.finish()
        return self._close_sinks(opened)

    def finish_summary(self, error: BaseException | None, close_error: BaseException | None) -> RunSummary:
        """Raise what ended the run badly, else make and keep the summary."""
        error = error or self._out_error
        if error is not None and not isinstance(error, KeyboardInterrupt):
            raise error
        if close_error is not None:
            raise close_error
        self.summary = self._summary()
        return self.summary

    def _loop(self) -> None:
        taken = 0
        t0 = time.monotonic()
        while not self._stop.is_set():
            left = None if self.duration is None else self.duration - (time.monotonic() - t0)
            if left is not None and left <= 0:
                self.stop("duration")
                break
            item = self.source.get(timeout=0.25 if left is None else max(0.01, min(0.25, left)))
            if item is None:
                if self.source.exhausted:
                    self.stop("source_error" if self.source.error else "end_of_source")
                continue
            taken += 1
            self.step(item)
            if self.max_frames is not None and taken >= self.max_frames:
                self.stop("max_frames")

    def _infer(self, item: Captured, run: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None) -> tuple:
        """Run the model on one captured frame; what the output thread needs to finish it."""
        frame, sample, prepare_ms = item.frame, item.sample, item.prepare_ms
        t_in = time.monotonic()
        if sample is None:
            sample = self._prepare(frame.image)
            prepare_ms = (time.monotonic() - t_in) * 1e3
        x = self._model_inputs(sample)
        t1 = time.monotonic()
        raw = (run or self.backend.run_prepared)(x)
        t2 = time.monotonic()
        return ("result", frame, raw, item.read_ms, prepare_ms, t_in, t1, t2, x[0] if len(x) == 1 else None)

    def _model_inputs(self, sample: np.ndarray) -> list[np.ndarray]:
        """The model's input tensors for one sample. The first sample is checked (shape, dtype) and
        converted by the backend; later samples of that same shape and of the input's dtype (what
        ``preprocess`` always produces) go in as they are."""
        x = sample[None]
        native = sample.dtype == self._in_dtype
        if native and sample.shape == self._checked_shape:
            return [x]
        prepared = self.backend.prepare_inputs(x, quantized=native)
        if native:
            self._checked_shape = sample.shape
        return prepared

    # ---- output thread -------------------------------------------------------------------------
    def _start_output(self) -> None:
        self._out_thread = threading.Thread(target=self._output_loop, name="pipeline-output", daemon=True)
        self._out_thread.start()

    def _hand_off(self, item: tuple) -> None:
        """Queue an inferred (or gated) frame for the output thread; waits while ``output_queue`` are pending."""
        with self._out_room:
            self._out_room.wait_for(lambda: self._out_pending < self._out_capacity)
            self._out_pending += 1
        self._out_q.put(item)

    def output_full(self) -> bool:
        """True while ``output_queue`` frames wait for (or are in) the output thread: the next hand-off would wait. A
        multi-camera scheduler gives no frame of this camera to a shared model worker until it is False."""
        return self._out_pending >= self._out_capacity

    def _finish_output(self) -> None:
        """Let the output thread write what is queued, then end it."""
        if self._out_thread is not None:
            self._out_q.put(None)
            self._out_thread.join()
            self._out_thread = None

    def _output_loop(self) -> None:
        pin_current_thread(self._out_cpus)
        while (item := self._out_q.get()) is not None:
            try:
                if self._out_error is None:
                    self._emit(item)
            except BaseException as e:  # noqa: BLE001 - ends the run; raised by run() after the sinks are closed
                self._out_error = e
                self.stop("error")
            finally:
                with self._out_room:
                    self._out_pending -= 1
                    self._out_room.notify()
                if self.on_output_room is not None:
                    self.on_output_room()

    def _emit(self, item: tuple) -> None:
        if item[0] == "skip":
            self._notify_skip(item[1])
        else:
            self._finish(*item[1:])

    def _finish(self, frame: Frame, raw: list[np.ndarray], read_ms: float, prepare_ms: float, t_in: float, t1: float,
                t2: float, model_input: np.ndarray | None = None) -> Result:
        """Post-process one inferred frame, write it to every sink and record its latencies."""
        t_post = time.monotonic()
        outputs = self.backend.dequantize_outputs(raw)
        fields = self.postprocess(outputs, frame.image.shape[:2])
        t3 = time.monotonic()
        lat = {"read": read_ms, "preprocess": prepare_ms, "infer": (t2 - t1) * 1e3, "postprocess": (t3 - t_post) * 1e3,
               "age": (t_in - frame.t_mono) * 1e3, "glass_to_glass": (t3 - frame.t_mono) * 1e3}
        result = Result(frame.index, frame.t_capture, frame.t_capture + (t3 - frame.t_mono), self.task,
                        raw=tuple(outputs), latency_ms=lat, camera=self.camera, **fields)
        for sink in self.sinks:
            self._write(sink, frame, result)
        t4 = time.monotonic()
        lat["sinks"] = (t4 - t3) * 1e3
        if self.watch is not None:
            self.watch.observe(model_input, raw, outputs, detections=result.detections, t=frame.scene_time,
                               frame=frame.image)
            lat["watch"] = (time.monotonic() - t4) * 1e3
        self.metrics.observe_frame(lat)
        return result

    def _write(self, sink: Any, frame: Frame, result: Result) -> None:
        try:
            sink.write(frame, result)
        except Exception as e:  # noqa: BLE001 - one failing sink must not stop the camera
            self.metrics.sink_errors += 1
            if id(sink) not in self._failed_sinks:
                self._failed_sinks.add(id(sink))
                log.error("sink %s failed: %s: %s (further errors are only counted)", type(sink).__name__, type(e).__name__, e)

    def _notify_skip(self, frame: Frame) -> None:
        for sink in self.sinks:
            skip = getattr(sink, "skip", None)
            if skip is not None:
                try:
                    skip(frame)
                except Exception as e:  # noqa: BLE001
                    self.metrics.sink_errors += 1
                    log.debug("sink %s skip failed: %s", type(sink).__name__, e)

    def _close_sinks(self, sinks: list[Any]) -> BaseException | None:
        first: BaseException | None = None
        for sink in sinks:
            try:
                sink.close()
            except Exception as e:  # noqa: BLE001 - close the others, then report the first failure
                log.error("closing sink %s failed: %s", type(sink).__name__, e)
                first = first or e
        return first

    def _pin(self) -> Callable[[], None]:
        """Pin capture and inference apart (see ``pin``); returns what undoes it for this thread."""
        split = plan(allowed_cpus()) if self.pin is not False else None
        if split is None:
            return lambda: None
        infer_cpus, capture_cpus = split
        self.source.cpus = self._out_cpus = capture_cpus
        before = pin_current_thread(infer_cpus)
        self.cpu_plan = {"inference": sorted(infer_cpus), "capture": sorted(capture_cpus), "output": sorted(capture_cpus)}
        return (lambda: pin_current_thread(before)) if before else (lambda: None)

    def _install_signals(self) -> Callable[[], None]:
        return stop_on_signals(self.stop, self.handle_signals)

    def _summary(self) -> RunSummary:
        snap = self.metrics.snapshot()
        snap.pop("recent_fps", None)
        b = self.backend
        return RunSummary(
            source=self.source.name, model=str(getattr(b, "path", "")), backend=getattr(b, "name", None),
            executed_precision=getattr(b, "executed_precision", None), task=self.task, stopped_by=self.stopped_by,
            error=str(self.source.error) if self.source.error else None, cpus=self.cpu_plan,
            allocator=self.allocator, camera=self.camera,
            drift=self.watch.status() if self.watch is not None else None, **snap)


def stop_on_signals(stop: Callable[[str], None], enabled: bool = True) -> Callable[[], None]:
    """SIGINT and SIGTERM call ``stop("signal")`` (main thread only); returns what restores the old handlers."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}

    def handler(signum: int, _frame: Any) -> None:
        log.info("got %s; stopping", signal.Signals(signum).name)
        stop("signal")

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, h in previous.items():
            signal.signal(sig, h)

    return restore


def failed(summary: RunSummary) -> EdgeshipError | None:
    """The source error that ended a run, if any (the CLI exits 1 on it after printing the summary)."""
    from ..errors import SourceError

    return SourceError(summary.error) if summary.stopped_by == "source_error" and summary.error else None
