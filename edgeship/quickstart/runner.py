"""Run the quickstart steps in order, reusing every unit whose stamp is still valid."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import InputError
from ..fileio import ensure_dir
from ..progress import progress
from . import artifacts, data, runs, summary
from .plan import Options, paths
from .stamps import StampStore, Unit, fingerprint

log = logging.getLogger(__name__)

STEPS: dict[str, str] = {
    "train": "digits CNN, shapes detector, demo videos",
    "calibrate": "calibration sets with holdout splits",
    "convert": "50% pruning, TFLite int8/fp16, OpenVINO INT8, accuracy-gated",
    "verify": "every artifact against its float model",
    "bench": "latency and throughput of every artifact",
    "run": "the runtime and apps on the demo videos",
    "bundle": "deploy bundle for the target",
    "report": "report.html and report.md",
}

Status = Callable[[str], None]


@dataclass
class Context:
    """What every unit sees: the output folder, the options and the results of the units before it."""

    out: Path
    options: Options
    results: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # unit id -> seconds it took when it was built

    def path(self, key: str) -> Path:
        return self.out / paths(self.out)[key]

    def step_seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for uid, s in self.seconds.items():
            step = uid.split(".", 1)[0]
            out[step] = out.get(step, 0.0) + s
        return out


def plan(options: Options, out: Path) -> dict[str, list[Unit]]:
    """Every unit, by step, in execution order."""
    steps: dict[str, list[Unit]] = {}
    for part in (data.units(options, out), artifacts.units(options, out), runs.units(options, out)):
        steps.update(part)
    before = [u.id for us in steps.values() for u in us]
    steps["report"] = [Unit("report", "report", {"max_drop": 1.0}, summary.write,
                            hashed=["report.md", "report.html", "summary.json"], deps=before)]
    missing = [s for s in STEPS if s not in steps]
    if missing:
        raise InputError(f"quickstart plan has no units for steps {missing}")
    return {s: steps[s] for s in STEPS}


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    path = out / ".quickstart" / "lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:  # "a": a re-run leaves every file untouched
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another edgeship quickstart is writing to {out}; wait for it or use --out") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_quickstart(out_dir: str | os.PathLike = "quickstart-out", force: bool = False, *, small: bool = False,
                   seed: int = 0, status: Status | None = None) -> dict[str, Any]:
    """Train, calibrate, convert, verify, bench, run, bundle and report into ``out_dir``; return a summary.

    A second call reuses every step whose inputs and outputs are unchanged (seconds instead of
    minutes); ``force`` redoes everything. ``small`` shrinks epochs, samples and runs (tests, CI).
    ``status`` receives one line per step (default: logged).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    t_start = time.monotonic()
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; expected a folder (it is created when missing)")
    ensure_dir(out, "cannot create the quickstart's output folder")
    say = status or log.info
    options = Options.make(small=small, seed=seed)
    ctx = Context(out, options)
    store = StampStore(out)
    steps_done: dict[str, dict[str, Any]] = {}
    with _lock(out):
        if force:
            store.clear()
        fingerprints: dict[str, str] = {}
        units_by_step = plan(options, out)
        for i, (step, units) in enumerate(units_by_step.items(), 1):
            t0 = time.monotonic()
            ran = _run_step(step, units, ctx, store, fingerprints)
            seconds = time.monotonic() - t0
            steps_done[step] = {"units": len(units), "ran": ran, "reused": len(units) - len(ran), "seconds": round(seconds, 2)}
            say(_status_line(i, len(units_by_step), step, units, ran, seconds))
    return _summary(ctx, steps_done, time.monotonic() - t_start)


def _run_step(step: str, units: list[Unit], ctx: Context, store: StampStore, fingerprints: dict[str, str]) -> list[str]:
    """Reuse or run every unit of one step (with a progress bar); returns the names of the units that ran."""
    ran: list[str] = []
    bar = progress(units, desc=step, unit="unit", total=len(units))
    for unit in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(unit.name)
        key = store.key(unit, fingerprints)
        stamp = store.load_valid(unit, key)
        if stamp is None:
            t = time.monotonic()
            with _ticking(bar):
                result = unit.run(ctx)
            stamp = store.write(unit, key, result, time.monotonic() - t)
            ran.append(unit.name)
        ctx.results[unit.id] = stamp["result"]
        ctx.seconds[unit.id] = float(stamp["seconds"])
        fingerprints[unit.id] = fingerprint(stamp)
    return ran


@contextlib.contextmanager
def _ticking(bar: Any, every: float = 1.0) -> Iterator[None]:
    """Redraw ``bar`` every second while a long unit runs, so its elapsed time keeps moving."""
    refresh = getattr(bar, "refresh", None)
    if refresh is None or getattr(bar, "disable", True):
        yield
        return
    done = threading.Event()

    def tick() -> None:
        while not done.wait(every):
            refresh()

    thread = threading.Thread(target=tick, name="quickstart-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _status_line(i: int, n: int, step: str, units: list[Unit], ran: list[str], seconds: float) -> str:
    if not ran:
        what = f"reused ({len(units)} up to date)"
    elif len(ran) == len(units):
        what = f"{len(ran)} built"
    else:
        what = f"{len(ran)} built ({', '.join(ran)}), {len(units) - len(ran)} reused"
    return f"[{i}/{n}] {step} - {STEPS[step]}: {what} in {seconds:.1f} s"


def _summary(ctx: Context, steps: dict[str, dict[str, Any]], seconds: float) -> dict[str, Any]:
    r = ctx.results
    models = {k[6:]: v for k, v in r.items() if k.startswith("train.") and "video" not in k}
    return {
        "out": str(ctx.out), "report_html": str(ctx.out / "report.html"), "report_md": str(ctx.out / "report.md"),
        "seconds": round(seconds, 2), "small": ctx.options.small,
        "reused_everything": all(not s["ran"] for s in steps.values()), "steps": steps,
        "models": models, "artifacts": summary.artifacts_json(r),
        "runs": {k[4:]: {kk: v.get(kk) for kk in ("artifact", "source", "frames_processed", "processed_fps", "g2g_p50_ms",
                                                   "skipped", "detail", "score")} for k, v in r.items() if k.startswith("run.")},
        "bundles": [v for k, v in r.items() if k.startswith("bundle.")],
        "built_seconds": {k: round(v, 1) for k, v in ctx.step_seconds().items()},
    }
