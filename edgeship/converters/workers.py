"""Running a tfmot worker (``python -m edgeship.converters._NAME_worker REQUEST.json``) in its own process.

Importing tensorflow-model-optimization switches a whole process to legacy Keras, so pruning and
quantization-aware training happen in a child process that reads a JSON request and writes a JSON
result (or ``{"error": "..."}``), which comes back here as a dict or one ConversionError line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..errors import ConversionError


def run_worker(module: str, request: dict[str, Any], workdir: Path, what: str,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m module REQUEST.json`` with ``request`` (which names its ``result`` file) and ``env`` on top of
    this process's environment; its result dict."""
    req_path = Path(workdir) / "request.json"
    req_path.write_text(json.dumps(request))
    env = {**os.environ, **(env or {})}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    proc = subprocess.run([sys.executable, "-m", module, str(req_path)], capture_output=True, text=True, env=env,
                          check=False)
    result_path = Path(request["result"])
    if not result_path.exists():
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        raise ConversionError(f"{what}: the worker exited with code {proc.returncode}: {tail[0][:300]}")
    result = json.loads(result_path.read_text())
    if "error" in result:
        raise ConversionError(f"{what}: {result['error']}")
    return result


def worker_main(run: Any, argv: list[str]) -> int:
    """A worker process's entry point: read the request file, ``run`` it, write the result (or a one-line
    error) atomically where the request says; exit 0, or 3 on an error (what :func:`run_worker` reads)."""
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    req = json.loads(Path(argv[0]).read_text())
    try:
        result = run(req)
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        result = {"error": f"{type(e).__name__}: {lines[0] if lines else ''}"[:500]}
    tmp = Path(req["result"] + ".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, req["result"])
    return 0 if "error" not in result else 3
