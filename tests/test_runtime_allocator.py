"""glibc malloc tuning for frame buffers (edgeship.runtime.allocator), checked by page faults in
fresh subprocesses: the setting is process-wide and can only be judged from a clean start."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")

# Two 4 MiB frames allocated, written and freed, 50 times: how many page faults per round.
PROBE = """
import json, resource, sys
import numpy as np
from edgeship.runtime import allocator
assert allocator.in_effect() is None
applied = allocator.keep_freed_frames() if sys.argv[1] == "tuned" else None
assert allocator.in_effect() == applied
def frames():
    a = np.ones(4 << 20, np.uint8); b = np.ones(4 << 20, np.uint8); del b; del a
frames()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    frames()
print(json.dumps({"applied": applied, "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 50}))
"""


def probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env={**clean, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_frames_are_reused_instead_of_page_faulting_back_in():
    default = probe("default")
    tuned = probe("tuned")
    assert default["faults"] > 100  # glibc's self-adjusting thresholds hand the 8 MiB back every round
    assert tuned["applied"] == {"mmap_threshold": 4 * 1024 * 1024 * (8 if sys.maxsize > 2**32 else 4),
                                "trim_threshold": 64 * 1024 * 1024}
    assert tuned["faults"] < 5


def test_the_users_own_malloc_settings_are_left_alone():
    assert probe("tuned", MALLOC_TRIM_THRESHOLD_="1048576")["applied"] is None
    assert probe("tuned", GLIBC_TUNABLES="glibc.malloc.mmap_threshold=65536")["applied"] is None


# Eight threads each allocate at once (all holding their block until every one has one): how many arenas glibc made.
ARENAS = """
import ctypes, sys, threading
import numpy as np
from edgeship.runtime import allocator
cap = allocator.limit_arenas(2) if sys.argv[1] == "capped" else None
print("cap", cap, flush=True)
barrier = threading.Barrier(8)
def work():
    block = np.ones(64 << 10, np.uint8)  # below the mmap threshold: from the thread's arena
    barrier.wait()
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def arenas(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", ARENAS, mode], capture_output=True, text=True, check=True,
                         env={**clean, **env})
    return out.stdout.split()[-1], sum(1 for line in out.stderr.splitlines() if line.startswith("Arena "))


def test_a_site_caps_the_malloc_arenas_unless_the_user_did():
    assert arenas("capped") == ("2", 2)
    free = arenas("default")
    assert free[1] > 2, free  # glibc's own: up to 8 per CPU, one per thread that allocates at once
    assert arenas("capped", MALLOC_ARENA_MAX="4")[0] == "None"
