"""edgeship quickstart end to end: one real (small) run, then a re-run that reuses everything,
a damaged output that is rebuilt alone, the stamps' rules, and the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from edgeship.manifest import Manifest
from edgeship.quickstart import ARTIFACTS, STEPS, run_quickstart
from edgeship.quickstart.stamps import StampStore, Unit, fingerprint

EDGESHIP = [sys.executable, "-m", "edgeship.cli"]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under root (the lock file included)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def first(quickstart_small):
    return quickstart_small


def test_first_run_builds_every_artifact(first):
    out, s, lines = first
    assert [ln.split("]")[0] for ln in lines] == [f"[{i}/{len(STEPS)}" for i in range(1, len(STEPS) + 1)]
    assert not s["reused_everything"] and all(st["ran"] for st in s["steps"].values())
    for key in ("models/digits.keras", "models/shapes.keras", "videos/belt.mp4", "videos/belt.json", "videos/shapes.mp4",
                "videos/shapes.json", "data/digits_calib.npz", "data/shapes_calib.npz"):
        assert (out / key).stat().st_size > 0, key
    assert s["models"]["digits"]["accuracy"] > 80
    by_name = {a["name"]: a for a in s["artifacts"]}
    assert set(by_name) == {a.name for a in ARTIFACTS}
    for a in ARTIFACTS:
        row = by_name[a.name]
        path = out / "models" / a.filename
        m = Manifest.load(path)
        assert m.hashes["artifact"] and m.sizes["raw_bytes"] == row["size_bytes"] > 0
        assert 0 < row["gzip_bytes"] <= row["size_bytes"] * 1.01
        assert m.accuracy.samples > 0 and m.latency.p50_ms == pytest.approx(row["p50_ms"])
        assert 0 < row["p50_ms"] <= row["p99_ms"] and row["fps"] > 0
        assert m.conversion.accuracy_gate.max_drop_pp == 1.0
        if a.format == "openvino":
            assert path.with_suffix(".bin").stat().st_size > 0
        if a.model == "digits":  # labelled: every artifact within the 1-point budget of its float model
            assert row["accuracy"] > 80 and row["reference_accuracy"] > 80
            assert row["passed"] is True and row["drop"] <= 1.0 + 1e-9 or a.prune or a.prune_channels
        else:
            assert row["metric"].startswith("detection recall") and row["accuracy"] is not None
    pruned = by_name["digits_int8_p50"]
    assert pruned["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert by_name["digits_int8"]["gzip_bytes"] > pruned["gzip_bytes"]
    # the pruned, fine-tuned model stays close to the unpruned float model
    assert pruned["accuracy"] > by_name["digits_int8"]["reference_accuracy"] - 5
    # half the channels removed and distilled: fewer parameters, accuracy won back to near the unpruned model's
    cut = Manifest.load(out / "models" / "digits_int8_c50.tflite").conversion.channel_pruning
    assert cut["channels"]["params_after"] < 0.5 * cut["channels"]["params_before"] and cut["distillation"]["epochs"] > 0
    assert by_name["digits_int8_c50"]["accuracy"] > by_name["digits_int8"]["reference_accuracy"] - 10
    notes = json.loads((out / "summary.json").read_text())["report"]["notes"]
    assert any(n.startswith("digits_int8_c50: 50% of the channels removed") and "x)" in n for n in notes), notes


def test_first_run_runtime_bundle_and_report(first):
    out, s, _ = first
    belt, scene = s["runs"]["belt"], s["runs"]["scene"]
    assert belt["frames_processed"] == len(json.loads((out / "videos/belt.json").read_text())["labels"])
    assert belt["score"]["accuracy"] > 80
    assert scene["frames_processed"] > 0 and scene["score"]["objects"] > 0
    assert (out / "runs/belt/results.jsonl").read_text().count("\n") == belt["frames_processed"]
    assert (out / "runs/scene/annotated.mp4").stat().st_size > 0
    if "industrial" in s["runs"]:
        assert (out / "runs/industrial/counters.sqlite").is_file()
        assert "parts inspected" in s["runs"]["industrial"]["detail"]
    (b,) = s["bundles"]
    assert b["target"] == "generic-x86_64"
    with tarfile.open(out / b["path"]) as tar:
        names = set(tar.getnames())
        release = json.loads(tar.extractfile("release.json").read())
    assert {"model/digits_int8.tflite", "model/digits_int8.manifest.json", "deploy.yaml", "SHA256SUMS"} <= names
    assert release["target"] == "generic-x86_64" and release["format"] == "tflite"
    html = (out / "report.html").read_text()
    assert len(re.findall(r"src='data:image/png;base64,[A-Za-z0-9+/=]{200,}'", html)) == 3
    md = (out / "report.md").read_text()
    for a in ARTIFACTS:
        assert a.name in md and a.name in html
    assert "## Runtime on the demo videos" in md and "## Time per step" in md and "generic-x86_64" in md
    summary_json = json.loads((out / "summary.json").read_text())
    assert len(summary_json["report"]["artifacts"]) == len(ARTIFACTS) + 2  # + the two Keras reference rows


def test_the_belt_video_matches_the_digits_calibration_profile(first):
    """The industrial example runs the belt video through digits_int8: its drift watch must stay quiet there.
    The calibration frames pass through the belt camera's codec as the video's frames do (a codec's loss of
    fine detail read as a blur once: frame_focus PSI 4.6 on the first run of the example on a device)."""
    from edgeship.runtime.drift_check import check_drift

    out, _, _ = first
    report = check_drift(str(out / "models/digits_int8.tflite"), str(out / "videos/belt.mp4"))
    assert report.frames > 0 and {r["statistic"] for r in report.rows} >= {"frame_focus", "focus", "brightness"}
    assert not report.drifted, report.to_dict()


def test_second_run_reuses_everything_through_the_cli(first):
    out, _, _ = first
    before = _snapshot(out)
    env = dict(os.environ, EDGESHIP_PROGRESS="0")
    proc = subprocess.run(EDGESHIP + ["quickstart", "--out", str(out), "--small", "--json"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["reused_everything"] and all(not st["ran"] for st in s["steps"].values())
    assert proc.stderr.count("reused") == len(STEPS)
    assert s["artifacts"] and s["report_html"] == str(out / "report.html")
    assert _snapshot(out) == before


def test_second_run_does_not_even_import_tensorflow(first):
    out, _, _ = first
    code = ("import json, sys; from edgeship.quickstart import run_quickstart; "
            f"s = run_quickstart({str(out)!r}, small=True); "
            "print(json.dumps([s['reused_everything'], sorted(m for m in ('tensorflow', 'keras', 'openvino', 'nncf') if m in sys.modules)]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, EDGESHIP_PROGRESS="0"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [True, []]


def test_a_damaged_output_is_rebuilt_alone(first):
    out, _, _ = first
    victim = out / "models" / "digits_fp16.tflite"
    victim.write_bytes(victim.read_bytes()[:100])  # what an interrupted copy would leave
    s = run_quickstart(out, small=True)
    ran = {step: st["ran"] for step, st in s["steps"].items()}
    assert ran == {"train": [], "calibrate": [], "convert": ["digits_fp16"], "verify": ["digits_fp16"],
                   "bench": ["digits_fp16"], "run": [], "bundle": [], "report": ["report"]}
    m = Manifest.load(victim)
    assert m.hashes["artifact"] == _sha(victim) and m.accuracy.samples > 0 and m.latency.p50_ms > 0


def _sha(p: Path) -> str:
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_stamps_trust_only_complete_outputs(tmp_path):
    calls = []

    def make(ctx):
        calls.append(1)
        (tmp_path / "a.txt").write_text("done")
        return {"n": len(calls)}

    store = StampStore(tmp_path)
    unit = Unit("s", "u", {"x": 1}, make, hashed=["a.txt"])
    key = store.key(unit, {})
    assert store.load_valid(unit, key) is None
    (tmp_path / "a.txt").write_text("half")  # an output without a stamp is not trusted
    assert store.load_valid(unit, key) is None
    stamp = store.write(unit, key, make(None), 0.1)
    assert store.load_valid(unit, key)["result"] == {"n": 1}
    assert store.load_valid(unit, store.key(Unit("s", "u", {"x": 2}, make, hashed=["a.txt"]), {})) is None
    (tmp_path / "a.txt").write_text("changed")
    assert store.load_valid(unit, key) is None
    child = Unit("s", "v", {}, make, deps=["s.u"])
    assert store.key(child, {"s.u": fingerprint(stamp)}) != store.key(child, {"s.u": "other"})
    with pytest.raises(Exception, match="depends on"):
        store.key(child, {})


def test_cli_help_has_an_example():
    proc = subprocess.run(EDGESHIP + ["quickstart", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Example:" in proc.stdout and "--force" in proc.stdout
    assert "\n    edgeship quickstart\n" in proc.stdout
