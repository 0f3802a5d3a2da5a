"""Admission control before any TLS work: source CIDR filter, per-source handshake rate (token bucket)
and a bound on half-open handshakes, so an unauthenticated sender cannot make the robot burn CPU.
"""

from __future__ import annotations

import ipaddress

from telesurg.link.config import LinkTuning

_MAX_SOURCES = 4096


class HandshakeGate:
    def __init__(self, tuning: LinkTuning) -> None:
        self._networks = [ipaddress.ip_network(c, strict=False) for c in tuning.allowed_cidrs]
        self._rate = tuning.handshake_rate_per_s
        self._burst = float(tuning.handshake_burst)
        self._max_half_open = tuning.max_half_open
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, last refill time)

    def source_allowed(self, addr: tuple[str, int] | None) -> bool:
        """CIDR check; with a filter configured, an unknown source address is refused."""
        if not self._networks:
            return True
        if addr is None:
            return False
        try:
            ip = ipaddress.ip_address(addr[0])
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    def admit(self, source: str, half_open: int, now: float) -> str | None:
        """None if a new handshake from source may start now, else the refusal reason."""
        tokens, last = self._buckets.get(source, (self._burst, now))
        # max(0, ...): a robot clock stepped back 10 s would otherwise owe 10 s of tokens, refusing a
        # console that reconnects meanwhile for that long
        tokens = min(self._burst, tokens + max(0.0, now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[source] = (tokens, now)
            return "rate_limited"
        if half_open >= self._max_half_open:
            return "half_open_full"
        if len(self._buckets) >= _MAX_SOURCES and source not in self._buckets:
            self._buckets.clear()  # bounded memory; forgetting only makes the limiter more lenient
        self._buckets[source] = (tokens - 1.0, now)
        return None
