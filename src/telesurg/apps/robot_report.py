"""The robot site's end-of-run report: supervisor, link, room, task and servo figures in one JSON."""

from __future__ import annotations

import time
from typing import Any

from telesurg.apps.common import security_rejections


def site_report(site: Any) -> dict[str, Any]:
    """The robot site's end-of-run JSON report (the published fields: ../shared/contract)."""
    sup = site.supervisor.report()
    safety = dict(sup["safety"])
    t0 = site.started_at or 0.0  # hold times relative to the site's start, as the report promises
    safety["holds"] = [dict(h, at_s=round(h["at_s"] - t0, 4), reaction_ms=round(h["reaction_ms"], 3))
                       for h in safety["holds"]]
    states = safety.pop("final_state")
    safety["final_states"] = states
    distinct = sorted(set(states.values()))
    safety["final_state"] = distinct[0] if len(distinct) == 1 else ",".join(f"{k}={v}" for k, v in states.items())
    counters = site.endpoint.core.counters_total()
    commands = dict(sup["commands"])
    rejected = dict(commands["rejected"])
    for reason, n in site.malformed.items():
        rejected[f"malformed_{reason}"] = n
    commands.update(delivered=site.delivered, rejected=rejected, latency_ms=site.latency_ms.report(),
                    apply_overhead_ms=site.apply_overhead_ms.report())
    report: dict[str, Any] = {
        "site": "robot",
        "duration_s": round(time.monotonic() - (site.started_at or time.monotonic()), 3),
        "commands": commands,
        "safety": safety,
        "security": {"rejected": security_rejections(counters)},
        "link": {"counters": dict(counters), "peer": site.peer,
                 "clock_offset_s": site.endpoint.core.clock_offset()},
        **site.room.report(t0),
        "paths": site.paths.report(),
        "task": {"rings_moved": site.rings_moved, "time_s": round(site.rings_time_s, 3)},
        "servo": site.servo.stats(),
        "link_realtime": site.link_realtime,
    }
    if site.video is not None:
        report["video_sender"] = site.video.report()
    if site.igtl is not None:
        report["igtl"] = site.igtl.stats()
    return report
