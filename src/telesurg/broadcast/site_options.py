"""The `--broadcast` options of `telesurg robot|console`, and the demo's `--observers N`.

Kept here so the sites need three lines each (see README "Observers and live broadcast"):

    add_broadcast_arguments(parser)                                   # add_arguments
    error = check_broadcast_args(args, config.site.name)              # run(), after loading the config
    broadcast = broadcast_from_args(args, site.tap, config.site.name)  # after the site exists
    report["broadcast"] = broadcast.close() if broadcast else None     # after site.run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from telesurg.tap import Tap


def add_broadcast_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broadcast", action="append", metavar="ENDPOINT",
                        help="publish a read-only live broadcast (video, arm telemetry, link health, alarms, "
                             "safety events) to this Zenoh router, e.g. tcp/127.0.0.1:7447 (telesurg "
                             "broadcast-router); never slows the site: records are dropped and counted instead")
    parser.add_argument("--broadcast-anonymous", action="store_true",
                        help="replace console identities in the broadcast by pseudonyms (peer-1, peer-2, ...)")
    parser.add_argument("--zenoh-config", type=Path, metavar="F",
                        help="Zenoh JSON5 config for the broadcast (TLS, user/password)")


def check_broadcast_args(args: argparse.Namespace, site_name: str) -> str | None:
    """The one-line error for a bad `--broadcast` endpoint, site name or `--zenoh-config` path, else None
    (call before the site starts, so a typo fails at once instead of after the first hour)."""
    if not getattr(args, "broadcast", None):
        return None
    from telesurg.broadcast.schema import check_site_name
    from telesurg.broadcast.zconfig import check_endpoint

    try:
        for endpoint in args.broadcast:
            check_endpoint(endpoint, "--broadcast")
        check_site_name(site_name)
    except ValueError as exc:
        return str(exc)
    if args.zenoh_config is not None and not args.zenoh_config.is_file():
        return f"--zenoh-config {args.zenoh_config}: no such file"
    return None


def broadcast_from_args(args: argparse.Namespace, tap: Tap, site_name: str, *, video_from_peer: bool = False) -> Any:
    """A started BroadcastPublisher if `--broadcast` was given, else None. Raises ValueError (one line)
    for a bad endpoint or site name."""
    if not getattr(args, "broadcast", None):
        return None
    from telesurg.broadcast.publisher import attach_broadcast

    return attach_broadcast(tap, site_name, args.broadcast, zenoh_config=args.zenoh_config,
                            anonymous=args.broadcast_anonymous, video_from_peer=video_from_peer)


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DemoBroadcast:
    """`telesurg demo --observers N`: an in-process router on a free loopback port and N headless
    observers of the robot site (one process, observer_pool.py; the first one decodes)."""

    def __init__(self, observers: int, workdir: Path, site: str = "robot") -> None:
        from telesurg.broadcast.router_cli import start_router

        self.endpoint = f"tcp/127.0.0.1:{free_tcp_port()}"
        self.router = start_router([self.endpoint])
        self.report_path = workdir / "observers.json"
        self.pool = None
        if observers > 0:
            self.pool = subprocess.Popen(
                [sys.executable, "-m", "telesurg.broadcast.observer_pool", "--connect", self.endpoint, "--site", site,
                 "--count", str(observers), "--decode", "1", "--report", str(self.report_path)],
                stdout=subprocess.DEVNULL)

    def site_flags(self) -> list[str]:
        """Add these to the robot's (and, if wanted, the console's) command line."""
        return ["--broadcast", self.endpoint]

    def close(self) -> dict[str, Any]:
        """Stop the observers, then the router; the observers' summary for the demo report."""
        if self.pool is not None:
            self.pool.send_signal(signal.SIGINT)
            try:
                self.pool.wait(15.0)
            except subprocess.TimeoutExpired:
                self.pool.kill()
                self.pool.wait()
        with contextlib.suppress(Exception):
            self.router.close()
        if self.pool is None:
            return {"endpoint": self.endpoint, "observers": 0}
        if not self.report_path.exists():
            return {"endpoint": self.endpoint, "error": f"observers exited {self.pool.returncode} without a report"}
        return {"endpoint": self.endpoint, **json.loads(self.report_path.read_text())["summary"]}
