"""A peer that vanishes (crash, reboot) ends the session after `session_timeout_s` of silence on
every path, and a console (client with `reconnect`) finds the restarted robot by itself with a new
session: fresh keys, fresh sequence numbers. A console that closed, or was replaced, never does."""

from __future__ import annotations

from telesurg.link.core import LinkCore
from telesurg.link.events import HandshakeComplete, MessageClass, MessageReceived, SessionClosed
from telesurg.link.keys import make_identity
from telesurg.netem.profiles import parse_profile
from telesurg.netem.virtual import VirtualNetwork

WAN = parse_profile({"name": "t", "path": [{"name": "a", "both": {"delay_ms": 20.0}},
                                           {"name": "b", "both": {"delay_ms": 40.0}}]})
CLIENT_ID, SERVER_ID = make_identity("console"), make_identity("robot")


def new_server(seed: int) -> LinkCore:
    return LinkCore.in_memory(SERVER_ID, [CLIENT_ID.cert_pem], is_client=False, path_names=("a", "b"), seed=seed)


class Restartable:
    """The robot's host: a server core that can crash (drops everything, says nothing) and restart."""

    def __init__(self) -> None:
        self.core: LinkCore | None = new_server(1)
        self.received: list[MessageReceived] = []

    def datagrams_to_send(self, now: float) -> list[tuple[str, bytes]]:
        return self.core.datagrams_to_send(now) if self.core else []

    def receive_datagram(self, data: bytes, path: str, now: float) -> bool:
        return self.core.receive_datagram(data, path, now) if self.core else False

    def get_timer(self) -> float | None:
        return self.core.get_timer() if self.core else None

    def handle_timer(self, now: float) -> None:
        if self.core:
            self.core.handle_timer(now)

    def drain(self) -> list:
        events = []
        while self.core and (e := self.core.next_event()) is not None:
            events.append(e)
            if isinstance(e, MessageReceived):
                self.received.append(e)
        return events


def drain(core: LinkCore) -> list:
    events = []
    while (e := core.next_event()) is not None:
        events.append(e)
    return events


def run(reconnect: bool) -> tuple[LinkCore, Restartable, list, VirtualNetwork]:
    client = LinkCore.in_memory(CLIENT_ID, [SERVER_ID.cert_pem], is_client=True, path_names=("a", "b"), seed=0,
                                reconnect=reconnect)
    robot = Restartable()
    net = VirtualNetwork(client, robot, WAN, seed=3)
    client_events: list = []
    net.add_ticker(0.01, lambda now: client.send(MessageClass.CONTROL, b"cmd", now) if client.established else None)
    net.add_ticker(0.01, lambda now: (client_events.extend(drain(client)), robot.drain()), start=0.005)
    client.connect(0.0)
    net.run_until(2.0)
    assert client.established
    return client, robot, client_events, net


def test_a_crashed_robot_ends_the_session_and_the_console_reconnects_to_its_restart() -> None:
    client, robot, events, net = run(reconnect=True)
    first_sid = client.session_id
    robot.core = None  # kill -9: nothing more from the robot
    net.run_until(2.0 + 5.0 + 0.5)
    closed = [e for e in events if isinstance(e, SessionClosed)]
    assert [e.reason for e in closed] == ["peer_silent"]
    assert 7.0 - 0.05 <= closed[0].at <= 7.0 + 0.1  # 5 s after the last datagram heard (~2.0 s)
    assert not client.established and client.counters["reconnects"] == 1
    net.run_until(12.0)  # still away: handshakes keep being retried
    robot.core = new_server(2)  # the robot restarts with the same identity, fresh state
    robot.received.clear()
    net.run_until(20.0)
    assert client.established and client.session_id != first_sid
    assert sum(isinstance(e, HandshakeComplete) for e in events) == 2
    assert len(robot.received) > 100 and robot.received[0].seq == 0  # fresh sequence numbers, accepted


def test_without_reconnect_the_console_stays_down() -> None:
    client, robot, events, net = run(reconnect=False)
    robot.core = None
    net.run_until(8.0)
    robot.core = new_server(2)
    net.run_until(20.0)
    assert not client.established and client.counters["reconnects"] == 0
    assert [e.reason for e in events if isinstance(e, SessionClosed)] == ["peer_silent"]


def test_the_robot_ends_a_silent_console_session() -> None:
    client, robot, events, net = run(reconnect=True)
    server = robot.core
    assert server is not None
    seen: list = []
    quiet = VirtualNetwork(_Dead(), robot, WAN, seed=4)
    quiet.now = net.now
    quiet.add_ticker(0.01, lambda now: seen.extend(robot.drain()), start=net.now)
    quiet.run_until(net.now + 5.5)
    assert [e.reason for e in seen if isinstance(e, SessionClosed)] == ["peer_silent"]
    assert not server.established and server.counters["peer_silent"] == 1


def test_a_console_that_closes_never_reconnects() -> None:
    client, robot, events, net = run(reconnect=True)
    client.close(net.now, "surgeon logged out")
    net.run_until(net.now + 15.0)
    assert not client.established and client.counters["reconnects"] == 0
    assert client.get_timer() is None


class _Dead:
    def datagrams_to_send(self, now: float) -> list:
        return []

    def receive_datagram(self, data: bytes, path: str, now: float) -> bool:
        return False

    def get_timer(self) -> None:
        return None

    def handle_timer(self, now: float) -> None:
        pass
