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
