"""End to end: `telesurg demo` runs robot and console as real processes over real UDP through netem relays.

Shorter than the default demo (one ring) so CI stays within its budget; the full six-ring demo is
`make demo`. Each run checks the published report contract, from an environment without MUJOCO_GL or
a display, as a user's shell would be. The one-path cut streams video too: a synthetic stereo pattern
through the real encoder, link and decoder (the CPU renderer of the simulated endoscope would only
add load on a 2-core CI machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)
WATCHDOG_MS = 50.0
SERVO_PERIOD_MS = 1.0
# The supervisor notices silence on its next servo period. On this shared 2-vCPU VM the servo thread can
# wait tens of ms for the GIL behind the link thread (priority inversion; one CI run measured a 94 ms
# reaction), so the bound here is loose and the measured figure is what the report shows. A real cart
# adds its own hardware watchdog (dVRK: 30 ms) below ours.
SCHEDULING_SLACK_MS = 100.0


def run_demo(tmp_path: Path, *extra: str, video: bool = False) -> tuple[dict, subprocess.CompletedProcess]:
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY")}
    proc = subprocess.run(
        [sys.executable, "-m", "telesurg.cli", "demo", "--rings", "1", "--workdir", str(tmp_path / "sites"),
         "--report", str(report), "--no-live", *([] if video else ["--no-video"]), *extra],
        capture_output=True, text=True, timeout=220, env=env)
    assert report.exists(), f"no report; stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return json.loads(report.read_text()), proc


def check_contract(checker: Path, report_path: Path, kind: str = "demo") -> None:
    out = subprocess.run([sys.executable, str(checker), str(report_path), "--kind", kind], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout


def check_recording(tmp_path: Path, report: dict, *, video: bool = False) -> dict:
    """The demo's black-box recordings (on by default): both sites' files are read by `telesurg record
    info`, lost nothing, and `telesurg replay` of the robot's reaches the same decisions, transitions and
    holds as the run did. Returns the replay summary."""
    record = report["record"]
    assert Path(record["dir"]) == tmp_path / "sites" / "record"
    files = {site: [Path(p) for p in record[site]["files"]] for site in ("robot", "console")}
    assert [p.name for p in files["robot"]] == ["robot-0.mcap"] and files["console"]
    for site, paths in files.items():
        assert record[site]["dropped_total"] == 0 and record[site]["write_errors"] == 0
        out = subprocess.run([sys.executable, "-m", "telesurg.cli", "record", "info", "--json", *map(str, paths)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        info = json.loads(out.stdout.splitlines()[0])
        assert info["closed"] and info["meta"]["role"] == site and info["dropped_total"] == 0
        assert info["channels"][f"/{site}/tool/PSM1/measured"]["schema"] == "foxglove.PoseInFrame"
        if video:
            assert info["channels"][f"/{site}/video/left"]["schema"] == "foxglove.CompressedVideo"
    summary = tmp_path / "replay.json"
    out = subprocess.run([sys.executable, "-m", "telesurg.cli", "replay", *map(str, files["robot"]), "--json",
                          str(summary)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "SAME DECISIONS" in out.stdout, out.stdout[-3000:]
    result = json.loads(summary.read_text())
    # every delivered command was judged (a few may arrive after the servo loop stopped) and recorded
    assert report["commands"]["delivered"] - 10 <= result["decisions"] <= report["commands"]["delivered"]
    assert result["complete_session"] and result["conclusive"]
    return result


def write_scenario(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_demo_moves_a_ring_over_the_shanghai_casablanca_profile(tmp_path, contract_checker):
    report, proc = run_demo(tmp_path, "--cpu-split")
    check_contract(contract_checker, tmp_path / "report.json")
    assert proc.returncode == 0, proc.stdout[-2000:]
    c = report["commands"]
    assert report["profile"] == "shanghai-casablanca"
    assert report["safety"]["violations"] == 0
    assert c["duplicates_applied"] == 0 and c["out_of_order_applied"] == 0
    assert c["sent"] > 10_000 and c["applied"] > 0.75 * c["sent"]  # commands during a hold are not applied
    # both paths would have to lose the same command: at 0.01 % x 0.1 % that is ~0 in 20 s
    assert c["lost"] <= 1
    assert report["task"]["rings_moved"] >= 1
    # one-way latency sits on path a's emulated delay (52.5 ms each way)
    assert 50.0 <= c["latency_ms"]["p50"] <= 70.0  # measured 54-59 ms; the VM's scheduling adds a few ms
    paths = report["paths"]
    assert 100.0 <= paths["a"]["rtt_ms"]["p50"] <= 130.0  # 105 ms emulated; measured 107-127 ms
    assert 160.0 <= paths["b"]["rtt_ms"]["p50"] <= 200.0  # 165 ms emulated; measured 170-190 ms
    assert report["safety"]["final_state"] == "READY"  # the scripted surgeon let go at the end
    assert report["security"]["rejected"] == {}
    machine = report["machine"]  # the sites ran on separate CPUs (asked for), and the report says how busy the host was
    split = machine["cpu_split"]
    assert split["robot"] and split["console"] and not set(split["robot"]) & set(split["console"])
    assert 0.0 < machine["cpu"]["busy_pct"] <= 100.0 and 0.0 <= machine["cpu"]["steal_pct"] <= 100.0
    # idle CPUs were kept awake (the default) and the pollers' own spinning is left out of "busy"
    polled = machine["idle_poll"]
    assert polled["cpus"] == sorted(os.sched_getaffinity(0)) and polled["method"] in ("pollers", "pm_qos")
    assert polled["cpu_s"] > 0 or polled["method"] == "pm_qos"  # the kernel's own polling counts as idle
    check_recording(tmp_path, report)


def test_cutting_one_path_loses_no_command_and_video_does_not_freeze(tmp_path, contract_checker, no_loss_profile):
    scenario = write_scenario(tmp_path / "cut-a.toml", """
[[event]]
at = 3.0
path = "a"
action = "down"
duration = 3.0
""")
    report, proc = run_demo(tmp_path, "--duration", "12", "--scenario", str(scenario), "--profile",
                            str(no_loss_profile), "--video-source", "test-pattern", "--video-fps", "30",
                            video=True)
    check_contract(contract_checker, tmp_path / "report.json")
    assert report["commands"]["lost"] == 0
    assert report["safety"]["violations"] == 0
    changes = [(e["path"], e["new"]) for e in report["path_events"]]
    assert ("a", "down") in changes and changes.index(("a", "down")) < len(changes) - 1
    assert ("a", "up") in changes[changes.index(("a", "down")):]
    # the cut really dropped traffic: ~1 bundle per ms (both arms in one datagram) for 3 s, less skipped periods
    assert report["paths"]["a"]["relay"]["forward"]["dropped_down"] > 1000
    # the endoscope kept streaming over path b: pictures kept reaching the screen through the cut. Here
    # the video processes get only what the real-time command path leaves on 2 cores, so a starved
    # encoder can stretch single frame intervals past 100 ms at any time; the freeze-free property of
    # the transport itself is asserted exactly, under a virtual clock, in test_video_failover.py.
    video = report["video"]
    assert video["frames_displayed"] > 0.8 * video["frames_captured"] > 0, (video, proc.stdout[-1500:])
    events = report["path_events"]
    down_at = next(e["at_s"] for e in events if e["path"] == "a" and e["new"] == "down")
    up_at = next(e["at_s"] for e in events if e["path"] == "a" and e["new"] == "up" and e["at_s"] > down_at)
    long_gaps = [f for f in video["freeze_intervals"]
                 if f["to_s"] > down_at - 0.5 and f["from_s"] < up_at + 1.0 and f["to_s"] - f["from_s"] > 0.5]
    assert not long_gaps, (long_gaps, events)
    check_recording(tmp_path, report, video=True)  # both eyes recorded as H.264 for Foxglove


def test_cutting_both_paths_holds_within_the_watchdog_and_resumes_only_on_reengage(tmp_path, contract_checker):
    scenario = write_scenario(tmp_path / "cut-both.toml", """
[[event]]
at = 3.0
path = "*"
action = "down"
duration = 0.3
""")
    report, _ = run_demo(tmp_path, "--scenario", str(scenario))  # the whole one-ring task
    check_contract(contract_checker, tmp_path / "report.json")
    safety = report["safety"]
    assert safety["violations"] == 0
    holds = [h for h in safety["holds"] if h["cause"] == "watchdog"]
    assert holds, safety
    for hold in holds:
        assert hold["reaction_ms"] <= WATCHDOG_MS + SERVO_PERIOD_MS + SCHEDULING_SLACK_MS
    # following resumed only through the scripted surgeon's explicit re-engage, never by itself
    assert all(h["resumed_by"] in ("reengage", None) for h in safety["holds"])
    assert any(h["resumed_by"] == "reengage" for h in holds)
    assert report["console"]["established"]
    # the console saw it: the robot's hold count in telemetry, and an alarm raised while it lasted
    assert report["console"]["holds_seen"] >= 1
    messages = [a["message"] for a in report["alarms"]]
    assert any("HOLD" in m or "all paths down" in m for m in messages), messages
    # and the task goes on where it stopped: the ring is still moved (with a cut 2-4 s into following
    # the re-anchored tool used to miss it by millimetres, see ConsoleCore._produce)
    assert report["task"]["rings_moved"] == 1
    replayed = check_recording(tmp_path, report)  # the holds replay as they happened
    assert replayed["holds"]["matched"] == replayed["holds"]["recorded"] == len(safety["holds"]) >= 1


# `telesurg demo --consoles 2`: the lead over shanghai-casablanca, a scripted consultant over paris-casablanca;
# the lead hands PSM1 over mid-task and asks for it back, the consultant aligns, re-engages, draws a loop
# and releases it, and the lead re-aligns and finishes the ring.
def test_two_consoles_hand_psm1_over_and_back_and_the_ring_is_moved(tmp_path, contract_checker):
    report, proc = run_demo(tmp_path, "--consoles", "2")
    check_contract(contract_checker, tmp_path / "report.json")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert report["safety"]["violations"] == 0
    assert report["task"]["rings_moved"] == 1
    handovers = report["handovers"]
    assert [(h["arm"], h["from"], h["to"]) for h in handovers] == [("PSM1", "console", "console-2"),
                                                                  ("PSM1", "console-2", "console")]
    for h in handovers:
        assert h["gap_ms"] is not None, h  # each new owner re-engaged and was applied
        assert h["handover_ms"] < 50.0, h  # the arm held at once: the rest is alignment and re-engage
        assert h["moved_mm"] < 0.5, h  # the tool stayed put between the grant and the new owner's first command
    # each handover is a hold resumed by an aligned re-engage, never by itself
    released = [hold for hold in report["safety"]["holds"] if hold["cause"] == "released"]
    assert len(released) == 2 and all(hold["resumed_by"] == "reengage" for hold in released)
    replayed = check_recording(tmp_path, report)  # ownership changes (assign) replay as they happened
    assert replayed["holds"]["recorded"] >= 2
    consultant_record = report["record"]["console-2"]  # the consultant records its own side too
    assert consultant_record["records"] > 1000 and consultant_record["dropped_total"] == 0
    assert any(Path(f).name.startswith("console-2") for f in consultant_record["files"])
    c = report["commands"]
    assert c["duplicates_applied"] == 0 and c["out_of_order_applied"] == 0 and c["lost"] <= 1
    # both consoles' sessions, each with its own paths and figures
    sessions = report["sessions"]
    assert sessions["console"]["role"] == "lead" and sessions["console-2"]["role"] == "consultant"
    assert sessions["console-2"]["commands"]["applied"] > 1000  # the consultant's loop, about 3 s at 1 kHz
    assert 30.0 <= sessions["console-2"]["paths"]["a"]["rtt_ms"]["p50"] <= 70.0  # paris: 40 ms emulated
    assert 100.0 <= sessions["console"]["paths"]["a"]["rtt_ms"]["p50"] <= 130.0  # shanghai: 105 ms
    # every console saw who controls what, and the other console's link health
    consultant = report["consoles"]["console-2"]
    assert consultant["ownership"]["arms"]["PSM1"]["owner"] == "console"
    assert consultant["room"]["peers"]["console"]["role"] == "lead"
    assert set(consultant["peers_seen"]["console"]["rtt_ms"]) == {"a", "b"}  # the lead's link, seen live
    assert "PSM1" in consultant["peers_seen"]["console"]["ghost"]  # and where the lead commanded PSM1
    assert [a["type"] for a in consultant["handover_actions"]] == ["arm_request", "arm_release"]
