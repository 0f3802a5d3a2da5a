"""Two sans-I/O endpoints joined by emulated paths under a virtual clock (tests, simulations).

Event driven: time jumps straight to the next thing that can happen (a packet departing an
emulator, an endpoint timer, a ticker, a scenario event), so tens of virtual seconds of 1 kHz traffic
run in a few real seconds. Endpoints need `datagrams_to_send(now) -> list[(path, bytes)]` and
`receive_datagram(data, path, now)`; `get_timer() -> float | None` and `handle_timer(now)` are used
if present.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any, Protocol

from telesurg.netem.core import DirectionEmulator
from telesurg.netem.path import EmulatedPath, apply_action, build_paths, select
from telesurg.netem.profiles import Profile
from telesurg.netem.scenario import Scenario, ScenarioPlayer

_MAX_STEPS_AT_ONE_TIME = 100_000  # an endpoint whose timer never advances would otherwise hang the test


class Endpoint(Protocol):
    def datagrams_to_send(self, now: float) -> list[tuple[str, bytes]]: ...
    def receive_datagram(self, data: bytes, path: str, now: float) -> Any: ...


class VirtualNetwork:
    """`a` is the console side (its datagrams take each path's forward direction), `b` the robot side."""

    def __init__(
        self, a: Endpoint, b: Endpoint, profile: Profile, seed: int = 0, scenario: Scenario | None = None
    ) -> None:
        self.a = a
        self.b = b
        self.profile = profile
        self.now = 0.0
        self.paths: dict[str, EmulatedPath] = build_paths(profile, seed)
        self._player: ScenarioPlayer | None = None
        if scenario is not None:
            scenario.check_paths(self.paths)
            self._player = ScenarioPlayer(scenario, start=self.now)
        # (next time, id, start, period, ticks done, fn): times are start + k·period, so no drift
        self._tickers: list[tuple[float, int, float, float, int, Callable[[float], None]]] = []
        self._ticker_seq = 0
        # (emulator, receiving endpoint, path name): the fixed set of packet sources
        self._links: list[tuple[DirectionEmulator, Endpoint, str]] = []
        for name, path in self.paths.items():
            self._links.append((path.forward, b, name))
            self._links.append((path.reverse, a, name))

    # -- control ---------------------------------------------------------------------------------
    def path_down(self, path: str) -> None:
        for p in select(self.paths, path):
            p.down(self.now)

    def path_up(self, path: str) -> None:
        for p in select(self.paths, path):
            p.up()

    def set(self, path: str, **changes: float) -> None:
        for p in select(self.paths, path):
            p.set(**changes)

    def add_ticker(self, period: float, fn: Callable[[float], None], start: float | None = None) -> None:
        """Call `fn(now)` every `period` virtual seconds (first call at `start`, default now)."""
        if period <= 0:
            raise ValueError(f"ticker period must be > 0 seconds, got {period}")
        self._ticker_seq += 1
        first = self.now if start is None else start
        heapq.heappush(self._tickers, (first, self._ticker_seq, first, period, 0, fn))

    def stats(self) -> dict[str, dict[str, dict[str, int]]]:
        return {name: path.stats() for name, path in self.paths.items()}

    # -- clock -----------------------------------------------------------------------------------
    def run_for(self, seconds: float, on_step: Callable[[float], None] | None = None) -> None:
        self.run_until(self.now + seconds, on_step)

    def run_until(self, t: float, on_step: Callable[[float], None] | None = None) -> None:
        """Process every event up to and including time `t`, then leave the clock at `t`."""
        steps_here = 0
        self._flush(self.now)
        while True:
            nxt = self._next_event_time()
            if nxt is None or nxt > t:
                break
            if nxt <= self.now:
                steps_here += 1
                if steps_here > _MAX_STEPS_AT_ONE_TIME:
                    raise RuntimeError(f"no progress at t={self.now}: an endpoint timer does not advance")
            else:
                steps_here = 0
                self.now = nxt
            self._step(self.now)
            if on_step is not None:
                on_step(self.now)
        self.now = max(self.now, t)

    def _next_event_time(self) -> float | None:
        candidates = [e.next_time() for e, _, _ in self._links]
        candidates.append(_timer(self.a))
        candidates.append(_timer(self.b))
        if self._tickers:
            candidates.append(self._tickers[0][0])
        if self._player is not None:
            candidates.append(self._player.next_time())
        times = [c for c in candidates if c is not None]
        return min(times) if times else None

    def _step(self, now: float) -> None:
        if self._player is not None:
            for action in self._player.due(now):
                apply_action(self.paths, action, now)
        for emulator, receiver, name in self._links:
            if (due := emulator.next_time()) is not None and due <= now:
                for data in emulator.pop_due(now):
                    receiver.receive_datagram(data, name, now)
        for endpoint in (self.a, self.b):
            timer = _timer(endpoint)
            if timer is not None and timer <= now:
                endpoint.handle_timer(now)  # type: ignore[attr-defined]
        while self._tickers and self._tickers[0][0] <= now:
            _, seq, start, period, ticks, fn = heapq.heappop(self._tickers)
            fn(now)
            heapq.heappush(self._tickers, (start + (ticks + 1) * period, seq, start, period, ticks + 1, fn))
        self._flush(now)

    def _flush(self, now: float) -> None:
        for endpoint, direction in ((self.a, "forward"), (self.b, "reverse")):
            for path_name, data in endpoint.datagrams_to_send(now):
                path = self.paths.get(path_name)
                if path is None:
                    raise KeyError(f"endpoint sent on unknown path {path_name!r}; profile paths: {list(self.paths)}")
                getattr(path, direction).submit(data, now)


def _timer(endpoint: object) -> float | None:
    get_timer = getattr(endpoint, "get_timer", None)
    return get_timer() if get_timer is not None else None
