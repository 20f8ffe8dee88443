"""Bounds on numeric options: one home for what makes sense, used by the CLI, the config and the Python API.

A value beyond them is a mistake (``--threads 100000`` crashed the interpreter; ``--warmup 1e20``
never ends), refused with one line.
"""

MAX_THREADS = 256  # inference threads (XNNPACK, OpenVINO)
MAX_OUTPUT_QUEUE = 1000  # inferred frames waiting for post-processing and sinks
MAX_BENCH_SECONDS = 3600.0  # one bench measurement
MAX_WARMUP = 100_000  # untimed inferences before a bench


def check_threads(threads: int | None) -> int | None:
    """``threads`` if None or 1..MAX_THREADS, else InputError."""
    from .errors import InputError

    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise InputError(f"threads must be 1-{MAX_THREADS}, got {threads!r}")
    return threads
