"""A site clock that differs from the simulation's (offset, drift, steps), and an endpoint wrapper that
makes a sans-I/O core live on it.

The robot site keeps the simulation clock; the console site runs on `SiteClock`, so the link's
offset estimate (NTP style, from probes) is what has to turn console timestamps into robot time for
the supervisor's freshness check, as between two real sites.
"""

from __future__ import annotations

from typing import Any


class SiteClock:
    """local = sim · (1 + drift) + offset + steps; `step` jumps it (a stepped wall clock)."""

    def __init__(self, offset_s: float = 0.0, drift_ppm: float = 0.0) -> None:
        self.offset = offset_s
        self.rate = 1.0 + drift_ppm * 1e-6

    def local(self, sim: float) -> float:
        return sim * self.rate + self.offset

    def sim(self, local: float) -> float:
        return (local - self.offset) / self.rate

    def step(self, seconds: float) -> None:
        self.offset += seconds


class ClockedEndpoint:
    """A `VirtualNetwork` endpoint whose inner core sees `clock.local(now)` instead of `now`.

    `inner` may be swapped (a console that restarts) and set to None (a crashed console: nothing is
    sent, datagrams arriving meanwhile are lost)."""

    def __init__(self, inner: Any, clock: SiteClock) -> None:
        self.inner = inner
        self.clock = clock

    def datagrams_to_send(self, now: float) -> list[tuple[str, bytes]]:
        return [] if self.inner is None else self.inner.datagrams_to_send(self.clock.local(now))

    def receive_datagram(self, data: bytes, path: str, now: float) -> bool:
        return False if self.inner is None else self.inner.receive_datagram(data, path, self.clock.local(now))

    def get_timer(self) -> float | None:
        t = None if self.inner is None else self.inner.get_timer()
        return None if t is None else self.clock.sim(t)

    def handle_timer(self, now: float) -> None:
        if self.inner is None:
            return
        local = self.clock.local(now)
        t = self.inner.get_timer()
        if t is not None and local < t <= local + 1e-6:
            local = t  # the sim <-> local round trip lost a few ulps: fire the timer the network woke us for
        self.inner.handle_timer(local)
