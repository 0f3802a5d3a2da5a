"""`telesurg` command line: one subcommand per application, each living in its own module.

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int`; modules are imported
only when their subcommand runs, so `telesurg netem` does not pay for MuJoCo or PyAV.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "keys": ("telesurg.link.keys_cli", "create a site's key pair and certificate"),
    "init": ("telesurg.apps.init", "write a matching robot/console site pair for this machine"),
    "robot": ("telesurg.apps.robot_cli", "run the patient-side robot site"),
    "console": ("telesurg.apps.console_cli", "run the surgeon console site"),
    "netem": ("telesurg.netem.cli", "run user-space WAN emulator relays for a profile"),
    "demo": ("telesurg.apps.demo", "robot + emulated WAN + scripted surgeon on one machine"),
    "qualify": ("telesurg.qualify.cli", "pre-operative test session with a go/no-go report"),
    "audit": ("telesurg.record.audit_cli", "verify a site's tamper-evident audit log"),
    "simulate": ("telesurg.simulate.cli", "sweep seeded fault scenarios through the whole system in virtual time"),
    "observe": ("telesurg.broadcast.observe_cli", "watch a site's live broadcast (picture, arms, link, alarms)"),
    "broadcast-router": ("telesurg.broadcast.router_cli", "run a Zenoh router for the observers' broadcast"),
    "record": ("telesurg.record.cli", "inspect, merge and export black-box MCAP recordings"),
    "replay": ("telesurg.record.replay", "replay a robot recording through a fresh safety supervisor"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="telesurg", description="Open long-distance robotic telesurgery.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name = argv[0]
    module = importlib.import_module(SUBCOMMANDS[name][0])
    sub_parser = argparse.ArgumentParser(prog=f"telesurg {name}", description=SUBCOMMANDS[name][1])
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
