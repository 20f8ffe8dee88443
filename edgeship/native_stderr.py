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


# What TensorFlow, XLA, absl, the MLIR quantizer and LiteRT print on fd 2 that is not edgeship's to say:
# C++ log lines (I/W/E + date, including the harmless "failed call to cuInit" E-line on a machine
# without a GPU), absl's pre-init notice, oneDNN and CPU-feature notices, the quantizer's option dump.
WORKSTATION_NOISE = LITERT_NOISE + (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",  # also after a bar
    r"^[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\] ",  # INFO and WARNING lines of the C++ log (E and F lines stay, but:)
    r"^E\d{4} [\d:.]+\s+\d+ (cuda_executor|cuda_diagnostics|cuda_platform|cuda_blas|cuda_dnn|cuda_fft|text_format)\.cc:\d+\] ",
    r"oneDNN custom operations are on",
    r"^To enable the following instructions: .* in other operations, rebuild TensorFlow",
    r"^This TensorFlow binary is optimized to use available CPU instructions",
    r"Could not find cuda drivers on your machine",
    r"fully_quantize: \d+, inference_type: \d+, input_inference_type: ",  # also when a progress bar precedes it
    r"^WARNING:absl:",
)


# The filter runs in a child process: it never needs this process's GIL, so native code that writes a
# lot to fd 2 while holding the GIL cannot deadlock against it, and after an abort() the child still
# drains what was written. It forwards a piece as soon as it ends in a newline or a carriage return
# (progress bars redraw with \r), and everything left at the end.
_CHILD = r"""
import os, re, sys
rx = [re.compile(p) for p in sys.argv[1:]]
out, buf = 1, b""
def emit(piece):
    text = piece.decode("utf-8", "replace").rstrip("\r\n")
    if not any(r.search(text) for r in rx):
        os.write(out, piece)
while True:
    try:
        chunk = os.read(0, 65536)
    except OSError:
        chunk = b""
    if not chunk:
        break
    buf += chunk
    while True:
        cut = min((i for i in (buf.find(b"\n"), buf.find(b"\r")) if i >= 0), default=-1)
        if cut < 0:
            break
        emit(buf[:cut + 1])
        buf = buf[cut + 1:]
if buf:
    emit(buf)
"""


class _Filter:
    """fd 2 -> a pipe -> a small child process that writes every piece not matching the patterns to the real stderr."""

    def __init__(self, patterns: Sequence[str]) -> None:
        import subprocess

        sys.stderr.flush()
        self.saved = os.dup(2)
        read_fd, write_fd = os.pipe()
        try:
            self.child = subprocess.Popen([sys.executable, "-S", "-c", _CHILD, *patterns], stdin=read_fd, stdout=self.saved,
                                          stderr=subprocess.DEVNULL, close_fds=True, start_new_session=False)
        finally:
            os.close(read_fd)
        os.dup2(write_fd, 2)
        os.close(write_fd)

    def close(self) -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.saved, 2)  # the pipe's last writer in this process goes: the child drains it and ends
        try:
            self.child.wait(timeout=2.0)
        except Exception:  # noqa: BLE001 - never hang an exiting CLI on its stderr filter
            pass


_ACTIVE: list[_Filter] = []


def stderr_is_terminal() -> bool:
    """Whether the process's stderr is a terminal (fd 2 itself, or what it was before the filter took it)."""
    if _ACTIVE:
        try:
            return os.isatty(_ACTIVE[0].saved)
        except OSError:
            return False
    try:
        return os.isatty(2)
    except OSError:
        return False


def install_filter(patterns: Sequence[str] = WORKSTATION_NOISE) -> bool:
    """For the rest of the process, drop native stderr lines matching ``patterns`` (the CLI's entry point
    calls this unless ``-v``; ``EDGESHIP_NATIVE_LOGS=1`` turns it off). Returns whether it is active."""
    import atexit

    if _ACTIVE or os.environ.get("EDGESHIP_NATIVE_LOGS") == "1":
        return bool(_ACTIVE)
    try:
        f = _Filter(patterns)
    except (OSError, ValueError):
        return False
    _ACTIVE.append(f)
    atexit.register(f.close)
    return True
