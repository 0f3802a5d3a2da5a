"""Two sites as a user runs them: `telesurg init`, then `telesurg robot` and `telesurg console` as separate
processes on real sockets; a console whose certificate the robot does not allow is refused and counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)


def telesurg(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "telesurg.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), **kwargs)


def test_init_robot_console_and_a_refused_console(tmp_path: Path, contract_checker: Path) -> None:
    site = tmp_path / "site"
    init = telesurg("init", str(site), timeout=60)
    assert init.returncode == 0, init.stdout + init.stderr
    robot_toml, console_toml = site / "robot.toml", site / "console.toml"
    assert "peer_certs" in robot_toml.read_text() and (site / "keys" / "robot.key").exists()
    assert telesurg("init", str(site)).returncode == 2  # never overwrites a site pair silently

    # an intruder: a valid key pair and certificate, just not on the robot's allowlist
    keys = telesurg("keys", "--name", "intruder", "--out", str(site / "intruder"), timeout=60)
    assert keys.returncode == 0, keys.stdout + keys.stderr
    rogue_toml = site / "rogue.toml"
    rogue_toml.write_text(console_toml.read_text()
                          .replace('identity_cert = "keys/console.crt"', 'identity_cert = "intruder/intruder.crt"')
                          .replace('identity_key = "keys/console.key"', 'identity_key = "intruder/intruder.key"'))

    robot_report = tmp_path / "robot.json"
    robot = subprocess.Popen([sys.executable, "-m", "telesurg.cli", "robot", "--config", str(robot_toml),
                              "--report", str(robot_report), "--no-video", "--idle-poll",
                              "--audit", str(tmp_path / "audit")], env=dict(os.environ),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        rogue = telesurg("console", "--config", str(rogue_toml), "--no-video", "--no-live", "--connect-timeout", "5",
                         "--duration", "2", "--report", str(tmp_path / "rogue.json"), timeout=60)
        assert rogue.returncode == 3, rogue.stdout + rogue.stderr  # refused: never established
        assert json.loads((tmp_path / "rogue.json").read_text())["established"] is False

        console_report = tmp_path / "console.json"
        console = telesurg("console", "--config", str(console_toml), "--no-video", "--no-live", "--rings", "1",
                           "--duration", "6", "--report", str(console_report), timeout=90)
        assert console.returncode == 0, console.stdout + console.stderr
    finally:
        robot.send_signal(signal.SIGINT)
        out, _ = robot.communicate(timeout=30)
    assert robot.returncode == 0, out
    for path, kind in ((robot_report, "robot"), (console_report, "console")):
        check = subprocess.run([sys.executable, str(contract_checker), str(path), "--kind", kind],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout
    # the robot's audit log: intact, signed with its key, and it holds the refusal and the arms' transitions
    audit = telesurg("audit", "verify", str(tmp_path / "audit"), "--cert", str(site / "keys" / "robot.crt"))
    assert audit.returncode == 0 and audit.stdout.startswith("intact:"), audit.stdout + audit.stderr
    entries = [json.loads(line) for f in sorted((tmp_path / "audit").glob("*.jsonl")) for line in f.open()]
    kinds = [e["kind"] for e in entries]
    assert kinds.count("start") == 1 and kinds.count("stop") == 1 and "peer_refused" in kinds
    assert any(e["kind"] == "transition" and e["data"]["to"] == "FOLLOWING" for e in entries)
    robot_data = json.loads(robot_report.read_text())
    console_data = json.loads(console_report.read_text())
    assert robot_data["security"]["rejected"].get("not_allowed", 0) >= 1
    assert robot_data["link"]["peer"] == "console"
    assert robot_data["idle_poll"] in ("pollers", "pm_qos") and console_data["idle_poll"] is None  # robot only
    assert robot_data["safety"]["violations"] == 0
    # most commands are applied (those sent while the arms align at the start, or during a hold, are not)
    assert robot_data["commands"]["applied"] > 0.6 * console_data["commands"]["sent"] > 1000
    assert set(console_data["paths"]) == {"a", "b"}


def test_bad_profile_and_config_give_one_line_errors(tmp_path: Path) -> None:
    demo = telesurg("demo", "--profile", "mars", timeout=60)
    assert demo.returncode == 2 and "shanghai-casablanca" in demo.stdout and "Traceback" not in demo.stderr
    bad = tmp_path / "robot.toml"
    bad.write_text('[site]\nname = "r"\n[link]\nidentity_cert = "a"\nidentity_key = "b"\npeer_certs = ["c"]\n'
                   '[[link.paths]]\nname = "a"\nlocal = "127.0.0.1"\n')
    robot = telesurg("robot", "--config", str(bad), timeout=60)
    assert robot.returncode == 2
    assert "link.paths.0.local: expected host:port" in robot.stdout and "Traceback" not in robot.stderr
