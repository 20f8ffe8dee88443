"""Demo data that needs no download: real handwritten digits on a belt, synthetic shapes in a scene,
and two tiny models trained on them in seconds (a digits CNN, a YOLO-style shapes detector).

Used by ``edgeship quickstart``, the ``examples/*.yaml`` deployments and the tests.
TensorFlow is imported only inside the training and conversion functions.
"""

from .build import build_demo, demo_paths, write_belt_video, write_shapes_video

__all__ = ["build_demo", "demo_paths", "write_belt_video", "write_shapes_video"]
