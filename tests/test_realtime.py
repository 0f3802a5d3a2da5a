"""Process placement helpers and the kernel's receive stamp the relay and robot measure from."""

from __future__ import annotations

import os
import socket
import time

import pytest

from telesurg.apps.common import cpu_times, cpu_usage
from telesurg.link.sockets import enable_arrival_stamps, kernel_arrival_time
from telesurg.realtime import parse_cpus, pin, pin_to_option, split_cpus, unpin


def test_parse_cpus_accepts_lists_and_ranges_and_names_the_forms_on_error() -> None:
    assert parse_cpus("1") == {1}
    assert parse_cpus("2,3") == {2, 3}
    assert parse_cpus("0-2, 5") == {0, 1, 2, 5}
    for bad in ("", "x", "1-", "-1", "3-1"):
        with pytest.raises(ValueError, match="like 1, 2,3 or 0-3"):
            parse_cpus(bad)
    assert pin_to_option(None) is None  # not given: nothing pinned
    assert "like 1, 2,3 or 0-3" in (pin_to_option("x") or "")
    assert "cannot run on CPUs [4096]" in (pin_to_option("4096") or "")


def test_split_gives_disjoint_halves_and_unpin_restores_every_cpu() -> None:
    before = os.sched_getaffinity(0)
    halves = split_cpus()
    if len(before) < 2:
        assert halves is None
        return
    assert halves is not None
    console, robot = halves
    assert console and robot and not console & robot and console | robot == before
    try:
        assert pin(robot) and os.sched_getaffinity(0) == robot
        unpin()
        assert os.sched_getaffinity(0) == set(range(os.cpu_count() or 1))
    finally:
        os.sched_setaffinity(0, before)


def test_kernel_arrival_time_is_when_the_datagram_arrived_not_when_it_was_read() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        enable_arrival_stamps(receiver)
        time.sleep(0.2)  # the kernel switches stamping on from deferred work, not at once
        sender.sendto(b"warm-up", receiver.getsockname())
        assert receiver.recv(64) == b"warm-up"
        sent_at = time.monotonic()
        sender.sendto(b"command", receiver.getsockname())
        time.sleep(0.05)  # the datagram waits in the socket while the reader is busy
        assert receiver.recv(64) == b"command"
        read_at = time.monotonic()
        arrived = kernel_arrival_time(receiver)
        assert sent_at - 0.002 <= arrived <= sent_at + 0.02  # not the read time, 50 ms later
        assert read_at - arrived >= 0.03
    finally:
        receiver.close()
        sender.close()
    assert abs(kernel_arrival_time(None) - time.monotonic()) < 0.01  # no socket: now


def test_cpu_usage_is_a_share_of_the_whole_machine() -> None:
    before = cpu_times()
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        pass
    usage = cpu_usage(before, cpu_times())
    if before is None:  # not Linux
        assert usage is None
        return
    assert usage is not None
    assert 0.0 < usage["busy_pct"] <= 100.0 and 0.0 <= usage["steal_pct"] <= 100.0
    assert cpu_usage(before, before) is None


def test_cpu_seconds_of_reads_this_process_and_none_once_gone() -> None:
    from telesurg.realtime import cpu_seconds_of

    start = time.process_time()
    while time.process_time() - start < 0.05:  # burn a little CPU so the kernel's ticks move
        pass
    mine = cpu_seconds_of("/proc/self/stat")
    assert mine is not None and mine >= 0.04 and abs(mine - time.process_time()) < 0.5
    assert cpu_seconds_of("/proc/999999999/stat") is None
