"""Calibration: image folders, videos, streams and arrays -> a RepresentativeDataset.

    from edgeship.calibration import build_dataset, RepresentativeDataset
    ds = build_dataset(["images/", "line3.mp4", "rtsp://cam/stream"], spec=spec, count=300)
    ds.save("calib.npz")
    converter.representative_dataset = RepresentativeDataset.load("calib.npz").to_tflite()

Imports numpy only; OpenCV is imported when a source is read, nncf by ``to_nncf()``.
"""

from .build import build_dataset
from .dataset import RepresentativeDataset
from .sources import SOURCE_KINDS, open_source

__all__ = ["RepresentativeDataset", "build_dataset", "SOURCE_KINDS", "open_source"]
