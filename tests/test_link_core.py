"""Two real LinkCores (real TLS, real AEAD) joined through the netem core under a virtual clock."""

from __future__ import annotations

import random

import pytest

from telesurg.link.core import LinkCore
from telesurg.link.events import (
    HandshakeComplete,
    MessageClass,
    MessageReceived,
    PathStateChanged,
    PeerRefused,
    SessionClosed,
    SessionEventReceived,
)
from telesurg.link.keys import make_identity
from telesurg.link.paths import PathState
from telesurg.link.testing import SkewedClock, make_pair
from telesurg.netem.profiles import parse_profile
from telesurg.netem.virtual import VirtualNetwork


def profile(a: dict | None = None, b: dict | None = None) -> object:
    return parse_profile({"name": "test", "path": [{"name": "a", "both": a or {}}, {"name": "b", "both": b or {}}]})


WAN = profile({"delay_ms": 52.5, "jitter_ms": 0.5}, {"delay_ms": 82.5, "jitter_ms": 3.0})


class Harness:
    """Runs the network and collects every event of both sides, with control traffic at `rate_hz`."""

    def __init__(self, client: object, server: LinkCore, prof: object, seed: int = 1) -> None:
        self.client, self.server = client, server
        self.net = VirtualNetwork(client, server, prof, seed=seed)
        self.events: dict[str, list] = {"client": [], "server": []}
        self.sent: list[int] = []
        self.sending = False

    def core(self, side: str) -> LinkCore:
        return self.client if side == "client" else self.server

    def collect(self, now: float) -> None:
        for side in ("client", "server"):
            core = self.core(side)
            core = getattr(core, "inner", core)
            while (event := core.next_event()) is not None:
                self.events[side].append(event)

    def start_control(self, rate_hz: float = 1000.0) -> None:
        self.sending = True

        def tick(now: float) -> None:
            if self.sending:
                seq = self.client.send(MessageClass.CONTROL, b"c" * 80, now)
                if seq is not None:
                    self.sent.append(seq)
        self.net.add_ticker(1.0 / rate_hz, tick)

    def run_until(self, t: float) -> None:
        self.net.run_until(t, self.collect)
        self.collect(t)

    def of(self, side: str, kind: type) -> list:
        return [e for e in self.events[side] if isinstance(e, kind)]

    def received_seqs(self, side: str = "server", msg_class: MessageClass = MessageClass.CONTROL) -> list[int]:
        return [e.seq for e in self.of(side, MessageReceived) if e.msg_class == msg_class]


def established_harness(prof: object = WAN, **tuning: object) -> Harness:
    client, server, _, _ = make_pair(**tuning)
    h = Harness(client, server, prof)
    client.connect(0.0)
    h.run_until(1.0)
    assert client.established and server.established
    return h


def test_handshake_delivers_peer_identity_and_paths_come_up() -> None:
    client, server, client_id, server_id = make_pair()
    h = Harness(client, server, WAN)
    client.connect(0.0)
    h.run_until(1.0)
    (c_done,) = h.of("client", HandshakeComplete)
    (s_done,) = h.of("server", HandshakeComplete)
    assert (c_done.peer_name, c_done.peer_fingerprint) == ("robot", server_id.fingerprint)
    assert (s_done.peer_name, s_done.peer_fingerprint) == ("console", client_id.fingerprint)
    assert c_done.at < 0.3  # TLS 1.3: one round trip for the handshake, half a round trip more for keys
    assert client.session_id == server.session_id
    assert {n: s.state for n, s in client.path_stats().items()} == {"a": PathState.UP, "b": PathState.UP}
    stats = client.path_stats()
    assert 100 < stats["a"].rtt_p50_ms < 112 and 160 < stats["b"].rtt_p50_ms < 180
    assert stats["a"].loss_pct == 0.0


def test_one_path_cut_at_random_moments_loses_no_control_message() -> None:
    h = established_harness()
    h.start_control(1000.0)
    rng = random.Random(7)
    t = 1.2
    cuts = 0
    while t < 9.0:  # alternate cuts: at every moment at least one path is up
        path = rng.choice("ab")
        down_for = rng.uniform(0.1, 1.2)
        h.run_until(t)
        h.net.path_down(path)
        h.run_until(t + down_for)
        h.net.path_up(path)
        cuts += 1
        t += down_for + rng.uniform(0.05, 0.6)
    h.sending = False
    h.run_until(t + 1.0)
    got = h.received_seqs()
    assert cuts >= 8 and len(h.sent) > 7000
    assert sorted(got) == h.sent, f"lost {len(set(h.sent) - set(got))} of {len(h.sent)}"
    assert len(got) == len(set(got))  # later copies never handed up
    assert h.server.counters["duplicates"] > 0
    downs = [e for e in h.of("client", PathStateChanged) if e.new is PathState.DOWN]
    assert downs, "long cuts must be reported as DOWN"


def test_both_paths_cut_reported_down_then_recover_without_reconnect() -> None:
    h = established_harness()
    h.start_control(1000.0)
    session = h.client.session_id
    h.run_until(3.0)
    h.net.path_down("a")
    h.net.path_down("b")
    h.run_until(5.0)
    for side in ("client", "server"):
        downs = {e.path: e.at for e in h.of(side, PathStateChanged) if e.new is PathState.DOWN}
        assert set(downs) == {"a", "b"}
        # silence threshold (0.25 s) + at most one-way delay of what was in flight + timer granularity
        assert all(3.0 < at <= 3.0 + 0.25 + 0.09 + 0.06 for at in downs.values()), downs
        assert all(s.state is PathState.DOWN for s in h.core(side).path_stats().values())
    h.net.path_up("a")
    h.net.path_up("b")
    before = len(h.received_seqs())
    h.run_until(7.0)
    for side in ("client", "server"):
        ups = {e.path: e.at for e in h.of(side, PathStateChanged) if e.new is PathState.UP and e.at > 5.0}
        assert set(ups) == {"a", "b"} and all(at < 5.6 for at in ups.values()), ups
    assert len(h.received_seqs()) > before + 1500  # traffic flows again ...
    assert h.client.session_id == session  # ... in the same session
    assert len(h.of("client", HandshakeComplete)) == 1 and not h.of("client", SessionClosed)


def test_rekey_under_traffic_loses_nothing() -> None:
    h = established_harness(rekey_s=1.0, epoch_grace_s=0.5)
    h.start_control(1000.0)
    h.run_until(7.0)
    h.sending = False
    h.run_until(8.0)
    assert h.server.counters["rekeys"] >= 5
    assert h.client._session.epochs.send_epoch >= 6
    assert sorted(h.received_seqs()) == h.sent and len(h.sent) > 5500
    for core in (h.client, h.server):
        assert core.counters["epoch"] == 0 and core.counters["auth"] == 0
        assert len(core._session.epochs.recv_epochs) <= 3  # old epochs are forgotten after the grace


def _control_datagram(h: Harness, payload: bytes) -> tuple[bytes, bytes]:
    now = h.net.now
    h.client.send(MessageClass.CONTROL, payload, now)
    datagrams = [d for p, d in h.client.datagrams_to_send(now)]
    return datagrams[0], datagrams[1]  # copies for path a and path b


def test_forged_replayed_truncated_and_flipped_datagrams_are_dropped_and_counted() -> None:
    h = established_harness(profile())
    server = h.server
    now = h.net.now
    copy_a, copy_b = _control_datagram(h, b"real command")
    assert server.receive_datagram(copy_a, "a", now) is True
    assert server.receive_datagram(copy_b, "b", now) is True  # authentic, but a later copy
    assert server.counters["duplicates"] == 1
    h.collect(now)
    assert h.received_seqs() == [0]
    server.counters.clear()
    victim, _ = _control_datagram(h, b"second command")
    bad = {
        "replay": [copy_a, copy_b, copy_a],
        "malformed": [b"", b"\x01", victim[:21], victim[:37]],
        "version": [bytes([9]) + victim[1:]],
        "auth": [victim[:-1], victim[:30] + b"\x00" * 40, victim[:22] + bytes(len(victim) - 22)],
        "session": [victim[:2] + bytes(8) + victim[10:]],
        "epoch": [victim[:10] + (99).to_bytes(4, "big") + victim[14:]],
    }
    flipped = [victim[:i] + bytes([victim[i] ^ (1 << (i % 8))]) + victim[i + 1:] for i in range(len(victim))]
    for datagrams in bad.values():
        for datagram in datagrams:
            assert server.receive_datagram(datagram, "a", now) is False
    for datagram in flipped:
        assert server.receive_datagram(datagram, "b", now) is False
    h.collect(now)
    assert h.received_seqs() == [0], "nothing forged may be delivered"
    for reason, datagrams in bad.items():
        assert server.counters[reason] >= len(datagrams), (reason, server.counters)
    assert sum(server.counters.values()) == sum(map(len, bad.values())) + len(flipped)
    assert server.counters["internal_error"] == 0
    assert server.receive_datagram(victim, "a", now) is True  # the genuine one still works afterwards
    h.collect(now)
    assert h.received_seqs() == [0, 1]


def test_late_copy_is_duplicate_but_unseen_older_seq_is_delivered() -> None:
    h = established_harness(profile())
    now = h.net.now
    copies = [_control_datagram(h, bytes([i])) for i in range(3)]
    for _, on_b in reversed(copies):
        assert h.server.receive_datagram(on_b, "b", now)
    for on_a, _ in copies:
        assert h.server.receive_datagram(on_a, "a", now)
    h.collect(now)
    assert h.received_seqs() == [2, 1, 0]  # no reorder buffer; staleness is the supervisor's call
    assert h.server.counters["duplicates"] == 3


def test_peer_not_on_allowlist_is_refused_and_counted() -> None:
    console, robot, mallory = make_identity("console"), make_identity("robot"), make_identity("mallory")
    server = LinkCore.in_memory(robot, [console.cert_pem], is_client=False)
    intruder = LinkCore.in_memory(mallory, [robot.cert_pem], is_client=True)
    h = Harness(intruder, server, WAN)
    intruder.connect(0.0)
    h.run_until(3.0)
    refused = h.of("server", PeerRefused)
    assert refused and refused[0].reason == "not_allowed"
    assert server.counters["not_allowed"] >= 1
    assert not server.established and not intruder.established
    assert not h.of("server", HandshakeComplete) and not h.of("client", HandshakeComplete)
    assert h.of("client", SessionClosed)  # the intruder learns only that the handshake failed
    assert intruder.send(MessageClass.CONTROL, b"move", h.net.now) is None


def test_fingerprint_pin_refuses_an_allowlisted_but_unpinned_certificate() -> None:
    console, robot, other = make_identity("console"), make_identity("robot"), make_identity("other")
    server = LinkCore.in_memory(robot, [console.cert_pem, other.cert_pem], is_client=False,
                                allowed_fingerprints=[console.fingerprint])
    client = LinkCore.in_memory(other, [robot.cert_pem], is_client=True)
    h = Harness(client, server, WAN)
    client.connect(0.0)
    h.run_until(2.0)
    assert [e.reason for e in h.of("server", PeerRefused)] == ["fingerprint"]
    assert not server.established and not client.established


def test_cidr_filter_rate_limit_and_half_open_bound() -> None:
    robot, console = make_identity("robot"), make_identity("console")
    server = LinkCore.in_memory(robot, [console.cert_pem], is_client=False, allowed_cidrs=["10.0.0.0/8"],
                                handshake_burst=2, handshake_rate_per_s=1.0, max_half_open=3)

    def hello() -> bytes:
        client = LinkCore.in_memory(console, [robot.cert_pem], is_client=True)
        client.connect(0.0)
        return client.datagrams_to_send(0.0)[0][1]

    server.receive_datagram(hello(), "a", 0.0, ("192.168.1.5", 4000))
    assert server.counters["cidr"] == 1
    for _ in range(4):
        server.receive_datagram(hello(), "a", 0.0, ("10.0.0.1", 4000))
    assert server.counters["rate_limited"] == 2  # burst of 2 admitted, the rest refused
    server.receive_datagram(hello(), "a", 0.0, ("10.0.0.2", 4000))
    server.receive_datagram(hello(), "a", 0.0, ("10.0.0.3", 4000))
    assert server.counters["half_open_full"] == 1  # 3 half-open handshakes at most
    reasons = [e.reason for e in iter(server.next_event, None)]
    assert reasons == ["cidr", "rate_limited", "rate_limited", "half_open_full"]
    server.handle_timer(20.0)  # half-open handshakes expire
    assert server.counters["handshake_timeout"] == 3


def test_handshake_survives_a_path_dying_mid_handshake() -> None:
    client, server, _, _ = make_pair()
    h = Harness(client, server, profile({"delay_ms": 50}, {"delay_ms": 80}))
    client.connect(0.0)
    h.run_until(0.06)  # ClientHello is in flight on both paths; the server's reply will need path b
    h.net.path_down("a")
    h.run_until(3.0)
    assert client.established and server.established


def test_session_events_are_reliable_and_ordered_under_heavy_loss() -> None:
    h = established_harness(profile({"delay_ms": 30, "loss": 0.3}, {"delay_ms": 60, "loss": 0.3}))
    for i in range(40):
        h.client.send_event(f"event {i}".encode(), h.net.now)
        h.server.send_event(f"reply {i}".encode(), h.net.now)
        h.run_until(h.net.now + 0.01)
    h.run_until(h.net.now + 10.0)
    assert [e.payload for e in h.of("server", SessionEventReceived)] == [f"event {i}".encode() for i in range(40)]
    assert [e.payload for e in h.of("client", SessionEventReceived)] == [f"reply {i}".encode() for i in range(40)]


def test_events_sent_before_establishment_are_delivered_after() -> None:
    client, server, _, _ = make_pair()
    client.send_event(b"hello robot", 0.0)
    h = Harness(client, server, WAN)
    client.connect(0.0)
    h.run_until(2.0)
    assert [e.payload for e in h.of("server", SessionEventReceived)] == [b"hello robot"]


@pytest.mark.parametrize("skew", [2.5, -40.0])
def test_clock_offset_estimated_from_probes(skew: float) -> None:
    client, server, _, _ = make_pair()
    h = Harness(client, SkewedClock(server, skew), profile({"delay_ms": 50, "jitter_ms": 2}, {"delay_ms": 70}))
    client.connect(0.0)
    h.run_until(5.0)
    assert client.clock_offset() == pytest.approx(skew, abs=0.002)
    assert server.clock_offset() == pytest.approx(-skew, abs=0.002)


def test_video_queue_is_bounded_and_control_leaves_first() -> None:
    h = established_harness(profile(), video_queue_max=16)
    now = h.net.now
    seqs = [h.client.send(MessageClass.VIDEO, bytes(1200), now) for _ in range(20)]
    assert seqs[:16] == list(range(16)) and seqs[16:] == [None] * 4
    assert h.client.counters["video_dropped"] == 4
    h.client.send(MessageClass.CONTROL, b"stop", now)
    out = h.client.datagrams_to_send(now)
    assert len(out) == 2 + 16 * 2
    assert all(len(d) < 200 for _, d in out[:2]) and all(len(d) > 1200 for _, d in out[2:])


def test_telemetry_both_ways_and_loss_statistics() -> None:
    h = established_harness(profile({"delay_ms": 20, "loss": 0.1}, {"delay_ms": 40}))
    now = h.net.now
    for i in range(100):
        h.server.send(MessageClass.TELEMETRY, i.to_bytes(4, "big"), now + i * 0.01)
        h.run_until(now + i * 0.01)
    h.run_until(h.net.now + 6.0)
    assert sorted(h.received_seqs("client", MessageClass.TELEMETRY)) == list(range(100))  # first copy wins
    stats = h.client.path_stats()
    assert 10.0 < stats["a"].loss_pct < 35.0 and stats["b"].loss_pct == 0.0  # 1-(0.9*0.9) ≈ 19 % per probe
    assert stats["a"].state is PathState.DEGRADED and stats["b"].state is PathState.UP


def test_close_is_seen_by_the_peer_and_a_reconnect_gets_a_fresh_session() -> None:
    h = established_harness(profile({"delay_ms": 10}, {"delay_ms": 20}))
    first = h.server.session_id
    old_key = h.server._session.epochs
    h.client.close(h.net.now, "surgeon logged out")
    h.run_until(h.net.now + 0.5)
    assert [e.reason for e in h.of("server", SessionClosed)] == ["peer_closed: surgeon logged out"]
    assert not h.server.established
    h.client.connect(h.net.now)
    h.run_until(h.net.now + 1.0)
    assert h.server.established and h.server.session_id not in (None, first)
    assert h.server._session.epochs is not old_key
    assert len(h.of("server", HandshakeComplete)) == 2
    assert h.client.send(MessageClass.CONTROL, b"again", h.net.now) == 0  # sequence space restarts
    h.run_until(h.net.now + 0.1)
    assert h.of("server", MessageReceived)[-1].payload == b"again"


def test_with_one_path_left_control_is_doubled_so_the_survivors_random_loss_costs_nothing() -> None:
    # path b keeps 1 % random loss while path a is cut: one copy per command would lose ~40 of 4000
    h = established_harness(profile({"delay_ms": 20.0}, {"delay_ms": 30.0, "loss": 0.01}))
    h.start_control(1000.0)
    h.run_until(h.net.now + 0.5)
    h.net.path_down("a")
    h.run_until(h.net.now + 4.0)
    h.sending = False
    h.run_until(h.net.now + 0.5)
    lost = set(h.sent) - set(h.received_seqs())
    # before path a is declared DOWN (down_after_s = 0.25 s) ~250 x 1 % may go; after, 1 %² x 4000 = 0.4
    late_loss = [s for s in lost if s > h.sent[0] + 1000]  # after the first half second of the cut
    assert len(late_loss) <= 2, late_loss
    assert len(lost) <= 6, len(lost)
    assert h.client.counters["control_redundant_copies"] > 3000
