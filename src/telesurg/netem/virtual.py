"""Two sans-I/O endpoints joined by emulated paths under a virtual clock (tests, simulations).

Event driven: time jumps straight to the next thing that can happen (a packet departing an
emulator, an endpoint timer, a ticker, a scenario event), so tens of virtual seconds of 1 kHz traffic
run in a few real seconds. Endpoints need `datagrams_to_send(now) -> list[(path, bytes)]` and
`receive_datagram(data, path, now)`; `get_timer() -> float | None` and `handle_timer(now)` are used
if present.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from typing import Any, Protocol

from telesurg.netem.core import DirectionEmulator
from telesurg.netem.path import EmulatedPath, apply_action, build_paths, select
from telesurg.netem.profiles import Profile
from telesurg.netem.scenario import Scenario, ScenarioPlayer

_MAX_STEPS_AT_ONE_TIME = 100_000  # an endpoint whose timer never advances would otherwise hang the test


_NEVER = math.inf


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
        # The same, as bound methods: the loop below runs once per event (~1,500 times per simulated
        # second in `telesurg simulate`), where attribute look-ups were a sixth of the cost.
        self._sources = [(e.departures, e.pop_due, receiver.receive_datagram, name) for e, receiver, name in self._links]
        # (get_timer, handle_timer) of a and of b; an endpoint without timers never has one due
        self._timed = [(getattr(endpoint, "get_timer", _no_timer), getattr(endpoint, "handle_timer", None))
                       for endpoint in (a, b)]
        self._senders = [(a.datagrams_to_send, {n: p.forward.submit for n, p in self.paths.items()}),
                         (b.datagrams_to_send, {n: p.reverse.submit for n, p in self.paths.items()})]

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
        """Process every event up to and including time `t`, then leave the clock at `t`.

        Each step at time `now`, in this order: scenario actions due, packets due (per path, forward
        then reverse), endpoint timers due (a then b), tickers due, then what the endpoints queued is
        handed to the paths. One loop with local names: it runs ~2,000 times per simulated second in
        `telesurg simulate` (a 1 kHz servo ticker), where calls and look-ups were a third of the cost.
        """
        steps_here = 0
        self._flush(self.now)
        player = self._player
        player_next = _NEVER if player is None else _or_never(player.next_time())
        sources, tickers = self._sources, self._tickers
        heaps = [departures for departures, _, _, _ in sources]
        (get_a, handle_a), (get_b, handle_b) = self._timed
        (send_a, submit_a), (send_b, submit_b) = self._senders
        unknown = self._unknown_path
        heappop, heappush = heapq.heappop, heapq.heappush
        now = self.now
        while True:
            packet_next = _NEVER
            for departures in heaps:
                if departures and departures[0][0] < packet_next:
                    packet_next = departures[0][0]
            timer_a, timer_b = get_a(), get_b()
            best = packet_next if packet_next < player_next else player_next
            if timer_a is not None and timer_a < best:
                best = timer_a
            if timer_b is not None and timer_b < best:
                best = timer_b
            if tickers and tickers[0][0] < best:
                best = tickers[0][0]
            if best > t or best == _NEVER:
                break
            if best <= now:
                steps_here += 1
                if steps_here > _MAX_STEPS_AT_ONE_TIME:
                    raise RuntimeError(f"no progress at t={now}: an endpoint timer does not advance")
            else:
                steps_here = 0
                now = self.now = best
            if player_next <= now:  # scenario actions only cut or change paths: nothing becomes due
                for action in player.due(now):  # type: ignore[union-attr]
                    apply_action(self.paths, action, now)
                player_next = _or_never(player.next_time())  # type: ignore[union-attr]
            touched = packet_next <= now  # the timers read above hold until something reaches an endpoint
            if touched:
                for departures, pop_due, deliver, name in sources:
                    if departures and departures[0][0] <= now:
                        for data in pop_due(now):
                            deliver(data, name, now)
                timer_a = get_a()
            if timer_a is not None and timer_a <= now:
                touched = True
                handle_a(now)  # type: ignore[misc]
            if touched:
                timer_b = get_b()
            if timer_b is not None and timer_b <= now:
                handle_b(now)  # type: ignore[misc]
            while tickers and tickers[0][0] <= now:
                _, seq, start, period, ticks, fn = heappop(tickers)
                fn(now)
                heappush(tickers, (start + (ticks + 1) * period, seq, start, period, ticks + 1, fn))
            for path_name, data in send_a(now):  # = self._flush(now), written out
                (submit_a.get(path_name) or unknown(path_name))(data, now)
            for path_name, data in send_b(now):
                (submit_b.get(path_name) or unknown(path_name))(data, now)
            if on_step is not None:
                on_step(now)
        self.now = max(self.now, t)

    def _flush(self, now: float) -> None:
        for datagrams_to_send, submit in self._senders:
            for path_name, data in datagrams_to_send(now):
                (submit.get(path_name) or self._unknown_path(path_name))(data, now)

    def _unknown_path(self, name: str) -> Callable[[bytes, float], None]:
        raise KeyError(f"endpoint sent on unknown path {name!r}; profile paths: {list(self.paths)}")


def _or_never(t: float | None) -> float:
    return _NEVER if t is None else t


def _no_timer() -> None:
    return None
