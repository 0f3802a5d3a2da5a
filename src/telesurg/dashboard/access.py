"""Who may read the dashboard: the bind address, the allowed client networks and Host/Origin checks.

Why: the dashboard is read-only but shows the operating room (video, arm states, network figures),
so it must not leak beyond the people meant to see it. Three checks, all sans-I/O (plain functions):
- the client's source address must be in the allowed networks: loopback only when the server binds
  loopback (the default, 127.0.0.1); loopback and the private/link-local ranges (a hospital LAN,
  never a public address) when it binds another address, unless `--dashboard-allow` says otherwise;
- the Host header must name this machine (an IP literal, localhost, its host name or an allowed name),
  so a web page elsewhere cannot reach a loopback dashboard through DNS rebinding;
- a WebSocket's Origin, when a browser sends one, must be the page's own host (no cross-site reads).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = ("127.0.0.0/8", "::1/128")
PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fc00::/7", "fe80::/10")
DEFAULT_HOST = "127.0.0.1"


class BindError(ValueError):
    """A `--dashboard` / `--dashboard-allow` value that cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Bind:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback

    @property
    def url_host(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "localhost") else "::1" if self.host == "::" else self.host
        return f"[{host}]" if ":" in host else host


def parse_bind(text: str) -> Bind:
    """`PORT`, `:PORT`, `HOST:PORT` or `[IPV6]:PORT`; the host defaults to 127.0.0.1 (this machine only)."""
    value = text.strip()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise BindError(f"--dashboard {text!r}: an IPv6 address is written [ADDR]:PORT, e.g. [::1]:8080")
    elif ":" in value:
        host, _, port = value.rpartition(":")
    else:
        host, port = "", value
    host = host or DEFAULT_HOST
    try:
        number = int(port)
    except ValueError:
        raise BindError(f"--dashboard {text!r}: the port must be a number, e.g. :8080 or 0.0.0.0:8080") from None
    if not 0 <= number <= 65535:
        raise BindError(f"--dashboard {text!r}: the port must be within 0-65535 (0: any free port)")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise BindError(f"--dashboard {text!r}: the host must be an IP address of this machine "
                            f"(or localhost), e.g. 127.0.0.1:8080 or 0.0.0.0:8080") from None
    return Bind(host, number)


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise BindError(f"--dashboard-allow {value!r}: not a network; write e.g. 10.20.0.0/16 or "
                            f"192.168.1.7/32") from None
    return tuple(networks)


def default_networks(bind: Bind) -> tuple[IPNetwork, ...]:
    return parse_networks(LOOPBACK if bind.loopback else (*LOOPBACK, *PRIVATE))


@dataclass(frozen=True)
class AccessPolicy:
    """The three checks above; `refusal(...)` returns None (allowed) or the reason for a 403."""

    networks: tuple[IPNetwork, ...]
    hosts: frozenset[str] = field(default_factory=frozenset)  # extra names the Host header may carry

    @classmethod
    def for_bind(cls, bind: Bind, allow: Iterable[str] | None = None, hosts: Iterable[str] = ()) -> AccessPolicy:
        networks = default_networks(bind) if allow is None else parse_networks(allow)
        names = {"localhost", socket.gethostname().lower(), socket.getfqdn().lower(), *(h.lower() for h in hosts)}
        return cls(networks, frozenset(names))

    def client_allowed(self, remote: str | None) -> bool:
        if not remote:
            return False
        try:
            address = ipaddress.ip_address(remote.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def host_allowed(self, host_header: str | None) -> bool:
        if not host_header:
            return False
        host = urlsplit(f"//{host_header}").hostname
        if host is None:
            return False
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            return host.lower() in self.hosts

    def refusal(self, remote: str | None, host_header: str | None, origin: str | None = None) -> str | None:
        if not self.client_allowed(remote):
            return f"client address {remote} is outside the dashboard's allowed networks"
        if not self.host_allowed(host_header):
            return f"Host {host_header!r} does not name this machine"
        if origin is not None and origin != "null" and urlsplit(origin).netloc.lower() != (host_header or "").lower():
            return f"Origin {origin!r} is not this dashboard"
        return None
