"""Keep freed frame buffers in the process (glibc's malloc; a no-op elsewhere).

A video pipeline allocates a frame-sized buffer for every decoded frame (640x480 BGR: 0.9 MB,
1920x1080: 6.2 MB) and frees most of them a moment later. With glibc's default, self-adjusting
thresholds such blocks keep going back to the kernel (munmap, or trimming the top of a heap) and
coming back as fresh zeroed pages: measured on a 640x480 camera-faster-than-the-model run, 17-19
page faults per decoded frame on the capture CPU (~30,000 a second), and ~45 TLB-shootdown
interrupts a second on the inference CPU (the kernel must flush every CPU that runs a thread of
the process). With both thresholds fixed high enough, freed frames are reused in place: 0.1-0.7
faults per frame and no shootdowns. On the 2-vCPU VM of the README the end-to-end effect (frame
rate, glass-to-glass) was within that machine's run-to-run noise.

Both thresholds are set together, on purpose: setting either one turns glibc's self-adjustment
off for both, and a fixed trim threshold with the default 128 KiB mmap threshold makes every
frame an mmap/munmap pair (~400 faults a frame). The cost is that up to ``TRIM_THRESHOLD`` bytes
of freed memory stay in the process instead of going back to the system; resident memory still
tops out at the pipeline's peak use.

If the user already tuned malloc (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or a
``glibc.malloc`` tunable in ``GLIBC_TUNABLES``), nothing is changed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from typing import Any

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# glibc's largest mmap threshold (DEFAULT_MMAP_THRESHOLD_MAX): 32 MiB on 64-bit, 16 MiB on 32-bit.
MMAP_THRESHOLD = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)
TRIM_THRESHOLD = 64 * 1024 * 1024
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_state: dict[str, Any] = {}


def user_tuned(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """True when the environment already sets glibc's malloc thresholds."""
    return any(k in environ for k in USER_SETTINGS) or "glibc.malloc" in environ.get("GLIBC_TUNABLES", "")


def keep_freed_frames() -> dict[str, Any] | None:
    """Fix glibc's mmap and trim thresholds once per process (see the module doc).

    Returns what is in effect, ``{"mmap_threshold": bytes, "trim_threshold": bytes}``, or None
    where nothing was set: not glibc, the user's own malloc settings, or mallopt refused.
    """
    if "result" in _state:
        return _state["result"]
    _state["result"] = result = _apply()
    return result


def in_effect() -> dict[str, Any] | None:
    """What :func:`keep_freed_frames` set in this process so far (None: nothing, or not called yet).
    The setting is process-wide: it stays for every later run in the process."""
    return _state.get("result")


def _apply() -> dict[str, Any] | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    if user_tuned():
        log.debug("malloc thresholds left as the environment sets them")
        return None
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:  # refused: glibc left self-adjusting, so leave trim alone too
        log.debug("mallopt(M_MMAP_THRESHOLD, %d) refused", MMAP_THRESHOLD)
        return None
    if mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:  # glibc always takes it; said in case a libc does not
        log.warning("mallopt(M_TRIM_THRESHOLD, %d) refused: freed frames may page-fault", TRIM_THRESHOLD)
        return None
    return {"mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}


def limit_arenas(n: int | None = None) -> int | None:
    """Cap glibc's malloc arenas at ``n`` (default: the CPUs this process may use), unless the user set
    ``MALLOC_ARENA_MAX`` (or a glibc.malloc tunable). glibc gives each thread that allocates an arena of its own,
    up to 8 per CPU, and a freed frame stays in its thread's arena: a multi-camera site has a capture and an
    output thread per camera, so without a cap every camera kept its own freed 1280x720 frames (four decode-bound
    cameras on 2 CPUs: peak RSS 199 -> 181 MiB at the same frame rate, 3 alternating rounds). Call it before the
    threads start. Returns the cap set, or None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    if "MALLOC_ARENA_MAX" in os.environ or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return None
    if n is None:
        from .affinity import cpu_count

        n = cpu_count()
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return int(n) if mallopt(M_ARENA_MAX, max(1, int(n))) == 1 else None
