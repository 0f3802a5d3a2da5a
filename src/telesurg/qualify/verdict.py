"""Judge a session's figures against the thresholds: one criterion per figure, measured beside its limit.

A criterion is `go`, `warn` (go, but above the warn level), `no-go`, or `not_run` (with the reason; a
phase that did not run is never counted as passed, and the overall verdict says so in `not_run`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from telesurg.qualify.thresholds import Thresholds

GO, WARN, NO_GO, NOT_RUN = "go", "warn", "no-go", "not_run"


@dataclass(frozen=True, slots=True)
class Criterion:
    name: str
    measured: float | None
    limit: float | None
    unit: str
    status: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _upper(name: str, measured: float, alarm: float, unit: str, warn: float | None = None,
           detail: str = "") -> Criterion:
    """Lower is better: no-go above `alarm`, warn above `warn`."""
    if measured > alarm:
        status = NO_GO
    elif warn is not None and measured > warn:
        status = WARN
    else:
        status = GO
    return Criterion(name, round(float(measured), 3), alarm, unit, status, detail)


def _lower(name: str, measured: float, minimum: float, unit: str, detail: str = "") -> Criterion:
    """Higher is better: no-go below `minimum`."""
    return Criterion(name, round(float(measured), 3), minimum, unit, NO_GO if measured < minimum else GO, detail)


def judge(figures: dict[str, Any], t: Thresholds) -> list[Criterion]:
    out: list[Criterion] = []
    network = figures.get("network")
    if network:
        for path, f in network["paths"].items():
            if f["rtt_ms"]["n"] == 0:
                out.append(Criterion(f"path {path}: RTT p99", None, t.rtt_alarm_ms, "ms", NO_GO, "no probe answered"))
                continue
            out.append(_upper(f"path {path}: RTT p99", f["rtt_ms"]["p99"], t.rtt_alarm_ms, "ms", t.rtt_warn_ms))
            out.append(_upper(f"path {path}: RTT p99.9", f["rtt_ms"]["p999"], t.rtt_critical_ms, "ms"))
            out.append(_upper(f"path {path}: loss", f["loss_pct"], t.loss_alarm_pct, "%", t.loss_warn_pct))
            worst_jitter = max(f["jitter_ms"]["forward"], f["jitter_ms"]["reverse"])
            out.append(_upper(f"path {path}: jitter (worse direction)", worst_jitter, t.jitter_alarm_ms, "ms",
                              t.jitter_warn_ms))
            out.append(_upper(f"path {path}: longest loss burst", f["loss_bursts"]["max_ms"], t.loss_burst_ms, "ms",
                              detail=f"{f['loss_bursts']['max']} probes"))
    else:
        out.append(Criterion("network", None, None, "", NOT_RUN, "phase not run"))
    load = figures.get("load")
    if load:
        control = load["control"]
        out.append(_upper("load: commands lost at the control rate", control["lost_forward"], t.load_max_lost, "",
                          detail=f"{control['sent']} sent at {control['rate_hz']} Hz"))
        growth = max([abs(v) for v in load["owd_growth_ms"].values()] or [0.0])
        out.append(_upper("load: one-way delay growth (queueing)", growth, t.queue_growth_ms, "ms"))
    else:
        out.append(Criterion("load", None, None, "", NOT_RUN, "phase not run"))
    failover = figures.get("failover")
    if failover and failover.get("drills"):
        out.append(_upper("failover: commands lost", failover["control"]["lost_forward"], t.failover_max_lost, "",
                          detail=f"{failover['control']['sent']} sent during the drill"))
        for drill in failover["drills"]:
            for key, limit, label in (("down_detected_ms", t.failover_detect_ms, "DOWN reported"),
                                      ("up_detected_ms", t.failover_recover_ms, "UP again")):
                value = drill.get(key)
                name = f"failover path {drill['path']}: {label}"
                out.append(Criterion(name, None, limit, "ms", NO_GO, "never reported") if value is None
                           else _upper(name, value, limit, "ms"))
    else:
        reason = (failover or {}).get("skipped", "phase not run")
        out.append(Criterion("failover", None, None, "", NOT_RUN, reason))
    robot = figures.get("robot")
    if robot:
        out.extend(_robot_criteria(robot, t))
    return out


def _robot_criteria(robot: dict[str, Any], t: Thresholds) -> list[Criterion]:
    out = []
    if "safety_violations" in robot:
        out.append(_upper("robot: safety violations", robot["safety_violations"], 0, ""))
    for name, result in robot.get("checks", {}).items():
        status, detail, figs = result.get("status"), result.get("detail", ""), result.get("figures", {})
        if status == "not_run":
            out.append(Criterion(f"robot check {name}", None, None, "", NOT_RUN, detail))
            continue
        if status != "pass":
            out.append(Criterion(f"robot check {name}", None, None, "", NO_GO, detail))
            continue
        if name == "watchdog":
            out.append(_upper("robot check watchdog: hold reaction", figs["worst_ms"], t.watchdog_hold_ms, "ms",
                              detail=detail))
        elif name == "estop" and figs.get("reaction_ms") is not None:
            out.append(_upper("robot check estop: reaction", figs["reaction_ms"], t.estop_ms, "ms", detail=detail))
        elif name == "video" and "fps" in figs:
            out.append(_lower("robot check video: frame rate per eye", figs["fps"], t.video_min_fps, "fps",
                              detail=detail))
            out.append(_upper("robot check video: capture→decoded p99 (incl. path)", figs["latency_p99_ms"],
                              t.video_latency_p99_ms, "ms", detail=detail))
        elif name == "homing" and figs.get("homing_s") is not None:
            out.append(_upper("robot check homing: time", figs["homing_s"], t.homing_s, "s", detail=detail))
        else:
            out.append(Criterion(f"robot check {name}", None, None, "", GO, detail))
    return out


def overall(criteria: list[Criterion]) -> str:
    return NO_GO if any(c.status == NO_GO for c in criteria) else GO
