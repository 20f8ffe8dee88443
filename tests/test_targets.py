"""Device profiles: every built-in profile loads and is consistent; requirements and cameras."""

from __future__ import annotations

import pytest

from edgeship.errors import InputError
from edgeship.targets import get_target, list_targets
from edgeship.targets.flash import preflight_problems
from edgeship.targets.profiles import merge_requirements

NAMES = ["rpi4", "rpi5", "jetson-nano", "jetson-orin-nano", "intel-x86", "generic-x86_64", "generic-aarch64"]


@pytest.mark.parametrize("name", NAMES)
def test_profile_is_complete(name):
    p = get_target(name)
    assert p.name == name and p.format in p.formats and p.precision in ("int8", "fp16", "fp32", "dynamic")
    assert p.supports_python(p.python)
    reqs = p.requirements(p.python)
    assert any(r.startswith(("ai-edge-litert", "tflite-runtime", "openvino")) for r in reqs)
    assert p.platforms[0].endswith(p.architecture) and f"manylinux2014_{p.architecture}" in p.platforms
    assert p.camera_source().startswith(("/dev/video", "gst:"))


PROVEN_PYTHONS = ("3.11",)  # run by the tests: the workstation's and the emulated Pi's (Debian bookworm)


def test_profiles_promise_only_the_pythons_that_are_proven():
    import configparser
    from pathlib import Path

    for p in list_targets():
        assert p.python in PROVEN_PYTHONS, p.name
        for fmt in p.formats:
            assert set(p.python_versions(fmt)) <= set(PROVEN_PYTHONS), (p.name, fmt)
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    assert cfg["options"]["python_requires"].strip() == f">={min(PROVEN_PYTHONS)}"


def test_profile_choices():
    assert get_target("intel-x86").format == "openvino"
    assert "nvarguscamerasrc" in get_target("jetson-orin-nano").camera_source("csi")
    assert "libcamerasrc" in get_target("rpi5").camera_source("csi", width=640, height=480, fps=15)
    assert get_target("rpi4").camera_source("usb", index=2) == "/dev/video2"
    armv7 = get_target("rpi-armv7l").requirements("3.11")
    assert "tflite-runtime==2.14.0" in armv7 and "numpy<2" in armv7
    assert not get_target("jetson-nano").supports_python("3.13")
    assert [p.name for p in list_targets()] == sorted(p.name for p in list_targets())


def test_errors_name_the_value():
    with pytest.raises(InputError, match="unknown target 'pi9'.*rpi5"):
        get_target("pi9")
    with pytest.raises(InputError, match="no tflite runtime for Python 3.8"):
        get_target("rpi5").requirements("3.8")
    with pytest.raises(InputError, match="no camera kind 'csi'"):
        get_target("intel-x86").camera_source("csi")


def test_merge_requirements():
    assert merge_requirements(["numpy>=1.23", "opencv-python-headless", "numpy<2", "NumPy>=1.23"]) == ["numpy<2,>=1.23", "opencv-python-headless"]
    with pytest.raises(InputError):
        merge_requirements(["numpy; python_version<'3.9'"])


def test_preflight_problems():
    meta = {"architecture": "aarch64", "target": "rpi5", "python": ["3.11"], "wheels": "all", "glibc": "2.36", "format": "tflite"}
    facts = {"architecture": "aarch64", "python": "3.11.2", "glibc": "2.36", "free_mb": 5000, "has_venv_module": True,
             "systemd": True, "root_user": True}
    assert preflight_problems(meta, facts, size_mb=100, init="systemd") == []
    bad = preflight_problems(meta, {**facts, "architecture": "x86_64", "python": "3.9.2", "glibc": "2.31", "free_mb": 10,
                                    "systemd": False}, size_mb=100, init="systemd")
    text = " ".join(bad)
    for part in ("bundle is for aarch64", "Python 3.9", "glibc 2.31", "MB free", "systemd is not running"):
        assert part in text
    assert preflight_problems(meta, {**facts, "architecture": "arm64"}, size_mb=1, init="none") == []
