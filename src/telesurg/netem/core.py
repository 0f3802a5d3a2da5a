"""Sans-I/O emulation of one direction of one network path.

`DirectionEmulator` is given packets and `now` and decides if and when each one leaves; it never reads a
clock or touches a socket, so the same object runs under the asyncio relay (real clock) and under
`VirtualNetwork` (virtual clock), and a seed makes every run repeatable.

Pipeline for each submitted packet, in the order a real link applies them:
  outage → random loss (Bernoulli and Gilbert–Elliott) → duplication → corruption → rate limit
  (serialisation at `rate_bps` behind a bounded queue) → propagation delay + jitter → reordering.

Jitter does not reorder (our documented choice): like a real link, order is preserved while the delay
varies. Each packet draws its own delay, but leaves no earlier than the packet before it. At packet
intervals shorter than the jitter this clamp raises the mean delay a little (by up to about one jitter
standard deviation), which is what a FIFO queue does too. Only `reorder` lets a packet be overtaken:
it is held back by `reorder_extra_ms` and exempt from the clamp, so packets sent within that window
pass it. A drawn delay below zero is clamped to zero, so keep `jitter_ms` well under `delay_ms`.
`rate_bps` is in BYTES per second (as the issue asks), not bits.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: Impairment fields a scenario `set` event may change, and the scenario player may revert.
SETTABLE_FIELDS = ("delay_ms", "jitter_ms", "loss", "reorder", "duplicate", "corrupt")

# Lomax (Pareto II) with shape 3 has finite variance; we rescale it to zero mean and unit spread so
# `jitter_ms` means the same standard deviation for both distributions (pareto: heavy right tail).
_PARETO_SHAPE = 3.0
_PARETO_MEAN = 1.0 / (_PARETO_SHAPE - 1.0)
_PARETO_STD = (_PARETO_SHAPE / ((_PARETO_SHAPE - 1.0) ** 2 * (_PARETO_SHAPE - 2.0))) ** 0.5


class Impairment(BaseModel):
    """Impairments of one direction of one path. All probabilities are per packet, 0..1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delay_ms: float = Field(0.0, ge=0, description="one-way propagation delay in ms (RTT/2)")
    jitter_ms: float = Field(0.0, ge=0, description="standard deviation of the delay in ms")
    jitter_dist: Literal["normal", "pareto"] = Field("normal", description="'normal' or 'pareto'")
    loss: float = Field(0.0, ge=0, le=1, description="independent (Bernoulli) loss probability, 0..1")
    ge_p: float = Field(0.0, ge=0, le=1, description="Gilbert–Elliott P(good→bad) per packet; 0 = off")
    ge_r: float = Field(0.0, ge=0, le=1, description="Gilbert–Elliott P(bad→good) per packet")
    ge_loss_bad: float = Field(1.0, ge=0, le=1, description="loss probability in the bad state")
    ge_loss_good: float = Field(0.0, ge=0, le=1, description="loss probability in the good state")
    reorder: float = Field(0.0, ge=0, le=1, description="probability a packet is held back and overtaken")
    reorder_extra_ms: float = Field(10.0, ge=0, description="extra hold-back of a reordered packet, ms")
    duplicate: float = Field(0.0, ge=0, le=1, description="probability a packet is delivered twice")
    corrupt: float = Field(0.0, ge=0, le=1, description="probability one random bit of a packet is flipped")
    rate_bps: float | None = Field(None, gt=0, description="rate limit in BYTES per second; None = unlimited")
    queue_limit: int = Field(1000, ge=1, description="packets waiting for the rate limiter before tail drop")

    @model_validator(mode="after")
    def _gilbert_elliott_needs_recovery(self) -> Impairment:
        if self.ge_p > 0 and self.ge_r <= 0:
            raise ValueError("ge_r must be > 0 when ge_p > 0 (else the link stays in the bad state forever)")
        return self

    @property
    def gilbert_elliott(self) -> bool:
        return self.ge_p > 0

    def mean_loss(self) -> float:
        """Long-run loss probability (stationary Gilbert–Elliott combined with the Bernoulli loss)."""
        ge = 0.0
        if self.gilbert_elliott:
            bad = self.ge_p / (self.ge_p + self.ge_r)
            ge = bad * self.ge_loss_bad + (1 - bad) * self.ge_loss_good
        return 1 - (1 - self.loss) * (1 - ge)


@dataclass
class DirectionStats:
    """Counters of one direction; `delivered` counts packets handed out by `pop_due`."""

    submitted: int = 0
    delivered: int = 0
    dropped_loss: int = 0
    dropped_down: int = 0
    dropped_queue: int = 0
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    bytes_delivered: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def in_flight(self) -> int:
        lost = self.dropped_loss + self.dropped_down + self.dropped_queue
        return self.submitted + self.duplicated - self.delivered - lost


class ImpairmentControl:
    """Run-time changes to a direction's impairment, shared by the datagram emulator here and the
    stream model of the TCP relay (netem/stream.py): both keep `base`, `impairment` and `_down`."""

    base: Impairment
    impairment: Impairment
    _down: bool

    def up(self) -> None:
        self._down = False

    def set(self, **changes: Any) -> None:
        """Change impairment fields at run time; raises `ValueError` naming the field on bad values."""
        try:
            self.impairment = Impairment.model_validate({**self.impairment.model_dump(), **changes})
        except ValidationError as exc:
            raise ValueError(f"bad impairment change {changes}: {exc}") from exc

    def revert(self, *fields: str) -> None:
        """Restore fields to the values this direction was built with (a scenario's auto-revert)."""
        self.set(**{name: getattr(self.base, name) for name in fields})


class DirectionEmulator(ImpairmentControl):
    """One direction of one path: decides if and when each submitted packet departs."""

    def __init__(self, impairment: Impairment, seed: int) -> None:
        self.base = impairment  # the profile's values, restored by `revert`
        self.impairment = impairment
        self.stats = DirectionStats()
        self._rng = random.Random(seed)
        self._heap: list[tuple[float, int, bytes]] = []  # (departure, sequence, data)
        self._seq = 0
        self._last_fifo_departure = float("-inf")
        self._link_free_at = float("-inf")  # when the rate limiter finishes its current backlog
        self._tx_done: list[float] = []  # serialisation end times still in the future (queue occupancy)
        self._ge_bad = False
        self._down = False

    # -- control ---------------------------------------------------------------------------------
    @property
    def is_down(self) -> bool:
        return self._down

    @property
    def departures(self) -> list[tuple[float, int, bytes]]:
        """The packets in flight as a heap of (departure, sequence, data), for reading only: one list
        for the emulator's whole life, so an event loop may keep it and peek at `[0][0]` itself."""
        return self._heap

    @property
    def fifo_departure(self) -> float:
        """Departure time of the latest in-order packet: a packet submitted now leaves no earlier
        (after a delay spike, packets behind it wait in the queue; a simulation's truth needs this)."""
        return self._last_fifo_departure

    def down(self, now: float | None = None) -> None:
        """Cut the path: drop new packets and those still in flight (departing after `now`, or all)."""
        self._down = True
        kept = [item for item in self._heap if now is not None and item[0] <= now]
        self.stats.dropped_down += len(self._heap) - len(kept)
        heapq.heapify(kept)
        self._heap[:] = kept  # in place: `departures` is the same list for the emulator's life
        self._tx_done.clear()
        self._link_free_at = float("-inf")

    # -- data path -------------------------------------------------------------------------------
    def submit(self, data: bytes, now: float) -> None:
        self.stats.submitted += 1
        if self._down:
            self.stats.dropped_down += 1
            return
        imp = self.impairment
        if (imp.loss or imp.ge_p > 0) and self._lost(imp):  # no loss configured: no draw, as in _lost
            self.stats.dropped_loss += 1
            return
        copies = 1
        if imp.duplicate and self._rng.random() < imp.duplicate:
            copies = 2
            self.stats.duplicated += 1
        for _ in range(copies):
            payload = data
            if imp.corrupt and data and self._rng.random() < imp.corrupt:
                payload = self._flip_bit(data)
                self.stats.corrupted += 1
            self._schedule(payload, now, imp)

    def pop_due(self, now: float) -> list[bytes]:
        """Packets whose departure time is <= now, in departure order."""
        out: list[bytes] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        if out:
            self.stats.delivered += len(out)
            self.stats.bytes_delivered += sum(map(len, out))
        return out

    def pop_due_timed(self, now: float) -> list[tuple[float, bytes]]:
        """(departure time, packet) for packets due by `now`: a real-clock driver measures its lateness."""
        out: list[tuple[float, bytes]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, _, data = heapq.heappop(heap)
            out.append((due, data))
        if out:
            self.stats.delivered += len(out)
            self.stats.bytes_delivered += sum(len(p) for _, p in out)
        return out

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    # -- internals -------------------------------------------------------------------------------
    def _lost(self, imp: Impairment) -> bool:
        rng = self._rng
        lost = bool(imp.loss) and rng.random() < imp.loss
        if imp.gilbert_elliott:
            # Transition first, then lose with the new state's probability (Gilbert–Elliott, per packet).
            if self._ge_bad:
                if rng.random() < imp.ge_r:
                    self._ge_bad = False
            elif rng.random() < imp.ge_p:
                self._ge_bad = True
            p_state = imp.ge_loss_bad if self._ge_bad else imp.ge_loss_good
            if p_state and rng.random() < p_state:
                lost = True
        return lost

    def _flip_bit(self, data: bytes) -> bytes:
        bit = self._rng.randrange(len(data) * 8)
        buf = bytearray(data)
        buf[bit >> 3] ^= 1 << (bit & 7)
        return bytes(buf)

    def _delay_s(self, imp: Impairment) -> float:
        delay = imp.delay_ms
        if imp.jitter_ms:
            if imp.jitter_dist == "normal":
                z = self._rng.gauss(0.0, 1.0)
            else:
                lomax = self._rng.paretovariate(_PARETO_SHAPE) - 1.0
                z = (lomax - _PARETO_MEAN) / _PARETO_STD
            delay = max(0.0, delay + imp.jitter_ms * z)
        return delay / 1000.0

    def _schedule(self, data: bytes, now: float, imp: Impairment) -> None:
        start = now
        if imp.rate_bps is not None:
            tx = self._tx_done
            while tx and tx[0] <= now:
                heapq.heappop(tx)
            if len(tx) >= imp.queue_limit:
                self.stats.dropped_queue += 1
                return
            start = max(now, self._link_free_at) + len(data) / imp.rate_bps
            self._link_free_at = start
            heapq.heappush(tx, start)
        departure = start + self._delay_s(imp)
        if imp.reorder and self._rng.random() < imp.reorder:
            departure += imp.reorder_extra_ms / 1000.0
            self.stats.reordered += 1
        else:
            departure = max(departure, self._last_fifo_departure)
            self._last_fifo_departure = departure
        self._seq += 1
        heapq.heappush(self._heap, (departure, self._seq, data))
