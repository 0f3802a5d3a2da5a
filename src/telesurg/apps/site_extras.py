"""What both site commands attach to their tap besides the link: the Zenoh broadcast
(`--broadcast`) and the web dashboard with /metrics (`--dashboard`). One place for their options,
their checks before the site starts, and their start and stop around it."""

from __future__ import annotations

import argparse
from typing import Any

from telesurg import dashboard
from telesurg.broadcast.site_options import add_broadcast_arguments, broadcast_from_args, check_broadcast_args
from telesurg.tap import Tap


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_broadcast_arguments(parser)
    dashboard.add_arguments(parser)


def check(args: argparse.Namespace, site_name: str) -> str | None:
    """The options' one-line error, or None, before anything starts."""
    if args.dashboard:
        try:
            dashboard.parse_bind(args.dashboard)
        except ValueError as exc:
            return str(exc)
    return check_broadcast_args(args, site_name)


class SiteExtras:
    """Started once the site (and so its tap) exists; `close(report)` after the site ran."""

    def __init__(self, args: argparse.Namespace, tap: Tap, *, site_name: str, role: str, video: bool) -> None:
        self.broadcast = broadcast_from_args(args, tap, site_name, video_from_peer=role == "console")
        self.board = dashboard.from_args(args, tap, site_name=site_name, role=role, video=video)

    def close_dashboard(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None

    def close(self, report: dict[str, Any]) -> None:
        self.close_dashboard()
        report["broadcast"] = self.broadcast.close() if self.broadcast is not None else None
