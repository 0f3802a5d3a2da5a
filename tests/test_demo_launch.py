"""The demo waits for a site's readiness as long as the site lives, and a site that dies is reported
with the tail of its log, never as a bare "a site wrote no report"."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from telesurg.apps.demo import _wait_ready, log_tail


def test_wait_ready_waits_for_a_slow_site_without_a_fixed_deadline(tmp_path: Path) -> None:
    marker = tmp_path / "robot.ready"
    slow = subprocess.Popen([sys.executable, "-c",
                             f"import time, pathlib; time.sleep(1.5); pathlib.Path({str(marker)!r}).write_text('1')"
                             "; time.sleep(5)"])
    try:
        assert asyncio.run(_wait_ready(slow, marker)) is True
        assert slow.poll() is None  # ready while still running
    finally:
        slow.kill()
        slow.wait()


def test_a_site_that_dies_before_ready_is_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "robot.log"
    with log.open("w") as out:
        dead = subprocess.Popen([sys.executable, "-c", "print('robot: cannot bind 127.0.0.1:47001'); raise SystemExit(3)"],
                                stdout=out, stderr=subprocess.STDOUT)
        assert asyncio.run(_wait_ready(dead, tmp_path / "robot.ready")) is False
    assert dead.returncode == 3
    tail = log_tail(log)
    assert tail.splitlines()[0] == "--- robot.log (last 1 lines)"
    assert "cannot bind 127.0.0.1:47001" in tail
    assert log_tail(tmp_path / "console.log") == "--- console.log: no log was written"
