"""One tap per site process: every message and event of the site passes here once (DESIGN.md §7).

Why one place: the black-box recording, the audit log, the dashboard, the observers' broadcast and
the Prometheus metrics all want the same stream (commands sent, received and judged, telemetry,
link statistics, path events, alarms, supervisor transitions, handovers, video). Scattering a
recording call, a metrics call and a broadcast call through the servo loop and the link would put
three costs and three failure modes on the 1 kHz threads. Instead the site publishes each record
once into the tap, and every consumer is a *subscriber* with its own bounded queue.

The publishing side never waits: `publish` appends a `(topic, t, payload)` tuple to each
subscriber's deque (an atomic append under the GIL, no lock) and returns. A subscriber whose queue
is full (a stalled disk, a slow browser) loses that record, and the loss is counted per topic
(`Subscription.dropped`), so the servo loop and the link never slow down for a consumer. The
payloads are the site's own immutable objects (`ServoCommand`, `Telemetry`, `Decision`, ...):
turning them into JSON, MCAP or metrics happens on the consumer's thread, not the publisher's.

Times: `t` is the publishing site's `time.monotonic()`. `Tap.wall_offset` maps it to UNIX time
(taken once at start, so a wall-clock step later never reorders a recording), and `peer_offsets`
holds the link's latest clock offset per peer (peer clock - local clock, seconds), so a consumer
can give every record both sites' timestamps.
"""

from __future__ import annotations

import collections
import enum
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

TapRecord = tuple[str, float, Any]
GIL_SLICE = 8  # records a consumer handles per hold of the GIL (see handing_over)


class Topic(enum.StrEnum):
    """What a site publishes, and the payload of each (all immutable or not touched after publish)."""

    COMMAND_SENT = "command/sent"  # console ticker: tuple[ServoCommand, ...] of one period (one bundle)
    COMMAND_RECEIVED = "command/received"  # robot link: CommandReceived
    COMMAND_DECISION = "command/decision"  # robot servo thread: CommandJudged
    TELEMETRY = "telemetry"  # robot: produced, console: received; messages.Telemetry
    ROOM = "room/status"  # robot: sent, console: received; the RoomStatus JSON body (dict)
    PATHS = "link/paths"  # both, 4 Hz: dict peer identity -> dict path name -> link.paths.PathStats
    PATH_EVENT = "link/path_event"  # link.events.PathStateChanged
    SESSION = "link/session"  # link.events HandshakeComplete | SessionClosed | PeerRefused
    CLOCK = "link/clock_offset"  # both, 4 Hz: dict peer identity -> offset s (peer clock - local) or None
    ALARM = "console/alarm"  # console: dict(key, severity, message, active)
    # robot, a few times a second (apps/robot_safety_feed.py), as dicts (the records themselves change later):
    TRANSITION = "safety/transition"  # dict(arm, from, to, cause, at_s)
    HOLD = "safety/hold"  # dict(arm, cause, reaction_ms, at_s)
    HANDOVER = "safety/handover"  # dict(arm, from, to, reason, at_s)
    OPERATOR = "safety/local_console"  # dict(action, arms, at_s): the patient-side console's actions
    VIDEO = "video/packets"  # robot: sent, console: received; tuple[bytes, ...] of VIDEO payloads
    SITE = "site"  # both, once at start and at stop: dict(event=start|stop, software, config, ...)
    BROADCAST = "broadcast/status"  # a site with --broadcast, when its observers come or go: dict(observers=n)
    # robot servo thread, when recording: every other input of the supervisor, in call order, so a replay
    # can rebuild its state exactly (record/journal.py): ("tick", measured, jaw, operating) each period,
    # or (method, args, kwargs) for an operator/ownership call (enable, assign, emergency_stop, ...)
    SUPERVISOR_INPUT = "safety/input"


class CommandReceived(NamedTuple):
    """A servo command as the robot's link delivered it (before the supervisor judged it)."""

    command: Any  # messages.ServoCommand
    sender: str  # session key identity#sid
    link_seq: int
    path: str  # the path whose copy arrived first
    arrived_at: float  # when the robot's kernel had the datagram (monotonic)
    clock_offset: float | None  # console clock - robot clock, seconds


class CommandJudged(NamedTuple):
    """The supervisor's decision on one command: everything `SafetySupervisor.submit` was given, and
    its answer, so a replay can feed the same inputs to a fresh supervisor and compare."""

    command: Any  # messages.ServoCommand
    sender: str
    link_seq: int
    clock_offset: float | None
    outcome: str  # robot.safety_types.Outcome value
    reason: str


class Subscription:
    """One consumer's bounded queue. `offer` never blocks; when the queue is full the record is
    dropped and counted (`dropped[topic]`). Drain it from the consumer's own thread."""

    def __init__(self, name: str, capacity: int, topics: Iterable[str] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"tap subscription {name!r}: capacity must be >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.topics = None if topics is None else frozenset(str(t) for t in topics)
        self.dropped: collections.Counter[str] = collections.Counter()
        self.offered = 0
        self._queue: collections.deque[TapRecord] = collections.deque()
        self._drop_lock = threading.Lock()  # taken only on the (rare) drop path

    def offer(self, record: TapRecord) -> None:
        if self.topics is not None and record[0] not in self.topics:
            return
        self.offered += 1
        if len(self._queue) >= self.capacity:
            with self._drop_lock:
                self.dropped[record[0]] += 1
            return
        self._queue.append(record)

    def drain(self, limit: int | None = None) -> list[TapRecord]:
        """Take up to `limit` queued records (all if None), oldest first."""
        queue = self._queue
        n = len(queue) if limit is None else min(limit, len(queue))
        popleft = queue.popleft
        return [popleft() for _ in range(n)]

    def drain_handing_over(self, every: int = 4 * GIL_SLICE) -> list[TapRecord]:
        """Everything queued, taken `every` records at a time with the GIL handed over in between
        (see `handing_over`): a consumer that drains a few hundred records at once would otherwise
        hold it for tens of microseconds in one go."""
        out: list[TapRecord] = []
        while part := self.drain(every):
            out += part
            if len(part) < every:
                break
            time.sleep(0)
        return out

    def dropped_total(self) -> int:
        with self._drop_lock:
            return sum(self.dropped.values())

    def __len__(self) -> int:
        return len(self._queue)


class Tap:
    """The site's single publish point; see the module docstring."""

    def __init__(self, site: str, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.site = site
        self.clock = clock
        self.wall_offset = wall() - clock()  # UNIX time = monotonic + wall_offset
        self.peer_offsets: dict[str, float | None] = {}
        self._subscriptions: tuple[Subscription, ...] = ()
        self._lock = threading.Lock()  # subscribe/unsubscribe only; publish reads an immutable tuple

    @property
    def active(self) -> bool:
        """True when anyone listens: a publisher may skip building an expensive payload otherwise."""
        return bool(self._subscriptions)

    def subscribe(self, name: str, capacity: int = 65_536, topics: Iterable[str] | None = None) -> Subscription:
        subscription = Subscription(name, capacity, topics)
        with self._lock:
            self._subscriptions = (*self._subscriptions, subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)

    def subscriptions(self) -> tuple[Subscription, ...]:
        return self._subscriptions

    def publish(self, topic: str, t: float, payload: Any) -> None:
        """Hand one record to every subscriber; never blocks, never raises for a full consumer."""
        record = (topic, t, payload)
        for subscription in self._subscriptions:
            subscription.offer(record)

    def publish_now(self, topic: str, payload: Any) -> None:
        self.publish(topic, self.clock(), payload)

    def wall_time(self, t: float) -> float:
        return t + self.wall_offset

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per subscriber: records offered, queued now and dropped by topic (for reports and /metrics)."""
        return {s.name: {"offered": s.offered, "queued": len(s), "dropped": dict(s.dropped)}
                for s in self._subscriptions}


def handing_over(records: Iterable[TapRecord], every: int = GIL_SLICE) -> Iterator[TapRecord]:
    """Iterate a consumer's drained records, handing the GIL over (`time.sleep(0)`) every `every`.

    Why: a consumer thread shares the GIL with the servo loop and the link. A thread that wants the
    GIL gets it when the holder releases it, or when the holder is forced to after the switch interval
    (0.2 ms on the robot); working through a batch of a few hundred records in one go would make a
    servo period that starts meanwhile wait that long. Released every few records, the wait is a
    few tens of microseconds."""
    for count, record in enumerate(records, 1):
        yield record
        if count % every == 0:
            time.sleep(0)


def site_record(event: str, role: str, config: Any) -> dict[str, Any]:
    """The SITE record at start: software version and configuration (key paths only, never key material)."""
    import telesurg

    return {"event": event, "role": role, "software": f"telesurg {telesurg.__version__}",
            "config": config.model_dump(mode="json")}
