"""The demo models and videos (edgeship.demo), built once per pytest session and shared by test files.

    out = demo_dir(tmp_path_factory)   # OUT/models/*.tflite, OUT/videos/*.mp4 (see edgeship.demo.demo_paths)
"""

from __future__ import annotations

import threading
from pathlib import Path

_lock = threading.Lock()


def demo_dir(tmp_path_factory) -> Path:
    """Build (first call in the session) or reuse the demo data set under the session's base temp dir."""
    from edgeship.demo import build_demo

    out = Path(tmp_path_factory.getbasetemp()) / "edgeship-demo"
    with _lock:
        build_demo(out)  # trains only what is missing
    return out
