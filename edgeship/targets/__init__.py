"""Device targets: profiles (data files), deploy bundles, and flashing over SSH.

``get_target(name)`` / ``list_targets()`` are light (JSON only); bundle and flash are imported
from their own modules (``edgeship.targets.bundle``, ``edgeship.targets.flash``).
"""

from .profiles import Profile, get_target, list_targets

__all__ = ["Profile", "get_target", "list_targets"]
