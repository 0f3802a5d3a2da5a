"""The per-datagram shortcuts of LinkCore keep exact behaviour: the cached timer and clock offset always
equal a fresh computation, refused counters never reach the cipher, forged ones never move the window."""

from __future__ import annotations

import os
from typing import Any

from telesurg.link import wire
from telesurg.link.core import LinkCore
from telesurg.link.events import MessageClass, MessageReceived
from telesurg.link.testing import make_pair
from telesurg.netem.profiles import parse_profile
from telesurg.netem.virtual import VirtualNetwork

LOSSY = parse_profile({"name": "lossy", "path": [
    {"name": "a", "both": {"delay_ms": 30, "jitter_ms": 4, "loss": 0.02, "duplicate": 0.01}},
    {"name": "b", "both": {"delay_ms": 45, "jitter_ms": 8, "loss": 0.05, "reorder": 0.02, "corrupt": 0.005}}]})


class Checked:
    """A core whose cached figures are compared with a fresh computation whenever the network asks."""

    def __init__(self, core: LinkCore) -> None:
        self.inner = core
        self.checks = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get_timer(self) -> float | None:
        core = self.inner
        cached = core.get_timer()
        assert cached == core._compute_timer()
        samples = [s for window in core._clock._samples.values() for s in window]
        assert core.clock_offset() == (min(samples)[1] if samples else None)
        self.checks += 1
        return cached


def _established(prof: object = LOSSY, **tuning: object) -> tuple[LinkCore, LinkCore, VirtualNetwork]:
    client, server, _, _ = make_pair(**tuning)
    net = VirtualNetwork(client, server, prof, seed=3)
    client.connect(0.0)
    net.run_until(1.0)
    assert client.established and server.established
    return client, server, net


def test_cached_timer_and_offset_equal_fresh_computation_through_cuts_rekeys_and_events() -> None:
    client, server, _, _ = make_pair(rekey_s=0.7, epoch_grace_s=0.3)
    checked_client, checked_server = Checked(client), Checked(server)
    net = VirtualNetwork(checked_client, checked_server, LOSSY, seed=5)
    received: list[int] = []

    def drain(_now: float) -> None:
        for core in (client, server):
            while (event := core.next_event()) is not None:
                if isinstance(event, MessageReceived) and core is server:
                    received.append(event.seq)

    def control(now: float) -> None:
        client.send(MessageClass.CONTROL, b"c" * 80, now)

    def telemetry(now: float) -> None:
        server.send(MessageClass.TELEMETRY, b"t" * 200, now)
        if int(now * 100) % 50 == 0:
            client.send_event(b"event", now)

    client.connect(0.0)
    net.run_until(1.0, drain)
    net.add_ticker(0.001, control)
    net.add_ticker(0.01, telemetry)
    # cuts that end just before, at and after the 0.25 s DOWN verdict: a path's DOWN deadline is then the
    # earliest one when its traffic comes back, the case the message fast path must notice
    start = 1.5
    for index, length in enumerate((0.4, 0.2, 0.22, 0.23, 0.24, 0.245, 0.25, 0.26, 0.6)):
        net.run_until(start, drain)
        net.path_down("ab"[index % 2])
        net.run_until(start + length, drain)
        net.path_up("ab"[index % 2])
        start += length + 0.3
    net.run_until(start + 0.5, drain)
    assert server.counters["rekeys"] >= 4 and server.counters["duplicates"] > 1000
    assert len(received) > 3000 and len(received) == len(set(received))
    assert checked_client.checks > 5000 and checked_server.checks > 5000


def _sealed_control(client: LinkCore, now: float, payload: bytes = b"cmd") -> tuple[bytes, bytes]:
    client.send(MessageClass.CONTROL, payload, now)
    first: dict[str, bytes] = {}
    for path, data in client.datagrams_to_send(now):  # (a path that fell silent gets a second copy on b)
        first.setdefault(path, data)
    return first["a"], first["b"]


def test_replayed_counter_is_dropped_before_decryption_and_counted_as_today() -> None:
    client, server, net = _established()
    now = net.now
    epochs = server._session.epochs
    copy_a, copy_b = _sealed_control(client, now)
    before = epochs.decrypts
    assert server.receive_datagram(copy_a, "a", now) is True
    assert server.receive_datagram(copy_b, "b", now) is True  # another counter: authenticated, then deduplicated
    assert epochs.decrypts == before + 2 and server.counters["duplicates"] == 1
    for _ in range(3):
        assert server.receive_datagram(copy_a, "b", now) is False
    assert epochs.decrypts == before + 2, "a known counter must be refused without AEAD work"
    assert server.counters["replay"] == 3


def test_forged_datagram_with_an_unseen_counter_cannot_advance_the_replay_window() -> None:
    client, server, net = _established()
    now = net.now
    genuine = [_sealed_control(client, now, bytes([i])) for i in range(3)]
    session, epoch, counter = wire.parse_sealed_header(genuine[0][0])
    window = server._session.epochs._recv[epoch].window
    top = window._top
    far = counter + 100_000  # would push every genuine counter out of an 8128-packet window
    for forged_counter in (far, counter, counter + 1):
        forged = wire.sealed_header(session, epoch, forged_counter) + os.urandom(100)
        assert server.receive_datagram(forged, "a", now) is False
    assert server.counters["auth"] == 3 and window._top == top
    for copy_a, _ in genuine:
        assert server.receive_datagram(copy_a, "a", now) is True
    while (event := server.next_event()) is not None:
        assert not isinstance(event, MessageReceived) or event.payload in (b"\x00", b"\x01", b"\x02")
    assert server.counters["replay"] == 0 and server.counters["stale"] == 0
