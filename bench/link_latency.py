"""One-way latency of CONTROL messages through the real link vs bare UDP with the same AEAD.

Both ends live in one process and one event loop (uvloop when installed), so one clock measures
one-way delay. Sends ~80-byte messages at 1 kHz; link and raw UDP run in alternating one-second
blocks so machine noise hits both alike. Prints a table and writes JSON:
{"link": {"p50_us", "p99_us", "cpu_us_per_msg"}, "raw_udp": {...}, "ratio_p99", "ratio_cpu"}.
CPU is the process's CPU time (time.process_time: sender + receiver + loop, both in this process) spent
during each kind of block, divided by the CONTROL messages delivered in it; the link's figure also
carries its background probes. Targets: link p99 < 500 µs, ratio_p99 <= 3.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from telesurg.link.driver import install_uvloop
from telesurg.link.events import MessageClass, MessageReceived
from telesurg.link.testing import make_pair, start_loopback_pair

STAMP = struct.Struct("!q")
PAYLOAD_PAD = bytes(72)  # 8-byte timestamp + 72 = 80 bytes, a servo command's size
RATE_HZ = 1000.0


class RawUdp:
    """Baseline: one UDP socket pair, AES-GCM per packet, counter nonce, no link logic."""

    def __init__(self, samples: list[float]) -> None:
        self.samples = samples
        self.aead = AESGCM(os.urandom(32))
        self.counter = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        aead, samples = self.aead, self.samples

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                plain = aead.decrypt(data[:12], data[12:], None)
                samples.append((time.perf_counter_ns() - STAMP.unpack_from(plain)[0]) / 1000.0)

        self.rx, _ = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
        self.tx, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=self.rx.get_extra_info("sockname"))

    def send(self) -> None:
        self.counter += 1
        nonce = self.counter.to_bytes(12, "big")
        plain = STAMP.pack(time.perf_counter_ns()) + PAYLOAD_PAD
        self.tx.sendto(nonce + self.aead.encrypt(nonce, plain, None))

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


class Link:
    """Two LinkEndpoints (2 paths, loopback, no impairment) in the same loop."""

    def __init__(self, samples: list[float]) -> None:
        self.samples = samples

    async def start(self) -> None:
        client, server, _, _ = make_pair()
        samples = self.samples

        def on_message(event: MessageReceived) -> None:
            samples.append((time.perf_counter_ns() - STAMP.unpack_from(event.payload)[0]) / 1000.0)

        self.client, self.server = await start_loopback_pair(
            client, server, server_callbacks={"on_message": on_message})

    def send(self) -> None:
        self.client.send(MessageClass.CONTROL, STAMP.pack(time.perf_counter_ns()) + PAYLOAD_PAD)

    def close(self) -> None:
        for endpoint in (self.client, self.server):
            asyncio.ensure_future(endpoint.close())


async def run_block(target: RawUdp | Link, seconds: float) -> None:
    """Send at RATE_HZ on an absolute schedule (no drift) for `seconds`."""
    loop = asyncio.get_running_loop()
    period = 1.0 / RATE_HZ
    start = loop.time()
    n = int(seconds * RATE_HZ)
    for i in range(n):
        delay = start + i * period - loop.time()
        await asyncio.sleep(delay if delay > 0 else 0)
        target.send()
    await asyncio.sleep(0.02)  # let the last messages land


async def cpu_of_block(target: RawUdp | Link, seconds: float) -> float:
    """Process CPU seconds spent while running one block (send, receive and the loop, both ends)."""
    start = time.process_time()
    await run_block(target, seconds)
    return time.process_time() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main_async(seconds: float) -> dict:
    link_samples: list[float] = []
    raw_samples: list[float] = []
    link, raw = Link(link_samples), RawUdp(raw_samples)
    await link.start()
    await raw.start()
    await asyncio.sleep(0.3)  # let the paths come UP and probes settle
    link_samples.clear()
    blocks = max(1, int(round(seconds)))
    cpu = {"link": 0.0, "raw_udp": 0.0}
    with Progress(transient=True) as progress:
        task = progress.add_task("link vs raw UDP (alternating 1 s blocks)", total=blocks)
        for _ in range(blocks):
            cpu["raw_udp"] += await cpu_of_block(raw, 0.5)
            cpu["link"] += await cpu_of_block(link, 0.5)
            progress.advance(task)
    drops = dict(link.server.counters)
    link.close()
    raw.close()
    await asyncio.sleep(0.05)
    summary = {
        "link": {"p50_us": percentile(link_samples, 0.5), "p99_us": percentile(link_samples, 0.99),
                 "mean_us": statistics.fmean(link_samples), "n": len(link_samples)},
        "raw_udp": {"p50_us": percentile(raw_samples, 0.5), "p99_us": percentile(raw_samples, 0.99),
                    "mean_us": statistics.fmean(raw_samples), "n": len(raw_samples)},
        "link_counters": drops,
        "seconds": seconds,
        "rate_hz": RATE_HZ,
        "uvloop": USING_UVLOOP,
    }
    summary["ratio_p99"] = summary["link"]["p99_us"] / summary["raw_udp"]["p99_us"]
    for name in ("link", "raw_udp"):
        summary[name]["cpu_us_per_msg"] = 1e6 * cpu[name] / max(1, summary[name]["n"])
    summary["ratio_cpu"] = summary["link"]["cpu_us_per_msg"] / summary["raw_udp"]["cpu_us_per_msg"]
    return summary


USING_UVLOOP = False


def main() -> int:
    global USING_UVLOOP
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="total measuring time (half each)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    USING_UVLOOP = install_uvloop()
    summary = asyncio.run(main_async(args.seconds))
    console = Console()
    table = Table(title=f"one-way latency, 80-byte CONTROL at {RATE_HZ:.0f} Hz (uvloop={USING_UVLOOP})")
    for col in ("", "p50 µs", "p99 µs", "mean µs", "n", "CPU µs/msg"):
        table.add_column(col, justify="right")
    for name in ("link", "raw_udp"):
        s = summary[name]
        table.add_row(name, f"{s['p50_us']:.0f}", f"{s['p99_us']:.0f}", f"{s['mean_us']:.0f}", str(s["n"]),
                      f"{s['cpu_us_per_msg']:.1f}")
    console.print(table)
    console.print(f"ratio_cpu = {summary['ratio_cpu']:.2f}  (link / raw UDP process CPU per delivered message)")
    ok = summary["link"]["p99_us"] < 500 and summary["ratio_p99"] <= 3
    console.print(f"ratio_p99 = {summary['ratio_p99']:.2f}  target: link p99 < 500 µs and ratio <= 3 -> "
                  f"{'[green]met' if ok else '[red]not met'}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
