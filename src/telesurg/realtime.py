"""Real-time scheduling for the threads on the command path (Linux SCHED_FIFO, where allowed).

The command path crosses several threads and processes: console ticker → console link loop →
(in the demo, the WAN emulator) → robot link loop → servo loop. Under ordinary scheduling any busy
neighbour — the endoscope renderer, the decoder, a display — can delay one of them by tens of
milliseconds, and the robot holds on silence although the network delivered every command. Each of
these threads therefore asks for SCHED_FIFO at a priority that follows the order of the path (the
servo highest). They sleep most of the time, so the rest of the machine keeps what they leave;
video, which runs at normal priority and a positive nice value, gives way first (DESIGN.md §2).

SCHED_RESET_ON_FORK: threads and processes started later by a real-time thread run at normal
priority, so a helper thread or a spawned video process never inherits the real-time class.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

# priorities on the command path (SCHED_FIFO 1-99; higher runs first)
SERVO_PRIORITY = 50
ROBOT_LINK_PRIORITY = 45
CONSOLE_TICKER_PRIORITY = 40
CONSOLE_LINK_PRIORITY = 35
EMULATOR_PRIORITY = 30  # the demo's WAN emulator: a real network does not slow down when hosts are busy


def request_realtime(priority: int) -> bool:
    """Put the calling thread under SCHED_FIFO at `priority` (needs CAP_SYS_NICE or root).

    Where the system refuses (an ordinary user, another OS), the thread runs as before and the
    refusal is logged; callers report whether they got it."""
    try:
        policy = os.SCHED_FIFO | getattr(os, "SCHED_RESET_ON_FORK", 0)
        os.sched_setscheduler(0, policy, os.sched_param(priority))
    except (AttributeError, OSError) as exc:
        log.info("real-time scheduling not available (%s); running with normal priority", exc)
        return False
    return True
