"""Helpers for tests, benchmarks and simulations: a matched client/server pair of cores, the same pair
on real loopback sockets, and a clock-skew wrapper."""

from __future__ import annotations

import asyncio
from typing import Any

from telesurg.link.core import LinkCore
from telesurg.link.driver import LinkEndpoint
from telesurg.link.keys import Identity, make_identity


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
        self.inner.handle_timer(now + self.offset)
