"""Zenoh session configuration for the router, the site publishers and the observers.

Everything starts from an optional Zenoh JSON5 config file (`--zenoh-config F`): that is where
access control lives, in Zenoh's own terms (see README "Observers and live broadcast"):
- TLS: `listen`/`connect` endpoints `tls/HOST:7447` with `transport/link/tls` (root CA, the
  router's certificate and key; `enable_mtls: true` makes every publisher/observer show a
  certificate too);
- user/password: `transport/auth/usrpwd` (`user`, `password` on a client; `dictionary_file` on the
  router, one `user:password` per line);
- ACL: `access_control` on the router (e.g. observers may only `declare_subscriber` on
  `telesurg/**`; only the sites' certificates / users may `put`).
The command line then sets the mode and the endpoints on top of the file, and turns multicast
scouting off (a broadcast goes where it is told to, never to whatever answers on the LAN).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import zenoh

Mode = Literal["router", "client", "peer"]
_ENDPOINT = re.compile(r"^(tcp|tls|udp|quic|ws|unixsock-stream)/.+")


class BroadcastConfigError(ValueError):
    """A bad endpoint or config file: the message is the one line the user sees."""


def check_endpoint(endpoint: str, flag: str) -> str:
    if not _ENDPOINT.match(endpoint):
        raise BroadcastConfigError(f"{flag} {endpoint!r}: give a Zenoh endpoint such as tcp/127.0.0.1:7447 "
                                   "or tls/router.example:7447")
    return endpoint


def make_config(mode: Mode, *, connect: Sequence[str] = (), listen: Sequence[str] = (),
                config_file: Path | None = None, retry_forever: bool = False) -> zenoh.Config:
    """A Zenoh config: the file's settings (if any), then mode and endpoints from the command line.

    `retry_forever`: a client that keeps trying to reach its router instead of failing at open
    (the site publisher: a broadcast that is down must never stop or slow the site)."""
    if config_file is not None:
        try:
            config = zenoh.Config.from_file(str(config_file))
        except (zenoh.ZError, OSError, ValueError) as exc:
            raise BroadcastConfigError(f"--zenoh-config {config_file}: {one_line(exc)}") from None
    else:
        config = zenoh.Config()
    try:
        config.insert_json5("mode", json.dumps(mode))
        if connect:
            config.insert_json5("connect/endpoints", json.dumps([check_endpoint(e, "--connect") for e in connect]))
        if listen:
            config.insert_json5("listen/endpoints", json.dumps([check_endpoint(e, "--listen") for e in listen]))
        config.insert_json5("scouting/multicast/enabled", "false")
        if retry_forever:
            config.insert_json5("connect/timeout_ms", json.dumps({"router": -1, "peer": -1, "client": -1}))
            config.insert_json5("connect/exit_on_failure", json.dumps({"router": False, "peer": False, "client": False}))
    except zenoh.ZError as exc:
        raise BroadcastConfigError(f"zenoh config: {one_line(exc)}") from None
    return config


def open_session(config: zenoh.Config, what: str) -> zenoh.Session:
    """`zenoh.open` with its error turned into one line naming what failed to start."""
    try:
        return zenoh.open(config)
    except zenoh.ZError as exc:
        hint = (" (router not running there, wrong address, or credentials refused: see --zenoh-config)"
                if "Unable to connect" in str(exc) else "")
        raise BroadcastConfigError(f"{what}: {one_line(exc)}{hint}") from None


def one_line(exc: BaseException) -> str:
    """Zenoh's error text without the Rust source location."""
    text = " ".join(str(exc).split())
    return re.sub(r"\s+at /\S+\.rs:\d+\.?", "", text).strip() or type(exc).__name__


def quiet_logs(level: str = "error") -> None:
    """Zenoh logs to stderr at INFO unless told otherwise; RUST_LOG still wins. Clients use "off": a
    refused connection is already the one-line error the user sees."""
    zenoh.init_log_from_env_or(level)
