"""The patient-side team's console on a running robot site: actions typed on standard input.

`telesurg robot --local-console` reads one action a line (e-stop, takeover, hand back, enable, clear
latch: robot/local_console.py's KeyboardConsole) so the local team can act on the live process, as
the operation we model had a local team ready to take over.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from telesurg.robot.local_console import KeyboardConsole


def start_local_console(site: Any) -> threading.Thread:
    """Read the local team's actions from standard input on a thread of their own; each runs on the
    servo thread before any network command of its period (invariant 6)."""
    keyboard = KeyboardConsole(site.servo.operator)

    def read() -> None:
        for line in sys.stdin:
            print(f"local console: {keyboard.handle_line(line)}", flush=True)

    thread = threading.Thread(target=read, name="local-console", daemon=True)
    thread.start()
    return thread
