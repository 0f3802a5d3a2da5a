"""Asyncio UDP relays: one per path, each direction through its own sans-I/O emulator, real clock.

A relay listens on a local port and forwards client datagrams to a target through the path's
`forward` emulator; replies from the target go through `reverse` back to the last client address.

Departures: the event loop receives and submits; each direction has a departure thread that sleeps
until its emulator's next departure time and sends what is due. The loop's own timers count whole
milliseconds (uvloop/libuv, and epoll's timeout), so packets left up to ~1 ms late at p50 and 2-5 ms
at p99 in the demo; the thread waits on a queue with a precise timeout, and a packet due at once
(no delay) leaves from the loop thread without a hop. One lock per relay guards its emulators.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from telesurg.link.sockets import (
    enable_arrival_stamps,
    enlarge_socket_buffers,
    kernel_arrival_time,
    thread_socket,
)
from telesurg.netem.core import DirectionEmulator, Impairment
from telesurg.netem.path import EmulatedPath, apply_action
from telesurg.netem.profiles import Profile
from telesurg.netem.scenario import Scenario, ScenarioPlayer
from telesurg.realtime import EMULATOR_PRIORITY, request_realtime

Address = tuple[str, int]
LATENESS_KEPT = 200_000  # departures whose lateness is kept for the report (~1 min of control)


@dataclass
class RelayCounters:
    """Socket-side counters of one relay (the emulators count impairments)."""

    from_client: int = 0
    to_target: int = 0
    from_target: int = 0
    to_client: int = 0
    replies_before_client: int = 0  # a reply arrived before any client spoke: nowhere to send it
    send_errors: int = 0  # OSError from the socket (e.g. ICMP port unreachable from a dead target)


def _lateness_ms(values: collections.deque[float]) -> dict[str, float | None]:
    """How late the relay released packets against their emulated departure time (the harness's own error)."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ms = np.asarray(values) * 1000.0
    return {"p50": round(float(np.percentile(ms, 50)), 3), "p99": round(float(np.percentile(ms, 99)), 3),
            "max": round(float(ms.max()), 3)}


class _TimedDirection:
    """Feeds one emulator (loop thread) and releases its packets on time (departure thread)."""

    def __init__(self, name: str, emulator: DirectionEmulator, send: Callable[[bytes], None],
                 lock: threading.Lock) -> None:
        self.emulator = emulator
        self._send = send
        self._lock = lock
        self._doorbell: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._waiting_for = float("inf")  # the departure time the thread sleeps towards (under the lock)
        self._closed = False
        self.lateness: collections.deque[float] = collections.deque(maxlen=LATENESS_KEPT)
        self.arrival_lag: collections.deque[float] = collections.deque(maxlen=LATENESS_KEPT)
        self._thread = threading.Thread(target=self._run, name=f"netem-{name}", daemon=True)
        self._thread.start()

    def submit(self, data: bytes, arrived_at: float) -> None:
        now = time.monotonic()
        self.arrival_lag.append(now - arrived_at)
        with self._lock:
            self.emulator.submit(data, arrived_at)
            due = self.emulator.next_time()
            if due is None:
                return
            if due <= now:  # no delay to emulate: leave now, from this thread
                self._release(now)
                return
            wake = due < self._waiting_for
        if wake:
            self._doorbell.put(None)

    def rearm(self) -> None:
        """The emulator changed (a scenario action): the departure thread looks again."""
        self._doorbell.put(None)

    def _release(self, now: float) -> None:
        for due, data in self.emulator.pop_due_timed(now):
            self._send(data)
            self.lateness.append(now - due)

    def _run(self) -> None:
        request_realtime(EMULATOR_PRIORITY)
        while not self._closed:
            with self._lock:
                due = self.emulator.next_time()
                self._waiting_for = float("inf") if due is None else due
            timeout = None if due is None else due - time.monotonic()
            if timeout is None or timeout > 0:
                try:
                    self._doorbell.get(timeout=timeout)
                    continue  # something changed: look again
                except queue.Empty:
                    pass
            with self._lock:
                self._release(time.monotonic())

    def close(self) -> None:
        self._closed = True
        self._doorbell.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(1.0)


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, relay: PathRelay) -> None:
        self._relay = relay

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._relay._from_client(data, addr)

    def error_received(self, exc: Exception) -> None:
        self._relay.counters.send_errors += 1


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, relay: PathRelay) -> None:
        self._relay = relay

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._relay._from_target(data)

    def error_received(self, exc: Exception) -> None:
        self._relay.counters.send_errors += 1


class PathRelay:
    """One emulated path over real UDP, both directions."""

    def __init__(self, name: str, forward: Impairment | None = None, reverse: Impairment | None = None,
                 seed: int = 0, path: EmulatedPath | None = None) -> None:
        self.path = path or EmulatedPath(name, forward or Impairment(), reverse or Impairment(), seed)
        self.name = self.path.name
        self.counters = RelayCounters()
        self.listen_address: Address | None = None
        self._client: Any = None
        self._listen_transport: asyncio.DatagramTransport | None = None
        self._up_transport: asyncio.DatagramTransport | None = None
        self._forward: _TimedDirection | None = None
        self._reverse: _TimedDirection | None = None
        self._lock = threading.Lock()
        self.path.lock = self._lock  # scenario actions and cuts change the emulators under the same lock
        # sockets the departure threads send on: the loop's transports are not thread-safe
        self._to_target: socket.socket | None = None
        self._to_client: socket.socket | None = None

    async def start(self, listen: Address, target: Address) -> Address:
        """Bind `listen` (port 0 picks one) and connect to `target`; returns the bound listen address."""
        loop = asyncio.get_running_loop()
        self._listen_transport, _ = await loop.create_datagram_endpoint(
            lambda: _Listener(self), local_addr=listen)
        self._up_transport, _ = await loop.create_datagram_endpoint(
            lambda: _Upstream(self), remote_addr=target)
        enlarge_socket_buffers(self._listen_transport)
        enlarge_socket_buffers(self._up_transport)
        self._to_target = thread_socket(self._up_transport)
        self._to_client = thread_socket(self._listen_transport)
        for sock in (self._to_target, self._to_client):
            enable_arrival_stamps(sock)
        self._forward = _TimedDirection(f"{self.name}-forward", self.path.forward, self._send_to_target, self._lock)
        self._reverse = _TimedDirection(f"{self.name}-reverse", self.path.reverse, self._send_to_client, self._lock)
        self.listen_address = self._listen_transport.get_extra_info("sockname")[:2]
        return self.listen_address

    def close(self) -> None:
        for direction in (self._forward, self._reverse):
            if direction is not None:
                direction.close()
        for transport in (self._listen_transport, self._up_transport):
            if transport is not None:
                transport.close()
        for sock in (self._to_target, self._to_client):
            if sock is not None:
                sock.close()

    def rearm(self) -> None:
        """Call after changing the path (a scenario action) so timers follow the new departures."""
        for direction in (self._forward, self._reverse):
            if direction is not None:
                direction.rearm()

    @property
    def stats(self) -> dict[str, Any]:
        directions = [(name, d) for name, d in (("forward", self._forward), ("reverse", self._reverse))
                      if d is not None]
        return {"relay": asdict(self.counters), **self.path.stats(), "down": self.path.is_down,
                "departure_lateness_ms": {name: _lateness_ms(d.lateness) for name, d in directions},
                "arrival_lag_ms": {name: _lateness_ms(d.arrival_lag) for name, d in directions}}

    # -- packet path -----------------------------------------------------------------------------
    def _from_client(self, data: bytes, addr: Any) -> None:
        self.counters.from_client += 1
        self._client = addr
        assert self._forward is not None
        self._forward.submit(data, kernel_arrival_time(self._to_client))

    def _from_target(self, data: bytes) -> None:
        self.counters.from_target += 1
        assert self._reverse is not None
        self._reverse.submit(data, kernel_arrival_time(self._to_target))

    def _send_to_target(self, data: bytes) -> None:
        assert self._to_target is not None
        try:
            self._to_target.send(data)
            self.counters.to_target += 1
        except OSError:  # a full buffer, or ICMP port unreachable from a target that is not up yet
            self.counters.send_errors += 1

    def _send_to_client(self, data: bytes) -> None:
        if self._client is None:
            self.counters.replies_before_client += 1
            return
        assert self._to_client is not None
        try:
            self._to_client.sendto(data, self._client)
            self.counters.to_client += 1
        except OSError:
            self.counters.send_errors += 1


async def run_profile_relays(
    profile: Profile,
    mapping: dict[str, tuple[Address, Address]],
    scenario: Scenario | None = None,
    duration: float | None = None,
    seed: int = 0,
    on_stats: Callable[[dict[str, dict[str, Any]]], None] | None = None,
    stats_interval: float = 5.0,
    on_started: Callable[[dict[str, PathRelay]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run one relay per mapped path (name → (listen, target)) until `duration` or cancellation.

    Returns the final per-path stats; `on_stats` gets them every `stats_interval` seconds.
    """
    unknown = sorted(set(mapping) - set(profile.path_names))
    if unknown:
        raise KeyError(f"paths {unknown} are not in profile {profile.name!r}; its paths are {profile.path_names}")
    if scenario is not None:
        scenario.check_paths(profile.path_names)
    loop = asyncio.get_running_loop()
    relays: dict[str, PathRelay] = {}
    timers: list[asyncio.TimerHandle] = []
    try:
        for spec in profile.paths:
            if spec.name in mapping:
                relay = PathRelay(spec.name, spec.forward, spec.reverse, seed)
                listen, target = mapping[spec.name]
                await relay.start(listen, target)
                relays[spec.name] = relay
        if on_started is not None:
            on_started(relays)
        if scenario is not None:
            _play(loop, ScenarioPlayer(scenario, start=loop.time()), relays, timers)

        def report() -> dict[str, dict[str, Any]]:
            return {name: relay.stats for name, relay in relays.items()}

        deadline = None if duration is None else loop.time() + duration
        while deadline is None or loop.time() < deadline:
            wait = stats_interval if deadline is None else min(stats_interval, deadline - loop.time())
            await asyncio.sleep(max(0.0, wait))
            if on_stats is not None and (deadline is None or loop.time() < deadline):
                on_stats(report())
        return report()
    finally:
        for handle in timers:
            handle.cancel()
        for relay in relays.values():
            relay.close()


def start_scenario(scenario: Scenario, relays: dict[str, PathRelay]) -> list[asyncio.TimerHandle]:
    """Play `scenario` on running relays with its clock starting now; cancel the returned timers to stop."""
    scenario.check_paths(list(relays))
    loop = asyncio.get_running_loop()
    timers: list[asyncio.TimerHandle] = []
    _play(loop, ScenarioPlayer(scenario, start=loop.time()), relays, timers)
    return timers


def _play(loop: asyncio.AbstractEventLoop, player: ScenarioPlayer, relays: dict[str, PathRelay],
          timers: list[asyncio.TimerHandle]) -> None:
    """Apply due scenario actions, then schedule ourselves for the next one."""
    paths = {name: relay.path for name, relay in relays.items()}
    now = loop.time()
    for action in player.due(now):
        with contextlib.suppress(KeyError):  # '*' or a path not relayed in this process
            apply_action(paths, action, now)
    for relay in relays.values():
        relay.rearm()
    timers.clear()
    nxt = player.next_time()
    if nxt is not None:
        timers.append(loop.call_at(nxt, _play, loop, player, relays, timers))
