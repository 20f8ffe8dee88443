"""Issue 16, bad input: every case is one line ``error: ...`` on stderr, exit code 1, nothing written,
no traceback, whichever command receives it (the commands run in-process through click, for real)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeship.cli import cli
from tests.helpers import models as M
from tests.helpers.deploy import deploy_inputs


@pytest.fixture(scope="module")
def files(tmp_path_factory, art, root, calib) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad")
    (d / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    (d / "broken.yaml").write_text("artifact: [unclosed\n  source: : :\n")
    (d / "text.tflite").write_text("this is not a model\n")
    (d / "empty.tflite").write_bytes(b"")
    (d / "notes.txt").write_text("hello\n")
    (d / "nonimages").mkdir()
    (d / "nonimages" / "a.txt").write_text("x")
    (d / "zero").mkdir()
    (d / "zero" / "a.png").write_bytes(b"")
    (d / "zero" / "b.jpg").write_bytes(b"")
    full = Path(calib).read_bytes()
    (d / "truncated.npz").write_bytes(full[: len(full) // 2])
    np.savez(d / "raw.npz", x=np.zeros((4, 8, 8, 3), np.float32))
    queue_dir = d / "queue-is-a-folder"
    queue_dir.mkdir()
    (d / "webhook.yaml").write_text(json.dumps({
        "artifact": str(art["tflite_int8"]), "source": str(d / "images"),
        "app": {"type": "security", "zones": [{"name": "z", "points": [[0, 0], [1, 0], [1, 1]]}],
                "events": [{"type": "webhook", "url": "http://127.0.0.1:9/x", "queue": str(queue_dir)}]}}))
    images = d / "images"
    images.mkdir()
    import cv2

    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), np.full((32, 32, 3), 40 * i, np.uint8))
    two = M.digits_two_output_keras(Path(root))
    return {"d": str(d), "tflite": str(art["tflite_int8"]), "keras": str(M.digits_classifier_keras(Path(root))),
            "two": str(two), "calib": str(calib), "images": str(images), "out": str(d / "out")}


def _cases(f: dict[str, str], wheel: str) -> list[tuple[str, list[str], str]]:
    d, out = f["d"], f["out"]
    return [
        # 17: tracebacks before
        ("run-binary-config", ["run", "--config", f"{d}/binary.yaml"], "not a text file"),
        ("bundle-binary-config", ["bundle", f["tflite"], "--target", "rpi4", "--config", f"{d}/binary.yaml",
                                  "--out", f"{out}/b.tar.gz", "--edgeship-wheel", wheel], "not a text file"),
        ("calibrate-out-unwritable", ["calibrate", f["images"], "--input-size", "8x8", "--out", "/proc/x/c.npz"], "/proc/x"),
        ("bundle-out-unwritable", ["bundle", f["tflite"], "--target", "rpi4", "--source", "0", "--out", "/proc/x/b.tar.gz",
                                   "--edgeship-wheel", wheel], "/proc/x"),
        ("quickstart-out-unwritable", ["quickstart", "--out", "/proc/x/qs"], "/proc/x"),
        ("jsonl-sink-unwritable", ["run", f["tflite"], "--source", f["images"], "--sink", "jsonl:/proc/x/r.jsonl"], "/proc/x"),
        ("http-port-out-of-range", ["run", f["tflite"], "--source", f["images"], "--sink", "http:127.0.0.1:99999"], "0-65535"),
        ("webhook-queue-is-a-folder", ["run", "--config", f"{d}/webhook.yaml"], "is a folder"),
        ("convert-truncated-calib", ["convert", f["keras"], "-f", "tflite", "-p", "int8", "--calib", f"{d}/truncated.npz",
                                     "-o", out], "truncated.npz"),
        ("verify-truncated-data", ["verify", f["tflite"], "--reference", f["keras"], "--data", f"{d}/truncated.npz"],
         "truncated.npz"),
        ("verify-wrong-reference", ["verify", f["tflite"], "--reference", f["two"], "--data", f["calib"]], "output"),
        ("calibrate-model-is-text", ["calibrate", f["images"], "--model", f"{d}/notes.txt", "--out", f"{out}/c.npz"],
         "notes.txt"),
        ("calibrate-huge-input", ["calibrate", f["images"], "--input-size", "100000x100000", "--out", f"{out}/c.npz"],
         "at most 16384"),
        ("convert-raw-npz", ["convert", f["keras"], "-f", "tflite", "-p", "int8", "--calib", f"{d}/raw.npz", "-o", out],
         "edgeship calibrate"),
        # 18: accepted before
        ("calibrate-scale-nan", ["calibrate", f["images"], "--input-size", "8x8", "--scale", "nan", "--out", f"{out}/c.npz"],
         "finite"),
        ("calibrate-scale-inf", ["calibrate", f["images"], "--input-size", "8x8", "--scale", "inf", "--out", f"{out}/c.npz"],
         "finite"),
        ("run-threshold-nan", ["run", f["tflite"], "--source", f["images"], "--threshold", "nan"], "finite"),
        ("bundle-text-file", ["bundle", f"{d}/text.tflite", "--target", "rpi4", "--source", "0", "--out", f"{out}/b.tar.gz",
                              "--edgeship-wheel", wheel], "not a valid TFLite model"),
        ("bundle-empty-tflite", ["bundle", f"{d}/empty.tflite", "--target", "rpi4", "--source", "0",
                                 "--out", f"{out}/b.tar.gz", "--edgeship-wheel", wheel], "not a valid TFLite model"),
        ("run-folder-of-non-images", ["run", f["tflite"], "--source", f"{d}/nonimages"], "has no images"),
        ("run-folder-of-empty-images", ["run", f["tflite"], "--source", f"{d}/zero"], "has no readable image"),
        ("run-output-queue-huge", ["run", f["tflite"], "--source", f["images"], "--output-queue", "999999999"], "1<=x<=1000"),
        ("bundle-bad-yaml", ["bundle", f["tflite"], "--target", "rpi4", "--config", f"{d}/broken.yaml",
                             "--out", f"{out}/b.tar.gz", "--edgeship-wheel", wheel], "not valid YAML"),
        # 13: bounded numbers
        ("bench-threads-huge", ["bench", f["tflite"], "--threads", "100000"], "1<=x<=256"),
        ("run-threads-huge", ["run", f["tflite"], "--source", f["images"], "--threads", "100000"], "1<=x<=256"),
        ("bench-warmup-huge", ["bench", f["tflite"], "--warmup", "100000000000000000000"], "0<=x<=100000"),
        ("bench-duration-huge", ["bench", f["tflite"], "--duration", "1e308"], "3600"),
        ("device-port-in-host", ["device", "status", "--host", "pi@127.0.0.1:70000"], "70000"),
    ]


def _second_pass(f: dict[str, str], wheel: str) -> list[tuple[str, list[str], str]]:
    """Issue 25: internal errors and accepted inputs found by the second hostile pass."""
    d, out = Path(f["d"]), f["out"]
    (d / "hosts-port.txt").write_text("pi@10.0.0.1 http_port=abc\n")
    (d / "hosts-quote.txt").write_text('pi@10.0.0.1 "device_root=/x\n')
    (d / "hosts-relroot.txt").write_text("pi@10.0.0.1 device_root=rel/dir\n")
    (d / "hosts-bigport.txt").write_text("pi@10.0.0.1 http_port=999999\n")
    (d / "plain.npz").write_text("just some text\n")
    meta = dict(np.load(f["calib"], allow_pickle=False))
    np.savez(d / "badmeta.npz", **{**meta, "meta": np.asarray("{not json")})
    x = np.random.default_rng(0).random((8, 32, 32, 1)).astype(np.float32)
    x[2, 0, 0, 0] = np.nan
    np.savez(d / "nan.npz", x=x)
    (d / "big-labels.txt").write_text("x" * 2_000_000 + "\n" + "\n".join(str(i) for i in range(9)) + "\n")
    base = {"artifact": f["tflite"], "source": f["images"]}
    configs = {
        "inf-duration.yaml": {**base, "duration": float("inf")},
        "nan-point.yaml": {**base, "app": {"type": "security", "zones": [{"name": "z", "points": [[0, 0], [1, float("nan")], [1, 1]]}]}},
        "huge-quota.yaml": {**base, "app": {"type": "security", "snapshots": {"dir": str(d / "s"), "quota_mb": 1e308}}},
        "counters-folder.yaml": {**base, "app": {"type": "industrial", "counters": str(d / "nonimages")}},
        "empty-host.yaml": {**base, "server": {"host": "", "port": 8080}},
    }
    for name, cfg in configs.items():
        (d / name).write_text(json.dumps(cfg).replace("Infinity", ".inf").replace("NaN", ".nan"))
    (d / "dup.yaml").write_text(f"artifact: {f['tflite']}\nsource: {f['images']}\nartifact: {f['tflite']}\n")
    host = ["--host", "pi@10.0.0.1"]
    other = d / "other-model-calib.npz"  # a calibration set made for a model with another input
    if not other.exists():
        r = CliRunner().invoke(cli, ["calibrate", f["images"], "--input-size", "8x8", "--out", str(other)])
        assert r.exit_code == 0, r.output
    return [
        ("calibrate-negative-seed", ["calibrate", f["images"], "--input-size", "8x8", "--seed", "-1", "--out", f"{out}/c.npz"],
         "--seed"),
        ("quickstart-negative-seed", ["quickstart", "--seed", "-3", "--out", f"{out}/qs"], "--seed"),
        ("verify-broken-npz-metadata", ["verify", f["tflite"], "--reference", f["keras"], "--data", str(d / "badmeta.npz")],
         "metadata (meta) is not valid JSON"),
        ("verify-plain-text-npz", ["verify", f["tflite"], "--reference", f["keras"], "--data", str(d / "plain.npz")],
         "not a NumPy .npz archive (it holds text)"),
        ("calibrate-nan-samples", ["calibrate", str(d / "nan.npz"), "--input-size", "32x32", "--color-order", "GRAY",
                                   "--out", f"{out}/c.npz"], "NaN or infinite"),
        ("calibrate-2mb-label", ["calibrate", f["images"], "--input-size", "8x8", "--labels", str(d / "big-labels.txt"),
                                 "--out", f"{out}/c.npz"], "at most 256"),
        ("prune-distill-other-models-calib", ["prune", f["keras"], "--channels", "0.3", "--calib", str(other),
                                              "--distill", "1", "-o", f"{out}/p.keras"], "belong to different models"),
        ("verify-reference-of-other-data", ["verify", f["tflite"], "--reference", f["keras"], "--data", str(other)],
         "shape"),
        ("run-config-inf-duration", ["run", "--config", str(d / "inf-duration.yaml")], "duration: Input should be a finite number"),
        ("run-config-nan-point", ["run", "--config", str(d / "nan-point.yaml")], "points[1][1]: Input should be a finite number"),
        ("run-config-huge-quota", ["run", "--config", str(d / "huge-quota.yaml")], "quota_mb"),
        ("run-config-counters-folder", ["run", "--config", str(d / "counters-folder.yaml")], "is a folder; expected a file name"),
        ("run-config-empty-host", ["run", "--config", str(d / "empty-host.yaml")], "on every address (an empty host) needs a token"),
        ("run-config-duplicate-key", ["run", "--config", str(d / "dup.yaml")], "key 'artifact' appears twice"),
        ("run-config-with-threads", ["run", "--config", str(d / "dup.yaml"), "--threads", "2"], "--threads does not combine"),
        ("hosts-port-abc", ["device", "status", "--hosts", str(d / "hosts-port.txt")], "http_port: expected a port"),
        ("hosts-unclosed-quote", ["device", "status", "--hosts", str(d / "hosts-quote.txt")], "No closing quotation"),
        ("hosts-relative-root", ["device", "status", "--hosts", str(d / "hosts-relroot.txt")], "absolute folder"),
        ("hosts-port-too-big", ["device", "status", "--hosts", str(d / "hosts-bigport.txt")], "expected a port 1-65535"),
        ("service-path", ["device", "status", *host, "--service", "../../x"], "systemd unit name"),
        ("known-hosts-newline", ["device", "status", *host, "--known-hosts", "a\nb"], "one file name on one line"),
        ("rollback-to-path", ["device", "rollback", *host, "--to", "../x"], "not a release name"),
        ("calibrate-out-deep", ["calibrate", f["images"], "--input-size", "8x8", "--out", f"{d}/no/such/folder/c.npz"],
         "does not exist: create it first"),
        ("run-sink-deep", ["run", f["tflite"], "--source", f["images"], "--sink", f"jsonl:{d}/no/such/r.jsonl"],
         "does not exist: create it first"),
        ("bundle-missing-source", ["bundle", f["tflite"], "--target", "rpi5", "--source", f"{d}/missing.mp4",
                                   "--out", f"{out}/b.tar.gz", "--edgeship-wheel", wheel], "write device:"),
    ]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    return str(deploy_inputs(tmp_path_factory)["edgeship_wheel"])


@pytest.mark.parametrize("cases", [_cases, _second_pass], ids=["first-pass", "second-pass"])
def test_every_bad_input_is_one_line(files, wheel, monkeypatch, cases):
    failures = []
    for name, args, expect in cases(files, wheel):
        out = Path(files["out"])
        shutil.rmtree(out, ignore_errors=True)
        before = sorted(p.name for p in Path(files["d"]).iterdir())
        r = CliRunner().invoke(cli, args, prog_name="edgeship")
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING: ")]
        problems = []
        if r.exit_code != 1:
            problems.append(f"exit {r.exit_code}")
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"stderr {lines[:4]}")
        elif expect not in lines[0]:
            problems.append(f"{expect!r} not in {lines[0]!r}")
        if "Traceback" in r.stderr or "internal error" in r.stderr:
            problems.append("traceback / internal error")
        if out.exists() and any(out.iterdir()):
            problems.append(f"wrote {sorted(p.name for p in out.iterdir())}")
        if sorted(p.name for p in Path(files["d"]).iterdir()) != before:
            problems.append("changed the input folder")
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}")
    assert failures == [], "\n".join(failures)
