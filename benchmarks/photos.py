"""What the accuracy benchmarks share: images made from the photographs inside scikit-image, and the machine line.

Nothing is downloaded: scikit-image ships these photographs in its wheel.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

import numpy as np

COLOUR = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field")


def photographs(names: Sequence[str] = COLOUR) -> list[np.ndarray]:
    """RGB uint8 photographs by scikit-image name (a pair such as stereo_motorcycle gives its first image;
    grey ones become three channels)."""
    from skimage import data

    out = []
    for name in names:
        img = getattr(data, name)()
        img = img[0] if isinstance(img, tuple) else img
        out.append(np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img[:, :, :3])
    return out


def random_crops(n: int, side: int, seed: int = 0, names: Sequence[str] = COLOUR) -> list[np.ndarray]:
    """``n`` square crops (50-100% of the short side, random place, random mirror) resized to ``side``: uint8 BGR."""
    import cv2

    rng = np.random.default_rng(seed)
    photos = photographs(names)
    frames = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        s = int(rng.uniform(0.5, 1.0) * min(h, w))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crop = img[y:y + s, x:x + s]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = cv2.resize(np.ascontiguousarray(crop), (side, side), interpolation=cv2.INTER_AREA)
        frames.append(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))  # edgeship's frames are BGR, like a camera's
    return frames


def machine(versions: bool = False) -> dict[str, Any]:
    """CPU, cores, architecture, Python and the date (and the tools' versions) for a results table."""
    from edgeship.runtime.bench import machine_info

    info = machine_info()
    out = {k: info[k] for k in ("cpu", "cores", "arch", "python")}
    out["date"] = datetime.now().astimezone().strftime("%a %b %d %H:%M:%S %Z %Y")
    if versions:
        from edgeship.manifest import tool_versions

        v = tool_versions()
        out["versions"] = {k: v.get(k) for k in ("edgeship", "tensorflow", "keras", "openvino", "nncf", "ai_edge_litert",
                                                 "numpy")}
    return out
