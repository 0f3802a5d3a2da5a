"""The robot site's safety events into its tamper-evident audit log (`telesurg robot --audit DIR`).

The supervisor keeps its transitions, holds and handovers as append-only lists, the local console
its operator actions; this feed copies what is new from them on the robot's link thread a few times
a second, so the 1 kHz servo thread never writes a file. Refused peers come from the link's events.
At start: the software version, the configuration (key paths only, never key material) and the
roster; at close, the final counts and a signed head (record/audit.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import telesurg
from telesurg.link.events import PeerRefused
from telesurg.link.keys import Identity
from telesurg.record.audit import AuditLog


class RobotAuditFeed:
    """Copies the robot's safety records into an `AuditLog`; call `poll()` periodically, `close()` at the end."""

    def __init__(self, directory: Path, site: Any, identity: Identity | None) -> None:
        self.site = site
        self.log = AuditLog(directory, site.config.site.name, identity)
        self._seen = {"transition": 0, "hold": 0, "handover": 0, "operator": 0}
        config = site.config.model_dump(mode="json")
        self.log.append("start", {"software": f"telesurg {telesurg.__version__}", "config": config})

    def on_refused(self, event: PeerRefused) -> None:
        self.log.append("peer_refused", {"reason": event.reason, "path": event.path,
                                         "addr": None if event.addr is None else list(event.addr)}, event.at)

    def poll(self) -> None:
        sup = self.site.supervisor
        for t in self._new("transition", sup.transitions):
            self.log.append("transition", {"arm": t.arm, "from": t.from_state.name, "to": t.to_state.name,
                                           "cause": t.cause}, t.at_s)
        for h in self._new("hold", sup.holds):
            self.log.append("hold", {"arm": h.arm, "cause": h.cause, "reaction_ms": round(h.reaction_ms, 3)},
                            h.at_s)
        for h in self._new("handover", sup.handovers):
            self.log.append("handover", {"arm": h.arm, "from": h.from_sender, "to": h.to_sender,
                                         "reason": h.reason}, h.at_s)
        for e in self._new("operator", self.site.servo.local_console.events):
            self.log.append("local_console", {"action": e.action, "arms": list(e.arms)}, e.at_s)

    def close(self, report: dict[str, Any]) -> None:
        self.poll()
        safety = report.get("safety", {})
        self.log.append("stop", {"violations": safety.get("violations"), "holds": len(safety.get("holds", [])),
                                 "final_state": safety.get("final_state"),
                                 "applied": report.get("commands", {}).get("applied")})
        self.log.close()

    def _new(self, kind: str, records: list) -> list:
        start = self._seen[kind]
        new = records[start:]
        self._seen[kind] = start + len(new)
        return new
