"""Idle pollers: one SCHED_IDLE spinner per CPU, pinned, accounted, gone after stop or with the parent."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from telesurg.apps.common import cpu_usage
from telesurg.idle_poll import KeepCpusAwake


def _until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_one_sched_idle_poller_per_cpu_is_accounted_and_stops() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    pollers = KeepCpusAwake(method="pollers")
    assert pollers.start()
    try:
        assert pollers.method == "pollers" and len(pollers.pids) == len(cpus) and pollers.running

        def settled() -> bool:  # each child sets its own policy and CPU as its first act
            return all(os.sched_getscheduler(pid) == os.SCHED_IDLE for pid in pollers.pids) and \
                sorted(next(iter(os.sched_getaffinity(pid))) for pid in pollers.pids) == cpus

        assert _until(settled)
        assert all(len(os.sched_getaffinity(pid)) == 1 for pid in pollers.pids)
        assert _until(lambda: pollers.cpu_seconds() > 0.05)  # they really spin
    finally:
        pids = pollers.pids
        pollers.stop()
    assert not pollers.running and pollers.pids == []
    assert not any(_alive(pid) for pid in pids)
    spent = pollers.cpu_seconds()
    assert spent > 0.05  # kept after stop, for the report


def test_pollers_exit_on_their_own_when_their_parent_dies() -> None:
    parent = subprocess.run(
        [sys.executable, "-c", "import os; from telesurg.idle_poll import KeepCpusAwake; p = KeepCpusAwake(method='pollers'); "
                               "p.start(); print(*p.pids, flush=True); os._exit(0)"],
        capture_output=True, text=True, check=True, timeout=30)
    pids = [int(v) for v in parent.stdout.split()]
    assert pids
    assert _until(lambda: not any(_alive(pid) for pid in pids), timeout=5.0)


def test_busy_share_leaves_out_the_pollers_time() -> None:
    hz = os.sysconf("SC_CLK_TCK")
    before, after = (0, 0, 0), (150 * hz // 100, 0, 2 * hz)  # 1.5 s busy of 2 s total
    assert cpu_usage(before, after)["busy_pct"] == pytest.approx(75.0)
    assert cpu_usage(before, after, not_counted_s=1.0)["busy_pct"] == pytest.approx(25.0)
    assert cpu_usage(before, after, not_counted_s=5.0)["busy_pct"] == 0.0  # never below zero


def test_no_cpus_means_no_pollers_and_a_false_start() -> None:
    pollers = KeepCpusAwake(cpus=[], method="pollers")
    assert pollers.start() is False and not pollers.running and pollers.cpu_seconds() == 0.0
    pollers.stop()  # harmless


def test_the_kernels_latency_request_is_held_while_running_and_dropped_after() -> None:
    """Where a cpuidle driver exists, "auto" asks the kernel (0 µs CPU latency) instead of spinning:
    the device reads back the request while it is held."""
    from telesurg.idle_poll import PM_QOS_DEVICE

    if not os.access(PM_QOS_DEVICE, os.R_OK | os.W_OK):
        pytest.skip(f"{PM_QOS_DEVICE} needs root")

    def current() -> int:
        with open(PM_QOS_DEVICE, "rb") as device:
            return int.from_bytes(device.read(4), sys.byteorder, signed=True)

    before = current()
    keeper = KeepCpusAwake(method="pm_qos")
    assert keeper.start() and keeper.method == "pm_qos" and keeper.running and keeper.pids == []
    try:
        assert current() == 0
    finally:
        keeper.stop()
    assert not keeper.running and current() == before


def test_unknown_method_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="method='spin'"):
        KeepCpusAwake(method="spin")
