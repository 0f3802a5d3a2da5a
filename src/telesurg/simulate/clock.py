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
    sent, datagrams arriving meanwhile are lost). The network asks for its timer and its datagrams at
    every step, so the clock arithmetic is written out here (the same expressions as `SiteClock`)."""

    def __init__(self, inner: Any, clock: SiteClock) -> None:
        self.clock = clock
        self.inner = inner

    @property
    def inner(self) -> Any:
        return self._inner

    @inner.setter
    def inner(self, core: Any) -> None:
        self._inner = core
        self._get_timer = None if core is None else core.get_timer
        self._datagrams = None if core is None else core.datagrams_to_send

    def datagrams_to_send(self, now: float) -> list[tuple[str, bytes]]:
        if self._datagrams is None:
            return []
        clock = self.clock
        return self._datagrams(now * clock.rate + clock.offset)

    def receive_datagram(self, data: bytes, path: str, now: float) -> bool:
        return False if self._inner is None else self._inner.receive_datagram(data, path, self.clock.local(now))

    def get_timer(self) -> float | None:
        t = None if self._get_timer is None else self._get_timer()
        if t is None:
            return None
        clock = self.clock
        return (t - clock.offset) / clock.rate

    def handle_timer(self, now: float) -> None:
        if self._inner is None:
            return
        local = self.clock.local(now)
        t = self._inner.get_timer()
        if t is not None and local < t <= local + 1e-6:
            local = t  # the sim <-> local round trip lost a few ulps: fire the timer the network woke us for
        self._inner.handle_timer(local)
