"""`telesurg netem` end to end: the real command relays real UDP on 127.0.0.1 and prints counters."""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import time

import pytest

from telesurg.netem.cli import parse_path_spec
from telesurg.netem.errors import NetemConfigError


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_path_spec_forms() -> None:
    assert parse_path_spec("a=9001:9101") == ("a", (("127.0.0.1", 9001), ("127.0.0.1", 9101)))
    assert parse_path_spec("b=0.0.0.0:9001:10.0.0.2:9101") == ("b", (("0.0.0.0", 9001), ("10.0.0.2", 9101)))
    assert parse_path_spec("c=9001:10.0.0.2:9101")[1] == (("127.0.0.1", 9001), ("10.0.0.2", 9101))
    assert parse_path_spec("d=10.0.0.1:9001:9101")[1] == (("10.0.0.1", 9001), ("127.0.0.1", 9101))
    for bad in ("a9001:9101", "a=9001", "a=x:9101", "a=9001:70000"):
        with pytest.raises(NetemConfigError, match="--path"):
            parse_path_spec(bad)


def test_cli_relays_with_the_profile_delay() -> None:
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    listen = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "telesurg.cli", "netem", "--profile", "shanghai-casablanca", "--duration", "3",
         "--path", f"a={listen}:{echo.getsockname()[1]}", "--stats-interval", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(0.5)
    echo.settimeout(0.5)
    try:
        rtts = []
        deadline = time.monotonic() + 2.5
        while len(rtts) < 5 and time.monotonic() < deadline:
            sent = time.monotonic()
            client.sendto(b"ping", ("127.0.0.1", listen))
            try:
                data, addr = echo.recvfrom(100)
                echo.sendto(data, addr)
                client.recvfrom(100)
            except TimeoutError:
                continue  # the relay was still starting
            rtts.append((time.monotonic() - sent) * 1000)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        client.close()
        echo.close()
    assert proc.returncode == 0, err
    assert len(rtts) == 5
    # 2 × 52.5 ms ± jitter, plus process overhead; the median, so one scheduling stall on a busy VM is not a failure
    assert min(rtts) >= 104 and 104 <= statistics.median(rtts) <= 125, rtts
    assert f"listening on 127.0.0.1:{listen}" in out
    assert "path a: fwd" in out and "send errors 0" in out


def test_cli_bad_profile_exits_2_with_a_clear_message() -> None:
    proc = subprocess.run([sys.executable, "-m", "telesurg.cli", "netem", "--profile", "mars"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "unknown profile 'mars'" in proc.stderr
