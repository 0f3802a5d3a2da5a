"""Does the OpenIGTLink server disturb the 1 kHz servo loop? Same run, three modes, interleaved.

    python bench/igtl_servo.py [--seconds-per-phase 5] [--rounds 3] [--json F]

This process: the real `ServoLoop` (MuJoCo `SimDriver` + `SafetySupervisor`, arms enabled, homed and
READY, so the measured pose is read every period) at 1 kHz on its own thread with the site's short
GIL switch interval, telemetry at 100 Hz. Modes:
- `off`: no server;
- `poses`: the telemetry callback also calls `IgtlServer.offer_telemetry`; the server publishes
  PSM1/PSM2 TRANSFORMs at 30 Hz to a real `pyigtl` client in a spawned process (3D Slicer's place);
- `poses+image`: as `poses`, plus a thread offering a 640x360 picture at 30 fps (a fresh copy each
  time, as a renderer would hand them over) and a 320x180 IMAGE published at 2 Hz.
No link traffic: this isolates the interface's cost. The client process competes for the 2 cores
too (in the operating room Slicer runs on another machine), so the ratios are an upper bound.

Figures: servo period lateness p50/p99/max and missed deadlines (> 2 ms late) per phase, and each
mode's p99 against the `off` phases' p99 measured in the same run (medians over the rounds).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import threading
import time
from typing import Any

os.environ.setdefault("MUJOCO_GL", "osmesa")

import numpy as np  # noqa: E402
from rich.progress import Progress  # noqa: E402

from telesurg.interop.igtl import IgtlConfig, IgtlServer  # noqa: E402
from telesurg.messages import Telemetry  # noqa: E402
from telesurg.robot.config import CartConfig  # noqa: E402
from telesurg.robot.safety_config import SupervisorConfig, workspaces_from_cart  # noqa: E402
from telesurg.robot.servo import ServoConfig, ServoLoop  # noqa: E402
from telesurg.robot.sim import SimDriver  # noqa: E402
from telesurg.robot.supervisor import SafetySupervisor, SupervisorState  # noqa: E402

MODES = ("off", "poses", "poses+image")


def client_main(port: int, seconds: float, result: Any) -> None:
    """A pyigtl client (Slicer's role) counting what it receives, in its own process."""
    import pyigtl

    client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=port)
    counts = {"PSM1": 0, "PSM2": 0, "Endoscope": 0}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for message in client.get_latest_messages():
            counts[message.device_name] = counts.get(message.device_name, 0) + 1
        time.sleep(0.005)
    client.stop()
    result.put(counts)


def run_phase(loop: ServoLoop, sink: dict[str, Any], seconds: float, mode: str) -> dict[str, Any]:
    igtl, images = mode != "off", mode == "poses+image"
    server: IgtlServer | None = None
    stop = threading.Event()
    client: mp.Process | None = None
    result: Any = None
    picture_thread: threading.Thread | None = None
    if igtl:
        server = IgtlServer(("127.0.0.1", 0), IgtlConfig(pose_hz=30.0, image_hz=2.0 if images else 0.0))
        server.start()

        def pictures(srv: IgtlServer = server) -> None:
            rng = np.random.default_rng(0)
            frame = rng.integers(0, 255, size=(360, 640, 3), dtype=np.uint8)
            while not stop.wait(1 / 30):
                srv.offer_image(frame.copy())  # a new picture object each time, as a renderer gives

        picture_thread = threading.Thread(target=pictures, daemon=True)
        if images:
            picture_thread.start()
        result = mp.get_context("spawn").Queue()
        client = mp.get_context("spawn").Process(target=client_main, args=(server.address[1], seconds + 1.0, result))
        client.start()
        time.sleep(1.0)  # the spawned client imports and connects before we measure
    sink["server"] = server
    loop.reset_stats()
    time.sleep(seconds)
    stats = loop.stats()
    sink["server"] = None
    stop.set()
    out: dict[str, Any] = {"mode": mode, **{k: stats[k] for k in ("periods", "p50_us", "p99_us", "max_us", "missed")}}
    if server is not None and client is not None:
        received = result.get(timeout=10)
        client.join(5)
        assert picture_thread is not None
        if images:
            picture_thread.join()
        out["server"] = {k: v for k, v in server.stats().items() if k != "address"}
        out["client_received"] = received
        server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds-per-phase", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three modes, interleaved")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    cart = CartConfig()
    driver = SimDriver(cart)
    sup = SafetySupervisor(SupervisorConfig(workspace=workspaces_from_cart(cart)), ["PSM1", "PSM2"])
    sink: dict[str, Any] = {"server": None}

    def on_telemetry(telemetry: Telemetry) -> None:
        server = sink["server"]
        if server is not None:
            server.offer_telemetry(telemetry)

    loop = ServoLoop(sup, driver, ServoConfig(), on_telemetry=on_telemetry)
    loop.operator(lambda console, now: console.enable(now))
    loop.start()
    deadline = time.monotonic() + 10
    while sup.state("PSM1") is not SupervisorState.READY and time.monotonic() < deadline:
        time.sleep(0.01)
    phases = []
    try:
        with Progress() as progress:
            task = progress.add_task("IGTL phases", total=len(MODES) * args.rounds)
            for _ in range(args.rounds):
                for mode in MODES:
                    phases.append(run_phase(loop, sink, args.seconds_per_phase, mode))
                    progress.advance(task)
    finally:
        loop.stop()
        driver.close()
    p99 = {mode: float(np.median([p["p99_us"] for p in phases if p["mode"] == mode])) for mode in MODES}
    missed = {mode: sum(p["missed"] for p in phases if p["mode"] == mode) for mode in MODES}
    summary = {"p99_us_median": p99, "missed": missed, "servo_error": repr(loop.error) if loop.error else None,
               "p99_ratio": {mode: p99[mode] / p99["off"] for mode in MODES[1:]}}
    for p in phases:
        extra = f"  client got {p['client_received']}" if "client_received" in p else ""
        print(f"{p['mode']:11}  periods {p['periods']:6d}  p50 {p['p50_us']:6.0f} us  p99 {p['p99_us']:6.0f} us  "
              f"max {p['max_us']:6.0f} us  missed {p['missed']:3d}{extra}")
    for mode in MODES[1:]:
        print(f"servo p99 {mode} / off (medians of {args.rounds} interleaved rounds): {p99[mode]:.0f} / "
              f"{p99['off']:.0f} us = {summary['p99_ratio'][mode]:.2f}x; missed {missed[mode]} vs {missed['off']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"phases": phases, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
