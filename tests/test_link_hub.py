"""LinkHub: one robot, several consoles (each its own identity and session) on the same paths.

Virtual clock: a `ClientBank` of client cores faces the hub (through `HubFront`, which gives each
client its own source address) on one `VirtualNetwork`; the last test runs on real loopback UDP.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from telesurg.link.config import LinkConfig
from telesurg.link.core import LinkCore
from telesurg.link.driver import LinkEndpoint
from telesurg.link.events import (
    HandshakeComplete,
    MessageClass,
    MessageReceived,
    PathStateChanged,
    PeerRefused,
    SessionClosed,
    SessionEventReceived,
)
from telesurg.link.hub import LinkHub
from telesurg.link.keys import generate_identity, make_identity
from telesurg.link.paths import PathState
from telesurg.link.testing import ClientBank, HubFront, make_client, make_hub
from telesurg.netem.profiles import parse_profile
from telesurg.netem.virtual import VirtualNetwork

CONTROL, TELEMETRY = MessageClass.CONTROL, MessageClass.TELEMETRY


def profile(a: dict | None = None, b: dict | None = None) -> object:
    return parse_profile({"name": "test", "path": [{"name": "a", "both": a or {}}, {"name": "b", "both": b or {}}]})


WAN = profile({"delay_ms": 20.0, "jitter_ms": 0.5}, {"delay_ms": 35.0, "jitter_ms": 2.0})


class HubHarness:
    """Runs the network and collects every event of the hub and of each client."""

    def __init__(self, hub: LinkHub, clients: list[LinkCore], prof: object = WAN, seed: int = 1) -> None:
        self.hub = hub
        self.bank = ClientBank(clients)
        self.front = HubFront(hub)
        self.net = VirtualNetwork(self.bank, self.front, prof, seed=seed)
        self.hub_events: list = []
        self.client_events: list[list] = []

    @property
    def clients(self) -> list[LinkCore]:
        return self.bank.clients

    def collect(self, _now: float = 0.0) -> None:
        while (event := self.hub.next_event()) is not None:
            self.hub_events.append(event)
        while len(self.client_events) < len(self.clients):
            self.client_events.append([])
        for events, client in zip(self.client_events, self.clients, strict=True):
            while (event := client.next_event()) is not None:
                events.append(event)

    def run_until(self, t: float) -> None:
        self.net.run_until(t, self.collect)
        self.collect()

    def hub_of(self, kind: type) -> list:
        return [e for e in self.hub_events if isinstance(e, kind)]

    def client_of(self, index: int, kind: type) -> list:
        return [e for e in self.client_events[index] if isinstance(e, kind)]

    def received(self, sid: int, msg_class: MessageClass = CONTROL) -> list[MessageReceived]:
        return [e for e in self.hub_of(MessageReceived) if e.sid == sid and e.msg_class == msg_class]


def established(n: int = 3, prof: object = WAN, **tuning: object) -> HubHarness:
    hub, clients, _, _ = make_hub(n, **tuning)
    h = HubHarness(hub, clients, prof)
    for client in clients:
        client.connect(0.0)
    h.run_until(1.0)
    assert all(c.established for c in clients) and len(hub.sessions()) == n
    return h


def test_three_consoles_establish_and_each_ones_messages_carry_its_own_sid() -> None:
    h = established(3)
    hub, clients = h.hub, h.clients
    sids = [c.session_id for c in clients]
    assert len(set(sids)) == 3
    assert {e.peer_name: e.sid for e in h.hub_of(HandshakeComplete)} == {f"console{i}": s for i, s in enumerate(sids)}
    assert [(s.sid, s.peer_name, s.established) for s in hub.sessions()] == \
        [(s, f"console{i}", True) for i, s in enumerate(sids)]
    now = h.net.now
    for k in range(20):
        for i, client in enumerate(clients):
            assert client.send(CONTROL, f"{i}:{k}".encode(), now + k * 0.001) == k
    h.run_until(now + 0.3)
    for i, sid in enumerate(sids):
        assert [e.payload for e in h.received(sid)] == [f"{i}:{k}".encode() for k in range(20)]
    assert all(e.sid in sids for e in h.hub_of(PathStateChanged))

    assert hub.send(TELEMETRY, b"to everyone", h.net.now) == 3  # broadcast: three sessions reached
    assert hub.send_to(sids[1], TELEMETRY, b"to console1 only", h.net.now) is not None
    assert hub.send_event_to(sids[2], b"event for console2", h.net.now)
    h.run_until(h.net.now + 0.5)
    for i in range(3):
        tele = [e.payload for e in h.client_of(i, MessageReceived) if e.msg_class == TELEMETRY]
        assert tele == [b"to everyone"] + ([b"to console1 only"] if i == 1 else [])
        events = [e.payload for e in h.client_of(i, SessionEventReceived)]
        assert events == ([b"event for console2"] if i == 2 else [])
    for sid in sids:  # per-session figures, and the no-argument form is the latest session's
        assert {s.state for s in hub.path_stats(sid).values()} == {PathState.UP}
        assert hub.clock_offset(sid) == pytest.approx(0.0, abs=0.003)
    assert hub.session_id == sids[2] and hub.peer_name == "console2"
    assert hub.path_stats() == hub.core_of(sids[2]).path_stats()
    assert hub.counters_total()["internal_error"] == 0 and hub.counters_total()["auth"] == 0
    hub.close(h.net.now, "robot shutting down")  # every session ends, every console is told
    h.run_until(h.net.now + 0.3)
    assert len(hub) == 0 and not hub.established and hub.send(TELEMETRY, b"x", h.net.now) is None
    assert sorted(e.sid for e in h.hub_of(SessionClosed)) == sorted(sids)
    for i in range(3):
        assert [e.reason for e in h.client_of(i, SessionClosed)] == ["peer_closed: robot shutting down"]


def test_each_session_has_its_own_replay_window_and_keys() -> None:
    h = established(2, profile())
    hub, (a, b) = h.hub, h.clients
    now, addr_a = h.net.now, HubFront.address(0)

    def control_datagram(payload: bytes) -> bytes:
        a.send(CONTROL, payload, now)
        return a.datagrams_to_send(now)[0][1]

    first = control_datagram(b"first")
    assert hub.receive_datagram(first, "a", now, addr_a) is True
    before = hub.counters_total()
    assert hub.receive_datagram(first, "a", now, addr_a) is False  # replayed: dropped
    assert hub.counters_total()["replay"] == before["replay"] + 1
    second = control_datagram(b"second")
    as_b = second[:2] + b.session_id.to_bytes(8, "big") + second[10:]  # A's datagram, B's session id
    assert hub.receive_datagram(as_b, "a", now, addr_a) is False
    assert hub.counters_total()["auth"] == before["auth"] + 1  # B's keys do not open it
    unknown = second[:2] + (12345).to_bytes(8, "big") + second[10:]
    for junk, reason in ((unknown, "session"), (b"\x01", "malformed"), (b"\x09" + second[1:], "version")):
        assert hub.receive_datagram(junk, "a", now, addr_a) is False
        assert hub.counters[reason] == 1, reason
    assert len(hub) == 2  # none of it opened a session
    h.collect()
    assert [(e.sid, e.payload) for e in h.hub_of(MessageReceived)] == [(a.session_id, b"first")]
    assert hub.receive_datagram(second, "a", now, addr_a) is True  # the genuine one was not burnt
    h.collect()
    assert [(e.sid, e.payload) for e in h.hub_of(MessageReceived)][-1] == (a.session_id, b"second")


def test_identity_not_on_the_allowlist_is_refused_while_the_others_keep_working() -> None:
    h = established(2)
    hub, clients = h.hub, h.clients
    intruder = make_client(make_identity("mallory"), hub.identity)  # trusts the hub, is not trusted by it
    h.bank.add(intruder)
    sent: dict[int, list[int]] = {0: [], 1: []}
    sending = [True]

    def tick(now: float) -> None:
        for i in (0, 1) if sending[0] else ():
            if (seq := clients[i].send(CONTROL, b"c" * 40, now)) is not None:
                sent[i].append(seq)
        intruder.send(CONTROL, b"move", now)

    h.net.add_ticker(0.002, tick)
    intruder.connect(h.net.now)
    (intruder_sid,) = intruder._pending
    h.run_until(h.net.now + 3.0)
    sending[0] = False
    h.run_until(h.net.now + 0.2)
    assert [(e.reason, e.sid) for e in h.hub_of(PeerRefused)] == [("not_allowed", intruder_sid)]
    assert hub.counters_total()["not_allowed"] == 1
    assert not intruder.established and h.client_of(2, SessionClosed)
    assert [e.peer_name for e in h.hub_of(HandshakeComplete)] == ["console0", "console1"]
    assert {e.sid for e in h.hub_of(MessageReceived)} == {clients[0].session_id, clients[1].session_id}
    for i in (0, 1):
        assert len(sent[i]) > 1000
        assert sorted(e.seq for e in h.received(clients[i].session_id)) == sent[i]
    assert len(hub) == 2  # the refused handshake's core is gone


def test_restarted_console_replaces_its_old_session_and_old_datagrams_are_ignored() -> None:
    h = established(2)
    hub = h.hub
    old_client = h.clients[0]
    old_sid, other_sid = old_client.session_id, h.clients[1].session_id
    now = h.net.now
    old_client.send(CONTROL, b"late copy", now)  # captured before the restart, delivered after it
    late = [d for p, d in old_client.datagrams_to_send(now) if p == "a"][0]
    new_client = make_client(old_client.identity, hub.identity, seed=99)  # same identity, new process
    h.bank.add(new_client)
    new_client.connect(now)
    h.run_until(now + 1.0)
    new_sid = new_client.session_id
    assert new_client.established and new_sid != old_sid
    closed = [i for i, e in enumerate(h.hub_events) if isinstance(e, SessionClosed)]
    done = [i for i, e in enumerate(h.hub_events) if isinstance(e, HandshakeComplete) and e.sid == new_sid]
    assert [(h.hub_events[i].reason, h.hub_events[i].sid) for i in closed] == [("replaced", old_sid)]
    assert closed[0] < done[0]  # the old session's end is reported before the new one's start
    closed_at = h.hub_events[closed[0]].at
    assert hub.core_of(old_sid) is None
    assert {(s.sid, s.peer_name) for s in hub.sessions()} == {(other_sid, "console1"), (new_sid, "console0")}
    assert [e.reason for e in h.client_of(0, SessionClosed)] == ["peer_closed: replaced"]  # the old one is told
    before = hub.counters_total()["after_close"]
    assert hub.receive_datagram(late, "a", h.net.now, HubFront.address(0)) is False
    assert hub.counters_total()["after_close"] == before + 1
    h.collect()
    assert not [e for e in h.hub_of(MessageReceived) if e.payload == b"late copy"]
    assert not [e for e in h.hub_of(MessageReceived) if e.sid == old_sid and e.at >= closed_at]
    new_client.send(CONTROL, b"after restart", h.net.now)
    h.run_until(h.net.now + 0.2)
    assert [e.payload for e in h.received(new_sid)] == [b"after restart"]


def _hello(client_identity: object, hub: LinkHub) -> bytes:
    client = LinkCore.in_memory(client_identity, [hub.identity.cert_pem], is_client=True)
    client.connect(0.0)
    return client.datagrams_to_send(0.0)[0][1]


def test_half_open_bound_is_hub_wide_and_timed_out_cores_are_dropped_with_their_counters() -> None:
    hub, _, ids, _ = make_hub(1, max_half_open=3, handshake_burst=2, handshake_rate_per_s=1.0)
    hello = _hello(ids[0], hub)  # replayed under fresh session ids: a flood of ClientHellos
    with_sid = lambda i: hello[:2] + (1000 + i).to_bytes(8, "big") + hello[10:]  # noqa: E731
    for i in range(6):
        hub.receive_datagram(with_sid(i), "a", 0.0, (f"10.0.0.{i + 1}", 4000))
    assert len(hub) == 3 and hub.half_open == 3  # one bound across all cores, not 8 per core
    assert hub.counters["half_open_full"] == 3
    refused = [e for e in iter(hub.next_event, None) if isinstance(e, PeerRefused)]
    assert [(e.reason, e.sid) for e in refused] == [("half_open_full", 1003 + i) for i in range(3)]
    assert hub.get_timer() is not None
    hub.handle_timer(hub.settings.handshake_timeout_s)  # exactly at the deadline get_timer() gave
    assert len(hub) == 0 and hub.half_open == 0
    assert hub.counters["handshake_timeout"] == 3  # merged from the dropped cores
    assert hub.counters_total() == hub.counters
    t = 20.0
    for round_ in range(30):  # memory stays bounded under a steady flood
        for i in range(8):
            hub.receive_datagram(with_sid(100 * round_ + i + 10), "b", t, (f"10.1.{round_}.{i}", 4000))
        assert len(hub) == 3
        t += 11.0
        hub.handle_timer(t)
        assert len(hub) == 0
    assert hub.counters["handshake_timeout"] == 3 + 30 * 3
    for i in range(3):  # the per-source rate still applies: burst of 2 from one address
        hub.receive_datagram(with_sid(9000 + i), "a", t, ("10.9.9.9", 4000))
    assert hub.counters["rate_limited"] == 1 and len(hub) == 2


def test_authenticated_handshake_that_never_confirms_its_keys_is_ended_after_the_timeout() -> None:
    hub, (client,), _, _ = make_hub(1)
    client.connect(0.0)
    now = 0.0
    for _ in range(20):  # pump by hand until the hub has sent the keys, which the client never gets
        for path, data in client.datagrams_to_send(now):
            hub.receive_datagram(data, path, now, ("10.0.0.1", 4000))
        core = next(iter(hub._cores.values()), None)
        if core is not None and core._session is not None:
            break
        for path, data in hub.datagrams_to_send(now):
            client.receive_datagram(data, path, now)
        now += 0.01
    assert core is not None and core._session is not None and not hub.established
    assert hub.half_open == 1
    for _ in range(100):  # run the hub's timers (its retransmissions of the keys, then the timeout)
        deadline = hub.get_timer()
        if not hub.half_open or deadline is None or deadline > 20.0:
            break
        hub.handle_timer(deadline)
        hub.datagrams_to_send(deadline)
    assert hub.half_open == 0  # ended by the hub, not left retransmitting the keys forever
    assert len(hub) == 0 and hub.counters["handshake_timeout"] == 1
    assert not [e for e in iter(hub.next_event, None) if isinstance(e, SessionClosed | HandshakeComplete)]


def test_a_path_cut_for_one_session_and_then_for_all_loses_no_control_message() -> None:
    h = established(3, profile({"delay_ms": 10.0, "jitter_ms": 0.5}, {"delay_ms": 25.0, "jitter_ms": 1.0}))
    clients = h.clients
    sent: list[list[int]] = [[], [], []]
    sending = [True]

    def tick(now: float) -> None:
        for i, client in enumerate(clients if sending[0] else ()):
            if (seq := client.send(CONTROL, bytes([i]) * 60, now)) is not None:
                sent[i].append(seq)

    h.net.add_ticker(0.002, tick)
    h.run_until(1.5)
    h.bank.cut(0, "a")  # console0's path a dies (its own access link), the others' stays
    h.run_until(3.0)
    h.bank.cut(0, "a", down=False)
    h.run_until(3.5)
    h.net.path_down("b")  # then the robot's path b, for every session
    h.run_until(4.5)
    h.net.path_up("b")
    h.run_until(5.0)
    sending[0] = False
    h.run_until(5.5)
    for i, client in enumerate(clients):
        got = [e.seq for e in h.received(client.session_id)]
        assert len(sent[i]) > 1500
        assert sorted(got) == sent[i], f"console{i} lost {len(set(sent[i]) - set(got))}"
    downs = {(e.sid, e.path) for e in h.hub_of(PathStateChanged) if e.new is PathState.DOWN and e.at < 3.5}
    assert downs == {(clients[0].session_id, "a")}  # path state is per session
    later = {(e.sid, e.path) for e in h.hub_of(PathStateChanged) if e.new is PathState.DOWN and e.at >= 3.5}
    assert later == {(c.session_id, "b") for c in clients}
    assert all(c.counters["control_redundant_copies"] > 0 for c in clients)  # doubled on the survivor


async def _loopback_scenario(tmp_path: Path) -> None:
    robot_id = generate_identity(tmp_path, "robot")
    consoles_id = [generate_identity(tmp_path, f"console{i}") for i in range(2)]
    paths = [{"name": "a", "local": "127.0.0.1:0"}, {"name": "b", "local": "127.0.0.1:0"}]
    robot_cfg = LinkConfig(identity_cert=robot_id.cert_path, identity_key=robot_id.key_path,
                           peer_certs=[c.cert_path for c in consoles_id], paths=paths)
    at_robot: list[MessageReceived] = []
    robot = LinkEndpoint.from_config(robot_cfg, is_client=False, multi_session=True, on_message=at_robot.append)
    assert isinstance(robot.core, LinkHub)
    consoles: list[LinkEndpoint] = []
    try:
        await robot.start()
        for c in consoles_id:
            cfg = LinkConfig(identity_cert=c.cert_path, identity_key=c.key_path, peer_certs=[robot_id.cert_path],
                             paths=[{**p, "remote": "{}:{}".format(*robot.local_address(p["name"]))} for p in paths])
            consoles.append(LinkEndpoint.from_config(cfg, is_client=True))
            await consoles[-1].start()
        await asyncio.gather(robot.wait_established(5.0), *(c.wait_established(5.0) for c in consoles))
        for _ in range(200):
            if len(robot.core.sessions()) == 2:
                break
            await asyncio.sleep(0.01)
        names = {}
        while not robot.events.empty():
            event = robot.events.get_nowait()
            if isinstance(event, HandshakeComplete):
                names[event.sid] = event.peer_name
        assert sorted(names.values()) == ["console0", "console1"]
        for k in range(50):
            for i, console in enumerate(consoles):
                assert console.send(CONTROL, f"console{i}:{k}".encode()) is not None
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.2)
        by_sid: dict[int, list[bytes]] = {}
        for m in at_robot:
            by_sid.setdefault(m.sid, []).append(m.payload)
        assert set(by_sid) == set(names)  # two different sids ...
        for sid, payloads in by_sid.items():  # ... each carrying only its own console's messages
            assert payloads == [f"{names[sid]}:{k}".encode() for k in range(50)]
        sid1 = next(sid for sid, name in names.items() if name == "console1")
        assert robot.send(TELEMETRY, b"all") == 2
        assert robot.send_to(sid1, TELEMETRY, b"console1 only") is not None
        assert robot.send_event_to(sid1, b"event for console1")
        await asyncio.sleep(0.2)
        for i, console in enumerate(consoles):
            got = []
            while not console.events.empty():
                event = console.events.get_nowait()
                if isinstance(event, MessageReceived | SessionEventReceived):
                    got.append(event.payload)
            assert got == ([b"all", b"console1 only", b"event for console1"] if i == 1 else [b"all"])
        assert robot.core.counters_total()["auth"] == 0
    finally:
        for console in consoles:
            await console.close()
        await robot.close()
    with pytest.raises(ValueError, match="multi_session"):
        LinkEndpoint.from_config(robot_cfg, is_client=True, multi_session=True)


def test_endpoint_around_a_hub_on_loopback_udp_serves_two_consoles(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_loopback_scenario(tmp_path), 30.0))
