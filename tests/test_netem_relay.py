"""Real UDP on 127.0.0.1 through PathRelay / run_profile_relays: delays, outages, counters."""

from __future__ import annotations

import asyncio
import statistics
import struct
import time

import pytest

from telesurg.netem.core import Impairment
from telesurg.netem.profiles import PathProfile, Profile
from telesurg.netem.relay import PathRelay, run_profile_relays
from telesurg.netem.scenario import parse_scenario

_PING = struct.Struct("!Id")
LOCAL = "127.0.0.1"


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.rtts: list[tuple[float, float]] = []  # (received at, rtt ms), both on time.monotonic()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        _, sent = _PING.unpack(data)
        self.rtts.append((now, (now - sent) * 1000))


async def _echo_server() -> tuple[asyncio.DatagramTransport, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(LOCAL, 0))
    return transport, transport.get_extra_info("sockname")[:2]


async def _ping(target: tuple[str, int], count: int, interval: float) -> tuple[_Client, float]:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(_Client, remote_addr=target)
    start = time.monotonic()
    for i in range(count):
        transport.sendto(_PING.pack(i, time.monotonic()))
        await asyncio.sleep(interval)
    await asyncio.sleep(0.3)
    transport.close()
    return client, start


def test_relay_delays_by_the_profile_delay() -> None:
    async def main() -> tuple[list[float], dict]:
        echo, echo_addr = await _echo_server()
        relay = PathRelay("a", forward=Impairment(delay_ms=50), reverse=Impairment())
        listen = await relay.start((LOCAL, 0), echo_addr)
        try:
            client, _ = await _ping(listen, 60, 0.01)
        finally:
            relay.close()
            echo.close()
        return [rtt for _, rtt in client.rtts], relay.stats

    rtts, stats = asyncio.run(main())
    assert len(rtts) == 60
    assert min(rtts) >= 50.0 - 0.05  # never early (timer resolution aside)
    assert statistics.median(rtts) == pytest.approx(51.5, abs=2.0)  # 50 ms + loop/timer overhead (~1 ms)
    assert stats["relay"]["from_client"] == stats["relay"]["to_target"] == 60
    assert stats["relay"]["from_target"] == stats["relay"]["to_client"] == 60
    assert stats["forward"]["delivered"] == 60


def test_profile_relays_follow_a_scenario_and_report_counters() -> None:
    profile = Profile(
        name="t",
        path=[
            PathProfile(name="a", forward={"delay_ms": 10}, reverse={"delay_ms": 10}),
            PathProfile(name="b", forward={"delay_ms": 20, "loss": 1.0}),
        ],
    )
    scenario = parse_scenario({"event": [{"at": 0.3, "path": "a", "action": "down", "duration": 0.3}]})
    seen: list[dict] = []

    async def main() -> tuple[_Client, float, dict]:
        echo, echo_addr = await _echo_server()
        started: dict = {}
        task = asyncio.create_task(run_profile_relays(
            profile, {"a": ((LOCAL, 0), echo_addr), "b": ((LOCAL, 0), echo_addr)}, scenario=scenario,
            duration=1.5, on_stats=seen.append, stats_interval=0.5, on_started=started.update))
        while not started:
            await asyncio.sleep(0.01)
        client_b = asyncio.create_task(_ping(started["b"].listen_address, 20, 0.01))
        client_a, start = await _ping(started["a"].listen_address, 100, 0.01)
        await client_b
        final = await task
        echo.close()
        return client_a, start, final

    client, start, final = asyncio.run(main())
    replies = [t - start for t, _ in client.rtts]
    rtts = [rtt for _, rtt in client.rtts]
    assert min(rtts) >= 20.0 - 0.05  # never early
    assert statistics.median(rtts) == pytest.approx(21, abs=3)  # timers on a shared VM stall now and then
    assert not [t for t in replies if 0.33 < t < 0.6]  # path a down from 0.3 s to 0.6 s (+ 20 ms RTT)
    assert [t for t in replies if t < 0.3] and [t for t in replies if t > 0.65]
    a = final["a"]
    assert a["forward"]["dropped_down"] + a["reverse"]["dropped_down"] >= 25
    assert a["down"] is False
    assert final["b"]["forward"]["dropped_loss"] == 20 and final["b"]["relay"]["to_target"] == 0
    assert len(seen) == 2 and set(seen[0]) == {"a", "b"}


def test_unknown_path_in_mapping_is_rejected() -> None:
    profile = Profile(name="t", path=[PathProfile(name="a")])
    with pytest.raises(KeyError, match="not in profile"):
        asyncio.run(run_profile_relays(profile, {"z": ((LOCAL, 0), (LOCAL, 9))}, duration=0.1))
