"""Keep idle CPUs awake so a datagram's thread runs at once: a software `idle=poll`.

Why: on a virtual machine without a cpuidle driver (this one: `current_driver` is `none`) an idle
CPU halts, and the hypervisor must wake it before the thread a datagram woke can run. Measured with
`bench/wakeup_latency.py --seconds 20` (1 kHz commands from another process, the robot link also
sending video, alternating 1 s blocks): kernel arrival -> handed to the robot's callback p50 46 µs,
p99 329 µs with idle CPUs halting; p50 22 µs, p99 108 µs with them kept awake. In the whole demo
(`bench/command_overhead.py --runs 3`) the command path's p99 overhead went from 0.68-0.99 ms to
0.39-0.63 ms, run for run, and the endoscope froze less (0-9 freezes against 10-43). The
usual cures are the kernel's (`idle=poll` on the kernel command line, the haltpoll cpuidle driver,
or a /dev/cpu_dma_latency request, which does nothing without a cpuidle driver); they need the
machine's owner. This does the same from user space: one process per CPU, pinned, at SCHED_IDLE,
spinning. SCHED_IDLE runs only when nothing else wants the CPU, and any thread that wakes there
preempts it at once, so the command path, video and everything else keep their CPU time.

Cost: the CPUs look 100 % busy (the demo subtracts the pollers' own time from its figures) and draw
full power; on a shared host they take cycles the host could give to other guests. So the demo turns
it on (its figures are about the software, not this VM's halt exits) and the site commands leave it
to the operator (`--idle-poll`); on a dedicated site machine, prefer the kernel's `idle=poll`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterable

log = logging.getLogger(__name__)

# argv: cpu, parent pid. Exits on its own when the parent is gone (checked every ~10 ms of spinning).
_POLLER = """
import os, sys
cpu, parent = int(sys.argv[1]), int(sys.argv[2])
os.sched_setaffinity(0, {cpu})
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
while os.getppid() == parent:
    for _ in range(200_000):
        pass
"""


class IdlePollers:
    """One SCHED_IDLE spinning process per CPU in `cpus` (default: the CPUs this process may use)."""

    def __init__(self, cpus: Iterable[int] | None = None) -> None:
        if cpus is None:  # Linux; elsewhere there is nothing to pin to and no SCHED_IDLE
            cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ()
        self.cpus = sorted(set(cpus))
        self._processes: list[subprocess.Popen[bytes]] = []
        self._ticks_at_stop = 0

    def start(self) -> bool:
        """Start the pollers; false (and nothing running) where SCHED_IDLE or processes are refused."""
        if self._processes:
            return True
        if not self.cpus or not hasattr(os, "SCHED_IDLE"):
            log.warning("idle polling needs Linux (SCHED_IDLE and CPU affinity): not started")
            return False
        try:
            for cpu in self.cpus:
                self._processes.append(subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _POLLER, str(cpu), str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        except OSError as exc:
            log.warning("idle polling not started (%s): idle CPUs halt and wake-ups cost more", exc)
            self.stop()
            return False
        return True

    @property
    def running(self) -> bool:
        return any(p.poll() is None for p in self._processes)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def cpu_seconds(self) -> float:
        """CPU time the pollers have used so far (to take out of a machine's busy figure)."""
        return (self._ticks_at_stop + sum(_cpu_ticks(p.pid) for p in self._processes)) / _CLOCK_TICKS

    def stop(self) -> None:
        self._ticks_at_stop += sum(_cpu_ticks(p.pid) for p in self._processes)
        for process in self._processes:
            with contextlib.suppress(OSError):
                process.kill()
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(2.0)
        self._processes = []

    def __enter__(self) -> IdlePollers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), counted after the name
