import base64
import re

import numpy as np

from edgeship.report import ArtifactRow, ReportData, RunRow, machine_description, render_markdown, write_report


def sample():
    rng = np.random.default_rng(0)
    rows = [
        ArtifactRow("digits", "int8", "tflite", "int8", 20_000, 9_000, 0.5, 96.1, 96.4, 0.3, 99.0, 0.12, 0.2, 8000.0,
                    latencies_ms=list(rng.gamma(5, 0.03, 500))),
        ArtifactRow("digits", "ov-int8", "openvino", "int8-mixed", 30_000, 12_000, None, 95.9, 96.4, 0.5, 98.5, 0.2, 0.4, 5000.0,
                    float_layers=["conv2d_1"], latencies_ms=list(rng.gamma(5, 0.05, 500))),
    ]
    runs = [RunRow("belt", "digits/int8", "belt.mp4", 300, 120.0, 9.5, 14.0, 2, "97% agree with labels")]
    return ReportData("edgeship quickstart", machine_description(), rows, runs,
                      bundles=[{"path": "b.tar.gz", "target": "generic-x86_64", "size_bytes": 1234}], timings={"convert": 12.3})


def test_markdown_has_every_artifact_and_run():
    md = render_markdown(sample())
    assert md.count("| digits |") == 2
    assert "conv2d_1" in md and "belt.mp4" in md and "+0.30" in md and "50%" in md


def test_html_embeds_three_real_pngs(tmp_path):
    md, ht = write_report(sample(), tmp_path)
    assert md.exists() and ht.exists()
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", ht.read_text())
    assert len(pngs) == 3
    for p in pngs:
        raw = base64.b64decode(p)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 5000
    assert not list(tmp_path.glob(".*tmp"))
