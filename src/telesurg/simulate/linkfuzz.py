"""Link robustness under hostile input: capture real traffic, mutate it, feed it to live cores.

`capture` runs a real client/server pair (TLS, AEAD, probes, a rekey, session events, control) and a
real client/hub pair over `VirtualNetwork` and records every datagram the server side received.
`Fuzzer` then feeds mutations of those datagrams (bit flips, truncations, extensions, splices, exact
replays, handshake frames out of order, foreign or new session ids, junk) into the established
server core and hub, and checks after each one: not authenticated, no message or session event came
out, no exception, and exactly one rejection counter moved, or none for a handshake frame a pending
handshake absorbed. `amplification` and `flood` measure what an unauthenticated sender gets back and
what a spoofed-source handshake flood does to an established session's control.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from telesurg.link import wire
from telesurg.link.core import LinkCore
from telesurg.link.events import MessageClass, MessageReceived, SessionEventReceived
from telesurg.link.hub import LinkHub
from telesurg.link.testing import ClientBank, HubFront, make_hub, make_pair
from telesurg.netem.profiles import parse_profile
from telesurg.netem.virtual import VirtualNetwork

LAN = parse_profile({"name": "fuzz-lan", "path": [{"name": "a", "both": {"delay_ms": 1.0}},
                                                   {"name": "b", "both": {"delay_ms": 2.0}}]})
MUTATIONS = ("bitflip", "truncate", "extend", "splice", "replay", "handshake_reorder", "foreign_session",
             "new_session", "header", "junk")
_NOT_REJECTIONS = frozenset(("rekeys", "control_redundant_copies", "not_established", "video_dropped"))


class _Recorder:
    """Wraps the server-side endpoint: every datagram it receives is kept (in arrival order)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.received: list[bytes] = []

    def receive_datagram(self, data: bytes, path: str, now: float) -> object:
        self.received.append(data)
        return self.inner.receive_datagram(data, path, now)  # type: ignore[attr-defined]

    def datagrams_to_send(self, now: float) -> list[tuple[str, bytes]]:
        return self.inner.datagrams_to_send(now)  # type: ignore[attr-defined]

    def get_timer(self) -> float | None:
        return self.inner.get_timer()  # type: ignore[attr-defined]

    def handle_timer(self, now: float) -> None:
        self.inner.handle_timer(now)  # type: ignore[attr-defined]


def _traffic(net: VirtualNetwork, client: LinkCore, seconds: float) -> None:
    def tick(now: float) -> None:
        if client.established:
            client.send(MessageClass.CONTROL, bytes(80), now)
            if int(now * 1000) % 50 == 0:
                client.send(MessageClass.TELEMETRY, bytes(200), now)
            if int(now * 1000) % 500 == 0:
                client.send_event(b'{"type": "note"}', now)
    net.add_ticker(0.002, tick)
    net.run_until(seconds)


def capture_pair(seconds: float = 3.0, seed: int = 0) -> tuple[LinkCore, LinkCore, list[bytes]]:
    """(client, established server, datagrams the server received); a rekey every second is captured."""
    # the fuzzed session must outlive the run: the fuzzer sends no genuine traffic, and replays never
    # count as hearing the peer (so the default 5 s session timeout would end it mid-run)
    client, server, _, _ = make_pair(seed=seed, rekey_s=1.0, session_timeout_s=1e6)
    recorder = _Recorder(server)
    net = VirtualNetwork(client, recorder, LAN, seed=seed)
    client.connect(0.0)
    _traffic(net, client, seconds)
    assert server.established and client.established
    while server.next_event() is not None:
        pass
    return client, server, recorder.received


def capture_hub(seconds: float = 2.0, seed: int = 0) -> tuple[LinkHub, list[bytes]]:
    """An established hub (one console) and the datagrams it received, without the bank's index byte."""
    hub, clients, _, _ = make_hub(1, seed=seed, rekey_s=1.0, session_timeout_s=1e6)
    recorder = _Recorder(HubFront(hub))
    net = VirtualNetwork(ClientBank(clients), recorder, LAN, seed=seed)
    clients[0].connect(0.0)
    _traffic(net, clients[0], seconds)
    assert hub.established
    while hub.next_event() is not None:
        pass
    return hub, [d[1:] for d in recorder.received]


class Mutator:
    def __init__(self, corpus: list[bytes], seed: int = 0) -> None:
        self.corpus = corpus
        self.rng = random.Random(seed)
        self.handshake = [d for d in corpus if len(d) > wire.OUTER.size and d[1] == wire.Kind.HS_DATA]
        self.client_hellos = [d for d in self.handshake if wire.parse_rel_data(d[wire.OUTER.size:])[0] == 0]
        self.new_sids: list[bytes] = []  # session ids of handshakes this fuzzer started (pending at the target)

    def mutate(self, kind: str) -> bytes:
        rng, pick = self.rng, self.rng.choice
        d = bytearray(pick(self.corpus))
        if kind == "bitflip":
            for _ in range(rng.randint(1, 8)):
                bit = rng.randrange(len(d) * 8)
                d[bit >> 3] ^= 1 << (bit & 7)
        elif kind == "truncate":
            del d[rng.randrange(len(d)):]
        elif kind == "extend":
            d += rng.randbytes(rng.randint(1, 64))
        elif kind == "splice":
            other = pick(self.corpus)
            d = d[:rng.randrange(len(d) + 1)] + other[rng.randrange(len(other) + 1):]
        elif kind == "replay":
            pass  # an authentic datagram, already received once
        elif kind == "handshake_reorder":
            d = bytearray(pick(self.handshake))
            seq = rng.choice((0, 1, 2, rng.randrange(2**32)))
            d[wire.OUTER.size:wire.OUTER.size + 4] = seq.to_bytes(4, "big")
            if self.new_sids and rng.random() < 0.5:  # someone else's TLS bytes into a pending handshake
                d[2:10] = pick(self.new_sids)
        elif kind == "foreign_session":
            d[2:10] = rng.randbytes(8)
        elif kind == "new_session":  # a captured ClientHello under a fresh session id: a new handshake
            d = bytearray(pick(self.client_hellos))
            d[2:10] = rng.randbytes(8)
            self.new_sids = [*self.new_sids[-7:], bytes(d[2:10])]
        elif kind == "header":
            d[rng.randrange(min(len(d), wire.SEALED_HEADER.size))] = rng.randrange(256)
        else:
            d = bytearray(rng.randbytes(rng.randint(0, 1500)))
        return bytes(d)


@dataclass
class FuzzReport:
    fed: Counter[str] = field(default_factory=Counter)
    accepted: int = 0  # returned True (authenticated): must stay 0
    leaked: int = 0  # a message or session event came out: must stay 0
    exceptions: int = 0
    counted: int = 0  # exactly one rejection counter moved
    absorbed: int = 0  # no counter moved: a handshake frame a pending handshake took (or refused by the gate)
    double_counted: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.fed.values())


def _rejections(target: LinkCore | LinkHub) -> Counter[str]:
    counters = target.counters_total()
    for name in _NOT_REJECTIONS:
        counters.pop(name, None)
    return counters


def fuzz(target: LinkCore | LinkHub, corpus: list[bytes], n: int, seed: int = 0, start: float = 10.0,
         step_s: float = 1e-4) -> FuzzReport:
    """Feed `n` mutated datagrams to `target`, `step_s` apart in virtual time, running its timers every
    1000 (so half-open handshakes time out and new ones are admitted); see the module docstring."""
    mutator = Mutator(corpus, seed)
    report = FuzzReport()
    rng = random.Random(seed + 1)
    before = _rejections(target)
    total_before = sum(before.values())
    now = start
    for i in range(n):
        kind = MUTATIONS[i % len(MUTATIONS)]
        data = mutator.mutate(kind)
        report.fed[kind] += 1
        now += step_s
        if i % 1000 == 0 and (t := target.get_timer()) is not None and t <= now:
            target.handle_timer(now)  # once: a second call at the same time would change nothing
            while target.next_event() is not None:
                pass
            target.datagrams_to_send(now)
            total_before = sum(_rejections(target).values())  # timeouts counted there are not rejections
        addr = (f"198.51.100.{rng.randrange(1, 255)}", rng.randrange(1024, 65535))
        try:
            if isinstance(target, LinkHub):
                ok = target.receive_datagram(data, rng.choice("ab"), now, addr)
            else:
                ok = target.receive_datagram(data, rng.choice("ab"), now, addr)
        except Exception:  # noqa: BLE001 - counted: the core must never raise
            report.exceptions += 1
            continue
        report.accepted += bool(ok)
        while (event := target.next_event()) is not None:
            if isinstance(event, MessageReceived | SessionEventReceived):
                report.leaked += 1
        target.datagrams_to_send(now)  # replies to the fuzzer are dropped (see amplification)
        total = sum(_rejections(target).values())
        moved = total - total_before
        total_before = total
        if moved == 1:
            report.counted += 1
        elif moved == 0:
            report.absorbed += 1
        else:
            report.double_counted += 1
    after = _rejections(target)
    report.reasons = Counter({k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)})
    return report


@dataclass
class Amplification:
    bytes_in: int = 0
    bytes_out: int = 0
    datagrams_in: int = 0
    datagrams_out: int = 0
    handshakes_started: int = 0

    @property
    def ratio(self) -> float:
        return self.bytes_out / self.bytes_in if self.bytes_in else 0.0


def amplification(target: LinkCore | LinkHub, corpus: list[bytes], n: int = 2000, seed: int = 0,
                  start: float = 100.0, rate_hz: float = 200.0, linger_s: float = 15.0,
                  kinds: tuple[str, ...] = ("new_session", "handshake_reorder", "junk", "bitflip")) -> Amplification:
    """Bytes the target sends back to an unauthenticated sender, against the bytes that sender sent:
    ClientHello replays under new session ids (from one address, then from many) and handshake junk,
    with the target's timers run until every half-open handshake it started has timed out."""
    mutator = Mutator(corpus, seed)
    out = Amplification()
    now = start
    rng = random.Random(seed)

    def drain(t: float) -> None:
        for _path, data in target.datagrams_to_send(t):
            out.bytes_out += len(data)
            out.datagrams_out += 1
        while target.next_event() is not None:
            pass

    target.datagrams_to_send(now)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        data = mutator.mutate(kind)
        addr = ("203.0.113.7", 4000) if i < n // 2 else (f"203.0.113.{rng.randrange(1, 255)}", 4000)
        now += 1.0 / rate_hz
        while (t := target.get_timer()) is not None and t <= now:
            target.handle_timer(t)
            drain(t)
        half_open = len(getattr(target, "_pending", {})) if isinstance(target, LinkCore) else target.half_open
        target.receive_datagram(data, rng.choice("ab"), now, addr)
        grew = (len(target._pending) if isinstance(target, LinkCore) else target.half_open) > half_open
        out.handshakes_started += grew
        out.bytes_in += len(data)
        out.datagrams_in += 1
        drain(now)
    end = now + linger_s
    while (t := target.get_timer()) is not None and t <= end:
        target.handle_timer(t)
        drain(t)
    return out


@dataclass
class FloodPhase:
    sent: int = 0
    delivered: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    flood_datagrams: int = 0
    wall_s: float = 0.0

    def percentile(self, q: float) -> float:
        values = sorted(self.latencies_ms)
        return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")


def flood(corpus: list[bytes], flood_hz: float = 5000.0, phase_s: float = 2.0, control_hz: float = 1000.0,
          seed: int = 0) -> tuple[FloodPhase, FloodPhase, Counter[str]]:
    """An established console streams CONTROL to a hub over two WAN-like paths (Shanghai–Casablanca
    delays) for `phase_s` undisturbed, then `phase_s` while spoofed sources (random addresses) flood the
    hub with ClientHello replays on both paths at `flood_hz`: (quiet, flooded, hub counters)."""
    import struct
    import time

    from telesurg.simulate.world import SIM_PROFILE

    hub, clients, _, _ = make_hub(1, seed=seed)
    net = VirtualNetwork(ClientBank(clients), HubFront(hub), SIM_PROFILE, seed=seed)
    client = clients[0]
    client.connect(0.0)
    net.run_until(1.0)
    assert hub.established
    mutator, rng = Mutator(corpus, seed), random.Random(seed)
    phases = (FloodPhase(), FloodPhase())
    stamp = struct.Struct("!d")
    current = [0]

    def send(now: float) -> None:
        if current[0] < 2 and client.send(MessageClass.CONTROL, stamp.pack(now) + bytes(72), now) is not None:
            phases[0 if now < 1.0 + phase_s else 1].sent += 1

    def receive(now: float) -> None:
        while (event := hub.next_event()) is not None:
            if isinstance(event, MessageReceived) and event.msg_class is MessageClass.CONTROL:
                phase = phases[0] if stamp.unpack_from(event.payload)[0] < 1.0 + phase_s else phases[1]
                phase.delivered += 1
                phase.latencies_ms.append(1000.0 * (now - stamp.unpack_from(event.payload)[0]))

    def spoof(now: float) -> None:
        if current[0] == 1:  # spoofed: the hub's replies go to addresses nobody listens on
            data = mutator.mutate("new_session")
            hub.receive_datagram(data, rng.choice("ab"), now, (f"198.51.{rng.randrange(256)}.{rng.randrange(2, 255)}",
                                                              rng.randrange(1024, 65535)))
            phases[1].flood_datagrams += 1

    net.add_ticker(1.0 / control_hz, send)
    net.add_ticker(0.0005, receive)
    net.add_ticker(1.0 / flood_hz, spoof)
    for index in (0, 1):
        current[0] = index
        t0 = time.perf_counter()
        net.run_until(1.0 + phase_s * (index + 1))
        phases[index].wall_s = time.perf_counter() - t0
    current[0] = 2
    net.run_for(1.0)  # the last commands land
    return phases[0], phases[1], hub.counters_total()
