"""The site's Prometheus figures (`/metrics`), fed by the same tap records as the dashboard page.

Event figures (command delays, rejections, holds, handovers, path events, video frames) are
library counters and histograms updated record by record on the dashboard's thread; state figures
(per-path RTT/jitter/loss/state, arm states, active alarms, tap drops, observers) are read from the
`DashboardModel` and the tap when Prometheus scrapes, so nothing is kept twice. Each site has its
own `CollectorRegistry` (never the process-global one), so several sites or tests share a process.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from telesurg.dashboard.model import (
    ACCEPTED,
    DashboardModel,
    command_delay_s,
    peer_identity,
    telemetry_delay_s,
)
from telesurg.tap import Topic

# seconds; includes the DESIGN.md thresholds (100 ms no loss, 200 ideal, 300 suitable, 500 tiring, 800 rejected)
DELAY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.8, 1.0, 2.0)
PATH_STATES = ("up", "degraded", "down")


class TapFigures(Protocol):
    """The tap's subscriber figures (`Tap.stats()`, or the dashboard process's copy of them)."""

    def stats(self) -> dict[str, dict[str, Any]]: ...


class SiteMetrics:
    """Prometheus registry of one site; `apply(topic, t, payload)` on the dashboard thread."""

    def __init__(self, model: DashboardModel, tap: TapFigures, role: str | None) -> None:
        self.model = model
        self.tap = tap
        self.role = role
        self.clients = 0  # dashboard pages open now
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.command_delay = None if role == "console" else Histogram(
            "telesurg_command_delay_seconds", "Robot: one-way delay of applied commands, console stamp to "
            "judged by the supervisor (robot clock, offset-corrected)", ["peer"], buckets=DELAY_BUCKETS, registry=r)
        self.telemetry_delay = None if role == "robot" else Histogram(
            "telesurg_telemetry_delay_seconds", "Console: one-way delay of telemetry, robot stamp to arrival "
            "(console clock, offset-corrected); the command path's delay mirrored", buckets=DELAY_BUCKETS, registry=r)
        self.judged = Counter("telesurg_commands_judged", "Robot: commands judged by the safety supervisor",
                              ["outcome"], registry=r)
        self.rejected = Counter("telesurg_commands_rejected", "Robot: commands rejected, by reason",
                                ["reason"], registry=r)
        self.holds = Counter("telesurg_holds", "Robot: holds entered by the supervisor", ["arm", "cause"], registry=r)
        self.handovers = Counter("telesurg_handovers", "Robot: arm ownership changes", ["arm", "reason"], registry=r)
        self.path_events = Counter("telesurg_path_state_changes", "Path state changes seen", ["path", "to"],
                                   registry=r)
        self.sessions = Counter("telesurg_link_sessions", "Link session events", ["event"], registry=r)
        self.alarms_raised = Counter("telesurg_alarms_raised", "Console alarms raised", ["severity"], registry=r)
        self.video_frames = Counter("telesurg_video_frames", "Video frames seen in the tap (robot: sent, "
                                    "console: received), per stream", ["stream"], registry=r)
        self.video_freezes = Counter("telesurg_video_freezes", "Video frames that came more than 100 ms "
                                     "after the previous one (video/metrics.py's freeze), per stream", ["stream"],
                                     registry=r)
        self.video_bytes = Counter("telesurg_video_bytes", "Video payload bytes seen in the tap", registry=r)
        r.register(_StateCollector(self))
        self._judged: dict[str, Any] = {}  # outcome -> its child of `judged`
        self._delays: dict[str, Any] = {}  # sender -> its child of `command_delay`

    def apply(self, topic: str, t: float, payload: Any) -> None:
        if topic == Topic.COMMAND_DECISION:  # ~2,000 a second: the labelled children are looked up once
            outcome = payload.outcome
            judged = self._judged.get(outcome) or self._judged.setdefault(outcome, self.judged.labels(outcome))
            judged.inc()
            if outcome not in ACCEPTED:
                self.rejected.labels(payload.reason or outcome).inc()
            elif self.command_delay is not None and (delay := command_delay_s(t, payload)) is not None:
                delays = self._delays.get(payload.sender)
                if delays is None:
                    delays = self._delays[payload.sender] = self.command_delay.labels(peer_identity(payload.sender))
                delays.observe(delay)
        elif topic == Topic.TELEMETRY:
            if self.telemetry_delay is not None and self.model.role == "console" and (
                    delay := telemetry_delay_s(t, payload, self.model.robot_offset())) is not None:
                self.telemetry_delay.observe(delay)
        elif topic == Topic.HOLD:
            self.holds.labels(str(payload.get("arm")), str(payload.get("cause"))).inc()
        elif topic == Topic.HANDOVER:
            self.handovers.labels(str(payload.get("arm")), str(payload.get("reason"))).inc()
        elif topic == Topic.PATH_EVENT:
            self.path_events.labels(payload.path, str(getattr(payload.new, "value", payload.new))).inc()
        elif topic == Topic.SESSION:
            self.sessions.labels(type(payload).__name__).inc()
        elif topic == Topic.ALARM and payload.get("severity") not in ("OK", None):
            self.alarms_raised.labels(str(payload["severity"])).inc()

    def video(self, stats: dict[str, Any]) -> None:
        """New video counts from the preview thread: {"frames": {stream: n}, "freezes": {...}, "bytes": n}."""
        for stream, n in stats.get("frames", {}).items():
            self.video_frames.labels(str(stream)).inc(n)
        for stream, n in stats.get("freezes", {}).items():
            self.video_freezes.labels(str(stream)).inc(n)
        if stats.get("bytes"):
            self.video_bytes.inc(stats["bytes"])

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Figures read at scrape time from the model and the tap."""

    def __init__(self, metrics: SiteMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Any]:
        m, model = self.metrics, self.metrics.model
        labels = ["peer", "path"]
        rtt = GaugeMetricFamily("telesurg_path_rtt_seconds", "Last probe round-trip time per path", labels=labels)
        p50 = GaugeMetricFamily("telesurg_path_rtt_p50_seconds", "Median probe RTT (last 200 probes)", labels=labels)
        p99 = GaugeMetricFamily("telesurg_path_rtt_p99_seconds", "99th percentile probe RTT (last 200)", labels=labels)
        jitter = GaugeMetricFamily("telesurg_path_jitter_seconds", "RFC 3550 interarrival jitter of probe RTTs",
                                   labels=labels)
        loss = GaugeMetricFamily("telesurg_path_loss_ratio", "Probe loss over the loss window (0-1)", labels=labels)
        state = GaugeMetricFamily("telesurg_path_state", "1 for the path's current state", labels=[*labels, "state"])
        probes = CounterMetricFamily("telesurg_path_probes", "Probes per path", labels=[*labels, "result"])
        for p in model.path_now.values():
            key = [p["peer"], p["path"]]
            for family, value in ((rtt, p["rtt_ms"]), (p50, p["rtt_p50_ms"]), (p99, p["rtt_p99_ms"]),
                                  (jitter, p["jitter_ms"])):
                if value is not None:
                    family.add_metric(key, value / 1000.0)
            loss.add_metric(key, p["loss_pct"] / 100.0)
            for s in PATH_STATES:
                state.add_metric([*key, s], 1.0 if p["state"] == s else 0.0)
            probes.add_metric([*key, "sent"], p["probes_sent"])
            probes.add_metric([*key, "answered"], p["probes_answered"])
            probes.add_metric([*key, "lost"], p["probes_lost"])
        yield from (rtt, p50, p99, jitter, loss, state, probes)
        offset = GaugeMetricFamily("telesurg_clock_offset_seconds", "Peer clock minus this site's clock",
                                   labels=["peer"])
        for peer, value in model.clock_offsets.items():
            if value is not None:
                offset.add_metric([peer], value)
        yield offset
        arm_state = GaugeMetricFamily("telesurg_arm_state", "1 for each arm's supervisor state and owner",
                                      labels=["arm", "state", "owner"])
        for a in model.arms():
            arm_state.add_metric([a["arm"], a["state"], a["owner"]], 1.0)
        yield arm_state
        if model.robot_holds is not None:
            yield GaugeMetricFamily("telesurg_robot_holds", "Console: holds total reported by the robot",
                                    value=model.robot_holds)
        alarms = GaugeMetricFamily("telesurg_alarm_active", "Console alarms active now", labels=["key", "severity"])
        for a in model.alarms.values():
            alarms.add_metric([a["key"], a["severity"]], 1.0)
        yield alarms
        fps = GaugeMetricFamily("telesurg_video_fps", "Video frames per second over the last second",
                                labels=["stream"])
        for stream, value in model.video.get("fps", {}).items():
            fps.add_metric([str(stream)], value)
        yield fps
        dropped = CounterMetricFamily("telesurg_tap_dropped", "Tap records a full subscriber lost",
                                      labels=["subscriber", "topic"])
        offered = CounterMetricFamily("telesurg_tap_offered", "Tap records offered to a subscriber",
                                      labels=["subscriber"])
        queued = GaugeMetricFamily("telesurg_tap_queued", "Tap records waiting in a subscriber's queue",
                                   labels=["subscriber"])
        for name, s in m.tap.stats().items():
            offered.add_metric([name], s["offered"])
            queued.add_metric([name], s["queued"])
            for topic, n in s["dropped"].items():
                dropped.add_metric([name, topic], n)
        yield from (dropped, offered, queued)
        yield GaugeMetricFamily("telesurg_observers", "Read-only observers of the live broadcast (their Zenoh "
                                "liveliness tokens, counted by this site's publisher)", value=model.observers)
        yield GaugeMetricFamily("telesurg_dashboard_clients", "Dashboard pages open now", value=m.clients)
