"""The benchmark scripts' parsers of the vendors' tools (their output format varies with the numbers)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "runtime_bench_vs_vendors.py"


@pytest.fixture(scope="module")
def vendors():
    spec = importlib.util.spec_from_file_location("runtime_bench_vs_vendors", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("line, ms", [
    ("[ INFO ]    Median:        1.26 ms", 1.26),
    ("[ INFO ]    Median:        843.21 us", 0.84321),
    ("[ INFO ]    Median:        843.21 µs", 0.84321),
    ("[ INFO ]    Median:        91000 ns", 0.091),
    ("[ INFO ]    Median:        1.5 s", 1500.0),
])
def test_benchmark_app_median_in_any_unit(vendors, line, ms):
    text = "[ INFO ] Latency:\n" + line + "\n[ INFO ]    Average:       1.30 ms\n"
    assert vendors.median_ms(text) == pytest.approx(ms)


def test_benchmark_app_median_missing(vendors):
    assert vendors.median_ms("[ INFO ] Throughput: 700 FPS\n") is None
