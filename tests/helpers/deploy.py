"""Inputs shared by the bundle and flash tests, built once per pytest session.

    d = deploy_inputs(tmp_path_factory)
    d["artifact"]        float digits .tflite with its manifest (reused from the runtime helper's folder)
    d["video"]           a short video of digits on a belt (the "camera" the device loops)
    d["wheelhouse"]      offline wheels for the generic-x86_64 runtime on this Python (tests/helpers/wheelhouse.py)
    d["edgeship_wheel"]  edgeship built once from the source tree
    d["venvs"]           a venvs folder shared by every test device root (one venv install per session)
    d["port"]            a free TCP port for the runtime's HTTP server
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_CACHE: dict[str, Any] = {}
RUNTIME_DISTS = ["click", "numpy", "pyyaml", "pydantic", "tqdm"]


def _artifact(tmp_path_factory) -> Path:
    from .models import SPEC, digits_classifier_savedmodel, digits_labels, models_root
    from .runtime_artifacts import _cached, _to_tflite, _write_manifest

    root = models_root(tmp_path_factory) / "runtime"
    root.mkdir(parents=True, exist_ok=True)
    out = root / "digits_f32.tflite"
    if not out.exists() or not out.with_name("digits_f32.manifest.json").exists():
        sm = digits_classifier_savedmodel(models_root(tmp_path_factory))
        _cached(out, lambda p: _to_tflite(sm, p))
        _write_manifest(out, "tflite", "fp32", SPEC, digits_labels(), "classify")
    return out


def deploy_inputs(tmp_path_factory) -> dict[str, Any]:
    if _CACHE:
        return _CACHE
    from edgeship.targets import get_target
    from edgeship.targets.wheels import edgeship_wheel

    from .data import moving_digit_frames, write_video
    from .sshd import free_port
    from .wheelhouse import wheelhouse

    base = Path(tmp_path_factory.mktemp("deploy"))
    reqs = get_target("generic-x86_64").requirements("3.11")
    names = [r.split(">")[0].split("<")[0].split("=")[0] for r in reqs] + RUNTIME_DISTS
    _CACHE.update(
        artifact=_artifact(tmp_path_factory),
        video=write_video(base / "belt.mp4", moving_digit_frames(80)[0]),
        wheelhouse=wheelhouse(base / "wheelhouse", names),
        edgeship_wheel=edgeship_wheel(),
        venvs=base / "venvs",
        port=free_port(),
    )
    return _CACHE


def health(port: int) -> int | None:
    """HTTP status of the runtime's /health on 127.0.0.1 (None when nothing answers)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status
    except OSError:
        return None


def stop_supervisor(root: Path, timeout: float = 10.0) -> None:
    """Stop the ``--init none`` supervisor of a test device root by its pidfile (and wait for it)."""
    import os
    import signal
    import time

    pidfile = Path(root) / "run" / "supervisor.pid"
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
