"""Property tests for the link's building blocks: replay window, wire parsing, reliable channel, AEAD."""

from __future__ import annotations

import os
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from telesurg.link import wire
from telesurg.link.epochs import KeyEpochs
from telesurg.link.events import MessageClass, MessageReceived
from telesurg.link.reliable import ReliableChannel
from telesurg.link.replay import ReplayWindow
from telesurg.link.testing import make_pair


class ReferenceWindow:
    """The obvious (slow) definition: each value once, and nothing older than `size` below the top."""

    def __init__(self, size: int) -> None:
        self.size, self.seen, self.top = size, set(), -1

    def check_and_accept(self, counter: int) -> str | None:
        if counter <= self.top and self.top - counter >= self.size:
            return "too_old"
        if counter in self.seen:
            return "replay"
        self.seen.add(counter)
        self.top = max(self.top, counter)
        return None


counters = st.lists(st.one_of(st.integers(0, 30_000), st.integers(0, 200)), max_size=400)


@given(counters)
def test_replay_window_matches_reference_model(values: list[int]) -> None:
    window = ReplayWindow()
    assert window.size >= 8128
    reference = ReferenceWindow(window.size)
    for value in values:
        assert window.check_and_accept(value) == reference.check_and_accept(value), value


@given(st.integers(0, 2**64 - 10_000), st.permutations(list(range(300))))
def test_replay_window_accepts_reordered_packets_once_at_any_offset(base: int, order: list[int]) -> None:
    window = ReplayWindow()
    assert all(window.check_and_accept(base + i) is None for i in order)
    assert all(window.check_and_accept(base + i) == "replay" for i in order)


@given(st.binary(max_size=64))
def test_outer_parser_raises_only_wire_errors(data: bytes) -> None:
    try:
        kind, _ = wire.parse_outer(data)
    except wire.WireError as exc:
        assert exc.reason in ("malformed", "version")
    else:
        assert kind in (wire.Kind.HS_DATA, wire.Kind.HS_ACK, wire.Kind.SEALED)


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=1200))
def test_handshake_frames_round_trip(session: int, seq: int, data: bytes) -> None:
    frame = wire.encode_hs_data(session, seq, data)
    assert wire.parse_outer(frame) == (wire.Kind.HS_DATA, session)
    assert wire.peek_session_id(frame) == session
    assert wire.parse_rel_data(frame[wire.OUTER.size:]) == (seq, data)


@given(st.binary(min_size=1, max_size=5000), st.floats(0.0, 0.5), st.floats(0.0, 0.3), st.integers(0, 2**32))
@settings(deadline=None, max_examples=60)
def test_reliable_channel_delivers_the_exact_stream_despite_loss_dup_and_reorder(
        stream: bytes, loss: float, dup: float, seed: int) -> None:
    rng = random.Random(seed)
    sender, receiver = ReliableChannel(), ReliableChannel()
    for start in range(0, len(stream), 700):
        sender.send(stream[start:start + 700])
    received = bytearray()
    now = 0.0
    while sender.unacked and now < 120.0:
        frames = sender.frames_due(now)
        rng.shuffle(frames)
        for seq, chunk in frames:
            for _ in range(1 + (rng.random() < dup)):
                if rng.random() >= loss:
                    for part in receiver.on_data(seq, chunk):
                        received += part
        ack = receiver.take_ack()
        if ack is not None and rng.random() >= loss:
            sender.on_ack(*ack, now)
        now += 0.05
    assert bytes(received) == stream


@given(st.binary(max_size=1200), st.data())
@settings(max_examples=50)
def test_sealed_datagrams_round_trip_and_any_bit_flip_is_rejected(inner: bytes, data: st.DataObject) -> None:
    key_a, key_b = os.urandom(32), os.urandom(32)
    sender, receiver = KeyEpochs(42, grace_s=1.0), KeyEpochs(42, grace_s=1.0)
    sender.install_send(1, key_a)
    receiver.install_recv(1, key_a)
    receiver.install_recv(2, key_b)
    datagram = sender.seal(inner)
    bit = data.draw(st.integers(0, len(datagram) * 8 - 1))
    flipped = bytearray(datagram)
    flipped[bit // 8] ^= 1 << (bit % 8)
    try:
        receiver.open(bytes(flipped), 0.0)
        raise AssertionError("a flipped datagram authenticated")
    except wire.WireError as exc:
        assert exc.reason in ("auth", "session", "epoch", "malformed", "replay")
    assert receiver.open(datagram, 0.0) == (1, inner)


PAIR = None


def established_pair():  # built once: hypothesis re-runs the test body many times
    global PAIR
    if PAIR is None:
        from telesurg.netem.profiles import load_profile
        from telesurg.netem.virtual import VirtualNetwork
        client, server, _, _ = make_pair()
        net = VirtualNetwork(client, server, load_profile("lan"))
        client.connect(0.0)
        net.run_until(0.5)
        assert client.established and server.established
        PAIR = (client, server)
    return PAIR


@given(st.binary(max_size=1500), st.sampled_from(["a", "b", "zz"]))
@settings(max_examples=300)
def test_receive_datagram_never_raises_and_never_delivers_garbage(data: bytes, path: str) -> None:
    client, server = established_pair()
    for core in (client, server):
        assert core.receive_datagram(data, path, 1.0, ("127.0.0.1", 9)) is False
        while (event := core.next_event()) is not None:
            assert not isinstance(event, MessageReceived)
        assert core.counters["internal_error"] == 0


@given(st.binary(max_size=1500))
@settings(max_examples=100)
def test_garbage_behind_a_valid_sealed_header_is_rejected(tail: bytes) -> None:
    client, server = established_pair()
    header = wire.sealed_header(server.session_id, 1, 10**12)
    assert server.receive_datagram(header + tail, "a", 1.0) is False
    assert server.counters["internal_error"] == 0
    assert server.send(MessageClass.CONTROL, b"still alive", 1.0) is not None
    server.datagrams_to_send(1.0)
