"""Both sites on one machine over emulated WAN paths: what `telesurg demo` and `qualify --demo` share.

A throw-away site pair (fresh keys) whose console dials the netem relays instead of the robot, one
relay per path in this process, and the command line that starts a site as its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telesurg.apps.init import PATH_NAMES, write_site_pair
from telesurg.netem.profiles import Profile
from telesurg.netem.relay import PathRelay, run_profile_relays
from telesurg.netem.scenario import Scenario
from telesurg.realtime import EMULATOR_PRIORITY, request_realtime, settle_garbage_collector

RELAY_SWITCH_INTERVAL_S = 0.0002  # the servo loop's value (robot/servo.py); CPython's default is 5 ms


def free_udp_ports(count: int) -> list[int]:
    """Ports the OS considers free right now (bound and released together, so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def site_command(kind: str, config: Path, report: Path, extra: list[str]) -> list[str]:
    """`telesurg robot|console --config F --report R ...` with this interpreter."""
    return [sys.executable, "-m", "telesurg.cli", kind, "--config", str(config), "--report", str(report), *extra]


@dataclass
class EmulatedLink:
    robot_toml: Path
    console_toml: Path
    relays: dict[str, PathRelay]
    task: asyncio.Task[Any]

    def stats(self) -> dict[str, Any]:
        return {name: relay.stats for name, relay in self.relays.items()}

    async def drain(self, timeout: float) -> None:
        """Wait until the relays hold no console->robot packet (commands still crossing the emulated
        WAN when the console stops), at most `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while any(relay.path.forward.stats.in_flight for relay in self.relays.values()):
            if asyncio.get_running_loop().time() >= deadline:
                return
            await asyncio.sleep(0.01)

    async def close(self) -> dict[str, Any]:
        """Stop the relays; return their final counters."""
        stats = self.stats()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        return stats


async def start_emulated_link(profile: Profile, workdir: Path, *, seed: int,
                              scenario: Scenario | None = None) -> EmulatedLink:
    """Write the site pair into `workdir` and start one relay per path (console → relay → robot).

    The calling thread (the one running the relays' event loop) asks for real-time scheduling: the
    emulated WAN must not slow down because the two sites beside it keep the machine busy. The
    relays' loop and departure threads share this interpreter: a short GIL switch interval keeps a
    packet that arrives while a departure thread sends a burst of video from waiting up to CPython's
    default 5 ms."""
    request_realtime(EMULATOR_PRIORITY)
    sys.setswitchinterval(RELAY_SWITCH_INTERVAL_S)
    if list(profile.path_names) != list(PATH_NAMES):
        raise ValueError(f"profile {profile.name} has paths {profile.path_names}; the local sites use {PATH_NAMES}")
    ports = free_udp_ports(6)
    robot_ports, relay_ports, console_ports = tuple(ports[0:2]), tuple(ports[2:4]), tuple(ports[4:6])
    robot_toml, console_toml = write_site_pair(workdir, robot_ports=robot_ports, console_ports=console_ports,
                                               console_remotes=relay_ports, overwrite=True)
    mapping = {name: (("127.0.0.1", relay_ports[i]), ("127.0.0.1", robot_ports[i]))
               for i, name in enumerate(PATH_NAMES)}
    relays: dict[str, PathRelay] = {}
    task = asyncio.create_task(run_profile_relays(profile, mapping, scenario=scenario, duration=None, seed=seed,
                                                  on_started=relays.update))
    while not relays and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        task.result()  # raises the relay's start-up error
    settle_garbage_collector()
    return EmulatedLink(robot_toml, console_toml, relays, task)
