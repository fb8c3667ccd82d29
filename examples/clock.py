"""Prints a tick every half second; stops cleanly on SIGTERM (exit code 0)."""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType


def stop(signum: int, frame: FrameType | None) -> None:
    print("clock: SIGTERM, stopping", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
n = 0
while True:
    n += 1
    print(f"tick {n}", flush=True)
    time.sleep(0.5)
