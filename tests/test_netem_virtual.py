"""VirtualNetwork: two sans-I/O endpoints through emulated paths, scenarios, under a virtual clock."""

from __future__ import annotations

import statistics
import struct
import time

import pytest

from telesurg.netem import Scenario, VirtualNetwork, load_profile, load_scenario
from telesurg.netem.profiles import PathProfile, Profile
from telesurg.netem.scenario import parse_scenario

_PING = struct.Struct("!Id")  # sequence, send time


class Pinger:
    """Console-side test endpoint: sends a stamped packet on every path per tick, records echo RTTs."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.outbox: list[tuple[str, bytes]] = []
        self.seq = 0
        self.rtts: dict[str, list[float]] = {p: [] for p in paths}
        self.echo_times: dict[str, list[float]] = {p: [] for p in paths}

    def tick(self, now: float) -> None:
        self.seq += 1
        self.outbox.extend((p, _PING.pack(self.seq, now)) for p in self.paths)

    def datagrams_to_send(self, now: float) -> list[tuple[str, bytes]]:
        out, self.outbox = self.outbox, []
        return out

    def receive_datagram(self, data: bytes, path: str, now: float) -> None:
        _, sent = _PING.unpack(data)
        self.rtts[path].append((now - sent) * 1000)
        self.echo_times[path].append(now)


class Echo:
    """Robot-side test endpoint: sends every datagram back on the path it came from."""

    def __init__(self) -> None:
        self.outbox: list[tuple[str, bytes]] = []
        self.arrivals: list[tuple[float, str]] = []

    def datagrams_to_send(self, now: float) -> list[tuple[str, bytes]]:
        out, self.outbox = self.outbox, []
        return out

    def receive_datagram(self, data: bytes, path: str, now: float) -> None:
        self.arrivals.append((now, path))
        self.outbox.append((path, data))


class TimerEndpoint(Echo):
    """An endpoint driven by its own timer: sends one packet on path a every 10 ms."""

    def __init__(self) -> None:
        super().__init__()
        self.timer = 0.0
        self.fired: list[float] = []
        self.echoes = 0

    def receive_datagram(self, data: bytes, path: str, now: float) -> None:
        self.echoes += 1

    def get_timer(self) -> float | None:
        return self.timer

    def handle_timer(self, now: float) -> None:
        self.fired.append(now)
        self.outbox.append(("a", b"t"))
        self.timer = now + 0.01


def test_1khz_for_20_virtual_seconds_matches_the_profile_and_runs_fast() -> None:
    profile = load_profile("shanghai-casablanca")
    console, robot = Pinger(["a", "b"]), Echo()
    net = VirtualNetwork(console, robot, profile, seed=1)
    net.add_ticker(0.001, console.tick)
    started = time.perf_counter()
    net.run_until(20.0)
    elapsed = time.perf_counter() - started
    assert net.now == 20.0
    assert console.seq == 20001
    rtt_a, rtt_b = console.rtts["a"], console.rtts["b"]
    assert 105 <= statistics.median(rtt_a) <= 107  # 2 × 52.5 ms, jitter 0.5 ms, order kept
    assert 165 <= statistics.median(rtt_b) <= 180  # 2 × 82.5 ms + the FIFO clamp of 3 ms jitter
    assert statistics.stdev(rtt_b) > statistics.stdev(rtt_a)
    stats = net.stats()
    lost_b = stats["b"]["forward"]["dropped_loss"] + stats["b"]["reverse"]["dropped_loss"]
    assert 15 <= lost_b <= 70  # 0.1 % each way of ~20k packets ≈ 40
    assert elapsed < 15, f"virtual network too slow: {elapsed:.1f} s for 80k packets"


def test_same_seed_gives_the_same_run() -> None:
    def once(seed: int) -> list[float]:
        console = Pinger(["a", "b"])
        net = VirtualNetwork(console, Echo(), load_profile("lossy"), seed=seed)
        net.add_ticker(0.001, console.tick)
        net.run_until(2.0)
        return console.rtts["a"] + console.rtts["b"]

    assert once(5) == once(5)
    assert once(5) != once(6)


def test_cut_path_a_scenario() -> None:
    console, robot = Pinger(["a", "b"]), Echo()
    net = VirtualNetwork(console, robot, load_profile("shanghai-casablanca"), scenario=load_scenario("cut-path-a"))
    net.add_ticker(0.001, console.tick)
    net.run_until(13.0)
    at_robot_a = [t for t, p in robot.arrivals if p == "a"]
    # a carries nothing from 8 s (nothing in flight survives) until it is back at 11 s + 52.5 ms (- jitter)
    assert not [t for t in at_robot_a if 8.0 < t < 11.0525 - 0.003]
    assert [t for t in at_robot_a if t < 8.0] and [t for t in at_robot_a if t > 11.06]
    at_robot_b = [t for t, p in robot.arrivals if p == "b"]
    assert len([t for t in at_robot_b if 8.1 < t < 11.0]) > 2800  # b keeps going
    assert net.stats()["a"]["forward"]["dropped_down"] >= 3000


def test_cut_both_for_300ms_scenario_uses_star() -> None:
    console, robot = Pinger(["a", "b"]), Echo()
    net = VirtualNetwork(console, robot, load_profile("lan"), scenario=load_scenario("cut-both-300ms"))
    net.add_ticker(0.001, console.tick)
    net.run_until(11.0)
    gap = [t for t, _ in robot.arrivals if 10.0 < t < 10.3 - 1e-9]
    assert gap == []
    assert len([t for t, _ in robot.arrivals if 10.3 - 1e-9 <= t < 10.4]) >= 190  # both paths back


def test_set_event_with_auto_revert_restores_the_profile_values() -> None:
    scenario = parse_scenario(
        {"event": [{"at": 1.0, "path": "a", "action": "set", "delay_ms": 150, "loss": 0.5, "duration": 1.0}]}
    )
    profile = Profile(name="t", path=[PathProfile(name="a", forward={"delay_ms": 10}, reverse={"delay_ms": 10})])
    console = Pinger(["a"])
    net = VirtualNetwork(console, Echo(), profile, scenario=scenario)
    net.add_ticker(0.01, console.tick)
    net.run_until(3.5)
    rtt = dict(zip(console.echo_times["a"], console.rtts["a"], strict=True))
    assert all(v == pytest.approx(20) for t, v in rtt.items() if t < 1.0)
    assert all(v == pytest.approx(300) for t, v in rtt.items() if 1.35 < t < 2.0)
    assert all(v == pytest.approx(20) for t, v in rtt.items() if t > 2.4)
    during = [t for t in rtt if 1.3 < t < 2.3]
    assert 10 < len(during) < 60  # ~75 % of the 100 pings lost during the change (0.5 each way)
    assert net.paths["a"].forward.impairment.loss == 0.0


def test_manual_path_control_and_unknown_path_errors() -> None:
    console, robot = Pinger(["a", "b"]), Echo()
    net = VirtualNetwork(console, robot, load_profile("lan"))
    net.add_ticker(0.01, console.tick)
    net.path_down("a")
    net.run_until(0.5)
    assert {p for _, p in robot.arrivals} == {"b"}
    net.path_up("*")
    net.set("b", delay_ms=100)
    net.run_until(1.0)
    assert {p for t, p in robot.arrivals if t > 0.5} == {"a", "b"}
    with pytest.raises(KeyError, match="known paths"):
        net.path_down("c")
    with pytest.raises(Exception, match="path 'c'"):
        VirtualNetwork(console, robot, load_profile("lan"), scenario=parse_scenario(
            {"event": [{"at": 1, "path": "c", "action": "down"}]}))


def test_endpoint_timers_drive_the_clock() -> None:
    sender, robot = TimerEndpoint(), Echo()
    net = VirtualNetwork(sender, robot, load_profile("lan"))
    net.run_until(1.005)
    assert len(sender.fired) == 101
    assert sender.fired[:3] == pytest.approx([0.0, 0.01, 0.02])
    assert len(robot.arrivals) == 101 == sender.echoes


def test_scenario_without_events_is_fine() -> None:
    console = Pinger(["a"])
    net = VirtualNetwork(console, Echo(), load_profile("lan"), scenario=Scenario())
    net.add_ticker(0.1, console.tick)
    net.run_until(1.0)
    assert len(console.rtts["a"]) == 11
