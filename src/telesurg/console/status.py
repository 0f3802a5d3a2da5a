"""Live terminal status for the surgeon and the network engineer (rich).

`render_status(snapshot)` builds a plain rich renderable from a `StatusSnapshot` (data only), so it
can be tested by printing to `rich.console.Console(record=True)`; `LiveStatus` wraps `rich.live.Live`
for the app. Shown: per-path state, RTT, jitter, loss, last heard; command one-way delay and clock
offset; per arm the console mode, robot supervisor/operating state, alignment error, seqs; holds and
active alarms, most severe first.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from telesurg.child_process import join_or_kill
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
    room: dict | None = None  # the robot's RoomStatus body: owners, pending requests, peers, ghosts
    me: str | None = None  # this console's identity at the robot


def path_rows(path_stats: object, now: float) -> list[PathRow]:
    rows = []
    for name, s in iter_paths(path_stats):
        heard = getattr(s, "last_heard", None)
        rows.append(PathRow(name, path_state_name(getattr(s, "state", "unknown")), getattr(s, "rtt_ms", None),
                            getattr(s, "jitter_ms", None), getattr(s, "loss_pct", None),
                            None if heard is None else max(0.0, now - heard)))
    return rows


def snapshot_from(core: ConsoleCore, now: float, path_stats: object = (), alarms: list[AlarmChange] | None = None,
                  clock_offset_s: float | None = None, room: dict | None = None,
                  me: str | None = None) -> StatusSnapshot:
    """Collect what the display needs from the console core and the link (`LinkCore.path_stats()`)."""
    return StatusSnapshot(now, path_rows(path_stats, now), core.one_way_delay_ms(),
                          None if clock_offset_s is None else clock_offset_s * 1000.0, core.arm_status(),
                          core.holds, list(alarms or []), sum(core.counters.sent.values()),
                          core.counters.periods_skipped, room, me)


def _room_tables(room: dict, me: str | None) -> list[RenderableType]:
    """Who controls each arm and who waits for it; every console's role, link and ghost."""
    owners = Table(title="Arm ownership", expand=False)
    for col in ("arm", "owner", "waiting"):
        owners.add_column(col)
    for arm, info in sorted((room.get("arms") or {}).items()):
        owner = "local console" if info.get("local") else (info.get("owner") or "nobody")
        style = "bold green" if owner == me else ("bold red" if info.get("local") else "")
        owners.add_row(arm, Text(owner + (" (you)" if owner == me else ""), style=style),
                       ", ".join(info.get("pending") or []) or "–")
    peers = Table(title="Consoles", expand=False)
    for col in ("console", "role", "link", "RTT ms", "ghost (mm)"):
        peers.add_column(col)
    for name, info in sorted((room.get("peers") or {}).items()):
        rtt = info.get("rtt_ms") or {}
        states = info.get("path_state") or {}
        ghost = info.get("ghost") or {}
        peers.add_row(name + (" (you)" if name == me else ""), str(info.get("role", "?")),
                      " ".join(f"{p}:{states[p]}" for p in sorted(states)) or
                      ("connected" if info.get("connected") else "gone"),
                      " ".join(f"{p}:{_num(rtt[p], '.0f')}" for p in sorted(rtt)) or "–",
                      "  ".join(f"{a} " + ",".join(f"{1000 * v:.0f}" for v in pos) for a, pos in sorted(ghost.items()))
                      or "–")
    return [owners, peers]


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
    room = _room_tables(snap.room, snap.me) if snap.room else []
    return Group(links, delay, arms, *room, Text("Alarms", style="bold"), *alarm_lines)


def render_text(snap: StatusSnapshot, width: int = 120) -> str:
    """The status as plain text (logs, tests, non-terminal output)."""
    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=False, color_system=None)
    console.print(render_status(snap))
    return console.export_text()


class LiveStatus:
    """Thin driver around `rich.live.Live`; `update(snapshot)` only hands the snapshot over and never waits.

    Rendering rich tables is ~13 ms of pure Python per redraw. In the console process that work competes
    for the GIL with the link's event loop, which gives the GIL up at every socket call and then waits up
    to a switch interval to get it back (the convoy effect): measured on 2 cores, the live display alone
    turned a run with no hold into one with a watchdog hold every couple of seconds. So by default the
    display runs in a process of its own, fed snapshots through a pipe. With an explicit `console` (tests,
    embedding) it renders on a thread instead.
    """

    def __init__(self, console: Console | None = None, refresh_per_second: float = 4.0) -> None:
        self._period = 1.0 / refresh_per_second
        self._console = console
        self._latest: StatusSnapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def __enter__(self) -> LiveStatus:
        if self._console is None:
            context = multiprocessing.get_context("spawn")
            self._conn, child = context.Pipe(duplex=False)[::-1]
            self._process = context.Process(target=_display_process, args=(child, self._period),
                                            name="telesurg-status", daemon=True)
            self._process.start()
            child.close()
        else:
            self._thread = threading.Thread(target=self._run, name="status-display", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
            if self._process is not None:
                # it draws the last snapshot, then stops; a loaded machine may still be starting it
                join_or_kill(self._process, 10.0)
            self._conn.close()

    def update(self, snap: StatusSnapshot) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):  # a closed display must never stop the console
                self._conn.send(snap)
        else:
            self._latest = snap

    def _run(self) -> None:
        with Live(Text("starting…"), console=self._console, auto_refresh=False, transient=False) as live:
            while True:
                stopping = self._stop.wait(self._period)
                if self._latest is not None:
                    live.update(render_status(self._latest), refresh=True)
                if stopping:
                    return


def _display_process(conn: Connection, period: float) -> None:
    """Child process: redraw the newest snapshot at most once per `period`; a None means draw and stop."""
    latest: StatusSnapshot | None = None
    stopping = False
    with Live(Text("starting…"), auto_refresh=False, transient=False) as live:
        while not stopping:
            try:
                while conn.poll(period if latest is None else 0):  # drain: only the newest snapshot matters
                    item = conn.recv()
                    if item is None:
                        stopping = True
                        break
                    latest = item
            except EOFError:
                stopping = True
            if latest is not None:
                live.update(render_status(latest), refresh=True)
            if not stopping:
                conn.poll(period)
