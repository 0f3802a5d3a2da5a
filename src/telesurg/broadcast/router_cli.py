"""`telesurg broadcast-router --listen tcp/0.0.0.0:7447 [--connect tcp/OTHER:7447]`: the observers' router.

A Zenoh router, in this process (the Zenoh library's own router, not a copy): sites publish into it,
observers subscribe from it, and routers can be chained (`--connect` to an upstream router) so a
conference hall far away reads from its own nearby router and the site sends each sample once.
Access control (TLS, user/password, ACL) comes from `--zenoh-config F` (see zconfig.py).
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import zenoh

from telesurg.broadcast.zconfig import BroadcastConfigError, make_config, open_session, quiet_logs

DEFAULT_LISTEN = "tcp/0.0.0.0:7447"


def start_router(listen: Sequence[str], connect: Sequence[str] = (), zenoh_config: Path | None = None) -> zenoh.Session:
    """An in-process Zenoh router; close the returned session to stop it. Raises BroadcastConfigError."""
    quiet_logs()
    config = make_config("router", listen=listen, connect=connect, config_file=zenoh_config)
    return open_session(config, f"broadcast router on {', '.join(listen)}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", action="append", metavar="ENDPOINT",
                        help=f"where sites and observers connect (default {DEFAULT_LISTEN}); repeatable")
    parser.add_argument("--connect", action="append", default=[], metavar="ENDPOINT",
                        help="an upstream router to chain to (e.g. tcp/hall-router:7447); repeatable")
    parser.add_argument("--zenoh-config", type=Path, metavar="F",
                        help="Zenoh JSON5 config (TLS, user/password, access control); the flags override it")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: until SIGINT)")


def run(args: argparse.Namespace) -> int:
    try:
        router = start_router(args.listen or [DEFAULT_LISTEN], args.connect, args.zenoh_config)
    except BroadcastConfigError as exc:
        print(f"telesurg broadcast-router: {exc}")
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"broadcast router {router.zid()} listening on {', '.join(args.listen or [DEFAULT_LISTEN])}"
          + (f", chained to {', '.join(args.connect)}" if args.connect else ""), flush=True)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    while not stop.wait(0.2):
        if deadline is not None and time.monotonic() >= deadline:
            break
    router.close()
    return 0
