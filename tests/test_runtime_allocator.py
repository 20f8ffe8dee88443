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
