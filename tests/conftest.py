"""Session fixtures shared by several test files: the models folder, its calibration set and the
runtime artifacts. Each is built once per pytest session (and cached in ``<basetemp>/edgeship-models``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import models as M
from tests.helpers.runtime_artifacts import artifacts


@pytest.fixture(scope="session")
def root(tmp_path_factory) -> Path:
    """``<basetemp>/edgeship-models``: the folder every test file's models are built in."""
    return M.models_root(tmp_path_factory)


@pytest.fixture(scope="session")
def calib(root) -> Path:
    """The digits calibration set (an .npz of preprocessed samples)."""
    return M.digits_calibration(root)


@pytest.fixture(scope="session")
def quickstart_small(tmp_path_factory) -> tuple[Path, dict, list[str]]:
    """One small ``edgeship quickstart`` run per session: (output folder, summary, status lines).
    Tests that change the folder (tests/test_quickstart.py) run after the ones that only copy from it."""
    from edgeship.quickstart import run_quickstart

    out = tmp_path_factory.mktemp("quickstart") / "qs"
    lines: list[str] = []
    summary = run_quickstart(out, small=True, status=lines.append)
    return out, summary, lines


@pytest.fixture(scope="session")
def art(tmp_path_factory) -> dict[str, Path]:
    """The runtime test artifacts (TFLite fp32/int8, OpenVINO, detectors), each with its manifest."""
    return artifacts(tmp_path_factory)


# the quick tier (`pytest -m "not slow"`) leaves out the files that train, convert bigger models, start emulated
# devices or fleets; CI runs everything
SLOW_FILES = {"test_device_pi.py", "test_fleet_rollout.py", "test_int8_quality.py", "test_first_impressions.py",
              "test_output_roles.py", "test_structured_pruning.py", "test_prune.py", "test_gate.py", "test_convert.py",
              "test_flash.py", "test_flash_sudo.py", "test_system_opencv.py", "test_bad_input.py",
              "test_runtime_sources.py", "test_verify.py", "test_detection_budget.py", "test_demo.py",
              "test_multi_camera.py", "test_drift.py", "test_third_party_models.py", "test_quickstart.py"}

# ... and single tests of quick files that take 7 s or more (timed waits: slow clients, restarts, health checks)
SLOW_TESTS = {"test_health_answers_within_a_second_under_slowloris_and_viewers",
              "test_an_output_that_cannot_work_fails_the_health_check_unless_optional",
              "test_token_as_header_or_cookie_never_in_the_log", "test_an_idle_externally_triggered_station_is_healthy",
              "test_run_over_mjpeg_survives_a_camera_restart"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SLOW_FILES or getattr(item, "originalname", item.name) in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
