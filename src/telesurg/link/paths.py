"""Per-path health from probes: RTT (last, p50, p99), RFC 3550 jitter, loss %, last heard, and an
UP / DEGRADED / DOWN state machine with hysteresis so a flapping path does not flood the console;
and the set of a link's paths, which says where to send.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from telesurg.link.config import LinkTuning

_RTT_WINDOW = 200


class PathState(enum.StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


_DOWN = PathState.DOWN  # module constant: an enum attribute read is ~0.2 µs on CPython 3.11


@dataclass(frozen=True, slots=True)
class PathStats:
    state: PathState
    rtt_ms: float | None  # last sample
    rtt_p50_ms: float | None
    rtt_p99_ms: float | None
    jitter_ms: float
    loss_pct: float
    last_heard: float | None
    state_changes: int
    probes_sent: int
    probes_answered: int
    probes_lost: int = 0  # timed out while the path was not DOWN (outages are reported as states)


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """One probe's fate, for tools that need every sample (`telesurg qualify`), not only summaries."""

    path: str
    probe_id: int
    sent: float  # local clock
    answered: float | None  # local clock when the reply came back; None: timed out
    peer_time: float | None  # peer clock when it answered (one-way delays, with the clock offset)


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class PathMonitor:
    """Health of one path; the core feeds it probe sends, replies and receptions, and asks for state."""

    def __init__(self, name: str, tuning: LinkTuning) -> None:
        self.name = name
        self._t = tuning
        self._down_after = tuning.down_after_s  # read per datagram (timer cache check)
        self._probe_timeout = tuning.probe_timeout_s
        self.state = PathState.DOWN  # nothing heard yet: UP only once probes come back
        self.last_heard: float | None = None
        self.since: float | None = None  # when monitoring started (session established)
        self._outstanding: dict[int, float] = {}
        self._next_probe_id = 0
        self.next_probe_at: float | None = None
        self._results: deque[bool] = deque(maxlen=tuning.loss_window)
        self._rtts: deque[float] = deque(maxlen=_RTT_WINDOW)
        self._jitter = 0.0
        self._consecutive_replies = 0
        self._last_answered_sent = float("-inf")
        self._counting_since = float("inf")  # loss counts only for probes sent since the path was last up
        self.state_changes = 0
        self.probes_sent = 0
        self.probes_answered = 0
        self.probes_lost = 0
        self.outcomes: deque[ProbeOutcome] | None = None  # off unless a tool asks (LinkCore.record_probe_outcomes)

    def start(self, now: float) -> None:
        self.since = now
        self.next_probe_at = now

    def new_probe(self, now: float) -> int:
        probe_id = self._next_probe_id
        self._next_probe_id = (probe_id + 1) & 0xFFFFFFFF
        self._outstanding[probe_id] = now
        self.probes_sent += 1
        self.next_probe_at = now + 1.0 / self._t.probe_hz
        return probe_id

    def heard(self, now: float) -> None:
        self.last_heard = now

    def clock_stepped(self, now: float) -> None:
        """The local clock jumped: probe at once, forget probes in flight (their send times are on the
        old clock: their RTTs would be off by the step), and count silence from now."""
        self._outstanding.clear()
        if self.next_probe_at is not None:
            self.next_probe_at = now
        if self.last_heard is not None:
            self.last_heard = now
        if self.since is not None:
            self.since = now
        self._last_answered_sent = min(self._last_answered_sent, now)
        if now < self._counting_since < float("inf"):
            self._counting_since = now

    def on_reply(self, probe_id: int, t1: float, now: float, peer_time: float | None = None) -> float | None:
        """RTT in seconds of an answered probe, or None if unknown/timed out (counted already)."""
        sent = self._outstanding.pop(probe_id, None)
        if sent is None or sent != t1:
            return None
        rtt = now - sent
        if rtt < 0.0:  # answered before it was sent: the local clock stepped back meanwhile
            return None
        if self.outcomes is not None:
            self.outcomes.append(ProbeOutcome(self.name, probe_id, sent, now, peer_time))
        if self._rtts:
            self._jitter += (abs(rtt - self._rtts[-1]) - self._jitter) / 16.0  # RFC 3550 A.8
        self._rtts.append(rtt)
        self._results.append(True)
        self.probes_answered += 1
        self._consecutive_replies += 1
        self._last_answered_sent = max(self._last_answered_sent, sent)
        return rtt

    def loss_pct(self) -> float:
        if not self._results:
            return 0.0
        return 100.0 * (len(self._results) - sum(self._results)) / len(self._results)

    def update(self, now: float) -> tuple[PathState, PathState] | None:
        """Expire unanswered probes and re-evaluate the state; returns (old, new) on a change."""
        timeout = self._t.probe_timeout_s
        for probe_id, sent in list(self._outstanding.items()):
            if sent + timeout <= now:  # same expression as next_timer(): no float mismatch
                del self._outstanding[probe_id]
                if self.outcomes is not None:
                    self.outcomes.append(ProbeOutcome(self.name, probe_id, sent, None, None))
                if self.state is not PathState.DOWN and sent >= self._counting_since:
                    self._results.append(False)  # probes lost in an outage are the outage, already reported
                    self.probes_lost += 1
                if sent > self._last_answered_sent:  # a probe older than an answered one says nothing new
                    self._consecutive_replies = 0
        reference = self.last_heard if self.last_heard is not None else self.since
        silent = reference is None or reference + self._t.down_after_s < now
        old, new = self.state, self.state
        loss = self.loss_pct()
        rtt_ms = self._rtts[-1] * 1000.0 if self._rtts else 0.0
        if silent:
            new = PathState.DOWN
        elif old is PathState.DOWN:
            if self._consecutive_replies >= self._t.recover_replies:
                bad = loss >= self._t.degraded_loss_pct or rtt_ms > self._t.degraded_rtt_ms
                new = PathState.DEGRADED if bad else PathState.UP
        elif old is PathState.UP:
            if loss >= self._t.degraded_loss_pct or rtt_ms > self._t.degraded_rtt_ms:
                new = PathState.DEGRADED
        elif loss <= self._t.recover_loss_pct and rtt_ms < 0.8 * self._t.degraded_rtt_ms:
            new = PathState.UP
        if new is old:
            return None
        if new is PathState.DOWN:
            # An outage is not random loss: start loss statistics afresh once the path is back.
            self._results.clear()
            self._consecutive_replies = 0
        elif old is PathState.DOWN:
            self._counting_since = now
        self.state = new
        self.state_changes += 1
        return old, new

    def down_deadline(self) -> float | None:
        """When silence would make this path DOWN (None while DOWN or not started)."""
        if self.state is _DOWN:
            return None
        reference = self.last_heard if self.last_heard is not None else self.since
        return None if reference is None else reference + self._down_after + 1e-6

    def next_timer(self) -> float | None:
        best = self.next_probe_at
        if self._outstanding:
            oldest = next(iter(self._outstanding.values())) + self._probe_timeout  # dict keeps sending order
            if best is None or oldest < best:
                best = oldest
        down = self.down_deadline()
        if down is not None and (best is None or down < best):
            best = down
        return best

    def stats(self) -> PathStats:
        ordered = sorted(self._rtts)
        return PathStats(
            state=self.state,
            rtt_ms=self._rtts[-1] * 1000.0 if self._rtts else None,
            rtt_p50_ms=_percentile(ordered, 0.5) * 1000.0 if ordered else None,
            rtt_p99_ms=_percentile(ordered, 0.99) * 1000.0 if ordered else None,
            jitter_ms=self._jitter * 1000.0,
            loss_pct=self.loss_pct(),
            last_heard=self.last_heard,
            state_changes=self.state_changes,
            probes_sent=self.probes_sent,
            probes_answered=self.probes_answered,
            probes_lost=self.probes_lost,
        )


class PathSet:
    """The paths of one link, a monitor each: which of them carry traffic now, and their figures."""

    def __init__(self, names: Sequence[str], tuning: LinkTuning) -> None:
        self.names = tuple(names)
        self.monitors = {name: PathMonitor(name, tuning) for name in self.names}
        self._suspect_after = tuning.suspect_after_s  # read once per control message sent

    def stats(self) -> dict[str, PathStats]:
        return {name: mon.stats() for name, mon in self.monitors.items()}

    def states(self) -> dict[str, PathState]:
        return {name: mon.state for name, mon in self.monitors.items()}

    def record_outcomes(self, maxlen: int) -> None:
        for mon in self.monitors.values():
            if mon.outcomes is None:
                mon.outcomes = deque(maxlen=maxlen)

    def drain_outcomes(self) -> list[ProbeOutcome]:
        out: list[ProbeOutcome] = []
        for mon in self.monitors.values():
            while mon.outcomes:
                out.append(mon.outcomes.popleft())
        return out

    def start(self, now: float) -> None:
        """A session went live: probe every path from now."""
        for mon in self.monitors.values():
            mon.start(now)

    def next_timer(self) -> float | None:
        """The earliest probe, probe timeout or DOWN deadline of any path."""
        return min((t for mon in self.monitors.values() if (t := mon.next_timer()) is not None), default=None)

    def last_heard(self, floor: float) -> float:
        """When the peer was last heard on any path, or `floor` if later (silence counts from there)."""
        heard = floor
        for mon in self.monitors.values():
            if mon.last_heard is not None and mon.last_heard > heard:
                heard = mon.last_heard
        return heard

    def live(self) -> Sequence[str]:
        """The paths not DOWN; all of them when every one is: a copy that may be lost beats none."""
        monitors = self.monitors
        live = [p for p in self.names if monitors[p].state is not _DOWN]
        return live or self.names

    def sole_survivor(self, now: float) -> str | None:
        """The only path still carrying traffic, if just one is: heard within `suspect_after_s` (the
        peer's telemetry and probe replies arrive every few ms), else the only one not DOWN. Reacting
        to a few tens of ms of silence, not the 0.25 s DOWN verdict, shrinks the window in which a cut
        leaves commands exposed to the other path's random loss."""
        names = self.names
        if len(names) < 2:
            return None
        window = self._suspect_after
        monitors = self.monitors
        heard: str | None = None
        for p in names:  # a plain loop: this runs once per CONTROL message sent
            t = monitors[p].last_heard
            if t is not None and now - t <= window:
                if heard is not None:
                    return None
                heard = p
        if heard is not None:
            return heard
        live = [p for p in names if monitors[p].state is not _DOWN]
        return live[0] if len(live) == 1 else None
