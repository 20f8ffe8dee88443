"""Contracts that hold the parts together: one labels reader, one source resolver, one format table.

The same labels file and the same source strings must give the same result in calibrate,
convert, verify, run and bundle; a suffix or a format name lives only in ``edgeship/formats``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship import formats
from edgeship.calibration import RepresentativeDataset, build_dataset
from edgeship.calibration.sources import source_kind as calibration_kind
from edgeship.cli import cli as main
from edgeship.errors import CalibrationError, InputError, ModelError
from edgeship.labels import parse_labels, read_labels
from edgeship.manifest import SCHEMA_VERSION, Manifest
from edgeship.runtime.sources import LIVE_KINDS, parse_source
from edgeship.spec import InputSpec
from tests.helpers.data import write_digits_folder, write_video

PACKAGE = Path(__file__).resolve().parents[1] / "edgeship"
DIGITS = [str(i) for i in range(10)]


# ---- labels ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("# classes\ncat\n\ndog\n", ["cat", "dog"]),
    ("\ufeffcat\r\ndog\r\n", ["cat", "dog"]),
    ('["cat", "dog", "bird"]', ["cat", "dog", "bird"]),
    ('{"1": "dog", "0": "cat"}', ["cat", "dog"]),
    ('{"0": "cat", "2": "bird"}', ["cat", "1", "bird"]),  # a gap in the ids keeps every later id in place
])
def test_labels_forms(text, expected):
    assert parse_labels(text) == expected


@pytest.mark.parametrize("text, message", [
    ("", "has no class names"),
    ("# only a comment\n", "has no class names"),
    ('["cat", ', "is not valid JSON"),
    ('{"a": "cat"}', "integer class ids"),
    ("cat\ncat\n", "repeats class names: cat"),
    ("3", None),  # a one-class text file is fine
])
def test_labels_errors(text, message):
    if message is None:
        assert parse_labels(text) == ["3"]
        return
    with pytest.raises(InputError, match=message):
        parse_labels(text, "labels.txt")


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("labels") / "labels.txt"
    p.write_text("# digits, in the model's output order\n\n" + "\n".join(f"digit-{d}" for d in DIGITS) + "\n")
    return p


def test_the_same_labels_file_gives_the_same_names_in_every_command(labels_file, art, tmp_path):
    want = [f"digit-{d}" for d in DIGITS]
    assert read_labels(labels_file) == want
    # calibrate
    folder = write_digits_folder(tmp_path / "digits", per_class=3)
    out = tmp_path / "calib.npz"
    r = CliRunner().invoke(main, ["calibrate", str(folder), "--input-size", "32x32", "--count", "20", "--holdout", "0.2",
                                  "--labels", str(labels_file), "--no-folder-labels", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert RepresentativeDataset.load(out).labels == want
    # convert (the function convert() settles its labels with)
    from edgeship.converters.inputs import resolve_labels

    assert resolve_labels(str(labels_file), None) == want
    # run: the class names in the results
    res = tmp_path / "res.jsonl"
    r = CliRunner().invoke(main, ["run", str(art["tflite_int8"]), "--source", str(folder), "--labels", str(labels_file),
                                  "--max-frames", "3", "--sink", f"jsonl:{res}", "--json"])
    assert r.exit_code == 0, r.output
    names = {c["label"] for line in res.read_text().splitlines() for c in json.loads(line)["classification"]}
    assert names and names <= set(want)
    # a JSON list of the same names gives the same thing
    as_json = tmp_path / "labels.json"
    as_json.write_text(json.dumps(want))
    assert read_labels(as_json) == want and resolve_labels(str(as_json), None) == want


# ---- sources -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    folder = write_digits_folder(root / "digits", per_class=2)
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(6)]
    video = write_video(root / "clip.mp4", frames)
    odd = root / "cam1.bin"
    odd.write_bytes(video.read_bytes())
    return {"folder": folder, "video": video, "odd": odd}


@pytest.mark.parametrize("text", ["0", "/dev/video2", "rtsp://10.0.0.1/s", "rtsps://u:p@h/s", "rtmp://h/live", "rtmps://h/live",
                                  "udp://127.0.0.1:5000", "http://cam/stream.mjpg", "https://cam/snap.jpg",
                                  "gst:pi-libcamera", "gst:jetson-csi", "videotestsrc ! videoconvert ! appsink",
                                  "stream:udp://h:1", "camera:2"])
def test_live_sources_are_live_for_calibration_and_the_runtime(text):
    kind, _ = parse_source(text)
    assert kind in LIVE_KINDS
    assert calibration_kind(text) == ("stream", text)


def test_file_sources_resolve_the_same(files):
    for key in ("folder", "video"):
        text = str(files[key])
        assert parse_source(text) == (key, text) == calibration_kind(text)
    explicit = f"video:{files['odd']}"  # a video whose suffix says nothing
    assert parse_source(explicit) == ("video", str(files["odd"])) == calibration_kind(explicit)
    assert calibration_kind(str(files["folder"]) + "/x.npz") == ("array", str(files["folder"]) + "/x.npz")


def test_calibrate_reads_gst_sources_through_the_device_reader():
    """`gst:` templates reach the GStreamer reader (this pip OpenCV has no GStreamer: it says so)."""
    with pytest.raises(CalibrationError, match="GStreamer"):
        build_dataset(["gst:pi-libcamera"], spec=InputSpec(32, 32), duration=0.5, timeout=1)


def test_config_sources_use_the_same_resolver(files, tmp_path):
    from edgeship.runtime.config import SourceCfg

    for text in ("rtmps://h/live", "gst:pi-libcamera", "0", "http://cam/x.mjpg"):
        assert SourceCfg.model_validate({"uri": text}, context={"base": str(tmp_path)}).uri == text
    cfg = SourceCfg.model_validate({"uri": f"video:{files['odd'].name}"}, context={"base": str(files["odd"].parent)})
    assert cfg.uri == f"video:{files['odd']}"
    with pytest.raises(Exception, match="file not found"):
        SourceCfg.model_validate({"uri": "missing.mp4"}, context={"base": str(tmp_path)})


# ---- formats -----------------------------------------------------------------------------------------
def test_format_table():
    tfl, ov = formats.get("tflite"), formats.get("openvino")
    assert formats.get("litert") is tfl and formats.get("ov") is ov
    assert ov.files("a/m.xml") == [Path("a/m.xml"), Path("a/m.bin")] and tfl.files("m.tflite") == [Path("m.tflite")]
    assert formats.for_path("x.onnx") is ov and formats.for_path("x.keras") is None
    assert formats.resolve("weird.bin", type("M", (), {"format": "tflite"})()) is tfl
    with pytest.raises(ModelError, match="cannot tell the format of m.pb"):
        formats.resolve("m.pb")
    with pytest.raises(InputError, match="precision 'int16x8' is not available for openvino"):
        formats.validate_formats(["openvino"], "int16x8")


def test_tensors_are_read_with_one_rule(art):
    """The converter's manifest, the format reader and the runtime backend agree on every tensor."""
    from edgeship.runtime.backends import open_backend

    for key in ("tflite_int8", "tflite_f32", "openvino"):
        path = art[key]
        inputs, outputs = formats.for_path(path).read_tensors(path)
        plain = lambda ts: [{k: v for k, v in vars(t).items() if k != "role"} for t in ts]  # noqa: E731 - roles come from the manifest
        with open_backend(path, batch=None) as b:  # (the default fixes a dynamic batch to 1)
            assert plain(b.inputs) == plain(inputs) and plain(b.outputs) == plain(outputs)
    q = formats.get("tflite").read_tensors(art["tflite_int8"])[0][0]
    assert q.quantized and q.dtype == "int8"


SUFFIXES = {s for f in formats.FORMATS.values() for s in (*f.suffixes, *f.companions)}
NAMES = set(formats.backend_names())


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value.lower() in SUFFIXES:
                out.append(f"{path.name}:{node.lineno}: suffix {node.value!r}")
        if isinstance(node, ast.Compare):
            for c in [node.left, *node.comparators]:
                if isinstance(c, ast.Constant) and c.value in NAMES:
                    out.append(f"{path.name}:{node.lineno}: compares with format {c.value!r}")
    return out


def test_no_suffix_or_format_branch_outside_formats():
    offences = [o for p in sorted(PACKAGE.rglob("*.py")) if "formats" not in p.relative_to(PACKAGE).parts
                for o in _offences(p)]
    assert offences == []


# ---- manifest schema ---------------------------------------------------------------------------------
def test_manifest_schema_version(art, tmp_path):
    from edgeship.manifest import manifest_path

    d = json.loads(manifest_path(art["tflite_int8"]).read_text())
    for version, ok in ((1, True), (SCHEMA_VERSION, True), (SCHEMA_VERSION + 1, False), ("2", False)):
        p = tmp_path / "m.manifest.json"
        p.write_text(json.dumps({**d, "schema_version": version}))
        if ok:
            assert Manifest.load(p).schema_version == version
        else:
            with pytest.raises(ModelError, match="schema_version") as e:
                Manifest.load(p)
            assert "\n" not in str(e.value) and "m.manifest.json" in str(e.value)
    old = {k: v for k, v in d.items() if k != "schema_version"}  # written before the key existed
    (tmp_path / "m.manifest.json").write_text(json.dumps(old))
    assert Manifest.load(tmp_path / "m.manifest.json").name == d["name"]


def test_manifest_sections_are_typed_records(art, tmp_path):
    """conversion / accuracy_gate / accuracy / latency load as records; unknown keys survive a load-save round trip."""
    from edgeship.manifest import manifest_path
    from edgeship.records import AccuracyRecord, ConversionRecord, GateRecord

    d = json.loads(manifest_path(art["tflite_int8"]).read_text())
    d["conversion"] = {"options": {"io": "int8"}, "timings": {"convert_s": 1.5}, "demo": True,
                       "accuracy_gate": {"status": "passed", "float_nodes": ["conv2"], "from_the_future": {"a": 1}}}
    d["accuracy"] = {"samples": 12, "agreement": 97.5, "new_metric": 0.5}
    d["latency"] = {}  # not measured yet (what older manifests hold)
    p = tmp_path / "m.manifest.json"
    p.write_text(json.dumps(d))
    m = Manifest.load(p)
    assert isinstance(m.conversion, ConversionRecord) and isinstance(m.conversion.accuracy_gate, GateRecord)
    assert m.conversion.option("io") == "int8" and m.conversion.timings["convert_s"] == 1.5
    assert m.conversion.accuracy_gate.status == "passed" and m.conversion.accuracy_gate.float_layer_names() == ["conv2"]
    assert isinstance(m.accuracy, AccuracyRecord) and m.accuracy.samples == 12 and m.accuracy.agreement == 97.5
    assert m.latency is None
    m.save(p)
    again = json.loads(p.read_text())
    assert again["conversion"]["accuracy_gate"]["from_the_future"] == {"a": 1} and again["conversion"]["demo"] is True
    assert again["accuracy"]["new_metric"] == 0.5
    assert again["latency"] == {} and Manifest.load(p).to_dict() == again
    # hand-edited or very old: null where a list belongs, a key that happens to be called "extra"
    g = GateRecord.from_dict({"float_layers": None, "extra": "kept", "status": "passed"})
    assert g.float_layer_names() == [] and g.to_dict()["extra"] == "kept"
    assert ConversionRecord.from_dict({"options": None, "accuracy_gate": None}).accuracy_gate.status == "not run"
    bad = {**d, "accuracy": [1, 2]}
    p.write_text(json.dumps(bad))
    with pytest.raises(ModelError, match="m.manifest.json"):
        Manifest.load(p)


def test_package_root_exports_the_public_api_lazily():
    import subprocess
    import sys

    code = ("import sys, edgeship\n"
            "from edgeship import InputSpec, build_dataset, open_backend, run, verify, convert, read_labels, formats\n"
            "assert callable(convert) and callable(verify) and formats.get('litert').name == 'tflite'\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]  # naming convert is not calling it: nothing heavy is imported


def test_format_table_precisions_match_the_converters():
    """The table names each format's precisions (light, for the CLI); the converters implement them."""
    from edgeship.converters import openvino, tflite

    assert formats.get("tflite").precisions == tuple(tflite.PRECISIONS)
    assert formats.get("openvino").precisions == tuple(openvino.PRECISIONS)


def test_run_summary_is_a_typed_record():
    """The run summary round-trips through JSON (what `run --json` prints); a newer schema_version is refused."""
    from edgeship.records import RUN_SUMMARY_VERSION, RunSummary

    s = RunSummary(source="clip.mp4", stopped_by="max_frames", frames_processed=5, latency_ms={"infer": {"count": 5, "p50": 1.5}},
                   app={"app": "security", "events": 2})
    d = json.loads(json.dumps(s.to_dict()))
    assert d["schema_version"] == RUN_SUMMARY_VERSION and d["frames_processed"] == 5
    back = RunSummary.from_dict({**d, "from_the_future": 1})
    assert back.latency_ms["infer"]["p50"] == 1.5 and back.app["events"] == 2 and back.to_dict()["from_the_future"] == 1
    old = {k: v for k, v in d.items() if k != "schema_version"}
    assert RunSummary.from_dict(old).schema_version == RUN_SUMMARY_VERSION
    for bad in (RUN_SUMMARY_VERSION + 1, "1", 0):
        with pytest.raises(ValueError, match="schema_version"):
            RunSummary.from_dict({**d, "schema_version": bad})
