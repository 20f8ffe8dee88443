"""Issue 18: a workstation command prints edgeship's own lines only; tables stay short and readable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from edgeship.commands._common import format_table, human_size
from edgeship.native_stderr import WORKSTATION_NOISE, keep_lines

EDGESHIP = Path(sys.executable).parent / "edgeship"
OWN = re.compile(r"^(WARNING|ERROR|error): |^\d+ artifact\(s\) in \d|^pruned to |^int8 \S+: ")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "EDGESHIP_NATIVE_LOGS")}
    env["EDGESHIP_PROGRESS"] = "0"
    return subprocess.run([str(EDGESHIP), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def test_convert_and_verify_print_only_edgeships_lines(root, calib, tmp_path):
    from tests.helpers.models import digits_classifier_keras

    keras = digits_classifier_keras(Path(root))
    out = tmp_path / "out"
    r = _run("convert", str(keras), "-f", "tflite", "-f", "openvino", "-p", "int8", "--calib", str(calib), "-o", str(out),
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    foreign = [ln for ln in r.stderr.splitlines() if ln.strip() and not OWN.search(ln)]
    assert foreign == [], foreign
    assert "KiB" in r.stdout and re.search(r"2 artifact\(s\) in \d+\.\d s", r.stderr)
    for artifact in sorted(out.glob("*int8_*.tflite")) + sorted(out.glob("*int8_*.xml")):
        r = _run("verify", str(artifact), "--reference", str(keras), "--data", str(calib), "--layers", "2", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        foreign = [ln for ln in r.stderr.splitlines() if ln.strip() and not OWN.search(ln)]
        assert foreign == [], foreign


def test_noise_patterns_drop_the_native_lines_and_keep_edgeships():
    noise = "\n".join([
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "E0000 00:00:1795778363.471890    7228 cuda_executor.cc:1228] failed call to cuInit: UNKNOWN ERROR (303)",
        "I0000 00:00:1795778363.471890    7228 port.cc:153] oneDNN custom operations are on.",
        "fully_quantize: 0, inference_type: 6, input_inference_type: INT8, output_inference_type: INT8",
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
        "WARNING:absl:You are saving your model as an HDF5 file via `model.save()`.",
    ])
    own = "WARNING: the calibration set has no holdout samples\nerror: model file x.tflite does not exist\n"
    assert keep_lines(noise + "\n" + own, WORKSTATION_NOISE) == own


def test_long_tables_are_summarised_and_sizes_human():
    table = format_table(["size", "samples"], [[f"{i}x{i}", i] for i in range(200)])
    lines = table.splitlines()
    assert len(lines) == 2 + 14 + 1 and lines[-1] == "... and 186 more (--json lists them all)"
    assert len(format_table(["a"], [[1]] * 15).splitlines()) == 17  # 15 rows fit
    assert [human_size(n) for n in (512, 57446, 5 << 20, None)] == ["512 B", "56.1 KiB", "5 MiB", "-"]


def test_a_missing_extra_names_the_pip_command(root, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edgeship.cli import cli, missing_extra_message
    from tests.helpers.models import digits_classifier_keras

    keras = digits_classifier_keras(Path(root))
    monkeypatch.setitem(sys.modules, "openvino", None)  # as on a workstation installed without the openvino extra
    r = CliRunner().invoke(cli, ["convert", str(keras), "-f", "openvino", "-p", "fp32", "-o", str(tmp_path / "out")])
    assert r.exit_code == 1 and r.stderr.strip().splitlines()[-1] == (
        "error: this needs openvino, which is not installed: pip install 'edgeship[openvino]'")
    assert not (tmp_path / "out").exists()
    assert "internal error" in missing_extra_message(ModuleNotFoundError("No module named 'zzz'", name="zzz"))


def test_openvino_conversion_sends_no_telemetry():
    """OpenVINO's converter phoned home from a background process that died offline with a traceback on
    stderr; edgeship's converter makes it (and NNCF) use their no-op stub."""
    code = ("from edgeship.formats.openvino import no_telemetry\n"
            "no_telemetry()\n"
            "import openvino.tools.ovc.convert_impl as c\n"
            "from nncf.telemetry import wrapper\n"
            "print(c.tm.__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["openvino.tools.ovc.telemetry_stub"]
    # the runtime's way in (verify opens the IR it checks before it converts anything) is guarded too
    code = ("from edgeship.formats.openvino import import_openvino\nimport_openvino()\n"
            "import sys\nprint(sys.modules['openvino_telemetry'])\n")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == ["None"]
