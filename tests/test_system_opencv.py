"""Bundles that use the device's system OpenCV (GStreamer cameras: Jetson CSI, Pi libcamera).

End to end over a real sshd on 127.0.0.1: an OpenVINO artifact bundled with --system-opencv for
generic-x86_64 is flashed with Debian's /usr/bin/python3, whose apt python3-opencv is built with
GStreamer; the service reads a GStreamer pipeline (videotestsrc) and must answer /health, count
processed frames in /metrics and write them to its jsonl sink. A Python without cv2 is refused in
the preflight with one line. (OpenVINO, not LiteRT: the wheelhouse is rebuilt offline from this
machine, whose ai-edge-litert needs NumPy 2, which Debian's cv2 cannot import; on a device pip picks
a LiteRT that accepts NumPy 1.)
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from edgeship.targets import agent, get_target
from edgeship.targets.bundle import build_bundle, read_release, resolve_system_opencv, uses_gstreamer
from edgeship.targets.fleet import flash_many
from edgeship.targets.flash import FlashOptions, preflight_problems, preflight_warnings
from edgeship.targets.remote import SSHOptions, parse_host
from tests.helpers import sshd
from tests.helpers.deploy import stop_supervisor

SYSTEM_PY = "/usr/bin/python3"
NO_CV2_PY = "/root/.pyenv/versions/3.11.7/bin/python3.11"
EDGESHIP = [sys.executable, "-m", "edgeship.cli"]
GST = ("gst:videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=15/1 ! videoconvert ! "
       "video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false")


def _cv2_of(python: str) -> dict:
    return agent.probe_cv2(python) if os.path.exists(python) else {"ok": False, "error": f"{python} does not exist"}


SYSTEM_CV2 = _cv2_of(SYSTEM_PY)
needs_system_cv2 = pytest.mark.skipif(
    not (SYSTEM_CV2.get("ok") and SYSTEM_CV2.get("gstreamer") and sshd.available()),
    reason=f"needs {SYSTEM_PY} with Debian's python3-opencv (GStreamer) and openssh-server (scripts/system-deps.sh)")


# ---- pure parts -----------------------------------------------------------------------------------
def test_requirements_leave_pip_opencv_out_and_keep_numpy_1():
    g = get_target("generic-x86_64")
    assert any(r.startswith("opencv-python-headless") for r in g.requirements("3.11"))
    sys_reqs = g.requirements("3.11", system_opencv=True)
    assert not any(r.startswith("opencv") for r in sys_reqs) and "numpy<2" in sys_reqs
    assert g.requirements("3.11", "openvino", system_opencv=True) == ["paho-mqtt>=2.0", "openvino>=2024.4", "numpy<2"]
    # JetPack's python3-opencv serves its stock Python (3.10 on JetPack 6, 3.6 on 4.6), not the 3.11 edgeship needs
    assert not get_target("jetson-orin-nano").system_opencv and not get_target("jetson-nano").system_opencv
    assert not get_target("rpi5").system_opencv and not get_target("intel-x86").system_opencv


def test_gst_sources_turn_it_on_unless_told_otherwise():
    cfg = {"artifact": "m.xml", "source": {"uri": "gst:libcamerasrc ! videoconvert ! appsink"}, "server": {"port": 8080}}
    assert uses_gstreamer(cfg) and uses_gstreamer("nvarguscamerasrc ! appsink") and not uses_gstreamer({"source": "/dev/video0"})
    assert not uses_gstreamer({"source": "/dev/video0", "app": {"zones": [{"name": "gate ! 2"}]}}) and not uses_gstreamer(None)
    rpi5, orin = get_target("rpi5"), get_target("jetson-orin-nano")
    assert resolve_system_opencv(rpi5, None, gstreamer=True) is True
    assert resolve_system_opencv(rpi5, None, gstreamer=False) is False
    assert resolve_system_opencv(orin, None, gstreamer=True) is True
    assert resolve_system_opencv(orin, None, gstreamer=False) is False
    assert resolve_system_opencv(rpi5, True, gstreamer=False) is True


def test_preflight_refuses_a_python_without_cv2_and_warns_without_gstreamer():
    meta = {"architecture": "aarch64", "target": "jetson-orin-nano", "python": ["3.10"], "wheels": "edgeship",
            "glibc": "2.35", "format": "tflite", "system_opencv": True}
    facts = {"architecture": "aarch64", "python": "3.10.12", "python_executable": "/usr/bin/python3", "glibc": "2.35",
             "free_mb": 5000, "has_venv_module": True, "systemd": True, "root_user": True, "cameras": {},
             "system_cv2": {"ok": True, "path": "/usr/lib/python3/dist-packages/cv2/__init__.py", "version": "4.8.0",
                            "gstreamer": True, "numpy": "1.21.5"}}
    assert preflight_problems(meta, facts, size_mb=10, init="systemd") == [] and preflight_warnings(meta, facts) == []
    missing = {**facts, "system_cv2": {"ok": False, "error": "ModuleNotFoundError: No module named 'cv2'"}}
    assert preflight_problems(meta, missing, size_mb=10, init="systemd") == [
        "the bundle uses the device's system OpenCV but /usr/bin/python3 has no cv2: apt install python3-opencv"]
    broken = {**facts, "system_cv2": {"ok": False, "error": "ImportError: numpy.core.multiarray failed to import"}}
    assert "cannot import cv2 (ImportError: numpy.core.multiarray" in preflight_problems(meta, broken, size_mb=10, init="systemd")[0]
    no_gst = {**facts, "system_cv2": {**facts["system_cv2"], "gstreamer": False}}
    assert preflight_problems(meta, no_gst, size_mb=10, init="systemd") == []
    [w] = preflight_warnings(meta, no_gst)
    assert "built without GStreamer" in w and "4.8.0" in w
    other_py = preflight_problems(meta, {**facts, "python": "3.12.3"}, size_mb=10, init="systemd")
    assert "bundle for --python 3.12" in other_py[0]
    # a bundle with pip's OpenCV does not care about the system cv2
    assert preflight_problems({**meta, "system_opencv": False}, missing, size_mb=10, init="systemd") == []


def test_system_site_venvs_are_not_shared_with_plain_ones(tmp_path):
    req = tmp_path / "requirements" / "py3.11.txt"
    req.parent.mkdir()
    req.write_text("openvino>=2024.4\n")
    plain = agent.venv_key(str(tmp_path), str(req), sys.version)
    assert plain == agent.venv_key(str(tmp_path), str(req), sys.version, False)
    assert plain != agent.venv_key(str(tmp_path), str(req), sys.version, True)
    assert agent.numpy_constraint("1.24.2") == "numpy<2\n" and agent.numpy_constraint("2.2.4") == "numpy<3\n"
    assert agent.numpy_constraint(None) == ""


def test_gst_error_names_the_cv2_and_points_at_system_opencv(tmp_path_factory):
    """The workstation venv's pip OpenCV has no GStreamer: `edgeship run` on a gst: source says which
    cv2 it imported and what to do, in one line, exit 1."""
    import cv2

    from edgeship.runtime.sources import gstreamer_available

    if gstreamer_available():
        pytest.skip("this environment's cv2 has GStreamer")
    proc = subprocess.run([*EDGESHIP, "run", str(_openvino_artifact(tmp_path_factory)), "--source", GST, "--max-frames", "3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert cv2.__file__ in line and cv2.__version__ in line and sys.executable in line
    assert "built without GStreamer" in line and "--system-opencv" in line and "python3-opencv" in line


# ---- end to end over sshd -------------------------------------------------------------------------
def _openvino_artifact(tmp_path_factory) -> Path:
    from tests.helpers.models import SPEC, digits_classifier_savedmodel, digits_labels, models_root
    from tests.helpers.runtime_artifacts import _to_openvino, _write_manifest

    root = models_root(tmp_path_factory) / "runtime"
    root.mkdir(parents=True, exist_ok=True)
    xml = root / "digits_fp32.xml"
    if not (xml.exists() and xml.with_suffix(".bin").exists() and xml.with_name("digits_fp32.manifest.json").exists()):
        _to_openvino(digits_classifier_savedmodel(models_root(tmp_path_factory)), xml)
        _write_manifest(xml, "openvino", "fp32", SPEC, digits_labels(), "classify")
    return xml


def _debian_wheel(dest: Path, name: str, python: str = SYSTEM_PY) -> Path:
    """A wheel of a Debian-packaged distribution (no RECORD: the package folder as installed), tagged
    for this platform, so an offline ``pip download`` can resolve the NumPy the system cv2 needs."""
    info = json.loads(subprocess.run([python, "-I", "-c", (
        "import importlib.metadata as m, json, sysconfig, %s as mod, os;"
        "d = m.distribution('%s'); print(json.dumps({'version': d.version, 'dir': os.path.dirname(mod.__file__),"
        "'tag': sysconfig.get_config_var('SOABI').split('-')[1]}))") % (name, name)],
        capture_output=True, text=True, check=True).stdout)
    py = "cp" + info["tag"]  # SOABI cpython-311-x86_64-linux-gnu -> cp311
    wheel = dest / f"{name}-{info['version']}-{py}-{py}-manylinux_2_17_x86_64.whl"
    if wheel.exists():
        return wheel
    dist_info = f"{name}-{info['version']}.dist-info"
    rows = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        def add(arc: str, data: bytes) -> None:
            z.writestr(arc, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append((arc, f"sha256={digest}", str(len(data))))

        pkg = Path(info["dir"])
        for f in sorted(pkg.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                add(f"{name}/{f.relative_to(pkg)}", f.read_bytes())
        add(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {info['version']}\n".encode())
        add(f"{dist_info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: edgeship-tests\nRoot-Is-Purelib: false\n"
                                  f"Tag: {py}-{py}-manylinux_2_17_x86_64\n".encode())
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows + [(f"{dist_info}/RECORD", "", "")])
        z.writestr(f"{dist_info}/RECORD", buf.getvalue())
    return wheel


@pytest.fixture(scope="module")
def system_bundle(tmp_path_factory):
    from edgeship.targets.wheels import edgeship_wheel
    from tests.helpers.wheelhouse import wheelhouse

    base = tmp_path_factory.mktemp("sysocv")
    house = wheelhouse(base / "wheelhouse", ["openvino", "paho-mqtt", "click", "pyyaml", "pydantic", "tqdm"])
    _debian_wheel(house, "numpy")  # the NumPy 1 that Debian's cv2 is built against
    port = sshd.free_port()
    b = build_bundle(_openvino_artifact(tmp_path_factory), "generic-x86_64", base / "gst.tar.gz", source=GST,
                     http_port=port, wheels=True, wheelhouse=house, python="3.11", edgeship_wheel=edgeship_wheel(),
                     run_args=("--sink", "jsonl:frames.jsonl"), version="gst-1", compresslevel=1)
    return {"bundle": b, "port": port, "base": base}


@needs_system_cv2
def test_bundle_leaves_pip_opencv_out(system_bundle):
    b = system_bundle["bundle"]
    meta = read_release(b.path)
    assert b.system_opencv and meta["system_opencv"] is True  # turned on by the gst: source
    assert not any(w.lower().startswith("opencv") for w in b.wheels)
    assert any(w.startswith("numpy-1.") for w in b.wheels) and any(w.startswith("openvino-") for w in b.wheels)
    with tarfile.open(b.path) as tar:
        reqs = tar.extractfile("requirements/py3.11.txt").read().decode().split()
    assert "numpy<2" in reqs and not any(r.startswith("opencv") for r in reqs)


def test_bundle_cli_flag_overrides_the_profile(tmp_path_factory, tmp_path):
    from edgeship.targets.wheels import edgeship_wheel

    art, own = _openvino_artifact(tmp_path_factory), edgeship_wheel()

    def bundle(target: str, *flags: str) -> tuple[dict, list[str]]:
        out = tmp_path / f"{target}{len(flags)}.tar.gz"
        proc = subprocess.run([*EDGESHIP, "bundle", str(art), "--target", target, "--source", "/dev/video0", "--out", str(out),
                               "--edgeship-wheel", str(own), "--json", *flags], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        with tarfile.open(out) as tar:
            reqs = tar.extractfile("requirements/py3.11.txt").read().decode().split()
        return json.loads(proc.stdout), reqs

    orin, reqs = bundle("jetson-orin-nano", "--system-opencv")
    assert orin["system_opencv"] and not any(r.startswith("opencv") for r in reqs)
    orin_usb, reqs = bundle("jetson-orin-nano")
    assert not orin_usb["system_opencv"] and any(r.startswith("opencv-python-headless") for r in reqs)
    pi, reqs = bundle("rpi5", "--system-opencv")
    assert pi["system_opencv"] and "numpy<2" in reqs and not any(r.startswith("opencv") for r in reqs)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with sshd.SSHServer(tmp_path_factory.mktemp("sshd")) as srv:
        yield srv


def _get(url: str) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, r.read().decode()
    except OSError:
        return None, ""


@needs_system_cv2
def test_flash_runs_a_gstreamer_camera_on_the_system_opencv(system_bundle, server, tmp_path):
    port, root = system_bundle["port"], tmp_path / "edgeship"
    ssh = SSHOptions(identity=str(server.user_key), known_hosts=str(server.known_hosts))
    opts = FlashOptions(device_root=str(root), init="none", health_timeout=90, python=SYSTEM_PY)
    try:
        [res] = flash_many(system_bundle["bundle"].path, [parse_host(server.host_spec)], ssh=ssh, options=opts)
        assert res.ok and res.status == "deployed", res.reason + json.dumps(res.health)[:2000]
        cv2 = res.device["system_cv2"]
        assert cv2["ok"] and cv2["gstreamer"] and cv2["path"].startswith("/usr/lib/python3/dist-packages/")
        assert res.install["cv2"]["path"] == cv2["path"]  # the venv imports the system cv2
        venv = Path(os.path.realpath(root / "releases" / "gst-1" / "venv"))
        assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
        assert (venv / "edgeship-constraints.txt").read_text() == "numpy<2\n"
        assert not list(venv.glob("lib/python3*/site-packages/cv2"))  # no pip OpenCV hides the system one
        # the service reads the pipeline through the system cv2 and runs the model on its frames
        deadline, processed = time.monotonic() + 30, 0.0
        while time.monotonic() < deadline and processed < 10:
            status, text = _get(f"http://127.0.0.1:{port}/metrics")
            rows = [ln for ln in text.splitlines() if ln.startswith("edgeship_frames_processed_total")]
            processed = float(rows[0].split()[-1]) if status == 200 and rows else 0.0
            time.sleep(0.5)
        assert processed >= 10, text
        records = [json.loads(ln) for ln in (root / "data" / "frames.jsonl").read_text().splitlines() if ln.strip()]
        assert len(records) >= 5 and records[-1]["task"] == "classify" and records[-1]["classification"]
    finally:
        stop_supervisor(root)


@needs_system_cv2
@pytest.mark.skipif(not os.path.exists(NO_CV2_PY) or _cv2_of(NO_CV2_PY).get("ok") is not False
                    or "ModuleNotFoundError" not in str(_cv2_of(NO_CV2_PY).get("error")),
                    reason=f"needs a Python 3.11 without cv2 at {NO_CV2_PY}")
def test_flash_refuses_a_device_python_without_cv2(system_bundle, server, tmp_path):
    root = tmp_path / "edgeship"
    cmd = [*EDGESHIP, "flash", str(system_bundle["bundle"].path), server.host_spec, "--identity", str(server.user_key),
           "--known-hosts", str(server.known_hosts), "--device-root", str(root), "--init", "none", "--python", NO_CV2_PY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"refused (the bundle uses the device's system OpenCV but {NO_CV2_PY} has no cv2: apt install python3-opencv)" in proc.stderr
    assert not (root / "releases").exists()  # refused in the preflight: nothing uploaded
