"""The collector's pace in streamq's own processes."""

from __future__ import annotations

import subprocess
import sys


def test_a_service_collects_rarely_and_freezes_what_start_up_made() -> None:
    """After pace_for_service() the young threshold is YOUNG_THRESHOLD and start-up's objects
    are frozen (in a process of its own: the collector's settings are process-wide)."""
    code = (
        "import gc\n"
        "from streamq.core.garbage_collection import YOUNG_THRESHOLD, pace_for_service\n"
        "before = gc.get_threshold()\n"
        "pace_for_service()\n"
        "assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:]), gc.get_threshold()\n"
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
