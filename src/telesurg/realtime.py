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

CPU split: when one machine hosts both sites (the demo), `split_cpus` gives the robot site and the
console site (with the emulator) separate CPUs, as two hospitals' machines would be; their
real-time threads then never queue behind each other. Video processes `unpin` themselves: they
are the work that may use whatever any CPU leaves.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import threading

log = logging.getLogger(__name__)

# priorities on the command path (SCHED_FIFO 1-99; higher runs first)
SERVO_PRIORITY = 50
ROBOT_LINK_PRIORITY = 45
CONSOLE_TICKER_PRIORITY = 40
CONSOLE_LINK_PRIORITY = 35
EMULATOR_PRIORITY = 30  # the demo's WAN emulator: a real network does not slow down when hosts are busy
# A site's other Python threads (tap consumers: recorder, dashboard, broadcast): above every ordinary
# process, below the whole command path. They share the GIL with the servo loop; preempted by an
# unrelated process while holding it, they would keep the servo loop waiting for the GIL until the
# scheduler gave them the CPU back (milliseconds). Their work is short and bounded (a few % of a core).
GIL_SHARER_PRIORITY = 1


def request_realtime(priority: int, thread: threading.Thread | None = None) -> bool:
    """Put the calling thread (or `thread`, another started thread of this process) under SCHED_FIFO
    at `priority` (needs CAP_SYS_NICE or root).

    Where the system refuses (an ordinary user, another OS), the thread runs as before and the
    refusal is logged; callers report whether they got it."""
    tid = 0 if thread is None else thread.native_id
    if tid is None:  # not started
        return False
    try:
        policy = os.SCHED_FIFO | getattr(os, "SCHED_RESET_ON_FORK", 0)
        os.sched_setscheduler(tid, policy, os.sched_param(priority))
    except (AttributeError, OSError) as exc:
        log.info("real-time scheduling not available (%s); running with normal priority", exc)
        return False
    return True


def split_cpus() -> tuple[set[int], set[int]] | None:
    """(console side, robot side) halves of the CPUs this process may use; None with fewer than 2."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    if len(cpus) < 2:
        return None
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


def parse_cpus(text: str) -> set[int]:
    """'1', '2,3' or '0-3' -> a set of CPU numbers; ValueError that says the accepted forms."""
    cpus: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None or (match[2] is not None and int(match[2]) < int(match[1])):
            raise ValueError(f"--cpus {text!r}: give CPU numbers like 1, 2,3 or 0-3")
        cpus.update(range(int(match[1]), int(match[2] or match[1]) + 1))
    return cpus


def pin(cpus: set[int]) -> bool:
    """Restrict the calling process (and what it starts later) to `cpus`; False where refused."""
    try:
        os.sched_setaffinity(0, cpus)
    except (AttributeError, OSError) as exc:
        log.info("CPU affinity not available (%s)", exc)
        return False
    return True


def pin_to_option(text: str | None) -> str | None:
    """Apply a site's `--cpus` option (before any thread starts: they all inherit it). None when
    done or not given, else the error to print."""
    if text is None:
        return None
    try:
        cpus = parse_cpus(text)
    except ValueError as exc:
        return str(exc)
    if not pin(cpus):
        return f"cannot run on CPUs {sorted(cpus)} here (see `nproc`)"
    return None


def unpin() -> None:
    """Let the calling process run on every online CPU again (video work inside a pinned site)."""
    count = os.cpu_count() or 1
    pin(set(range(count)))


def settle_garbage_collector() -> None:
    """Collect once, then freeze every object that exists (call after start-up, before the 1 kHz
    threads run). CPython's cyclic collector stops every thread of the process while it runs, and a
    full collection of a site's heap (MuJoCo, numpy, pydantic, codecs) took 22-52 ms on the demo
    machine, which the servo loop felt as a late period. Start-up objects never become garbage;
    frozen, later collections walk only what the session allocates."""
    gc.collect()
    gc.freeze()


def cpu_seconds_of(stat_path: str) -> float | None:
    """User + system CPU seconds from a /proc `stat` file (a process's `/proc/PID/stat` or a thread's
    `/proc/self/task/TID/stat`); None once it is gone or where /proc is absent."""
    try:
        with open(stat_path) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 14, 15 of proc(5)
    except (OSError, IndexError, ValueError):
        return None
