"""`telesurg replay robot-0.mcap`: feed a robot recording back through a fresh safety supervisor.

The recording holds everything the supervisor was told, in order: each judged command exactly as
`SafetySupervisor.submit(cmd, sender, link_seq, offset, now)` received it (`/<site>/command/decision`,
`now` = the record's time) and every other input (`/<site>/safety/input`, record/journal.py): each
servo period's `tick` with the measured poses, jaw angles and driver operating states it was given,
and each operator or ownership call (enable, assign, takeover locks, e-stop...). Replayed in file
order under a virtual clock (the recorded times), a supervisor built from the recorded configuration
must reach the same decision on every command (outcome and reason) and the same transitions and
holds, at the same times. A mismatch means the recording was altered, the supervisor's code or
configuration differs from the one that ran, or the recording lost inputs (then it says so).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from telesurg.messages import ServoCommand
from telesurg.record.reader import RecordingError, open_recording, site_meta
from telesurg.robot.driver import ArmOperatingState, OperatingState, Pose
from telesurg.robot.roles import INSTRUMENT_ARMS
from telesurg.robot.safety_config import SupervisorConfig
from telesurg.robot.supervisor import SafetySupervisor

MAX_LISTED = 20
_CALLS = frozenset({"enable", "disable", "clear_latch", "emergency_stop", "release_estop", "reset_fault", "assign",
                    "set_local_lock", "reset_session"})


@dataclass
class ReplayResult:
    files: list[str]
    decisions: int = 0
    decisions_matched: int = 0
    inputs: int = 0
    transitions_recorded: int = 0
    transitions_replayed: int = 0
    transitions_matched: int = 0
    holds_recorded: int = 0
    holds_replayed: int = 0
    holds_matched: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)  # decisions
    state_mismatches: list[str] = field(default_factory=list)  # transitions and holds (listed first)
    lost_inputs: dict[str, int] = field(default_factory=dict)
    truncated: str | None = None
    complete_session: bool = False  # the recording holds the site's start and stop

    @property
    def match(self) -> bool:
        return (self.decisions_matched == self.decisions and self.transitions_matched == self.transitions_recorded
                == self.transitions_replayed and self.holds_matched == self.holds_recorded == self.holds_replayed)

    @property
    def conclusive(self) -> bool:
        return not self.lost_inputs

    def summary(self) -> dict[str, Any]:
        rate = self.decisions_matched / self.decisions if self.decisions else 1.0
        return {"files": self.files, "match": self.match, "conclusive": self.conclusive,
                "decisions": self.decisions, "decisions_matched": self.decisions_matched,
                "decision_match_rate": round(rate, 6), "supervisor_inputs": self.inputs,
                "outcomes": dict(self.outcomes),
                "transitions": {"recorded": self.transitions_recorded, "replayed": self.transitions_replayed,
                                "matched": self.transitions_matched},
                "holds": {"recorded": self.holds_recorded, "replayed": self.holds_replayed,
                          "matched": self.holds_matched},
                "lost_inputs": self.lost_inputs, "truncated": self.truncated,
                "complete_session": self.complete_session,
                "mismatches": (self.state_mismatches + self.mismatches)[:MAX_LISTED],
                "mismatches_total": len(self.state_mismatches) + len(self.mismatches)}


def _command(d: dict[str, Any]) -> ServoCommand:
    return ServoCommand(int(d["arm"]), int(d["cmd_seq"]), float(d["t_sent"]), tuple(d["position"]),
                        tuple(d["orientation"]), float(d["jaw"]), int(d["flags"]))


def _tick_args(body: dict[str, Any]) -> tuple[dict[str, Pose], dict[str, float] | None, dict[str, Any] | None]:
    measured = {n: Pose(np.array(v[:3], dtype=float), np.array(v[3:7], dtype=float))
                for n, v in (body.get("measured") or {}).items()}
    operating = None if body.get("operating") is None else {
        n: ArmOperatingState(OperatingState(int(s)), bool(h), bool(b)) for n, (s, h, b) in body["operating"].items()}
    return measured, body.get("jaw"), operating


def _ordered(paths: list[Path]) -> list[Any]:
    recs = [open_recording(p) for p in paths]
    for rec in recs:
        if site_meta(rec)[1] != "robot":
            raise RecordingError(f"{rec.path}: recorded by a {rec.meta.get('role')!r} site; replay needs the "
                                 f"robot's recording (its supervisor inputs)")
    return sorted(recs, key=lambda r: int(r.meta.get("file_index", 0)))


def replay(paths: list[Path], *, safety_overrides: dict[str, Any] | None = None) -> ReplayResult:
    """Replay the robot recording `paths` (all parts of one run, any order); see the module doc."""
    recs = _ordered(paths)
    result = ReplayResult([str(r.path) for r in recs])
    config: dict[str, Any] | None = None
    for rec in recs:  # first pass: the site's configuration (its start record follows the first ticks)
        site = site_meta(rec)[0]
        for topic, _schema, _m, body in rec.decoded():
            if topic == f"/{site}/site" and body.get("type") == "start":
                config = body["fields"].get("config", {})
                break
        if config is not None:
            break
    if config is None:
        raise RecordingError(f"{recs[0].path}: no site start record (the configuration): give every part of "
                             f"the run, from {site}-0.mcap on")
    try:
        safety = SupervisorConfig.model_validate({**config.get("safety", {}), **(safety_overrides or {})})
    except ValueError as exc:
        raise RecordingError(f"{recs[0].path}: recorded safety configuration is not valid here: "
                             f"{str(exc).splitlines()[0]}") from None
    sup = SafetySupervisor(safety, INSTRUMENT_ARMS)
    recorded_transitions: list[tuple[Any, ...]] = []
    recorded_holds: list[tuple[Any, ...]] = []
    started = stopped = False
    for rec in recs:
        site = site_meta(rec)[0]
        prefix = f"/{site}/"
        result.truncated = result.truncated or rec.truncated
        try:
            for topic, _schema, m, body in rec.decoded():
                name = topic[len(prefix):] if topic.startswith(prefix) else topic
                if name == "safety/input":
                    result.inputs += 1
                    call = body["call"]
                    if call == "tick":
                        sup.tick(float(body["now"]), *_tick_args(body))
                        sup.drain_driver_commands()
                    elif call in _CALLS:
                        getattr(sup, call)(*body["args"], **body["kwargs"])
                    else:
                        result.mismatches.append(f"message {m.sequence}: unknown supervisor call {call!r}")
                elif name == "command/decision":
                    _judge(sup, body, m.sequence, result)
                elif name == "safety/transition":
                    e = body["event"]
                    recorded_transitions.append((e["arm"], e["from"], e["to"], e["cause"], e["at_s"]))
                elif name == "safety/hold":
                    e = body["event"]
                    recorded_holds.append((e["arm"], e["cause"], e["at_s"], e["reaction_ms"]))
                elif name == "recorder/dropped":
                    result.lost_inputs = {k: v for k, v in body["dropped"].items()
                                          if k in ("safety/input", "command/decision", "safety/transition",
                                                   "safety/hold")}
                elif name == "site":
                    started |= body.get("type") == "start"
                    stopped |= body.get("type") == "stop"
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, RecordingError):
                raise
            raise RecordingError(f"{rec.path}: a {name} record does not have the recorded shape "
                                 f"({type(exc).__name__}: {exc})") from None
    result.complete_session = started and stopped
    replayed_t = [(t.arm, t.from_state.name, t.to_state.name, t.cause, t.at_s) for t in sup.transitions]
    replayed_h = [(h.arm, h.cause, h.at_s, round(h.reaction_ms, 3)) for h in sup.holds]
    if not stopped and recorded_transitions:  # a cut-off run: its last safety-feed poll may be missing
        last = max(t[4] for t in recorded_transitions)
        replayed_t = [t for t in replayed_t if t[4] <= last]
        replayed_h = [h for h in replayed_h if h[2] <= last]
    _compare("transition", recorded_transitions, replayed_t, result)
    _compare("hold", recorded_holds, replayed_h, result)
    return result


def _judge(sup: SafetySupervisor, body: dict[str, Any], sequence: int, result: ReplayResult) -> None:
    cmd = _command(body["command"])
    offset = body["clock_offset"]
    decision = sup.submit(cmd, body["sender"], int(body["link_seq"]), None if offset is None else float(offset),
                          float(body["now"]))
    result.decisions += 1
    got = (decision.outcome.value, decision.reason)
    want = (body["outcome"], body["reason"])
    result.outcomes[f"{want[0]}:{want[1]}" if want[1] else want[0]] += 1
    if got == want:
        result.decisions_matched += 1
    else:
        result.mismatches.append(f"message {sequence}: arm {cmd.arm} cmd_seq {cmd.cmd_seq} at {body['now']:.6f}: "
                                 f"recorded {want[0]} {want[1]!r}, replay {got[0]} {got[1]!r}")


def _compare(kind: str, recorded: list[tuple[Any, ...]], replayed: list[tuple[Any, ...]], result: ReplayResult) -> None:
    left = Counter(recorded)
    matched = sum((left & Counter(replayed)).values())
    setattr(result, f"{kind}s_recorded", len(recorded))
    setattr(result, f"{kind}s_replayed", len(replayed))
    setattr(result, f"{kind}s_matched", matched)
    for item in (Counter(recorded) - Counter(replayed)).elements():
        result.state_mismatches.append(f"{kind} recorded but not replayed: {item}")
    for item in (Counter(replayed) - Counter(recorded)).elements():
        result.state_mismatches.append(f"{kind} replayed but not recorded: {item}")


# -- command line --------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="the robot's recording: every part of one run "
                                                            "(robot-0.mcap robot-1.mcap ...)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="replay with this supervisor setting changed (e.g. jump_m=0.001): what-if analysis")
    parser.add_argument("--json", type=Path, help="write the result here as JSON")


def _overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecordingError(f"--set {item!r}: expected FIELD=VALUE, e.g. jump_m=0.001")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def run(args: argparse.Namespace) -> int:
    try:
        result = replay(args.files, safety_overrides=_overrides(args.set))
    except RecordingError as exc:
        print(f"telesurg replay: {exc}")
        return 2
    s = result.summary()
    if args.json:
        args.json.write_text(json.dumps(s, indent=2) + "\n")
    print(f"replayed {s['decisions']} commands and {s['supervisor_inputs']} supervisor inputs from "
          f"{', '.join(s['files'])}")
    print(f"decisions: {s['decisions_matched']}/{s['decisions']} match ({100 * s['decision_match_rate']:.3f} %); "
          f"recorded outcomes {s['outcomes']}")
    for kind in ("transitions", "holds"):
        v = s[kind]
        print(f"{kind}: {v['matched']} match of {v['recorded']} recorded, {v['replayed']} replayed")
    if result.truncated:
        print(f"note: the recording is cut off ({result.truncated}); compared up to there")
    if not result.conclusive:
        print(f"NOT CONCLUSIVE: the recorder lost supervisor inputs or decisions {result.lost_inputs}")
    for line in s["mismatches"]:
        print(f"  mismatch: {line}")
    if s["mismatches_total"] > MAX_LISTED:
        print(f"  ... {s['mismatches_total'] - MAX_LISTED} more")
    print("SAME DECISIONS as recorded" if result.match else "DIFFERENT from the recording")
    return 0 if result.match else 1
