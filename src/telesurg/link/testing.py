"""Helpers for tests, benchmarks and simulations: a matched client/server pair of cores, the same pair
on real loopback sockets, a hub with several clients (and the adapters that put them on one
`VirtualNetwork`), and a clock-skew wrapper."""

from __future__ import annotations

import asyncio
from typing import Any

from telesurg.link.core import LinkCore
from telesurg.link.driver import LinkEndpoint
from telesurg.link.hub import LinkHub
from telesurg.link.keys import Identity, make_identity
from telesurg.link.session import Addr


def make_pair(path_names: tuple[str, ...] = ("a", "b"), *, client_name: str = "console",
              server_name: str = "robot", seed: int = 0, client_tuning: dict[str, Any] | None = None,
              **tuning: Any) -> tuple[LinkCore, LinkCore, Identity, Identity]:
    """(client, server, client identity, server identity), each trusting only the other."""
    client_id, server_id = make_identity(client_name), make_identity(server_name)
    client = LinkCore.in_memory(client_id, [server_id.cert_pem], is_client=True, path_names=path_names,
                                seed=seed, **{**tuning, **(client_tuning or {})})
    server = LinkCore.in_memory(server_id, [client_id.cert_pem], is_client=False, path_names=path_names,
                                seed=seed + 1, **tuning)
    return client, server, client_id, server_id


def make_client(identity: Identity, server: Identity, path_names: tuple[str, ...] = ("a", "b"), *, seed: int = 0,
                **tuning: Any) -> LinkCore:
    """A client core for `identity` that trusts only `server` (e.g. a console restarting)."""
    return LinkCore.in_memory(identity, [server.cert_pem], is_client=True, path_names=path_names, seed=seed,
                              **tuning)


def make_hub(n_clients: int = 3, *, names: list[str] | None = None, path_names: tuple[str, ...] = ("a", "b"),
             server_name: str = "robot", seed: int = 0, client_tuning: dict[str, Any] | None = None,
             **tuning: Any) -> tuple[LinkHub, list[LinkCore], list[Identity], Identity]:
    """(hub, clients, client identities, hub identity): each client its own identity, all of them
    on the hub's allowlist, each trusting only the hub."""
    names = names or [f"console{i}" for i in range(n_clients)]
    if len(names) != n_clients:
        raise ValueError(f"names: expected {n_clients}, got {len(names)}")
    client_ids, server_id = [make_identity(name) for name in names], make_identity(server_name)
    hub = LinkHub.in_memory(server_id, [c.cert_pem for c in client_ids], path_names=path_names, seed=seed,
                            **tuning)
    clients = [make_client(c, server_id, path_names, seed=seed + 1 + i, **{**tuning, **(client_tuning or {})})
               for i, c in enumerate(client_ids)]
    return hub, clients, client_ids, server_id


class ClientBank:
    """Several client cores as the one console-side endpoint of a `VirtualNetwork`. Each datagram
    carries its client's index in a leading byte, which `HubFront` turns into a source address of its
    own, so the hub sees N consoles at N addresses; `cut` silences one client on one path."""

    def __init__(self, clients: list[LinkCore]) -> None:
        self.clients = list(clients)
        self.cut_paths: set[tuple[int, str]] = set()

    def add(self, client: LinkCore) -> int:
        self.clients.append(client)
        return len(self.clients) - 1

    def cut(self, index: int, path: str, down: bool = True) -> None:
        (self.cut_paths.add if down else self.cut_paths.discard)((index, path))

    def datagrams_to_send(self, now: float) -> list[tuple[str, bytes]]:
        return [(path, bytes([i]) + data) for i, client in enumerate(self.clients)
                for path, data in client.datagrams_to_send(now) if (i, path) not in self.cut_paths]

    def receive_datagram(self, data: bytes, path: str, now: float) -> bool:
        if not data or data[0] >= len(self.clients) or (data[0], path) in self.cut_paths:
            return False
        return self.clients[data[0]].receive_datagram(data[1:], path, now)

    def get_timer(self) -> float | None:
        return min((t for c in self.clients if (t := c.get_timer()) is not None), default=None)

    def handle_timer(self, now: float) -> None:
        for client in self.clients:
            t = client.get_timer()
            if t is not None and t <= now:
                client.handle_timer(now)


class HubFront:
    """The hub as the robot-side endpoint of a `VirtualNetwork` (see `ClientBank`): client i is at
    10.0.0.(i+1), and the hub's replies go to the client whose address the hub learnt."""

    def __init__(self, hub: LinkHub) -> None:
        self.hub = hub
        self.unaddressed = 0  # replies on a path the client has not been heard on yet (no address)

    @staticmethod
    def address(index: int) -> Addr:
        return f"10.0.0.{index + 1}", 40000

    def receive_datagram(self, data: bytes, path: str, now: float) -> bool:
        return bool(data) and self.hub.receive_datagram(data[1:], path, now, self.address(data[0]))

    def datagrams_to_send(self, now: float) -> list[tuple[str, bytes]]:
        out = []
        for path, data, addr in self.hub.datagrams_to_send_addressed(now):
            if addr is None:
                self.unaddressed += 1
                continue
            out.append((path, bytes([int(addr[0].rsplit(".", 1)[1]) - 1]) + data))
        return out

    def get_timer(self) -> float | None:
        return self.hub.get_timer()

    def handle_timer(self, now: float) -> None:
        self.hub.handle_timer(now)


async def start_loopback_pair(client: LinkCore, server: LinkCore, *, client_callbacks: dict[str, Any] | None = None,
                              server_callbacks: dict[str, Any] | None = None,
                              timeout: float = 5.0) -> tuple[LinkEndpoint, LinkEndpoint]:
    """Both cores on real UDP sockets on 127.0.0.1 (an ephemeral port per path), the client dialling the
    server; returns (client, server) endpoints once both sides report the session established.
    The callbacks are `LinkEndpoint` keyword arguments (`on_message`, `on_event`)."""
    local = {path: ("127.0.0.1", 0) for path in server.path_names}
    server_end = LinkEndpoint(server, local, dict.fromkeys(server.path_names), **(server_callbacks or {}))
    await server_end.start()
    remotes = {path: server_end.local_address(path) for path in server.path_names}
    client_end = LinkEndpoint(client, local, remotes, **(client_callbacks or {}))
    await client_end.start()
    await asyncio.gather(client_end.wait_established(timeout), server_end.wait_established(timeout))
    return client_end, server_end


class SkewedClock:
    """Wrap a sans-I/O endpoint so it lives `offset` seconds ahead of the simulation clock."""

    def __init__(self, inner: LinkCore, offset: float) -> None:
        self.inner = inner
        self.offset = offset

    def datagrams_to_send(self, now: float) -> list[tuple[str, bytes]]:
        return self.inner.datagrams_to_send(now + self.offset)

    def receive_datagram(self, data: bytes, path: str, now: float) -> bool:
        return self.inner.receive_datagram(data, path, now + self.offset)

    def get_timer(self) -> float | None:
        t = self.inner.get_timer()
        return None if t is None else t - self.offset

    def handle_timer(self, now: float) -> None:
        t, due = now + self.offset, self.inner.get_timer()
        if due is not None and 0.0 < due - t < 1e-9:  # (due - offset) + offset may round below due
            t = due
        self.inner.handle_timer(t)
