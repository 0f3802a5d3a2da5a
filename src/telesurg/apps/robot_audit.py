"""The robot site's safety events into its tamper-evident audit log (`telesurg robot --audit DIR`).

A subscriber of the site's tap (telesurg/tap.py), like the recorder and the dashboard: it takes the
safety topics (transitions, holds, handovers, local-console actions), refused peers and the site's
start, and appends them to the hash-chained log on the link's thread a few times a second, so the
1 kHz servo thread never writes a file. At start: the software version, the configuration (key paths
only, never key material) and the roster; at close, the final counts and a signed head
(record/audit.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import telesurg
from telesurg.link.events import PeerRefused
from telesurg.link.keys import Identity
from telesurg.record.audit import AuditLog
from telesurg.tap import Tap, Topic

_KINDS = {Topic.TRANSITION: "transition", Topic.HOLD: "hold", Topic.HANDOVER: "handover",
          Topic.OPERATOR: "local_console"}
AUDIT_QUEUE = 100_000  # safety events come a few a second; this only overflows if the feed stops


class RobotAuditFeed:
    """Copies the robot's safety records from the tap into an `AuditLog`; `poll()` periodically,
    `close()` at the end (after the last publish)."""

    def __init__(self, directory: Path, tap: Tap, config: Any, identity: Identity | None) -> None:
        self.log = AuditLog(directory, config.site.name, identity)
        self.subscription = tap.subscribe("audit", AUDIT_QUEUE, [*_KINDS, Topic.SESSION])
        self.log.append("start", {"software": f"telesurg {telesurg.__version__}",
                                  "config": config.model_dump(mode="json")})

    def poll(self) -> None:
        for topic, _t, payload in self.subscription.drain():
            if topic == Topic.SESSION:
                if isinstance(payload, PeerRefused):
                    self.log.append("peer_refused", {"reason": payload.reason, "path": payload.path,
                                                     "addr": None if payload.addr is None else list(payload.addr)},
                                    payload.at)
                continue
            fields = {k: v for k, v in payload.items() if k != "at_s"}
            self.log.append(_KINDS[Topic(topic)], fields, payload["at_s"])

    def close(self, report: dict[str, Any]) -> None:
        self.poll()
        dropped = self.subscription.dropped_total()
        safety = report.get("safety", {})
        self.log.append("stop", {"violations": safety.get("violations"), "holds": len(safety.get("holds", [])),
                                 "final_state": safety.get("final_state"),
                                 "applied": report.get("commands", {}).get("applied"),
                                 "audit_records_dropped": dropped})
        self.log.close()
