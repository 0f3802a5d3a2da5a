"""Keep idle CPUs awake so a datagram's thread runs at once: a software `idle=poll`.

Why: on a virtual machine without a cpuidle driver (this one: `current_driver` is `none`) an idle
CPU halts, and the hypervisor must wake it before the thread a datagram woke can run. Measured with
`bench/wakeup_latency.py --seconds 20` (1 kHz commands from another process, the robot link also
sending video, alternating 1 s blocks): kernel arrival -> handed to the robot's callback p50 46 µs,
p99 329 µs with idle CPUs halting; p50 22 µs, p99 108 µs with them kept awake. In the whole demo
(`bench/command_overhead.py`, 3 sets of 3 interleaved pairs) the command path's p99 overhead was
lower in 8 of 9 pairs, by most in the VM's slow hours (0.39-0.67 ms against 0.68-1.01 ms), and the
endoscope froze less; in a fast hour the gain was small and the worst case larger. The
usual cures are the kernel's: `idle=poll` on the kernel command line, or, where the kernel has a
cpuidle driver (bare metal: intel_idle, acpi_idle; a VM with haltpoll), a /dev/cpu_dma_latency
request of 0, which makes its idle loop poll instead of entering a C-state. `KeepCpusAwake` makes
that request where a cpuidle driver exists; where none does (this VM), the request changes nothing
(measured), so it polls from user space instead: one process per CPU, pinned, at SCHED_IDLE,
spinning. SCHED_IDLE runs only when nothing else wants the CPU, and any thread that wakes there
preempts it at once, so the command path, video and everything else keep their CPU time.

Cost: the CPUs draw full power, and with the pollers they look 100 % busy (the demo subtracts the
pollers' own time from its figures). The host no longer sees its virtual CPUs halt: in
`bench/servo_loop.py` the servo loop's p99 lateness fell from 183-306 µs to 46-96 µs but its worst
stall grew from 0.3-0.8 ms to 1.8-3.6 ms (3 runs each), as if the host now descheduled the busy
virtual CPU for a few ms at a time (this guest reports no steal time, so that is a guess). Harmless
beside the 50 ms watchdog, but a cost. So the demo turns it on (its figures are about the software,
not this VM's halt exits) and the site commands leave it to the operator (`--idle-poll`); on a
dedicated site machine, prefer the kernel's `idle=poll`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from telesurg.realtime import cpu_seconds_of

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


class KeepCpusAwake:
    """Idle CPUs kept from halting, by the kernel's latency request where it has a cpuidle driver, else
    by one SCHED_IDLE spinning process per CPU in `cpus` (default: the CPUs this process may use)."""

    def __init__(self, cpus: Iterable[int] | None = None, method: str = "auto") -> None:
        """`method`: "auto" (the kernel's request where a cpuidle driver exists, else pollers),
        "pm_qos" or "pollers" (only that one)."""
        if method not in ("auto", "pm_qos", "pollers"):
            raise ValueError(f"method={method!r}: use 'auto', 'pm_qos' or 'pollers'")
        self.wanted = method
        if cpus is None:  # Linux; elsewhere there is nothing to pin to and no SCHED_IDLE
            cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ()
        self.cpus = sorted(set(cpus))
        self._processes: list[subprocess.Popen[bytes]] = []
        self._seconds_at_stop = 0.0
        self._latency_request: int | None = None  # open /dev/cpu_dma_latency: the request lasts while open
        self.method: str | None = None  # "pm_qos" or "pollers" once started

    def start(self) -> bool:
        """Keep the CPUs awake; false (and nothing running) where neither way is available."""
        if self.running:
            return True
        kernel_can = self.wanted == "pm_qos" or (self.wanted == "auto" and cpuidle_driver() not in (None, "none"))
        if kernel_can and self._request_no_idle_latency():
            self.method = "pm_qos"
            return True
        if self.wanted == "pm_qos":
            return False
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
        self.method = "pollers"
        return True

    def _request_no_idle_latency(self) -> bool:
        try:
            fd = os.open(PM_QOS_DEVICE, os.O_WRONLY)
        except OSError as exc:  # needs root; fall back to the pollers
            log.info("no CPU latency request (%s): polling from user space instead", exc)
            return False
        try:
            os.write(fd, struct.pack("i", 0))  # 0 µs: no C-state may be entered while this is held
        except OSError:
            os.close(fd)
            return False
        self._latency_request = fd
        return True

    @property
    def running(self) -> bool:
        return self._latency_request is not None or any(p.poll() is None for p in self._processes)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def cpu_seconds(self) -> float:
        """CPU time the pollers have used so far (to take out of a machine's busy figure)."""
        return self._seconds_at_stop + sum(_cpu_seconds(p.pid) for p in self._processes)

    def stop(self) -> None:
        if self._latency_request is not None:
            os.close(self._latency_request)
            self._latency_request = None
        self._seconds_at_stop += sum(_cpu_seconds(p.pid) for p in self._processes)
        for process in self._processes:
            with contextlib.suppress(OSError):
                process.kill()
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(2.0)
        self._processes = []

    def __enter__(self) -> KeepCpusAwake:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


PM_QOS_DEVICE = "/dev/cpu_dma_latency"
CPUIDLE_DRIVER = Path("/sys/devices/system/cpu/cpuidle/current_driver")


def cpuidle_driver() -> str | None:
    """The kernel's cpuidle driver ("none": idle CPUs just halt, as on this VM); None where unknown."""
    try:
        return CPUIDLE_DRIVER.read_text().strip()
    except OSError:
        return None


def _cpu_seconds(pid: int) -> float:
    return cpu_seconds_of(f"/proc/{pid}/stat") or 0.0  # 0 once it is gone
