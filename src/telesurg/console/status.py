"""Live terminal status for the surgeon and the network engineer (rich).

`render_status(snapshot)` builds a plain rich renderable from a `StatusSnapshot` (data only), so it
can be tested by printing to `rich.console.Console(record=True)`; `LiveStatus` wraps `rich.live.Live`
for the app. Shown: per-path state, RTT, jitter, loss, last heard; command one-way delay and clock
offset; per arm the console mode, robot supervisor/operating state, alignment error, seqs; holds and
active alarms, most severe first.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from telesurg.console.alarms import AlarmChange, Severity, iter_paths, path_state_name
from telesurg.console.core import ArmStatus, ConsoleCore

_SEVERITY_STYLE = {Severity.OK: "green", Severity.WARN: "yellow", Severity.ALARM: "bold red",
                   Severity.CRITICAL: "bold white on red"}
_STATE_STYLE = {"up": "green", "degraded": "yellow", "down": "bold red"}


@dataclass(frozen=True, slots=True)
class PathRow:
    name: str
    state: str
    rtt_ms: float | None
    jitter_ms: float | None
    loss_pct: float | None
    last_heard_s: float | None  # seconds since last heard


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    now: float
    paths: list[PathRow] = field(default_factory=list)
    one_way_ms: float | None = None
    clock_offset_ms: float | None = None
    arms: list[ArmStatus] = field(default_factory=list)
    holds: int = 0
    alarms: list[AlarmChange] = field(default_factory=list)
    sent_total: int = 0
    periods_skipped: int = 0


def path_rows(path_stats: object, now: float) -> list[PathRow]:
    rows = []
    for name, s in iter_paths(path_stats):
        heard = getattr(s, "last_heard", None)
        rows.append(PathRow(name, path_state_name(getattr(s, "state", "unknown")), getattr(s, "rtt_ms", None),
                            getattr(s, "jitter_ms", None), getattr(s, "loss_pct", None),
                            None if heard is None else max(0.0, now - heard)))
    return rows


def snapshot_from(core: ConsoleCore, now: float, path_stats: object = (), alarms: list[AlarmChange] | None = None,
                  clock_offset_s: float | None = None) -> StatusSnapshot:
    """Collect what the display needs from the console core and the link (`LinkCore.path_stats()`)."""
    return StatusSnapshot(now, path_rows(path_stats, now), core.one_way_delay_ms(),
                          None if clock_offset_s is None else clock_offset_s * 1000.0, core.arm_status(),
                          core.holds, list(alarms or []), sum(core.counters.sent.values()),
                          core.counters.periods_skipped)


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def render_status(snap: StatusSnapshot) -> RenderableType:
    links = Table(title="Link paths", expand=False)
    for col in ("path", "state", "RTT ms", "jitter ms", "loss %", "heard"):
        links.add_column(col, justify="right" if col not in ("path", "state") else "left")
    for p in snap.paths:
        links.add_row(p.name, Text(p.state, style=_STATE_STYLE.get(p.state, "red")), _num(p.rtt_ms, ".1f"),
                      _num(p.jitter_ms, ".2f"), _num(p.loss_pct, ".2f"),
                      "–" if p.last_heard_s is None else f"{p.last_heard_s * 1000:.0f} ms ago")
    delay = Text(f"command one-way delay {_num(snap.one_way_ms, '.1f')} ms   "
                 f"clock offset {_num(snap.clock_offset_ms, '.1f')} ms   holds {snap.holds}   "
                 f"sent {snap.sent_total}   skipped periods {snap.periods_skipped}")
    arms = Table(title="Arms", expand=False)
    for col in ("arm", "console", "supervisor", "robot", "align °", "sent", "last seq", "applied", "delay ms"):
        arms.add_column(col)
    for a in snap.arms:
        arms.add_row(a.arm.name, a.mode.value, a.supervisor_state, a.operating_state,
                     _num(a.alignment_error_deg, ".1f"), str(a.sent), str(a.last_seq), str(a.last_applied_seq),
                     _num(a.command_delay_ms, ".1f"))
    if snap.alarms:
        alarm_lines = [Text(f"{a.severity.name:<8} {a.message}", style=_SEVERITY_STYLE[a.severity])
                       for a in snap.alarms]
    else:
        alarm_lines = [Text("no alarms", style="green")]
    return Group(links, delay, arms, Text("Alarms", style="bold"), *alarm_lines)


def render_text(snap: StatusSnapshot, width: int = 120) -> str:
    """The status as plain text (logs, tests, non-terminal output)."""
    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=False, color_system=None)
    console.print(render_status(snap))
    return console.export_text()


class LiveStatus:
    """Thin driver around `rich.live.Live`: `update(snapshot)` only stores the snapshot; a thread of its own
    renders and redraws a few times a second. The caller (the link's event loop) must never wait for a
    redraw: rich renders under a lock for ~13 ms, and a loop blocked behind it stops sending commands."""

    def __init__(self, console: Console | None = None, refresh_per_second: float = 4.0) -> None:
        self._live = Live(Text("starting…"), console=console, auto_refresh=False, transient=False)
        self._period = 1.0 / refresh_per_second
        self._latest: StatusSnapshot | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-display", daemon=True)

    def __enter__(self) -> LiveStatus:
        self._live.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._redraw()
        self._live.stop()

    def update(self, snap: StatusSnapshot) -> None:
        self._latest = snap

    def _redraw(self) -> None:
        snap = self._latest
        if snap is not None:
            self._live.update(render_status(snap), refresh=True)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self._redraw()
