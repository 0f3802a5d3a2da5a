"""The SessionManager alone (real TLS 1.3, real AES-GCM keys), no LinkCore: two managers exchange
their frames through lists under a virtual clock, with a few lines standing in for the datagram path."""

from __future__ import annotations

from collections import Counter

import pytest

from telesurg.link import wire
from telesurg.link.config import LinkSettings
from telesurg.link.events import HandshakeComplete, PeerRefused, SessionClosed, SessionEventReceived
from telesurg.link.handshake import SessionManager
from telesurg.link.keys import make_identity
from telesurg.link.tls import make_context

CONSOLE, ROBOT = make_identity("console"), make_identity("robot")
ADDR = ("192.0.2.7", 40000)


class Side:
    """One manager and what it handed to its datagram layer: frames, events, session starts and ends."""

    def __init__(self, *, is_client: bool, **tuning: object) -> None:
        me, peer = (CONSOLE, ROBOT) if is_client else (ROBOT, CONSOLE)
        settings = LinkSettings(path_names=["a", "b"], peer_certs_pem=[peer.cert_pem], **tuning)
        self.out: list[tuple[str, bytes, tuple[str, int] | None]] = []
        self.events: list[object] = []
        self.starts: list[float] = []
        self.ends = 0
        self.counters: Counter[str] = Counter()
        self.manager = SessionManager(settings, make_context(me, settings.peer_certs_pem, is_client=is_client),
                                      is_client=is_client, counters=self.counters, send=self.out.append,
                                      emit=self.events.append, on_start=self.starts.append, on_end=self._ended)

    def _ended(self) -> None:
        self.ends += 1

    def take(self) -> list[tuple[str, bytes]]:
        out = [(path, data) for path, data, _ in self.out]
        self.out.clear()  # never rebound: the manager holds its append
        return out

    def receive(self, data: bytes, path: str, now: float) -> None:
        """What LinkCore does with a datagram, minus messages and probes."""
        try:
            self._route(data, path, now)
        except wire.WireError as exc:  # e.g. the copy on the other path of a plaintext ack: "late_handshake"
            self.counters[exc.reason] += 1

    def _route(self, data: bytes, path: str, now: float) -> None:
        manager = self.manager
        kind, sid = wire.parse_outer(data)
        if kind != wire.Kind.SEALED:
            manager.receive_handshake(data, kind, sid, path, now, ADDR)
            return
        session = manager.live if manager.live is not None and manager.live.sid == sid else manager.pending[sid]
        epoch, inner = session.epochs.open(data, now)
        if session.pending_send is not None and epoch >= session.pending_send[0]:
            manager.send_keys_confirmed(session, now)
        if inner[0] == wire.Inner.REL_DATA:
            seq, chunk = wire.parse_rel_data(memoryview(inner)[1:])
            manager.feed_tls(session, session.rel.on_data(seq, chunk), path, ADDR, now)
        elif inner[0] == wire.Inner.REL_ACK:
            session.rel.on_ack(*wire.parse_rel_ack(memoryview(inner)[1:]), now)
        manager.flush_if_current(session, now)

    def of_type(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def exchange(client: Side, server: Side, now: float, rounds: int = 20) -> None:
    """Deliver every frame both ways, lossless and instant, until neither side has more to say."""
    for _ in range(rounds):
        moved = False
        for src, dst in ((client, server), (server, client)):
            for path, data in src.take():
                dst.receive(data, path, now)
                moved = True
        if not moved:
            return
    raise AssertionError("the managers kept talking")


def connected(**tuning: object) -> tuple[Side, Side]:
    client, server = Side(is_client=True, **tuning), Side(is_client=False, **tuning)
    client.manager.connect(0.0)
    exchange(client, server, 0.0)
    return client, server


def test_two_managers_alone_authenticate_and_use_the_server_keys_only_once_the_client_proves_it_has_them() -> None:
    client, server = Side(is_client=True), Side(is_client=False)
    client.manager.connect(0.0)
    # up to the client getting the keys: its sealed ack of them is still with us, not at the server
    for _ in range(10):
        for path, data in client.take():
            server.receive(data, path, 0.0)
        for path, data in server.take():
            client.receive(data, path, 0.0)
        if client.manager.established:
            break
    assert client.manager.established and not server.manager.established
    live = server.manager.live
    assert live is not None and not live.epochs.can_send and live.pending_send is not None
    assert server.starts == [0.0] and client.starts == [0.0]  # each side's session went live once
    exchange(client, server, 0.0)
    assert server.manager.established and live.epochs.can_send and live.pending_send is None
    (done_c,), (done_s,) = client.of_type(HandshakeComplete), server.of_type(HandshakeComplete)
    assert (done_c.peer_name, done_s.peer_name) == ("robot", "console")
    assert done_c.sid == done_s.sid == live.sid and client.manager.peer_name == "robot"
    assert not client.manager.pending and not server.manager.pending


def test_the_server_sends_no_more_than_it_received_until_the_peer_is_authenticated() -> None:
    client, server = Side(is_client=True), Side(is_client=False)
    client.manager.connect(0.0)
    flight = client.take()
    hello = [(p, d) for p, d in flight if d[1] == wire.Kind.HS_DATA]
    pads = [(p, d) for p, d in flight if d[1] == wire.Kind.HS_PAD]
    assert hello and pads, "the client pays in advance with padding on each path"
    for path, data in hello:
        server.receive(data, path, 0.0)
    session = next(iter(server.manager.pending.values()))
    sent = sum(len(d) for _, d in server.take())
    assert sent <= session.bytes_in == sum(len(d) for _, d in hello)
    assert session.held, "the rest of its flight waits for more bytes from the peer"
    for path, data in pads:
        server.receive(data, path, 0.0)
    sent += sum(len(d) for _, d in server.take())
    assert sent <= session.bytes_in and not session.held


def test_events_sent_before_the_session_is_established_arrive_after_it_in_order() -> None:
    client, server = Side(is_client=True), Side(is_client=False)
    client.manager.send_event(b"first", 0.0)
    client.manager.send_event(b"second", 0.0)
    client.manager.connect(0.0)
    exchange(client, server, 0.0)
    assert [e.payload for e in server.of_type(SessionEventReceived)] == [b"first", b"second"]


def test_a_refused_source_opens_no_handshake() -> None:
    client, server = Side(is_client=True), Side(is_client=False, allowed_cidrs=["10.0.0.0/8"])
    client.manager.connect(0.0)
    exchange(client, server, 0.0)
    assert {e.reason for e in server.of_type(PeerRefused)} == {"cidr"} and server.counters["cidr"] >= 1
    assert not server.manager.pending and server.manager.live is None and not server.out


def test_the_client_reconnects_when_the_peer_went_silent_but_never_after_close() -> None:
    client, server = connected(reconnect=True)  # a console's setting
    sid = client.manager.live.sid
    client.manager.end("peer_silent", 5.0)
    assert client.ends == 1 and client.manager.live is None and sid in client.manager.closed_sids
    assert [(e.reason, e.sid) for e in client.of_type(SessionClosed)] == [("peer_silent", sid)]
    assert client.counters["reconnects"] == 1 and len(client.manager.pending) == 1
    assert client.take(), "the new handshake's first flight is out at once"
    client.manager.end("peer_silent", 5.5)  # no session to lose: the handshake under way goes on
    assert client.counters["reconnects"] == 1 and len(client.manager.pending) == 1
    client.manager.close("local_close", 5.0)
    assert not client.manager.pending and client.manager.next_timer() is None
    client.manager.end("peer_silent", 6.0)
    assert client.counters["reconnects"] == 1


@pytest.mark.parametrize("reconnecting", [False, True])
def test_a_handshake_times_out_at_the_deadline_next_timer_gives(reconnecting: bool) -> None:
    if reconnecting:  # the peer went away; the new handshake gets no answer (the server is not fed)
        client, _ = connected(handshake_timeout_s=2.0, reconnect=True)
        client.manager.end("peer_silent", 10.0)
        client.events.clear()
    else:
        client = Side(is_client=True, handshake_timeout_s=2.0)
        client.manager.connect(10.0)
    (sid,) = client.manager.pending
    deadline = 12.0
    t = client.manager.next_timer()
    while t is not None and t < deadline:  # retransmissions until then
        client.manager.handle_timer(t)
        assert sid in client.manager.pending
        t = client.manager.next_timer()
    assert t == deadline
    client.manager.handle_timer(deadline)
    assert [(e.reason, e.sid) for e in client.of_type(SessionClosed)] == [("handshake_timeout", sid)]
    assert client.counters["handshake_timeout"] == 1
    # a client whose peer went away keeps trying with a new session id; one that never had a session stops
    assert len(client.manager.pending) == int(reconnecting) and sid not in client.manager.pending
