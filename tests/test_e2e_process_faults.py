"""Real processes, real faults (issue #14): `kill -9` of the robot or of the console mid-task.

The robot restarted after a crash comes up with its arms not following (enabled and homed by the
local team's start-up, READY), and the console, which kept its state and raised an alarm, finds it by
itself with a new session; following resumes only through the surgeon's aligned re-engage. A console
killed mid-task leaves the robot holding within the watchdog and latching after the fault time; its
restart gets a new session, and the old session's late datagrams are dropped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def telesurg(*args: str) -> list[str]:
    return [sys.executable, "-m", "telesurg.cli", *args]


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"process exited {process.returncode} before {path.name}"
        assert time.monotonic() < deadline, f"no {path.name} within {timeout} s"
        time.sleep(0.05)


def start_robot(site: Path, tmp: Path, name: str) -> tuple[subprocess.Popen, Path]:
    ready, report = tmp / f"{name}.ready", tmp / f"{name}.json"
    robot = subprocess.Popen(telesurg("robot", "--config", str(site / "robot.toml"), "--report", str(report),
                                      "--no-video", "--ready-file", str(ready)),
                             env=dict(os.environ), stdout=(tmp / f"{name}.log").open("w"), stderr=subprocess.STDOUT)
    wait_for(ready, robot)
    return robot, report


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    assert subprocess.run(telesurg("init", str(site)), capture_output=True, timeout=60).returncode == 0
    return site


def test_kill_9_robot_console_alarms_reconnects_and_resumes_only_on_reengage(site: Path, tmp_path: Path) -> None:
    robot, first_report = start_robot(site, tmp_path, "robot1")
    following = tmp_path / "following"
    console_report = tmp_path / "console.json"
    console = subprocess.Popen(telesurg("console", "--config", str(site / "console.toml"), "--report",
                                        str(console_report), "--no-video", "--no-live", "--rings", "1",
                                        "--duration", "24", "--following-file", str(following)),
                               env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    restarted = None
    try:
        wait_for(following, console)
        time.sleep(2.0)
        robot.send_signal(signal.SIGKILL)
        robot.wait()
        killed_at = time.monotonic()
        time.sleep(1.0)
        restarted, second_report = start_robot(site, tmp_path, "robot2")
        out, _ = console.communicate(timeout=120)
        assert console.returncode == 0, out
    finally:
        if restarted is not None:  # it writes its report on SIGINT
            restarted.send_signal(signal.SIGINT)
            restarted.wait(30)
        for p in (robot, console):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert not first_report.exists()  # killed: it never wrote one
    report = json.loads(console_report.read_text())
    sessions = report["robot_sessions"]
    assert len(sessions) == 2, sessions
    assert sessions[0]["reason"] == "peer_silent"
    t_kill = killed_at - (time.monotonic() - report["duration_s"])  # roughly, on the console's run clock
    raised = [a for a in report["alarms"] if a["severity"] != "OK" and a["at_s"] >= t_kill - 1.0]
    assert raised and raised[0]["at_s"] <= t_kill + 1.0, report["alarms"]  # an alarm at once, not after 5 s
    robot2 = json.loads(second_report.read_text())
    assert robot2["safety"]["violations"] == 0
    assert robot2["commands"]["applied"] > 1000  # the surgeon went on with the restarted robot
    holds_and_resumes = robot2["safety"]["holds"]
    assert all(h["resumed_by"] in (None, "reengage") for h in holds_and_resumes)


def test_kill_9_console_robot_holds_latches_and_a_restarted_console_resumes_after_clear(site: Path,
                                                                                       tmp_path: Path) -> None:
    ready, robot_report = tmp_path / "robot.ready", tmp_path / "robot.json"
    robot = subprocess.Popen(telesurg("robot", "--config", str(site / "robot.toml"), "--report", str(robot_report),
                                      "--no-video", "--ready-file", str(ready), "--local-console"),
                             env=dict(os.environ), stdin=subprocess.PIPE, stdout=(tmp_path / "robot.log").open("w"),
                             stderr=subprocess.STDOUT, text=True)
    consoles: list[subprocess.Popen] = []

    def console(name: str, duration: str) -> tuple[subprocess.Popen, Path, Path]:
        following, report = tmp_path / f"{name}.following", tmp_path / f"{name}.json"
        process = subprocess.Popen(telesurg("console", "--config", str(site / "console.toml"), "--report", str(report),
                                            "--no-video", "--no-live", "--rings", "1", "--duration", duration,
                                            "--following-file", str(following)),
                                   env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        consoles.append(process)
        return process, following, report

    try:
        wait_for(ready, robot)
        first, following, _ = console("console1", "60")
        wait_for(following, first)
        time.sleep(2.0)
        first.send_signal(signal.SIGKILL)
        first.wait()
        time.sleep(2.0)  # past the 1 s fault time: the arms latch
        second, following2, second_report = console("console2", "14")
        time.sleep(4.0)  # connected by now, its commands rejected: the arms are latched
        assert not following2.exists()
        assert robot.stdin is not None
        robot.stdin.write("c\n")  # the local team clears the latch; the surgeon re-engages
        robot.stdin.flush()
        wait_for(following2, second, timeout=30)
        assert second.wait(60) == 0
    finally:
        robot.send_signal(signal.SIGINT)
        robot.wait(30)
        for p in consoles:
            if p.poll() is None:
                p.kill()
                p.wait()
    report = json.loads(robot_report.read_text())
    assert report["safety"]["violations"] == 0
    holds = report["safety"]["holds"]
    watchdog = [h for h in holds if h["cause"] == "watchdog"]
    assert len(watchdog) == 2 and all(h["reaction_ms"] <= 50.0 + 5.0 for h in watchdog), holds
    assert all(h["resumed_by"] is not None for h in watchdog)  # each ended by an operator action, not by packets
    sessions = report["sessions"]
    assert len(sessions) == 2, sessions
    old, new = sorted(sessions.values(), key=lambda s: s["started_at_s"])
    assert old["end_reason"] == "replaced"  # the restart's session ended the old one: its keys are dead
    assert new["commands"]["applied"] > 1000  # the restarted console's session drives the arms again
    latency = json.loads(second_report.read_text())
    assert latency["established"] is True
