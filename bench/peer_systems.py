"""The systems `bench/peers.py` compares, each as a sender and a receiver in one worker process.

Every system gets the same 1 kHz stream of two-arm `ServoBundle`s from a sender thread and hands
each received payload to `on_receive` (which decodes it). Each system binds its receiving side
first (`bind` returns the addresses the relays forward to), then connects its sending side through
the relays (`connect`), so the only route between the two ends is the emulated path.

- `TelesurgPeer`: two real `LinkEndpoint`s (TLS 1.3 mutual auth, AES-GCM) over paths a and b.
- `AiortcPeer`: a WebRTC data channel (aiortc: ICE, DTLS, SCTP), unordered with maxRetransmits=0
  or reliable and ordered, over path a. See its docstring for how ICE is steered through the relay.
- `ZenohPeer`: Zenoh pub/sub between two peer-mode sessions, over a udp/ or tcp/ link on path a.
- `LockstepTlsPeer`: a TLS-over-TCP bridge that models rosurgical's exchange pattern, over path a.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Any

from telesurg.link.driver import LinkEndpoint
from telesurg.link.events import MessageClass, MessageReceived
from telesurg.link.keys import make_identity
from telesurg.link.testing import make_pair
from telesurg.link.tls import make_context
from telesurg.messages import ArmTelemetry, Telemetry

Address = tuple[str, int]
Receive = Callable[[bytes], None]
LOCAL = "127.0.0.1"


class Peer:
    """What the harness needs from a system; `transport` says which relay carries it."""

    name = "peer"
    paths: tuple[str, ...] = ("a",)
    transport = "udp"  # "udp" or "tcp"
    description = ""

    def __init__(self, on_receive: Receive) -> None:
        self.on_receive = on_receive

    async def bind(self) -> dict[str, Address]:
        raise NotImplementedError

    async def connect(self, relays: dict[str, Address]) -> None:
        raise NotImplementedError

    def send(self, payload: bytes) -> None:
        """Called from the harness's 1 kHz sender thread."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class TelesurgPeer(Peer):
    name = "telesurg"
    paths = ("a", "b")
    description = "LinkEndpoint pair, CONTROL class, every command on both paths, first copy wins"

    async def bind(self) -> dict[str, Address]:
        self._client_core, server_core, _, _ = make_pair()

        def on_message(event: MessageReceived) -> None:
            self.on_receive(event.payload)

        local = {path: (LOCAL, 0) for path in self.paths}
        self._server = LinkEndpoint(server_core, local, dict.fromkeys(self.paths), on_message=on_message)
        await self._server.start()
        return {path: self._server.local_address(path) for path in self.paths}

    async def connect(self, relays: dict[str, Address]) -> None:
        local = {path: (LOCAL, 0) for path in self.paths}
        self._client = LinkEndpoint(self._client_core, local, relays)
        await self._client.start()
        await asyncio.gather(self._client.wait_established(20.0), self._server.wait_established(20.0))

    def send(self, payload: bytes) -> None:
        self._client.send_from_thread(MessageClass.CONTROL, payload)

    async def close(self) -> None:
        for end in (getattr(self, "_client", None), getattr(self, "_server", None)):
            if end is not None:
                await end.close()


_CANDIDATE = re.compile(r"^a=candidate:(\S+) (\d) (udp|UDP) (\d+) (\S+) (\d+) typ host.*$", re.MULTILINE)


class AiortcPeer(Peer):
    """aiortc data channel, in-process signalling (the SDP objects are handed over directly).

    Steering ICE through the relay, robustly: the offer reaches the answerer with every
    `a=candidate` line (and `a=end-of-candidates`) removed, so the answerer cannot dial the offerer
    directly; the answer reaches the offerer with one host candidate, its address and port
    rewritten to the relay's. The offerer (ICE controlling) sends its checks to the relay, which
    forwards them to the answerer; the answerer learns the relay's upstream socket as a
    peer-reflexive candidate and answers through it. Every pair that can succeed goes through the
    relay, so ICE has no direct path to pick. aioice gathers no loopback candidates, so the host
    candidate is the machine's own interface address (traffic to it stays on the machine)."""

    transport = "udp"

    def __init__(self, on_receive: Receive, ordered: bool) -> None:
        super().__init__(on_receive)
        self.ordered = ordered
        self.name = "webrtc-reliable" if ordered else "webrtc-unordered"
        self.description = ("aiortc data channel, ordered + reliable (SCTP retransmits)" if ordered else
                            "aiortc data channel, ordered=False, maxRetransmits=0")

    async def bind(self) -> dict[str, Address]:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
        config = RTCConfiguration(iceServers=[])  # no STUN: nothing off this machine
        self._offerer, self._answerer = RTCPeerConnection(config), RTCPeerConnection(config)
        kwargs: dict[str, Any] = {} if self.ordered else {"ordered": False, "maxRetransmits": 0}
        self._channel = self._offerer.createDataChannel("servo", **kwargs)
        self._open = asyncio.Event()
        self._channel.on("open", self._open.set)
        self._remote_open = asyncio.Event()

        @self._answerer.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            channel.on("message", self.on_receive)
            self._remote_open.set()

        await self._offerer.setLocalDescription(await self._offerer.createOffer())
        offer = strip_candidates(self._offerer.localDescription.sdp)
        await self._answerer.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await self._answerer.setLocalDescription(await self._answerer.createAnswer())
        self._answer_sdp = self._answerer.localDescription.sdp
        self._target = first_ipv4_host_candidate(self._answer_sdp)
        return {"a": self._target}

    async def connect(self, relays: dict[str, Address]) -> None:
        from aiortc import RTCSessionDescription
        answer = steer_candidates(self._answer_sdp, self._target, relays["a"])
        await self._offerer.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.wait_for(asyncio.gather(self._open.wait(), self._remote_open.wait()), 30.0)
        self._loop = asyncio.get_running_loop()

    def send(self, payload: bytes) -> None:
        self._loop.call_soon_threadsafe(self._send_in_loop, payload)

    def _send_in_loop(self, payload: bytes) -> None:
        if self._channel.readyState == "open":
            self._channel.send(payload)

    async def close(self) -> None:
        for pc in (getattr(self, "_offerer", None), getattr(self, "_answerer", None)):
            if pc is not None:
                await pc.close()


def strip_candidates(sdp: str) -> str:
    lines = [line for line in sdp.splitlines()
             if not line.startswith("a=candidate:") and line != "a=end-of-candidates"]
    return "\r\n".join(lines) + "\r\n"


def first_ipv4_host_candidate(sdp: str) -> Address:
    for match in _CANDIDATE.finditer(sdp):
        if ":" not in match.group(5):
            return match.group(5), int(match.group(6))
    raise RuntimeError(f"no IPv4 host candidate in the answer:\n{sdp}")


def steer_candidates(sdp: str, target: Address, relay: Address) -> str:
    """Keep only the `target` candidate, rewritten to the relay's address and port."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            match = _CANDIDATE.match(line)
            if match is None or (match.group(5), int(match.group(6))) != target:
                continue
            line = line.replace(f" {target[0]} {target[1]} typ host", f" {relay[0]} {relay[1]} typ host")
        out.append(line)
    return "\r\n".join(out) + "\r\n"


def free_port(kind: int) -> int:
    """A port the kernel just handed out (Zenoh takes endpoints as strings, not port 0)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOCAL, 0))
        return sock.getsockname()[1]


class ZenohPeer(Peer):
    """Two Zenoh sessions in peer mode: the subscriber listens, the publisher connects through the
    relay; multicast scouting and gossip are off so they cannot find each other another way.
    The publisher is `express` (no batching) with priority RealTime, as a servo stream would be."""

    def __init__(self, on_receive: Receive, proto: str) -> None:
        super().__init__(on_receive)
        self.proto = proto
        self.transport = proto
        self.name = f"zenoh-{proto}"
        self.description = f"Zenoh pub/sub, peer to peer over a {proto}/ link, express, RealTime priority"

    @staticmethod
    def _config(listen: list[str], connect: list[str]) -> Any:
        import json

        import zenoh
        config = zenoh.Config()
        config.insert_json5("mode", '"peer"')
        config.insert_json5("listen/endpoints", json.dumps(listen))
        config.insert_json5("connect/endpoints", json.dumps(connect))
        config.insert_json5("scouting/multicast/enabled", "false")
        config.insert_json5("scouting/gossip/enabled", "false")
        return config

    async def bind(self) -> dict[str, Address]:
        import zenoh
        zenoh.init_log_from_env_or("error")
        port = free_port(socket.SOCK_DGRAM if self.proto == "udp" else socket.SOCK_STREAM)
        self._sub_session = zenoh.open(self._config([f"{self.proto}/{LOCAL}:{port}"], []))
        self._sub = self._sub_session.declare_subscriber(
            "telesurg/bench/servo", lambda sample: self.on_receive(sample.payload.to_bytes()))
        return {"a": (LOCAL, port)}

    async def connect(self, relays: dict[str, Address]) -> None:
        import zenoh
        host, port = relays["a"]
        self._pub_session = await asyncio.to_thread(
            zenoh.open, self._config([], [f"{self.proto}/{host}:{port}"]))
        self._pub = self._pub_session.declare_publisher(
            "telesurg/bench/servo", express=True, priority=zenoh.Priority.REAL_TIME,
            congestion_control=zenoh.CongestionControl.DROP)

    def send(self, payload: bytes) -> None:
        self._pub.put(payload)

    async def close(self) -> None:
        for session in (getattr(self, "_pub_session", None), getattr(self, "_sub_session", None)):
            if session is not None:
                await asyncio.to_thread(session.close)


_FRAME = struct.Struct("!H")


class LockstepTlsPeer(Peer):
    """A model of rosurgical's bridge (ETH Zurich MSRL, github.com/ethz-msrl/rosurgical,
    `rosurgical_lib/secure_socket.py`), written for this benchmark, none of its code copied.

    The behaviour modelled: one TLS-over-TCP socket; whenever a side has a new value of its topics
    it sends all of them (fixed-size frames) and then blocks until the peer's topics have arrived,
    the server starting by receiving. Topics arriving meanwhile overwrite the pending value (ROS
    `queue_size=1`). So the console gets one command across per round trip, the newest one, and
    everything the console produced in between is never sent. Here: the console thread sends the
    latest command and blocks for the robot's telemetry; the robot thread receives a command,
    delivers it, and answers with its telemetry (always fresh at 1 kHz)."""

    name = "lockstep-tls"
    transport = "tcp"
    description = "TLS 1.3 over TCP, send all topics then block for the peer's (one exchange per RTT)"

    async def bind(self) -> dict[str, Address]:
        console_id, robot_id = make_identity("console"), make_identity("robot")
        self._server_ctx = make_context(robot_id, [console_id.cert_pem], is_client=False)
        self._client_ctx = make_context(console_id, [robot_id.cert_pem], is_client=True)
        self._listener = socket.create_server((LOCAL, 0))
        self._latest: bytes | None = None
        self._fresh = threading.Condition()
        self._closed = False
        self._telemetry = Telemetry(0.0, 0, tuple(ArmTelemetry(arm, 0, 0, 0, (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0), 0.0)
                                                  for arm in (0, 1))).encode()
        return {"a": self._listener.getsockname()[:2]}

    async def connect(self, relays: dict[str, Address]) -> None:
        accepted = asyncio.ensure_future(asyncio.to_thread(self._accept))
        raw = await asyncio.to_thread(socket.create_connection, relays["a"], 10.0)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._console = await asyncio.to_thread(self._client_ctx.wrap_socket, raw)
        self._console.settimeout(None)
        self._robot = await accepted
        for target, name in ((self._console_loop, "lockstep-console"), (self._robot_loop, "lockstep-robot")):
            threading.Thread(target=target, daemon=True, name=name).start()

    def _accept(self) -> ssl.SSLSocket:
        raw, _ = self._listener.accept()
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        robot = self._server_ctx.wrap_socket(raw, server_side=True)
        robot.settimeout(None)
        return robot

    def send(self, payload: bytes) -> None:
        with self._fresh:
            self._latest = payload
            self._fresh.notify()

    def _console_loop(self) -> None:
        try:
            while not self._closed:
                with self._fresh:
                    while self._latest is None and not self._closed:
                        self._fresh.wait(0.1)
                    payload, self._latest = self._latest, None
                if payload is None:
                    return
                self._console.sendall(_FRAME.pack(len(payload)) + payload)
                _read_frame(self._console)  # block until the robot's topics are in
        except (OSError, ValueError):
            return

    def _robot_loop(self) -> None:
        try:
            while not self._closed:
                self.on_receive(_read_frame(self._robot))
                self._robot.sendall(_FRAME.pack(len(self._telemetry)) + self._telemetry)
        except (OSError, ValueError):
            return

    async def close(self) -> None:
        self._closed = True
        for sock in (getattr(self, "_console", None), getattr(self, "_robot", None), self._listener):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def _read_exact(sock: ssl.SSLSocket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = sock.recv(n - len(data))
        if not more:
            raise ValueError("connection closed")
        data += more
    return data


def _read_frame(sock: ssl.SSLSocket) -> bytes:
    (length,) = _FRAME.unpack(_read_exact(sock, _FRAME.size))
    return _read_exact(sock, length)


SYSTEMS: dict[str, Callable[[Receive], Peer]] = {
    "telesurg": TelesurgPeer,
    "webrtc-unordered": lambda rx: AiortcPeer(rx, ordered=False),
    "webrtc-reliable": lambda rx: AiortcPeer(rx, ordered=True),
    "zenoh-udp": lambda rx: ZenohPeer(rx, "udp"),
    "zenoh-tcp": lambda rx: ZenohPeer(rx, "tcp"),
    "lockstep-tls": LockstepTlsPeer,
}
