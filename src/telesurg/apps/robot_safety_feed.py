"""The robot's safety records into the site's tap (telesurg/tap.py), copied off the servo thread.

The supervisor keeps its transitions, holds and handovers as append-only lists and the local console
its operator actions; this feed publishes what is new in them a few times a second from the link's
thread, so the 1 kHz servo thread only appends to a list, as it always did. Records go out as dicts
(a hold or handover record is completed later; a consumer must see what was true when published).
"""

from __future__ import annotations

from typing import Any

from telesurg.tap import Tap, Topic


class SafetyEventFeed:
    """Call `poll()` periodically (and once at the end) to publish new safety records."""

    def __init__(self, tap: Tap, supervisor: Any, local_console: Any) -> None:
        self.tap = tap
        self.supervisor = supervisor
        self.local_console = local_console
        self._seen = {"transition": 0, "hold": 0, "handover": 0, "operator": 0}

    def poll(self) -> int:
        """Publish the records added since the last poll; returns how many."""
        sup, publish, n = self.supervisor, self.tap.publish, 0
        for t in self._new("transition", sup.transitions):
            publish(Topic.TRANSITION, t.at_s, {"arm": t.arm, "from": t.from_state.name, "to": t.to_state.name,
                                               "cause": t.cause, "at_s": t.at_s})
            n += 1
        for h in self._new("hold", sup.holds):
            publish(Topic.HOLD, h.at_s, {"arm": h.arm, "cause": h.cause, "reaction_ms": round(h.reaction_ms, 3),
                                         "at_s": h.at_s})
            n += 1
        for h in self._new("handover", sup.handovers):
            publish(Topic.HANDOVER, h.at_s, {"arm": h.arm, "from": h.from_sender, "to": h.to_sender,
                                             "reason": h.reason, "at_s": h.at_s})
            n += 1
        for e in self._new("operator", self.local_console.events):
            publish(Topic.OPERATOR, e.at_s, {"action": e.action, "arms": list(e.arms), "at_s": e.at_s})
            n += 1
        return n

    def _new(self, kind: str, records: list) -> list:
        start = self._seen[kind]
        new = records[start:]
        self._seen[kind] = start + len(new)
        return new
