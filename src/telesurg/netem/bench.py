"""Benchmark of the emulator: core cost per packet, virtual-network speed, relay overhead and accuracy.

Run: python -m telesurg.netem.bench [--packets N] [--json FILE]. The relay figures are compared with
a direct UDP echo measured in the same run on the same loop (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import struct
import time
from typing import Any

from telesurg.netem.core import DirectionEmulator, Impairment
from telesurg.netem.profiles import load_profile
from telesurg.netem.relay import PathRelay
from telesurg.netem.virtual import VirtualNetwork

_PING = struct.Struct("!Id")


def bench_core(packets: int) -> dict[str, float]:
    imp = load_profile("shanghai-casablanca").path("b").forward
    emu = DirectionEmulator(imp, seed=1)
    payload = bytes(200)
    start = time.perf_counter()
    for i in range(packets):
        now = i * 0.001
        emu.submit(payload, now)
        emu.pop_due(now)
    elapsed = time.perf_counter() - start
    return {"us_per_packet": elapsed / packets * 1e6}


class _Sink:
    def __init__(self) -> None:
        self.outbox: list[tuple[str, bytes]] = []
        self.received = 0

    def datagrams_to_send(self, now: float) -> list[tuple[str, bytes]]:
        out, self.outbox = self.outbox, []
        return out

    def receive_datagram(self, data: bytes, path: str, now: float) -> None:
        self.received += 1


def bench_virtual(seconds: float) -> dict[str, float]:
    console, robot = _Sink(), _Sink()
    net = VirtualNetwork(console, robot, load_profile("shanghai-casablanca"), seed=1)
    net.add_ticker(0.001, lambda now: console.outbox.extend([("a", b"x" * 100), ("b", b"x" * 100)]))
    start = time.perf_counter()
    net.run_until(seconds)
    elapsed = time.perf_counter() - start
    return {"virtual_seconds": seconds, "real_seconds": elapsed, "packets": robot.received,
            "speedup": seconds / elapsed}


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


class _Pinger(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.rtts: list[float] = []
        self.waiter: asyncio.Future[None] | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.rtts.append((time.perf_counter() - _PING.unpack(data)[1]) * 1e6)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


async def _rtts(target: tuple[str, int], count: int) -> list[float]:
    """Ping-pong (one packet in flight), RTT in µs."""
    loop = asyncio.get_running_loop()
    transport, pinger = await loop.create_datagram_endpoint(_Pinger, remote_addr=target)
    for i in range(count):
        pinger.waiter = loop.create_future()
        transport.sendto(_PING.pack(i, time.perf_counter()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pinger.waiter, 1.0)
    transport.close()
    return pinger.rtts


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench_relay(count: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    echo_addr = echo.get_extra_info("sockname")[:2]
    direct = await _rtts(echo_addr, count)
    relay = PathRelay("a")
    listen = await relay.start(("127.0.0.1", 0), echo_addr)
    relayed = await _rtts(listen, count)
    relay.close()
    delayed_relay = PathRelay("a", forward=Impairment(delay_ms=50))
    listen = await delayed_relay.start(("127.0.0.1", 0), echo_addr)
    delayed = await _rtts(listen, min(count, 200))
    lateness = delayed_relay.stats.get("departure_lateness_ms", {}).get("forward")
    delayed_relay.close()
    echo.close()
    return {
        "loop": type(loop).__module__,
        "direct_rtt_us": {"p50": _pct(direct, 0.5), "p99": _pct(direct, 0.99)},
        "relay_rtt_us": {"p50": _pct(relayed, 0.5), "p99": _pct(relayed, 0.99)},
        "relay_overhead_us_p50": _pct(relayed, 0.5) - _pct(direct, 0.5),
        "delay_50ms_error_us": {q: _pct(delayed, p) - 50_000 - _pct(direct, 0.5)
                                for q, p in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))},
        "delay_50ms_median_ms": statistics.median(delayed) / 1000,
        "departure_lateness_ms": lateness,  # the relay's own account: sent at - emulated departure time
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=100_000, help="packets for the core benchmark")
    parser.add_argument("--pings", type=int, default=2000, help="ping-pongs for the relay benchmark")
    parser.add_argument("--json", default="netem_bench.json", help="where to write the figures")
    args = parser.parse_args()
    results: dict[str, Any] = {"core": bench_core(args.packets), "virtual": bench_virtual(10.0)}
    results["relay_asyncio"] = asyncio.run(bench_relay(args.pings))
    try:
        import uvloop

        results["relay_uvloop"] = uvloop.run(bench_relay(args.pings))
    except ImportError:
        pass
    print(json.dumps(results, indent=2))
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
