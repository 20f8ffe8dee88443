"""What quickstart builds: its sizes (full or small), the artifacts it converts, where files go.

The file names under the output folder are the demo's (:func:`edgeship.demo.demo_paths`), so
``examples/*.yaml`` run as they are against ``./quickstart-out``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import formats
from ..demo import demo_paths


@dataclass(frozen=True)
class Options:
    """Sizes of every step. ``small`` shrinks epochs, samples and runs (tests, CI); every step still runs for real."""

    small: bool = False
    seed: int = 0
    digits_epochs: int = 20  # the float CNN reaches 96.2% on the belt holdout (deterministic: seed 0)
    shapes_train: int = 1600
    shapes_epochs: int = 10
    finetune_epochs: int = 2
    distill_epochs: int = 8  # digits_int8_c50: distillation after removing half the channels
    digits_holdout: float = 0.6  # of the held-out digits: the rest calibrates
    shapes_calib: int = 160
    shapes_eval: int = 200  # labelled generated scenes for the detector's recall
    bench_seconds: float = 1.0
    histogram_samples: int = 300
    belt_frames: int = 120
    shapes_frames: int = 240
    target: str = "generic-x86_64"

    @classmethod
    def make(cls, small: bool = False, seed: int = 0) -> "Options":
        if not small:
            return cls(seed=seed)
        return cls(small=True, seed=seed, digits_epochs=6, shapes_train=1200, shapes_epochs=8, finetune_epochs=1,
                   distill_epochs=4, shapes_calib=100, shapes_eval=100, bench_seconds=0.3, histogram_samples=150,
                   belt_frames=60, shapes_frames=240)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ArtifactPlan:
    """One artifact to convert: ``convert(MODEL.keras, formats=fmt, precision=..., prune=..., name=name)``."""

    name: str
    model: str  # "digits" | "shapes"
    format: str
    precision: str
    prune: float | None = None  # magnitude pruning (zeros: a smaller gzip)
    prune_channels: float | None = None  # structured pruning (fewer channels: faster), distilled
    note: str = ""

    @property
    def filename(self) -> str:
        return formats.get(self.format).path(".", self.name).name

    def files(self) -> list[str]:
        """The artifact's model files relative to the output folder (an IR has its .bin)."""
        return [f"models/{f.name}" for f in formats.get(self.format).files(self.filename)]

    @property
    def manifest(self) -> str:
        return f"models/{self.name}.manifest.json"


# Every artifact is accuracy-gated (max_drop = 1 point). digits_int8 and shapes_int8 keep the
# names the examples' deployment configs use.
ARTIFACTS: tuple[ArtifactPlan, ...] = (
    ArtifactPlan("digits_int8", "digits", "tflite", "int8"),
    ArtifactPlan("digits_fp16", "digits", "tflite", "fp16"),
    ArtifactPlan("digits_int8_ov", "digits", "openvino", "int8"),
    ArtifactPlan("digits_int8_p50", "digits", "tflite", "int8", prune=0.5,
                 note="50% magnitude pruning, fine-tuned on the training digits"),
    ArtifactPlan("digits_int8_c50", "digits", "tflite", "int8", prune_channels=0.5,
                 note="half the channels removed, distilled from the unpruned model on the calibration images"),
    ArtifactPlan("shapes_int8", "shapes", "tflite", "int8"),
    ArtifactPlan("shapes_int8_ov", "shapes", "openvino", "int8"),
)

MAX_DROP = 1.0  # points


def rel(out: Path, path: Path) -> str:
    return str(Path(path).relative_to(out))


def paths(out: Path) -> dict[str, str]:
    """Every fixed output of quickstart, relative to ``out`` (the demo's names plus quickstart's own)."""
    out = Path(out)
    d = {k: rel(out, v) for k, v in demo_paths(out).items()}
    d.update({
        "digits_frames": "data/digits_frames.npz",  # labelled uint8 belt frames: the digits calibration source
        "digits_train": "data/digits_train",  # labelled image folder (one sub-folder per class): pruning fine-tune
        "shapes_frames": "data/shapes_frames.npz",  # generated scenes (uint8 frames): a shapes calibration source
        "report_md": "report.md", "report_html": "report.html", "summary": "summary.json",
    })
    return d
