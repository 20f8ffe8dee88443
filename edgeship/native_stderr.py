"""Filter what native libraries write straight to file descriptor 2 (bypassing Python logging).

LiteRT prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` on every model load,
which no environment variable silences; in a camera service's journal or next to ``--json`` output
it is noise. :func:`filtered_stderr` sends fd 2 to a temporary file for the duration of a block and
then writes back every line that does not match one of the given patterns, so real native errors
and warnings still reach the terminal.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator, Sequence

LITERT_NOISE = (r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$",
                r"^INFO: Initialized TensorFlow Lite runtime\.$")


def keep_lines(text: str, patterns: Sequence[str]) -> str:
    """``text`` without the lines that match any of ``patterns`` (pure)."""
    rx = [re.compile(p) for p in patterns]
    kept = [ln for ln in text.splitlines(keepends=True) if not any(r.search(ln.rstrip("\r\n")) for r in rx)]
    return "".join(kept)


@contextlib.contextmanager
def filtered_stderr(patterns: Sequence[str] = LITERT_NOISE) -> Iterator[None]:
    """Drop native stderr lines matching ``patterns`` inside the block (no-op when fd 2 cannot be redirected)."""
    if os.environ.get("EDGESHIP_NATIVE_LOGS") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            rest = keep_lines(tmp.read().decode("utf-8", errors="replace"), patterns)
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()
