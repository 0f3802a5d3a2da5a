"""Web dashboard and Prometheus `/metrics` of a site, fed by its tap (see server.py).

`attach_dashboard(tap, "127.0.0.1:8080", site_name=..., role=...)` serves both on a thread of its
own; `add_arguments`/`from_args` give the sites their `--dashboard [HOST:]PORT` and
`--dashboard-allow CIDR` options.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from telesurg.dashboard.access import BindError, parse_bind

if TYPE_CHECKING:
    from telesurg.dashboard.server import DashboardServer
    from telesurg.tap import Tap

__all__ = ["BindError", "add_arguments", "attach_dashboard", "from_args", "parse_bind"]


def attach_dashboard(tap: Tap, bind: str, *, site_name: str | None = None, role: str | None = None,
                     video: bool = True, allow: list[str] | None = None) -> DashboardServer:
    from telesurg.dashboard.server import attach_dashboard as attach

    return attach(tap, bind, site_name=site_name, role=role, video=video, allow=allow)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dashboard", metavar="[HOST:]PORT",
                        help="serve the web dashboard and Prometheus /metrics here (e.g. :8080 = 127.0.0.1:8080, "
                             "this machine only; 0.0.0.0:8080 = every interface, answering loopback and private "
                             "networks only unless --dashboard-allow is given)")
    parser.add_argument("--dashboard-allow", action="append", metavar="CIDR",
                        help="client networks the dashboard answers (repeatable; replaces the default)")


def from_args(args: argparse.Namespace, tap: Tap, *, site_name: str, role: str,
              video: bool = True) -> DashboardServer | None:
    """Start the dashboard if `--dashboard` was given (prints its URL); raises BindError/OSError."""
    if not getattr(args, "dashboard", None):
        return None
    server = attach_dashboard(tap, args.dashboard, site_name=site_name, role=role, video=video,
                              allow=args.dashboard_allow)
    print(f"{role}: dashboard at {server.url} (metrics at {server.url}metrics)", flush=True)
    return server
