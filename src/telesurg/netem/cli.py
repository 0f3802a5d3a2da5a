"""`telesurg netem`: run UDP relays that emulate a WAN profile's paths on this machine.

Example: telesurg netem --profile shanghai-casablanca --path a=9001:127.0.0.1:9101 --path b=9002:9102
Without --path, path number i (from 0, in profile order) listens on 127.0.0.1:BASE+i and forwards to
127.0.0.1:BASE+100+i (BASE = --base-port).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from telesurg.netem.errors import NetemConfigError
from telesurg.netem.profiles import Profile, list_profiles, load_profile
from telesurg.netem.relay import Address, run_profile_relays
from telesurg.netem.scenario import load_scenario

DEFAULT_HOST = "127.0.0.1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="shanghai-casablanca",
                        help=f"shipped profile ({', '.join(list_profiles())}) or a profile .toml file")
    parser.add_argument("--path", action="append", default=[], metavar="NAME=LISTEN:TARGET",
                        help="relay for one path; LISTEN and TARGET are PORT or HOST:PORT (IPv4). Repeatable")
    parser.add_argument("--base-port", type=int, default=47000,
                        help="ports used when no --path is given (default 47000: listen 47000+i → 47100+i)")
    parser.add_argument("--scenario", help="scenario .toml file (or shipped name) of timed path events")
    parser.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same impairments")
    parser.add_argument("--stats-interval", type=float, default=5.0, help="seconds between counter lines")
    parser.add_argument("--list", action="store_true", help="list shipped profiles and exit")


def parse_path_spec(spec: str) -> tuple[str, tuple[Address, Address]]:
    """`a=9001:127.0.0.1:9101` → ("a", (("127.0.0.1", 9001), ("127.0.0.1", 9101)))."""
    name, sep, rest = spec.partition("=")
    parts = rest.split(":")
    if not sep or not name or len(parts) not in (2, 3, 4):
        raise NetemConfigError(f"--path {spec!r}: write NAME=LISTEN:TARGET, e.g. a=9001:9101 or "
                               "a=127.0.0.1:9001:10.0.0.2:9101")
    if len(parts) == 2:
        listen, target = [DEFAULT_HOST, parts[0]], [DEFAULT_HOST, parts[1]]
    elif len(parts) == 4:
        listen, target = parts[:2], parts[2:]
    elif parts[1].isdigit():  # HOST:PORT:PORT
        listen, target = parts[:2], [DEFAULT_HOST, parts[2]]
    else:  # PORT:HOST:PORT
        listen, target = [DEFAULT_HOST, parts[0]], parts[1:]
    return name, (_address(spec, listen), _address(spec, target))


def _address(spec: str, host_port: list[str]) -> Address:
    host, port = host_port
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise NetemConfigError(f"--path {spec!r}: port {port!r} must be a number 0..65535")
    return (host or DEFAULT_HOST, int(port))


def build_mapping(profile: Profile, specs: list[str], base_port: int) -> dict[str, tuple[Address, Address]]:
    if not specs:
        return {name: ((DEFAULT_HOST, base_port + i), (DEFAULT_HOST, base_port + 100 + i))
                for i, name in enumerate(profile.path_names)}
    mapping = dict(parse_path_spec(spec) for spec in specs)
    unknown = sorted(set(mapping) - set(profile.path_names))
    if unknown:
        raise NetemConfigError(f"--path names {unknown} are not in profile {profile.name!r}; "
                               f"use {profile.path_names}")
    return mapping


def format_stats(stats: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, s in stats.items():
        fwd, rev, relay = s["forward"], s["reverse"], s["relay"]
        lines.append(
            f"path {name}{' DOWN' if s['down'] else ''}: "
            f"fwd {fwd['submitted']}→{fwd['delivered']} (loss {fwd['dropped_loss']}, down {fwd['dropped_down']}, "
            f"queue {fwd['dropped_queue']}) | rev {rev['submitted']}→{rev['delivered']} (loss {rev['dropped_loss']}, "
            f"down {rev['dropped_down']}, queue {rev['dropped_queue']}) | send errors {relay['send_errors']}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name in list_profiles():
            print(f"{name}: {load_profile(name).description}")
        return 0
    try:
        profile = load_profile(args.profile)
        mapping = build_mapping(profile, args.path, args.base_port)
        scenario = load_scenario(args.scenario) if args.scenario else None
        if scenario is not None:
            scenario.check_paths(profile.path_names)
    except NetemConfigError as exc:
        print(f"telesurg netem: {exc}", file=sys.stderr)
        return 2

    def started(relays: dict[str, Any]) -> None:
        for name, relay in relays.items():
            (lh, lp), (th, tp) = relay.listen_address, mapping[name][1]
            print(f"path {name}: listening on {lh}:{lp} → {th}:{tp} (profile {profile.name})", flush=True)

    def show(stats: dict[str, dict[str, Any]]) -> None:
        print(format_stats(stats), flush=True)

    coro = run_profile_relays(profile, mapping, scenario=scenario, duration=args.duration, seed=args.seed,
                              on_stats=show, stats_interval=args.stats_interval,
                              on_started=started)
    try:
        final = _run_fast(coro)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"telesurg netem: cannot open a relay socket: {exc}", file=sys.stderr)
        return 1
    show(final)
    return 0


def _run_fast(coro: Any) -> Any:
    """Run on uvloop when installed (lower per-packet overhead), else the default loop."""
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)
