"""The TCP path model (netem/stream.py) under a hand-driven clock, and the real TCP relay on loopback."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from telesurg.netem.core import Impairment
from telesurg.netem.stream import StreamDirection
from telesurg.netem.tcp_relay import TcpPathRelay


def drain(model: StreamDirection, until: float, step: float = 0.001) -> list[tuple[float, bytes]]:
    out, t = [], 0.0
    while t <= until:
        out += model.pop_due_timed(t)
        t += step
    return out


def test_chunks_land_after_the_delay_in_order() -> None:
    model = StreamDirection(Impairment(delay_ms=50), seed=1)
    for i in range(10):
        model.submit(bytes([i]), i * 0.001)
    out = drain(model, 0.2)
    assert [d for _, d in out] == [bytes([i]) for i in range(10)]
    assert [t for t, _ in out] == pytest.approx([0.05 + i * 0.001 for i in range(10)])


def test_a_lost_chunk_costs_one_rtt_and_blocks_the_ones_behind_it() -> None:
    model = StreamDirection(Impairment(delay_ms=50, loss=1.0), seed=1)
    model.submit(b"a", 0.0)  # lost: fast retransmit one RTT (100 ms) + dupack wait (3 ms) later
    model.set(loss=0.0)
    model.submit(b"b", 0.001)  # lands at 0.051 but waits behind "a"
    out = drain(model, 0.3)
    assert [d for _, d in out] == [b"a", b"b"]
    assert out[0][0] == pytest.approx(0.153, abs=1e-6)
    assert out[1][0] == pytest.approx(0.153, abs=1e-6)
    assert model.stats.lost_random == 1 and model.stats.retransmissions == 1


def test_an_outage_stalls_with_rto_backoff_and_loses_nothing() -> None:
    model = StreamDirection(Impairment(delay_ms=50), seed=1)
    sent = []
    t = 0.0
    cut_at, up_at = 0.5, 2.5
    released: list[tuple[float, bytes]] = []
    while t < 4.0:
        if abs(t - cut_at) < 1e-9:
            model.down(t)
        if abs(t - up_at) < 1e-9:
            model.up()
        payload = int(round(t * 1000)).to_bytes(4, "big")
        model.submit(payload, t)
        sent.append(payload)
        released += model.pop_due_timed(t)
        t = round(t + 0.001, 6)
    released += drain_from(model, t, 6.0)
    assert [d for _, d in released] == sent  # nothing lost, nothing reordered
    times = [r for r, _ in released]
    gaps = [(b - a, a) for a, b in zip(times, times[1:], strict=False)]
    longest, start = max(gaps)
    # the oldest chunk in flight (sent at 0.45) retries at +0.3, +0.6, +1.2 s (RTO 100 ms + 200 ms, doubling):
    # 0.75 and 1.35 fall in the outage, 2.55 gets through and lands 50 ms later
    assert start == pytest.approx(0.5, abs=0.002)
    assert start + longest == pytest.approx(2.60, abs=0.002)
    assert model.stats.lost_outage > 1900


def drain_from(model: StreamDirection, start: float, until: float) -> list[tuple[float, bytes]]:
    out, t = [], start
    while t <= until:
        out += model.pop_due_timed(t)
        t += 0.001
    return out


def _sink_server() -> tuple[socket.socket, list[tuple[float, bytes]], threading.Thread]:
    server = socket.create_server(("127.0.0.1", 0))
    received: list[tuple[float, bytes]] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                received.append((time.monotonic(), data))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, received, thread


def test_real_tcp_through_the_relay_is_delayed_stalls_in_an_outage_and_loses_nothing() -> None:
    server, received, thread = _sink_server()
    relay = TcpPathRelay("a", forward=Impairment(delay_ms=20), seed=3)
    listen = relay.start(("127.0.0.1", 0), server.getsockname()[:2])
    client = socket.create_connection(listen)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.monotonic()
    sent = b""
    try:
        for i in range(400):  # 0.4 s at 1 kHz, path down from 0.1 to 0.2 s
            if i == 100:
                relay.path.down(time.monotonic())
                relay.rearm()
            if i == 200:
                relay.path.up()
                relay.rearm()
            chunk = i.to_bytes(4, "big") * 8
            client.sendall(chunk)
            sent += chunk
            time.sleep(max(0.0, start + (i + 1) * 0.001 - time.monotonic()))
        client.shutdown(socket.SHUT_WR)
        thread.join(5.0)
    finally:
        client.close()
        relay.close()
        server.close()
    assert b"".join(d for _, d in received) == sent
    assert received[0][0] - start >= 0.020 - 0.001
    times = [t for t, _ in received]
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) > 0.1  # the outage stalled the stream
    assert relay.stats["forward"]["lost_outage"] > 0


def test_path_changes_reach_open_and_later_connections_and_revert() -> None:
    from telesurg.netem.tcp_relay import StreamPath

    path = StreamPath("a", Impairment(delay_ms=50, jitter_ms=1), Impairment(delay_ms=50), seed=2)
    first = path.open()
    path.set(loss=0.5)
    second = path.open()
    assert first[0].impairment.loss == second[1].impairment.loss == 0.5
    path.down(0.0)
    third = path.open()
    assert third[0].is_down and first[1].is_down
    path.up()
    path.revert("loss")
    fourth = path.open()
    assert {d.impairment.loss for pair in (first, second, third, fourth) for d in pair} == {0.0}
    assert fourth[0].impairment.jitter_ms == 1 and not fourth[0].is_down
