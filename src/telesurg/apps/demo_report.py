"""The demo's one report and its summary: the robot's, the consoles' and the relays' reports merged
into the published shape (../shared/contract/check_report.py), and the lines printed at the end."""

from __future__ import annotations

from typing import Any


def merge_reports(profile: str, duration_s: float, robot: dict[str, Any], console: dict[str, Any],
                  relays: dict[str, Any], others: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One demo report in the published shape (../shared/contract/check_report.py). `console` is the
    lead's report; `others` the other consoles' (their commands count in sent, delivered and lost)."""
    rc = robot.get("commands", {})
    sent = sum(int(c.get("commands", {}).get("sent", 0)) for c in [console, *(others or [])])
    delivered = int(rc.get("delivered", 0))
    paths = {}
    for name, view in console.get("paths", {}).items():
        paths[name] = dict(view)
        paths[name]["relay"] = relays.get(name, {})
    security = dict(robot.get("security", {}).get("rejected", {}))
    report = {
        "profile": profile,
        "duration_s": round(duration_s, 3),
        "commands": {
            "sent": sent, "delivered": delivered, "lost": max(0, sent - delivered),
            "applied": int(rc.get("applied", 0)), "rejected": rc.get("rejected", {}),
            "duplicates_applied": int(rc.get("duplicates_applied", 0)),
            "out_of_order_applied": int(rc.get("out_of_order_applied", 0)),
            "latency_ms": rc.get("latency_ms", {"p50": 0.0, "p99": 0.0, "max": 0.0}),
        },
        # where a command's time goes besides the emulated path delay: the product's own shares
        # (console: ticker stamp -> sockets; robot: datagram in its kernel -> judged and applied) and
        # the emulator's lateness in releasing packets (a harness error, not the product's)
        "overhead_ms": {
            "console_send": console.get("send_overhead_ms"),
            "robot_apply": rc.get("apply_overhead_ms"),
            "relay_lateness": {name: relays.get(name, {}).get("departure_lateness_ms", {}).get("forward")
                               for name in paths},
        },
        "paths": paths,
        "path_events": console.get("path_events", []),
        "safety": robot.get("safety", {"violations": 0, "holds": [], "final_state": "UNKNOWN"}),
        "task": robot.get("task", {"rings_moved": 0, "time_s": 0.0}),
        "security": {"rejected": security, "console_rejected": console.get("security", {}).get("rejected", {})},
        "alarms": console.get("alarms", []),
        "console": {"one_way_ms": console.get("one_way_ms"), "ticker": console.get("ticker"),
                    "established": console.get("established"), "holds_seen": console.get("holds_seen", 0)},
        "robot": {"servo": robot.get("servo"), "link": robot.get("link")},
        "handovers": robot.get("handovers", []),
        "sessions": robot.get("sessions", {}),
    }
    if "video" in console:
        report["video"] = console["video"]
    if "haptics" in console:
        report["haptics"] = console["haptics"]
    return report


def console_section(data: dict[str, Any], profile: str, relays: dict[str, Any]) -> dict[str, Any]:
    """One console's own view in a several-console demo: its WAN, commands, ownership and handovers."""
    return {"profile": profile, "established": data.get("established"), "commands": data.get("commands"),
            "paths": {name: {**view, "relay": relays.get(name, {})} for name, view in data.get("paths", {}).items()},
            "one_way_ms": data.get("one_way_ms"), "alarms": data.get("alarms", []),
            "ownership": data.get("ownership"), "room": data.get("room"),
            "peers_seen": data.get("peers_seen"),
            "handover_actions": data.get("handover_actions", []), "handover_refused": data.get("handover_refused", [])}


def summary_lines(report: dict[str, Any]) -> list[str]:
    c, s, t = report["commands"], report["safety"], report["task"]
    lines = [
        f"profile {report['profile']}: {report['duration_s']:.1f} s",
        f"commands: sent {c['sent']}, delivered {c['delivered']}, lost {c['lost']}, applied {c['applied']}, "
        f"latency p50 {c['latency_ms']['p50']:.1f} ms p99 {c['latency_ms']['p99']:.1f} ms",
    ]
    for name, p in report["paths"].items():
        lines.append(f"path {name}: RTT p50 {p['rtt_ms']['p50']:.1f} ms p99 {p['rtt_ms']['p99']:.1f} ms, "
                     f"loss {p['loss_pct']:.2f} %, state changes {p['state_changes']}")
    o = report.get("overhead_ms", {})
    if o.get("console_send") and o.get("robot_apply"):
        lines.append(f"software overhead p50/p99: console send {o['console_send']['p50']:.2f}/"
                     f"{o['console_send']['p99']:.2f} ms, robot kernel->apply {o['robot_apply']['p50']:.2f}/"
                     f"{o['robot_apply']['p99']:.2f} ms")
        late = {name: v["p99"] for name, v in (o.get("relay_lateness") or {}).items() if v and v.get("p99") is not None}
        if late:
            lines.append("emulator lateness p99 (test harness, not telesurg): "
                         + ", ".join(f"path {name} {ms:.2f} ms" for name, ms in late.items()))
    for h in report.get("handovers", []):
        gap = "not taken up" if h.get("gap_ms") is None else (
            f"gap {h['gap_ms']:.0f} ms (handover {h['handover_ms']:.1f} ms + alignment and re-engage "
            f"{h['align_ms']:.0f} ms), tool moved {h['moved_mm']:.2f} mm")
        lines.append(f"handover {h['arm']} {h['from']} -> {h['to']} at {h['at_s']:.1f} s ({h['reason']}): {gap}")
    lines.append(f"safety: {s['violations']} violations, {len(s['holds'])} holds, final state {s['final_state']}")
    lines.append(f"task: {t['rings_moved']} rings moved ({t['time_s']:.1f} s)")
    rec = report.get("record")
    if rec:
        parts = [f"{site} {len(r.get('files', []))} file(s), {r.get('records')} records, "
                 f"{r.get('bytes', 0) / 1e6:.1f} MB, {r.get('dropped_total')} dropped"
                 for site, r in rec.items() if site != "dir" and isinstance(r, dict)]
        lines.append(f"recording ({rec['dir']}): " + ("; ".join(parts) or "no site reported one"))
    if "video" in report:
        v = report["video"]
        if v.get("latency_ms", {}).get("p50") is None:
            lines.append("video: no picture reached the console (the robot and console logs say why)")
        else:
            lines.append(f"video: {v['frames_displayed']}/{v['frames_captured']} frames, latency p50 "
                         f"{v['latency_ms']['p50']:.1f} ms, {v['bitrate_mbps']:.2f} Mbps, freezes {v['freezes']}")
    ob = report.get("observers")
    if ob and ob.get("observers"):
        counted = ((ob.get("publisher") or {}).get("pump") or {}).get("observers")
        latency = (f"capture->observer latency p50 {ob['latency_p50_ms']:.1f} ms p99 {ob['latency_p99_ms']:.1f} ms"
                   if ob.get("latency_p50_ms") is not None else "no picture reached them")
        lines.append(f"observers: {ob['observers']} through the router at {ob.get('endpoint')} (the robot counted "
                     f"{counted if counted is not None else '?'}), {latency}, {ob.get('fps_min') or 0:.1f} fps, "
                     f"{ob.get('frames_missing_max', 0)} frames missing at most")
    m = report.get("machine") or {}
    if m.get("cpu"):
        split = m.get("cpu_split")
        where = (f"robot on CPUs {split['robot']}, console on {split['console']}, emulator on any"
                 if split else "sites not pinned")
        polled = f"idle CPUs kept awake ({m['idle_poll']['method']})" if m.get("idle_poll") else "idle CPUs halt"
        lines.append(f"machine: {m.get('cpus')} CPUs, {where}, {polled}; busy {m['cpu']['busy_pct']:.0f} % "
                     f"(idle polling not counted), stolen by the host {m['cpu']['steal_pct']:.0f} %")
    return lines

