"""End to end over real UDP on 127.0.0.1: two LinkEndpoints through two real netem relays."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from telesurg.link.config import LinkConfig
from telesurg.link.driver import LinkEndpoint
from telesurg.link.events import MessageClass, MessageReceived, PathStateChanged, SessionEventReceived
from telesurg.link.keys import generate_identity
from telesurg.link.paths import PathState
from telesurg.netem.core import Impairment
from telesurg.netem.relay import PathRelay


def _configs(tmp_path: Path) -> tuple[LinkConfig, LinkConfig]:
    robot, console = generate_identity(tmp_path, "robot"), generate_identity(tmp_path, "console")
    server = LinkConfig(identity_cert=robot.cert_path, identity_key=robot.key_path, peer_certs=[console.cert_path],
                        paths=[{"name": "a", "local": "127.0.0.1:0"}, {"name": "b", "local": "127.0.0.1:0"}])
    client = LinkConfig(identity_cert=console.cert_path, identity_key=console.key_path,
                        peer_certs=[robot.cert_path],
                        paths=[{"name": "a", "local": "127.0.0.1:0", "remote": "127.0.0.1:9"},
                               {"name": "b", "local": "127.0.0.1:0", "remote": "127.0.0.1:9"}])
    return server, client


async def _scenario(tmp_path: Path) -> None:
    server_cfg, client_cfg = _configs(tmp_path)
    at_robot: list[MessageReceived] = []
    robot = LinkEndpoint.from_config(server_cfg, is_client=False, on_message=at_robot.append)
    console = LinkEndpoint.from_config(client_cfg, is_client=True)
    relays = {"a": PathRelay("a", Impairment(delay_ms=5), Impairment(delay_ms=5), seed=1),
              "b": PathRelay("b", Impairment(delay_ms=15, jitter_ms=1), Impairment(delay_ms=15), seed=2)}
    try:
        await robot.start()
        for name, relay in relays.items():
            listen = await relay.start(("127.0.0.1", 0), robot.local_address(name))
            console.set_remote(name, listen)
        await console.start()
        await asyncio.gather(console.wait_established(5.0), robot.wait_established(5.0))
        assert robot.core.peer_name == "console" and console.core.peer_name == "robot"

        sent = []
        for i in range(600):
            if i == 200:
                relays["a"].path.down()  # the fibre is cut mid-stream
            if i == 450:
                relays["a"].path.up()
            seq = console.send(MessageClass.CONTROL, i.to_bytes(4, "big") + bytes(76))
            assert seq is not None
            sent.append(seq)
            await asyncio.sleep(0.001)
        robot.send_event(b"supervisor: hold cleared")
        robot.send(MessageClass.TELEMETRY, b"telemetry")
        await asyncio.sleep(0.3)

        assert sorted(m.seq for m in at_robot) == sent  # nothing lost, nothing handed up twice
        assert {m.path for m in at_robot} == {"a", "b"}
        assert robot.counters["duplicates"] > 0 and robot.counters["auth"] == 0
        events = []
        while not console.events.empty():
            events.append(console.events.get_nowait())
        assert [e.payload for e in events if isinstance(e, SessionEventReceived)] == [b"supervisor: hold cleared"]
        assert any(isinstance(e, MessageReceived) and e.payload == b"telemetry" for e in events)
        a_states = [e.new for e in events if isinstance(e, PathStateChanged) and e.path == "a"]
        assert PathState.DOWN in a_states and a_states[-1] is PathState.UP  # cut seen, and recovered
        stats = console.core.path_stats()
        assert 8 < stats["a"].rtt_p50_ms < 40 and 28 < stats["b"].rtt_p50_ms < 60
        assert abs(console.core.clock_offset()) < 0.005  # same host clock: offset ≈ 0
    finally:
        await console.close()
        await robot.close()
        for relay in relays.values():
            relay.close()


def test_link_end_to_end_over_udp_through_netem_relays(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_scenario(tmp_path), 30.0))


async def _send_from_thread_scenario(tmp_path: Path) -> None:
    """A second thread seals and sends while the loop thread receives, probes and sends too."""
    server_cfg, client_cfg = _configs(tmp_path)
    at_robot: list[MessageReceived] = []
    robot = LinkEndpoint.from_config(server_cfg, is_client=False, on_message=at_robot.append)
    console = LinkEndpoint.from_config(client_cfg, is_client=True)
    try:
        await robot.start()
        for name in ("a", "b"):
            console.set_remote(name, robot.local_address(name))
        await console.start()
        await asyncio.gather(console.wait_established(5.0), robot.wait_established(5.0))
        sent: list[int | None] = []

        def ticker() -> None:
            for i in range(2000):
                sent.append(console.send_from_thread(MessageClass.CONTROL, i.to_bytes(4, "big") + bytes(60)))
                time.sleep(0.0002)

        worker = threading.Thread(target=ticker)
        worker.start()
        while worker.is_alive():  # the loop thread keeps using the same core meanwhile
            robot.send(MessageClass.TELEMETRY, b"telemetry")
            console.send(MessageClass.TELEMETRY, b"loop-thread message")
            await asyncio.sleep(0.001)
        worker.join()
        await asyncio.sleep(0.2)
        control = [m for m in at_robot if m.msg_class is MessageClass.CONTROL]
        assert None not in sent and len(set(sent)) == 2000
        assert sorted(m.seq for m in control) == sorted(sent)  # every one delivered, once
        assert [int.from_bytes(m.payload[:4], "big") for m in sorted(control, key=lambda m: m.seq)] == list(range(2000))
        assert robot.counters["duplicates"] >= 1900  # both paths carried the thread's sends
        assert not any(k.startswith("socket_error") for k in console.counters)
        assert console.core.path_stats()["a"].rtt_p50_ms < 50  # probes kept running on the loop thread
    finally:
        await console.close()
        await robot.close()
    assert console.send_from_thread(MessageClass.CONTROL, b"after close") is None


def test_send_from_another_thread_delivers_every_message_once(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_send_from_thread_scenario(tmp_path), 30.0))
