"""The site tap (telesurg/tap.py): every subscriber sees every record in order; a full subscriber
loses records counted per topic and never blocks the publisher or the other subscribers."""

from __future__ import annotations

import threading

import pytest

from telesurg.apps.robot_safety_feed import SafetyEventFeed
from telesurg.robot.local_console import LocalConsole
from telesurg.robot.safety_config import SupervisorConfig
from telesurg.robot.supervisor import SafetySupervisor
from telesurg.tap import Tap, Topic


def test_each_subscriber_gets_every_record_in_order() -> None:
    tap = Tap("robot")
    a, b = tap.subscribe("a"), tap.subscribe("b")
    for i in range(100):
        tap.publish(Topic.TELEMETRY, float(i), i)
    assert [r[2] for r in a.drain()] == list(range(100))
    assert [r[1] for r in b.drain(10)] == [float(i) for i in range(10)]
    assert len(b) == 90 and len(a) == 0


def test_full_subscriber_drops_and_counts_without_affecting_others() -> None:
    tap = Tap("robot")
    slow = tap.subscribe("disk", capacity=5)
    fast = tap.subscribe("dashboard")
    for i in range(12):
        tap.publish(Topic.COMMAND_SENT if i % 2 else Topic.TELEMETRY, float(i), i)
    assert len(slow) == 5 and slow.dropped_total() == 7
    assert slow.dropped == {"command/sent": 4, "telemetry": 3}
    assert len(fast) == 12 and fast.dropped_total() == 0
    assert tap.stats()["disk"] == {"offered": 12, "queued": 5, "dropped": {"command/sent": 4, "telemetry": 3}}


def test_topic_filter_and_unsubscribe() -> None:
    tap = Tap("console")
    alarms = tap.subscribe("alarms", topics=[Topic.ALARM])
    assert tap.active
    tap.publish(Topic.TELEMETRY, 0.0, "t")
    tap.publish(Topic.ALARM, 1.0, "a")
    assert alarms.drain() == [("console/alarm", 1.0, "a")]
    tap.unsubscribe(alarms)
    assert not tap.active
    tap.publish(Topic.ALARM, 2.0, "b")
    assert alarms.drain() == []


def test_draining_in_slices_takes_everything_in_order_while_publishers_add_more() -> None:
    tap = Tap("robot")
    sub = tap.subscribe("dashboard", capacity=100_000)
    for n in (0, 1, 31, 32, 33, 64, 200):  # around the slice of 32
        for i in range(n):
            tap.publish(Topic.ALARM, float(i), i)
        assert [r[2] for r in sub.drain_handing_over(every=32)] == list(range(n))
    done = threading.Event()

    def publish() -> None:
        for i in range(50_000):
            tap.publish(Topic.ALARM, float(i), i)
        done.set()

    publisher = threading.Thread(target=publish)
    publisher.start()
    taken: list[int] = []
    while not done.is_set() or len(sub):
        taken += [r[2] for r in sub.drain_handing_over(every=32)]
    publisher.join()
    assert taken == list(range(50_000))


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        Tap("x").subscribe("bad", capacity=0)


def test_concurrent_publishers_lose_nothing_below_capacity() -> None:
    tap = Tap("robot")
    sub = tap.subscribe("rec", capacity=1_000_000)

    def publish(topic: str) -> None:
        for i in range(20_000):
            tap.publish(topic, float(i), i)

    threads = [threading.Thread(target=publish, args=(t,)) for t in (Topic.TELEMETRY, Topic.COMMAND_DECISION)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = sub.drain()
    assert len(records) == 40_000
    for topic in (Topic.TELEMETRY, Topic.COMMAND_DECISION):  # each thread's records stay in its order
        assert [r[2] for r in records if r[0] == topic] == list(range(20_000))


def test_safety_feed_publishes_each_record_once() -> None:
    sup = SafetySupervisor(SupervisorConfig(), ["PSM1", "PSM2"])
    local = LocalConsole(sup)
    tap = Tap("robot")
    sub = tap.subscribe("audit")
    feed = SafetyEventFeed(tap, sup, local)
    local.enable(1.0)
    local.emergency_stop(2.0)
    published = feed.poll()
    assert feed.poll() == 0
    records = sub.drain()
    assert len(records) == published > 0
    topics = {r[0] for r in records}
    assert Topic.TRANSITION in topics and Topic.OPERATOR in topics
    actions = [r[2]["action"] for r in records if r[0] == Topic.OPERATOR]
    assert actions == ["enable", "emergency_stop"]
    transitions = [r[2] for r in records if r[0] == Topic.TRANSITION]
    assert {t["to"] for t in transitions} >= {"HOMING", "FAULT"}
