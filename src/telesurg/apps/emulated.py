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

from telesurg.apps.init import PATH_NAMES, write_sites
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
    """The robot's site file and, per console, its site file and its own WAN's relays (the first
    console is the lead: `console_toml` and `relays` are its)."""

    robot_toml: Path
    console_tomls: list[Path]
    relay_sets: list[dict[str, PathRelay]]
    tasks: list[asyncio.Task[Any]]

    @property
    def console_toml(self) -> Path:
        return self.console_tomls[0]

    @property
    def relays(self) -> dict[str, PathRelay]:
        return self.relay_sets[0]

    def stats(self, console: int = 0) -> dict[str, Any]:
        return {name: relay.stats for name, relay in self.relay_sets[console].items()}

    async def drain(self, timeout: float) -> None:
        """Wait until the relays hold no console->robot packet (commands still crossing the emulated
        WAN when the console stops), at most `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while any(relay.path.forward.stats.in_flight for relays in self.relay_sets for relay in relays.values()):
            if asyncio.get_running_loop().time() >= deadline:
                return
            await asyncio.sleep(0.01)

    async def close(self) -> dict[str, Any]:
        """Stop the relays; return the lead's final counters (`close_all` for every console's)."""
        return (await self.close_all())[0]

    async def close_all(self) -> list[dict[str, Any]]:
        stats = [self.stats(i) for i in range(len(self.relay_sets))]
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return stats


async def start_emulated_link(profile: Profile, workdir: Path, *, seed: int,
                              scenario: Scenario | None = None,
                              more_consoles: list[Profile] | None = None) -> EmulatedLink:
    """Write the site files into `workdir` and start one relay per path (console → relay → robot),
    for the lead console over `profile` and for one more console per entry of `more_consoles`.

    The calling thread (the one running the relays' event loop) asks for real-time scheduling: the
    emulated WAN must not slow down because the two sites beside it keep the machine busy. The
    relays' loop and departure threads share this interpreter: a short GIL switch interval keeps a
    packet that arrives while a departure thread sends a burst of video from waiting up to CPython's
    default 5 ms."""
    request_realtime(EMULATOR_PRIORITY)
    sys.setswitchinterval(RELAY_SWITCH_INTERVAL_S)
    profiles = [profile, *(more_consoles or [])]
    for p in profiles:
        if list(p.path_names) != list(PATH_NAMES):
            raise ValueError(f"profile {p.name} has paths {p.path_names}; the local sites use {PATH_NAMES}")
    n = len(PATH_NAMES)
    ports = free_udp_ports(n + 2 * n * len(profiles))
    robot_ports = tuple(ports[0:n])
    relay_ports = [tuple(ports[n + 2 * n * i:2 * n + 2 * n * i]) for i in range(len(profiles))]
    console_ports = [tuple(ports[2 * n + 2 * n * i:3 * n + 2 * n * i]) for i in range(len(profiles))]
    robot_toml, console_tomls = write_sites(workdir, robot_ports=robot_ports, console_ports=console_ports,
                                            console_remotes=relay_ports, overwrite=True)
    relay_sets: list[dict[str, PathRelay]] = []
    tasks = []
    for i, p in enumerate(profiles):  # each console's own WAN (relays) into the same robot ports
        mapping = {name: (("127.0.0.1", relay_ports[i][k]), ("127.0.0.1", robot_ports[k]))
                   for k, name in enumerate(PATH_NAMES)}
        relays: dict[str, PathRelay] = {}
        relay_sets.append(relays)
        task = asyncio.create_task(run_profile_relays(p, mapping, scenario=scenario if i == 0 else None,
                                                      duration=None, seed=seed + i, on_started=relays.update))
        tasks.append(task)
        while not relays and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            task.result()  # raises the relay's start-up error
    settle_garbage_collector()
    return EmulatedLink(robot_toml, console_tomls, relay_sets, tasks)
