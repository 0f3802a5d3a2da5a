"""How long an arriving command waits for its thread to run, with idle CPUs halting or kept awake.

    python bench/wakeup_latency.py [--seconds 20] [--json F]

Real processes on loopback: a console process sends 80-byte CONTROL messages at 1 kHz from a ticker
thread (`send_from_thread`, as the console site does); this process is the robot: its link loop
receives them and, as the robot site does, sends bursts of 20 x 1100-byte VIDEO payloads at 30 Hz
handed over from a video-pipe thread. Blocks of 1 s alternate between idle CPUs left to halt
(the baseline) and idle CPUs kept awake by `telesurg.idle_poll.KeepCpusAwake`, so machine noise hits
both alike. Figures, p50/p99/max in µs: kernel arrival -> the robot's `on_message` ("handed up":
the robot link's share of a command's delay) and console stamp -> `on_message` (one way).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import struct
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from telesurg.idle_poll import KeepCpusAwake
from telesurg.link.config import LinkConfig
from telesurg.link.driver import LinkEndpoint, install_uvloop
from telesurg.link.events import MessageClass, MessageReceived
from telesurg.link.keys import generate_identity

STAMP = struct.Struct("!d")
SETTLE_S = 0.2
VIDEO_PAYLOAD = bytes(1100)
BURST = 20
VIDEO_HZ = 30.0
MODES = ("idle_cpus_halt", "idle_cpus_polled")


def _link_config(tmp: Path, me: str, peer: str, remotes: list[tuple[str, int]] | None) -> LinkConfig:
    paths = [{"name": name, "local": "127.0.0.1:0", **({"remote": f"{remotes[i][0]}:{remotes[i][1]}"} if remotes else {})}
             for i, name in enumerate(("a", "b"))]
    return LinkConfig(identity_cert=tmp / f"{me}.crt", identity_key=tmp / f"{me}.key",
                      peer_certs=[tmp / f"{peer}.crt"], paths=paths)


def _console(tmp: str, remotes: list[tuple[str, int]], seconds: float) -> None:
    """Child process: connect, then send CONTROL at 1 kHz from a thread until `seconds` have passed."""
    install_uvloop()

    async def run() -> None:
        endpoint = LinkEndpoint.from_config(_link_config(Path(tmp), "console", "robot", remotes), is_client=True)
        await endpoint.start()
        await endpoint.wait_established(10.0)
        done = threading.Event()

        def ticker() -> None:
            start = time.monotonic()
            k = 0
            while (now := time.monotonic()) < start + seconds:
                endpoint.send_from_thread(MessageClass.CONTROL, STAMP.pack(now) + bytes(72))
                k += 1
                time.sleep(max(0.0, start + k * 0.001 - time.monotonic()))
            done.set()

        threading.Thread(target=ticker, daemon=True).start()
        while not done.is_set():
            await asyncio.sleep(0.05)
        await endpoint.close()

    asyncio.run(run())


async def _robot(tmp: Path, seconds: float, progress: Progress) -> dict[str, dict[str, list[float]]]:
    samples = {mode: {"handed_up": [], "one_way": []} for mode in (*MODES, "settling")}
    mode = [MODES[0]]
    endpoint: LinkEndpoint

    def on_message(event: MessageReceived) -> None:
        if event.msg_class is MessageClass.CONTROL:
            now = time.monotonic()
            samples[mode[0]]["handed_up"].append(1e6 * (now - endpoint.arrived_at))
            samples[mode[0]]["one_way"].append(1e6 * (now - STAMP.unpack_from(event.payload)[0]))

    endpoint = LinkEndpoint.from_config(_link_config(tmp, "robot", "console", None), is_client=False,
                                        on_message=on_message, stamp_arrivals=True)
    await endpoint.start()
    loop = asyncio.get_running_loop()
    child = mp.get_context("spawn").Process(
        target=_console, args=(str(tmp), [endpoint.local_address(p) for p in ("a", "b")], seconds * (1 + SETTLE_S) + 2.0))
    child.start()
    await endpoint.wait_established(20.0)

    def send_burst(batch: list[bytes]) -> None:
        for payload in batch:
            endpoint.send(MessageClass.VIDEO, payload)

    stop = threading.Event()

    def video_pipe() -> None:  # as RobotVideo._read: frames arrive on a thread, go out on the loop
        while not stop.wait(1.0 / VIDEO_HZ):
            loop.call_soon_threadsafe(send_burst, [VIDEO_PAYLOAD] * BURST)

    pipe = threading.Thread(target=video_pipe, daemon=True)
    pipe.start()
    task = progress.add_task("commands to the robot link, idle CPUs halting or polled (alternating 1 s blocks)", total=int(seconds))
    await asyncio.sleep(0.5)
    for mode_list in samples.values():
        for values in mode_list.values():
            values.clear()
    pollers = KeepCpusAwake()
    try:
        for block in range(int(seconds)):
            polled = block % 2 == 1
            if polled and not pollers.start():
                raise SystemExit("idle pollers could not start here")
            mode[0] = "settling"
            await asyncio.sleep(SETTLE_S)  # the pollers start (or stop) outside the measured block
            mode[0] = MODES[block % 2]
            await asyncio.sleep(1.0)
            mode[0] = "settling"
            if polled:
                pollers.stop()
            progress.advance(task)
    finally:
        pollers.stop()
    stop.set()
    await asyncio.sleep(0.6)
    child.join(5.0)
    await endpoint.close()
    return samples


def _figures(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"p50_us": round(float(np.percentile(a, 50)), 1), "p99_us": round(float(np.percentile(a, 99)), 1),
            "max_us": round(float(a.max()), 1), "n": int(a.size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring time, both modes together")
    parser.add_argument("--json", type=Path, default=Path("wakeup_latency.json"))
    args = parser.parse_args()
    install_uvloop()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="telesurg-wakeup-") as tmp:
        for name in ("robot", "console"):
            generate_identity(Path(tmp), name)
        with Progress(transient=True) as progress:
            samples = asyncio.run(_robot(Path(tmp), args.seconds, progress))
    result: dict[str, Any] = {mode: {k: _figures(v) for k, v in samples[mode].items()} for mode in MODES}
    table = Table(title=f"CONTROL at 1 kHz to a robot link sending {BURST}-datagram video bursts at {VIDEO_HZ:.0f} Hz (µs)")
    for column in ("mode", "handed up p50", "p99", "max", "one way p50", "p99", "max", "n"):
        table.add_column(column, justify="right")
    for mode, figs in result.items():
        h, o = figs["handed_up"], figs["one_way"]
        table.add_row(mode, str(h["p50_us"]), str(h["p99_us"]), str(h["max_us"]), str(o["p50_us"]),
                      str(o["p99_us"]), str(o["max_us"]), str(h["n"]))
    console.print(table)
    base, new = (result[mode]["handed_up"]["p99_us"] for mode in MODES)
    result["ratio_handed_up_p99_polled_vs_halt"] = round(new / base, 3) if base else None
    result["cpus"] = os.cpu_count()
    console.print({"ratio_handed_up_p99_polled_vs_halt": result["ratio_handed_up_p99_polled_vs_halt"]})
    args.json.write_text(json.dumps(result, indent=2))
    console.print(f"written {args.json}")


if __name__ == "__main__":
    main()
