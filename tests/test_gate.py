"""The accuracy gate in convert(): real TFLite and OpenVINO conversions of digit classifiers."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship.cli import cli
from edgeship.converters.gate import pick, search
from edgeship.converters.layers import LayerError
from edgeship.converters.tflite import tflite_ops
from edgeship.converters.verify import verify_artifact
from edgeship.manifest import Manifest
from tests.helpers.sensitive import CONV_LAYERS, converted, logit_dominated, workspace


@pytest.fixture(scope="module")
def ws():
    return workspace()


def tflite_int8_convs(path) -> tuple[int, int]:
    """(int8 CONV_2D ops, all CONV_2D ops) of a .tflite."""
    convs = [op for op in tflite_ops(path) if op["op"] == "CONV_2D"]
    return sum(op["dtypes"][0] == "int8" for op in convs), len(convs)


def openvino_int8_convs(path) -> tuple[int, int]:
    """(convolutions OpenVINO's CPU plugin runs in int8, all convolutions) of an IR."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    precisions = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if str(info["layerType"].astype(str)) == "Convolution":
            precisions.append(str(info["runtimePrecision"].astype(str)).lower())
    return sum(p in ("i8", "u8") for p in precisions), len(precisions)


COUNTERS = {"tflite": tflite_int8_convs, "openvino": openvino_int8_convs}


def test_a_model_int8_handles_well_passes_untouched(ws):
    results = converted("good", 1.0)
    for fmt, r in results.items():
        m = Manifest.load(r.path)
        gate = m.conversion.accuracy_gate
        assert m.precision == "int8", fmt
        assert gate.status == "passed" and gate.steps == [] and gate.float_layers == [], fmt
        assert m.accuracy.drop <= 1.0 and m.accuracy.budget == 1.0 and m.accuracy.passed is True
        int8, total = COUNTERS[fmt](r.path)
        assert int8 == total == len(CONV_LAYERS), (fmt, int8, total)


def test_plain_int8_of_the_sensitive_model_collapses(ws):
    results = converted("sensitive", None)
    for fmt, r in results.items():
        assert r.manifest.conversion.accuracy_gate.status == "not run"
        report = verify_artifact(r.path, ws["sensitive"], ws["dataset"])
        assert report.drop > 20.0, (fmt, report.drop)
        assert report.passed is False and "exceeds the budget of 1 points" in report.reason
        assert any("collapsed" in w for w in report.warnings), report.warnings


def test_gate_brings_the_sensitive_model_within_one_point_cli(ws, tmp_path):
    out = tmp_path / "gated"
    r = CliRunner().invoke(cli, ["convert", str(ws["sensitive"]), "-f", "tflite", "-f", "openvino", "-p", "int8",
                                 "--calib", str(ws["calib"]), "--max-drop", "1.0", "--prefer", "quantized", "--equalize", "off", "-o", str(out),
                                 "--json"])
    assert r.exit_code == 0, r.output
    artifacts = json.loads(r.stdout)["artifacts"]
    assert {a["format"] for a in artifacts} == {"tflite", "openvino"}
    for a in artifacts:
        fmt, path = a["format"], a["path"]
        m = Manifest.load(path)
        gate = m.conversion.accuracy_gate
        assert m.precision == "int8-mixed", fmt
        assert gate.initial_value > 20.0 and gate.value <= 1.0 and gate.fallback is None
        assert 1 <= len(gate.float_layers) <= 2 and all(f["reason"] for f in gate.float_layers)
        mixed = next(row for row in gate.ladder if row["rung"] == "int8-mixed")  # the settings its candidates used
        assert "bias correction " + ("none" if fmt == "tflite" else "fast") in mixed["reason"], mixed
        assert m.accuracy.drop <= 1.0 and m.accuracy.budget == 1.0
        # an independent verification of the published file agrees
        report = verify_artifact(path, ws["sensitive"], ws["calib"])
        assert report.drop <= 1.0 and report.passed, (fmt, report.drop)
        int8, total = COUNTERS[fmt](path)
        assert total == len(CONV_LAYERS) and int8 >= 3, (fmt, int8, total)  # most conv layers stay int8
        if fmt == "tflite":
            assert any("conv2" in n for n in gate.float_nodes) and not any("conv1" in n for n in gate.float_nodes)


def test_a_float_rung_when_no_mixed_model_fits_and_the_ladder_is_recorded(ws, tmp_path):
    from edgeship.converters import convert
    from edgeship.converters.ladder import RUNGS

    model = logit_dominated(ws["good_model"])
    (r,) = convert(model, formats=["tflite"], precision="int8", calib=ws["dataset"], out_dir=tmp_path, name="dominated")
    gate = r.manifest.conversion.accuracy_gate
    assert gate.initial_value > 20.0
    ladder = {row["rung"]: row for row in gate.ladder}
    assert list(ladder) == list(RUNGS), ladder  # every rung was tried, in order
    assert ladder["int8"]["status"] == ladder["int8-mixed"]["status"] == "over budget"
    kept = [row for row in gate.ladder if row["status"] == "kept"]
    assert len(kept) == 1 and kept[0]["rung"] == r.manifest.precision == gate.fallback != "int8"
    assert kept[0]["passed"] and gate.value <= 1.0 and "meets the drop within 1 points" in gate.reason
    timed = [row for row in gate.ladder if row["passed"] and row["latency_ms"] is not None]
    assert len(timed) >= 2 and all(row["size_bytes"] > 0 for row in timed)
    fastest = min(row["latency_ms"] for row in timed)  # nothing that met the budget is clearly faster than the rung kept
    assert kept[0]["latency_ms"] <= fastest + max(0.05 * fastest, 0.01) + 1e-9, gate.ladder
    assert r.manifest.io_dtype["input"] == "float32"


def test_ladder_pick_fastest_with_a_tie_band_or_smallest():
    from edgeship.converters.ladder import Rung, explain
    from edgeship.converters.ladder import pick as pick_rung

    def rungs():
        return [Rung("int8", "a", passed=True, latency_ms=1.00, size_bytes=10),
                Rung("dynamic", "b", passed=True, latency_ms=0.98, size_bytes=12),  # within 5%: a tie
                Rung("fp16", "c", passed=True, latency_ms=0.50, size_bytes=20),
                Rung("fp32", "d", passed=False, latency_ms=0.10, size_bytes=40, excess=2.0)]

    rs = rungs()
    kept = pick_rung(rs, "speed")
    assert kept.name == "fp16"
    explain(rs, kept, "speed")
    assert [r.status for r in rs] == ["slower", "slower", "kept", "over budget"]
    rs = rungs()[:2]
    assert pick_rung(rs, "speed").name == "int8"  # the tie goes to the more quantized rung
    assert pick_rung(rungs(), "size").name == "int8"
    failing = [Rung("int8", "a", passed=False, excess=3.0), Rung("fp16", "c", passed=False, excess=0.5)]
    assert pick_rung(failing).name == "fp16"  # none met it: the closest
    with pytest.raises(ValueError, match="prefer"):
        pick_rung(rungs(), "cheap")


def _err(name, error, order, consumers=("c",)):
    return LayerError(name=name, op="CONV_2D", error=error, sqnr_db=10.0, consumers=list(consumers), keep_float=[name], order=order)


def test_pick_puts_the_earliest_severe_tensor_first():
    ranking = [_err("victim", 1.0, 5), _err("culprit", 0.97, 2), _err("mild", 0.1, 1), _err("output", 1.0, 9, consumers=())]
    assert [e.name for e in pick(ranking, 1)] == ["culprit"]
    assert [e.name for e in pick(ranking, 3)] == ["culprit", "victim", "mild"]
    assert pick([_err("tiny", 1e-5, 0)], 1) == []


def test_search_doubles_the_chunk_and_trims_by_bisection():
    names = [f"t{i}" for i in range(8)]
    ranking = [_err(n, 0.9, i) for i, n in enumerate(names)]
    needed = {"t0", "t1", "t2", "t3", "t4"}  # passes once these five are float
    calls = []

    def measure(chosen):
        calls.append(len(chosen))
        return 0.5 if needed <= {e.name for e in chosen} else 10.0

    chosen, steps = search(lambda chosen: ranking, measure, 1.0)
    # 1, then 1+2=3, then 3+4=7 passes; bisection over the last 4 finds that 2 more (5 total) suffice
    assert calls[:3] == [1, 3, 7]
    assert [e.name for e in chosen] == names[:5]
    assert steps[-1].get("trim") and len(steps) == len(calls)


def test_search_gives_up_when_the_ranking_is_exhausted():
    ranking = [_err("a", 0.9, 0)]
    chosen, steps = search(lambda chosen: [e for e in ranking if e not in chosen], lambda c: 5.0, 1.0)
    assert chosen is None and len(steps) == 1 and not math.isnan(steps[0]["value"])


def test_gate_numbers_are_json_clean(ws):
    for r in converted("good", 1.0).values():
        json.dumps(Manifest.load(r.path).to_dict(), allow_nan=False)
    assert np.isfinite(converted("good", 1.0)["tflite"].manifest.accuracy.drop)


def test_gate_keeps_the_callers_openvino_ignored_scope(ws, tmp_path):
    import openvino as ov

    from edgeship.converters import convert

    user_node = "Convolution_0"  # node names are stable across conversions
    (r,) = convert(ws["sensitive"], formats="openvino", precision="int8", calib=ws["calib"], out_dir=tmp_path,
                   name="scoped", max_drop=1.0, ignored_scope=[user_node], prefer="quantized", equalize="off")
    gate = r.manifest.conversion.accuracy_gate
    assert r.manifest.precision == "int8-mixed" and gate.value <= 1.0 and gate.fallback is None
    model = ov.Core().read_model(str(r.path))
    conv = next(op for op in model.get_ops() if op.get_friendly_name() == user_node)
    producers = [conv.input_value(i).get_node() for i in range(2)]
    # NNCF quantizes activations with FakeQuantize and stores weights as int8 + a "fq_weights" Multiply
    quantized = [n.get_friendly_name() for n in producers if n.get_type_name() == "FakeQuantize" or "/fq_" in n.get_friendly_name()]
    assert not quantized, f"the caller's ignored convolution was quantized by a gate candidate: {quantized}"
    int8, total = openvino_int8_convs(r.path)
    assert total - int8 >= 1 and int8 >= 3, (int8, total)


def test_sqnr_budget_judges_the_worst_output_nan_included():
    from edgeship.converters.verify import excess, judge, worst_output

    outs = [{"index": 0, "sqnr_db": 30.0}, {"index": 1, "sqnr_db": float("nan")}, {"index": 2, "sqnr_db": float("inf")}]
    assert worst_output(outs) == (1, -math.inf)  # a NaN output is the worst, wherever it is listed
    passed, reason = judge(None, None, None, outputs=outs, min_sqnr=20.0)
    assert passed is False and "output 1" in reason and excess(None, None, outs, 20.0) == math.inf
    ok = outs[:1] + outs[2:]
    assert judge(None, None, 1.0, outputs=ok, min_sqnr=20.0) == (
        True, "output 0 SQNR 30.0 dB is at least the budget of 20 dB (the point budget does not apply: no class-score "
              "output identified)")
    assert judge("drop", 2.0, 1.0, outputs=ok, min_sqnr=20.0)[0] is False and excess(2.0, 1.0, ok, 20.0) == 1.0
    assert judge("drop", 0.5, 1.0, outputs=ok, min_sqnr=20.0)[0] is True and excess(0.5, 1.0, ok, 20.0) == -0.5
    assert judge(None, None, None) == (None, None) and excess(None, None) is None
