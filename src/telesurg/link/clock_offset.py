"""The peer's clock offset from probe exchanges: a minimum-RTT filter (NTP style) that notices clock
steps, and the offset a command's age is judged with. Sans-I/O: samples and `now` in, offsets out.

Each answered probe gives a sample (rtt, offset = peer clock - local clock) on its path. The estimate
is the offset of the sample with the smallest RTT, the one that waited least in any queue.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable

SAMPLES_PER_PATH = 64
# A probe sample whose offset differs from its path's best by more than half their RTT difference plus
# this is a clock step (drift over the 64-sample window at 100 ppm is 0.3 ms).
STEP_TOLERANCE_S = 0.002


class ClockOffsetFilter:
    """`add(path, rtt, offset, jitter, now)` per answered probe; read `offset` (the estimate, for
    reports) and `freshness_offset` (for judging a command's age); `forget()` when the local clock
    stepped. `recent_s`: how long a path's newest sample counts as evidence (see `freshness_offset`)."""

    def __init__(self, path_names: Iterable[str], recent_s: float, counters: Counter[str]) -> None:
        self._samples: dict[str, deque[tuple[float, float, float]]] = {  # (rtt, offset, when)
            name: deque(maxlen=SAMPLES_PER_PATH) for name in path_names}
        self._jitter: dict[str, float] = {}
        self._step_suspect: dict[str, int] = {}  # per path: the side of the last sample that looked like a step
        self._recent_s = recent_s
        self._counters = counters
        self.offset: float | None = None  # the min-RTT sample's offset (read per message: a plain attribute)
        self.freshness_offset: float | None = None  # the same, moved by what a clock step could hide

    def add(self, path: str, rtt: float, offset: float, jitter: float, now: float) -> None:
        """Keep the sample; the offset is the min-RTT sample's. On one path with a steady asymmetry, a
        sample that waited d longer than the best one can differ from it by at most d/2, widened here
        by four times the path's RTT jitter (jitter splits unevenly between the directions). Two
        samples in a row on one path beyond that, on the same side, mean a clock stepped: every older
        sample describes clocks that no longer exist. Left in the filter, the pre-step best sample
        would keep a wrong offset for up to 64 probes, and commands up to the step's size older than
        the freshness bound would pass it (found by telesurg simulate, seeds 103386 and 103462)."""
        window = self._samples[path]
        self._jitter[path] = jitter
        if window:
            best_rtt, best_offset, _ = min(window)
            excess = abs(offset - best_offset) - abs(rtt - best_rtt) / 2.0 - STEP_TOLERANCE_S - 4.0 * jitter
            side = 0 if excess <= 0.0 else (1 if offset > best_offset else -1)
            if side and self._step_suspect.get(path) == side:  # two in a row, same side: not a jitter tail
                for samples in self._samples.values():
                    samples.clear()
                self._counters["clock_steps"] += 1
                side = 0
            self._step_suspect[path] = side
        window.append((rtt, offset, now))
        best_rtt, self.offset, _ = min(min(w) for w in self._samples.values() if w)
        self.freshness_offset = self.offset + self._hidden_step(best_rtt, now)

    def _hidden_step(self, best_rtt: float, now: float) -> float:
        """The largest peer clock step since the best sample that the newest samples cannot rule out.

        Why it matters: the robot judges a command's age as now - (sent - offset). A peer clock that
        stepped forward makes its commands look younger by the step until a sample shows it, and a
        sample shows it only when it differs from the best by more than their delay difference allows
        (`add`). The newest sample of a path that waited q longer than the best can be off the true
        offset by q/2 either way and is taken as no step while within q/2 (+ tolerance): a step of up
        to q (+ tolerance) hides in it. While every path's newest probe waited in a delay spike's
        backlog, a command that waited in the same queue looked younger than it was by the step
        (telesurg simulate, seed 8219: 321.5 ms old, judged 288 ms, bound 300 ms). Judged with the
        estimate plus this, its age is at least its true age; on a quiet path this is a few ms.
        Only paths heard within `recent_s` count (a path that went down keeps a newest sample from
        before any step); the smallest bound holds."""
        recent = now - self._recent_s
        hidden = min((w[-1][0] - best_rtt + STEP_TOLERANCE_S + 4.0 * self._jitter.get(p, 0.0)
                      for p, w in self._samples.items() if w and w[-1][2] >= recent), default=0.0)
        return max(hidden, 0.0)

    def forget(self) -> None:
        """The local clock stepped: every sample describes a clock that no longer exists."""
        for samples in self._samples.values():
            samples.clear()
        self._step_suspect.clear()
        self.offset = self.freshness_offset = None
