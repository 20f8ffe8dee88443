"""Shared by the runtime benchmarks: an int8 MobileNetV2 224 (.tflite, int8 I/O) with its manifest.

Built once into ``benchmarks/.cache`` from ``keras.applications.MobileNetV2(weights=None)`` (no
download), exported as a SavedModel and fully int8-quantized with a random-ish calibration set
(smooth random images in [-1, 1], MobileNetV2's input range). Runs TensorFlow in a subprocess so
the benchmark process itself stays TF-free.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"

_BUILD = r'''
import sys, numpy as np, keras, tensorflow as tf
from pathlib import Path
out = Path(sys.argv[1]); sm = out.with_suffix(".savedmodel")
keras.utils.set_random_seed(0)
m = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000)
m.export(str(sm), verbose=False)
rng = np.random.default_rng(0)
def calib():
    for _ in range(32):
        low = rng.uniform(-1, 1, (1, 14, 14, 3)).astype(np.float32)
        img = tf.image.resize(low, (224, 224)).numpy() + rng.normal(0, 0.1, (1, 224, 224, 3)).astype(np.float32)
        yield [np.clip(img, -1, 1)]
c = tf.lite.TFLiteConverter.from_saved_model(str(sm))
c.optimizations = [tf.lite.Optimize.DEFAULT]
c.representative_dataset = calib
c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
c.inference_input_type = tf.int8
c.inference_output_type = tf.int8
tmp = out.with_suffix(".tmp")
tmp.write_bytes(c.convert())
tmp.replace(out)
'''


def mobilenet_int8() -> Path:
    """Path to the cached int8 MobileNetV2 224 .tflite (built on first use, ~1 min)."""
    out = CACHE / "mobilenetv2_224_int8.tflite"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"building {out} (TensorFlow, once)...", file=sys.stderr)
        subprocess.run([sys.executable, "-c", _BUILD, str(out)], check=True, cwd=ROOT,
                       env={"TF_CPP_MIN_LOG_LEVEL": "3", **__import__("os").environ})
    _manifest(out)
    return out


def _manifest(path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from edgeship.manifest import Manifest, TensorInfo, manifest_path, tool_versions
    from edgeship.spec import InputSpec

    spec = InputSpec(224, 224, scale=1 / 127.5, mean=(1.0,), std=(1.0,))  # pixels -> [-1, 1], default interpolation
    if manifest_path(path).exists() and Manifest.load(path).input_spec == spec:
        return
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))

    def info(d):
        s, z = d["quantization"]
        return TensorInfo(d["name"], [int(v) for v in d["shape"]], str(d["dtype"].__name__), float(s) or None, int(z) if s else None)

    Manifest(name=path.stem, format="tflite", precision="int8", artifact=path.name, input_spec=spec,
             labels=[f"class{i}" for i in range(1000)], task="classify", inputs=[info(d) for d in it.get_input_details()],
             outputs=[info(d) for d in it.get_output_details()], versions=tool_versions()).save(path)


def machine() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from edgeship.report import machine_description

    return machine_description()
