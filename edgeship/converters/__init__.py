"""Converters: Keras model -> (prune) -> TFLite / OpenVINO IR, each artifact with its manifest.

    from edgeship.converters import convert
    results = convert("model.keras", formats=["tflite", "openvino"], precision="int8",
                      calib="calib.npz", out_dir="artifacts/")

Modules: ``keras_io`` (load, run, export SavedModel), ``bridge`` (Keras 3 -> tf_keras),
``prune`` (tfmot in a subprocess), ``tflite``, ``openvino``, ``convert`` (the sequence). What each
artifact format is (suffix, files, tensors, builder) lives in :mod:`edgeship.formats`.
TensorFlow, tfmot, OpenVINO and NNCF are imported only inside the functions that use them.
"""

from .convert import ConvertResult, convert
from .options import ConvertOptions, GateOptions, IOOptions, PruneOptions

__all__ = ["ConvertOptions", "ConvertResult", "GateOptions", "IOOptions", "PruneOptions", "convert"]
