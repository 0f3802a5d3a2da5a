"""Alarms (thresholds, hysteresis), config errors and the rich status rendering."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telesurg.console.alarms import AlarmEvaluator, RobotAlarmInput, Severity
from telesurg.console.config import AlarmConfig, ConsoleConfig, load_console_config
from telesurg.console.core import ConsoleCore, supervisor_state_name
from telesurg.console.inputs import ArmMasterState, MasterState
from telesurg.console.status import render_text, snapshot_from
from telesurg.messages import ArmId, ArmTelemetry, Telemetry
from telesurg.robot.supervisor import SupervisorState


@dataclass
class Path:
    state: str = "up"
    rtt_ms: float | None = 100.0
    jitter_ms: float | None = 0.5
    loss_pct: float | None = 0.0
    last_heard: float | None = 0.0


def rtt_severity(ev: AlarmEvaluator, now: float, rtt: float) -> Severity:
    ev.update(now, {"A": Path(rtt_ms=rtt), "B": Path()}, None, None)
    return next((a.severity for a in ev.active() if a.key == "path.A.rtt"), Severity.OK)


@pytest.mark.parametrize(("rtt", "expected"), [(150, Severity.OK), (200, Severity.WARN), (299, Severity.WARN),
                                               (300, Severity.ALARM), (500, Severity.CRITICAL)])
def test_rtt_thresholds_from_literature(rtt, expected):
    assert rtt_severity(AlarmEvaluator(), 0.0, rtt) is expected


def test_rtt_hysteresis_does_not_flap_and_clears_after_hold_time():
    ev = AlarmEvaluator(AlarmConfig(clear_fraction=0.9, clear_after_s=2.0))
    assert rtt_severity(ev, 0.0, 310) is Severity.ALARM
    changes = []
    for i in range(1, 60):  # wanders 285–315 ms around the 300 ms threshold for 3 s
        rtt = 300 + 15 * math.sin(i)
        changes += [c for c in ev.update(i * 0.05, {"A": Path(rtt_ms=rtt), "B": Path()}, None, None)
                    if c.key == "path.A.rtt"]
    assert changes == []  # stayed ALARM throughout, never flapped
    t = 3.0
    assert rtt_severity(ev, t, 280) is Severity.ALARM  # below 300 but above 0.9 × 300 = 270
    assert rtt_severity(ev, t + 5.0, 280) is Severity.ALARM  # ... however long it stays there
    assert rtt_severity(ev, t + 5.1, 260) is Severity.ALARM  # 260 < 270 starts the 2 s clear timer
    assert rtt_severity(ev, t + 6.0, 260) is Severity.ALARM
    assert rtt_severity(ev, t + 7.2, 260) is Severity.WARN
    assert rtt_severity(ev, t + 8.0, 600) is Severity.CRITICAL  # raising is immediate


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1000), min_size=2, max_size=80))
def test_rtt_severity_never_drops_within_hold_time(values):
    cfg = AlarmConfig(clear_after_s=1.0)
    ev = AlarmEvaluator(cfg)
    last_change = {}
    previous = Severity.OK
    for i, v in enumerate(values):
        now = i * 0.1
        sev = rtt_severity(ev, now, v)
        raw = sum(v >= thr for thr in (cfg.rtt_warn_ms, cfg.rtt_alarm_ms, cfg.rtt_critical_ms))
        assert sev >= raw  # never below the raw level
        if sev < previous:
            assert now - last_change.get("rise", -10) >= 1.0 - 1e-9
        if sev > previous:
            last_change["rise"] = now
        previous = sev


def test_loss_path_state_redundancy_delay_and_robot_alarms():
    ev = AlarmEvaluator()
    changes = ev.update(0.0, {"A": Path(loss_pct=0.6), "B": Path(state="down", rtt_ms=None)}, 160.0,
                        RobotAlarmInput(0.01, 1, {"PSM1": "HOLD", "PSM2": "FOLLOWING", "ECM": "LATCHED"},
                                        {"PSM1": "ENABLED", "PSM2": "FAULT"}))
    by_key = {c.key: c.severity for c in changes}
    assert by_key["path.A.loss"] is Severity.WARN
    assert by_key["path.B.state"] is Severity.ALARM
    assert by_key["link.paths"] is Severity.WARN  # redundancy lost
    assert by_key["link.one_way"] is Severity.ALARM
    assert by_key["arm.PSM1.supervisor"] is Severity.ALARM and "arm.PSM2.supervisor" not in by_key
    assert by_key["arm.ECM.supervisor"] is Severity.CRITICAL
    assert by_key["arm.PSM2.operating"] is Severity.CRITICAL
    assert ev.worst() is Severity.CRITICAL
    changes = ev.update(0.1, {"A": Path(state="down"), "B": Path(state="down")}, None, RobotAlarmInput(None))
    by_key = {c.key: c for c in changes}
    assert by_key["link.paths"].severity is Severity.CRITICAL and by_key["link.paths"].message == "all paths down"
    assert by_key["robot.telemetry"].severity is Severity.ALARM


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"console\.scale"):
        load_console_config({"scale": 3.0})
    with pytest.raises(ValueError, match=r"console\.alarms\.rtt_wran_ms"):
        load_console_config({"alarms": {"rtt_wran_ms": 100}})
    with pytest.raises(ValueError, match="rtt_warn_ms < rtt_alarm_ms"):
        load_console_config({"alarms": {"rtt_warn_ms": 400}})
    with pytest.raises(ValueError, match="registration_wxyz must be a unit quaternion"):
        load_console_config({"registration_wxyz": [1, 1, 0, 0]})
    with pytest.raises(ValueError, match="stop_high_hz must be below rate_hz/2"):
        load_console_config({"rate_hz": 20})
    assert load_console_config({"scale": 0.3}).scale == 0.3
    assert load_console_config({"arms": ["psm2", 0]}).arms == (ArmId.PSM2, ArmId.PSM1)
    with pytest.raises(ValueError, match=r"console\.arms"):
        load_console_config({"arms": ["PSM7"]})


class Still:
    def sample(self, now):
        return MasterState(now, {ArmId.PSM1: ArmMasterState((0.0, 0.0, 0.0), reengage=True)})


def test_status_render_contains_the_numbers():
    follow = supervisor_state_name(SupervisorState.FOLLOWING)
    core = ConsoleCore(ConsoleConfig(arms=(ArmId.PSM1,), following_states=(follow,)), Still())
    core.set_clock_offset(2.0)
    tel = Telemetry(2.0, 3, (ArmTelemetry(0, 1, SupervisorState.READY, 0, (0.0, 0.0, 0.1), (1.0, 0.0, 0.0, 0.0), 0.2),))
    core.tick(0.0, tel)
    core.tick(0.001)
    core.tick(0.002, Telemetry(2.0427, 3, (ArmTelemetry(0, 1, SupervisorState.FOLLOWING, 1, (0.0, 0.0, 0.1), (1.0, 0.0, 0.0, 0.0), 0.2),)))
    ev = AlarmEvaluator()
    paths = {"fibre": Path(rtt_ms=212.5, jitter_ms=1.25, loss_pct=0.04, last_heard=9.95),
             "5g": Path(state="down", rtt_ms=None, jitter_ms=None, loss_pct=None, last_heard=7.0)}
    ev.update(10.0, paths, core.one_way_delay_ms(), None)
    text = render_text(snapshot_from(core, 10.0, paths, ev.active(), clock_offset_s=2.0))
    assert "fibre" in text and "212.5" in text and "1.25" in text and "0.04" in text and "50 ms ago" in text
    assert "5g" in text and "down" in text and "3000 ms ago" in text
    assert "command one-way delay 42.7 ms" in text and "clock offset 2000.0 ms" in text and "holds 3" in text
    arm_row = next(line for line in text.splitlines() if "PSM1" in line)
    assert arm_row.split("│")[1:-1] == [" PSM1 ", " following ", " FOLLOWING  ", " ENABLED ", " 0.0     ",
                                        " 3    ", " 3        ", " 1       ", " 42.7     "]
    assert "WARN" in text and "path fibre RTT 212 ms" in text
    assert "ALARM" in text and "path 5g down" in text


def test_live_status_updates_a_terminal_console():
    import io

    from rich.console import Console

    from telesurg.console.status import LiveStatus, StatusSnapshot, path_rows

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, record=True)
    with LiveStatus(console, refresh_per_second=50) as live:
        live.update(StatusSnapshot(1.0, path_rows({"fibre": Path(rtt_ms=87.5)}, 1.0), one_way_ms=44.0))
    text = console.export_text()
    assert "87.5" in text and "command one-way delay 44.0 ms" in text


def test_live_status_in_its_own_process_draws_the_snapshots_it_is_sent(capfd):
    import time

    from telesurg.console.status import LiveStatus, StatusSnapshot, path_rows

    with LiveStatus(refresh_per_second=20) as live:
        live.update(StatusSnapshot(1.0, path_rows({"fibre": Path(rtt_ms=87.5)}, 1.0), one_way_ms=44.0))
        time.sleep(0.2)
    out = capfd.readouterr().out  # the display process writes to the same terminal (fd 1)
    assert "87.5" in out and "fibre" in out
