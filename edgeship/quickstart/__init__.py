"""``edgeship quickstart``: the whole workflow end to end on built-in demo data, with no network.

    from edgeship.quickstart import run_quickstart
    summary = run_quickstart("quickstart-out")        # a second call reuses everything (seconds)
    print(summary["report_html"])

Steps (one module each): train + videos + calibration sets (:mod:`.data`), convert + verify +
bench (:mod:`.artifacts`), runtime runs + bundle (:mod:`.runs`), report (:mod:`.summary`).
Each unit of work is stamped (:mod:`.stamps`) so a re-run redoes only what changed and never
trusts the output of an interrupted run.
"""

from .plan import ARTIFACTS, Options
from .runner import STEPS, run_quickstart

__all__ = ["run_quickstart", "Options", "ARTIFACTS", "STEPS"]
