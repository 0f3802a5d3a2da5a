"""What the safety supervisor counts and keeps for the record: decisions, violations, transitions, holds.

A base class of `SafetySupervisor` (robot/supervisor.py): the state machine there decides, this half
tallies and reports. A base class rather than a member, so
the 1 kHz `submit`/`tick` paths and every caller keep using `sup.applied`, `sup.holds`, ... as plain
attributes of one object, at no extra cost.
"""

from __future__ import annotations

import logging
from collections import Counter

from telesurg.robot.safety_types import Decision, HandoverRecord, HoldRecord, Outcome, Transition

log = logging.getLogger("telesurg.robot.supervisor")  # the supervisor's own log, whichever half writes

_REJECTED: dict[str, Decision] = {}  # one frozen Decision per reason, shared


class SupervisorLedger:
    """Counters and logs of `SafetySupervisor`; see the module docstring."""

    def __init__(self) -> None:
        self.transitions: list[Transition] = []
        self.holds: list[HoldRecord] = []
        self.handovers: list[HandoverRecord] = []
        self.counters: Counter[str] = Counter()  # rejections by reason
        self.applied = 0
        self.clipped = 0
        self.duplicates_applied = 0
        self.out_of_order_applied = 0
        self.violations = 0
        self.violation_log: list[str] = []

    def _reject(self, reason: str) -> Decision:
        self.counters[reason] += 1
        decision = _REJECTED.get(reason)
        if decision is None:
            decision = _REJECTED[reason] = Decision(Outcome.REJECTED, reason)
        return decision

    def _violation(self, what: str) -> None:
        self.violations += 1
        if len(self.violation_log) < 100:
            self.violation_log.append(what)
        log.error("SAFETY VIOLATION: %s", what)

    def _report(self, estopped: bool, final_state: dict[str, str]) -> dict[str, object]:
        """The report, given the state machine's part of it (e-stop and each arm's final state)."""
        return {
            "commands": {
                "applied": self.applied,
                "clipped": self.clipped,
                "rejected": dict(self.counters),
                "duplicates_applied": self.duplicates_applied,
                "out_of_order_applied": self.out_of_order_applied,
            },
            "safety": {
                "violations": self.violations,
                "violation_log": list(self.violation_log[:20]),
                "holds": [h.as_dict() for h in self.holds],
                "transitions": len(self.transitions),
                "estopped": estopped,
                "final_state": final_state,
            },
        }
