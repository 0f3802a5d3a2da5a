"""Web dashboard and Prometheus `/metrics` of a site, fed by its tap (see server.py).

`attach_dashboard(tap, "127.0.0.1:8080", site_name=..., role=...)` serves both from a process of its
own, fed by one thread of the site (dashboard/process.py); `add_arguments`/`from_args` give the sites their `--dashboard [HOST:]PORT` and
`--dashboard-allow CIDR` options.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from telesurg.dashboard.access import BindError, parse_bind

if TYPE_CHECKING:
    from telesurg.dashboard.process import DashboardFeed
    from telesurg.tap import Tap

__all__ = ["BindError", "add_arguments", "attach_dashboard", "demo_flags", "from_args", "parse_bind"]


def attach_dashboard(tap: Tap, bind: str, *, site_name: str | None = None, role: str | None = None,
                     video: bool = True, allow: list[str] | None = None) -> DashboardFeed:
    """Serve the site's dashboard and /metrics from the tap; returns the running handle (`.url`,
    `.close()`). Raises `BindError` (bad value) or `OSError` (cannot serve)."""
    from telesurg.dashboard.process import DashboardFeed

    return DashboardFeed(tap, bind, site_name=site_name, role=role, video=video, allow=allow).start()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dashboard", metavar="[HOST:]PORT",
                        help="serve the web dashboard and Prometheus /metrics here (e.g. :8080 = 127.0.0.1:8080, "
                             "this machine only; 0.0.0.0:8080 = every interface, answering loopback and private "
                             "networks only unless --dashboard-allow is given)")
    parser.add_argument("--dashboard-allow", action="append", metavar="CIDR",
                        help="client networks the dashboard answers (repeatable; replaces the default)")


def from_args(args: argparse.Namespace, tap: Tap, *, site_name: str, role: str,
              video: bool = True) -> DashboardFeed | None:
    """Start the dashboard if `--dashboard` was given and print its URL. A bad value or a port in use
    ends the command with a one-line message (SystemExit), before the site starts."""
    if not getattr(args, "dashboard", None):
        return None
    try:
        server = attach_dashboard(tap, args.dashboard, site_name=site_name, role=role, video=video,
                                  allow=args.dashboard_allow)
    except (BindError, OSError) as exc:
        raise SystemExit(f"telesurg {role}: {exc}") from None
    print(f"{role}: dashboard at {server.url} (metrics at {server.url}metrics)", flush=True)
    return server


def demo_flags(value: str | None, allow: list[str] | None = None) -> dict[str, list[str]]:
    """`telesurg demo --dashboard [HOST:]PORT`: the console site serves on PORT, the robot site on
    PORT + 1 (each its own page and /metrics); returns the flags to add to each site's command."""
    if not value:
        return {"console": [], "robot": []}
    bind = parse_bind(value)
    if bind.port in (0, 65535):
        raise BindError(f"--dashboard {value!r}: the demo needs a fixed port below 65535 (robot on PORT + 1)")
    host = f"[{bind.host}]" if ":" in bind.host else bind.host
    extra = [flag for cidr in (allow or []) for flag in ("--dashboard-allow", cidr)]
    return {"console": ["--dashboard", f"{host}:{bind.port}", *extra],
            "robot": ["--dashboard", f"{host}:{bind.port + 1}", *extra]}
