"""CPU pinning of the pipeline's two busy threads (Linux; a no-op elsewhere).

With a source faster than the model, the capture thread (decode + preprocess) and the inference
loop both run flat out. Left to the scheduler they migrate between cores and evict each other's
cache; on a 2-core VM pinning them apart took the pipeline from ~72% to ~88% of the model's pure
inference rate (benchmarks/runtime_pipeline.py). The plan: the capture thread gets the last
allowed CPU, the inference loop all the others. Threads a backend created before (XNNPACK's or
OpenVINO's workers) keep their own affinity.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def allowed_cpus() -> frozenset[int]:
    """CPUs this process may run on (empty where the OS does not say)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return frozenset()


def cpu_count() -> int:
    """How many CPUs this process may use (its affinity where the OS says, else every CPU; at least 1)."""
    return len(allowed_cpus()) or os.cpu_count() or 1


def plan(cpus: frozenset[int] | set[int]) -> tuple[frozenset[int], frozenset[int]] | None:
    """(inference CPUs, capture CPUs) for the allowed ``cpus``, or None when there are fewer than 2."""
    if len(cpus) < 2:
        return None
    ordered = sorted(cpus)
    return frozenset(ordered[:-1]), frozenset(ordered[-1:])


def pin_current_thread(cpus: frozenset[int] | None) -> frozenset[int] | None:
    """Restrict the calling thread to ``cpus``; returns its previous CPUs (None when nothing changed)."""
    if not cpus:
        return None
    try:
        before = frozenset(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus)  # pid 0 is the calling thread on Linux
    except (AttributeError, OSError) as e:
        log.debug("cannot pin thread to CPUs %s: %s", sorted(cpus), e)
        return None
    return before
