"""Sans-I/O model of one direction of a TCP connection over an emulated path.

A UDP relay can drop a datagram; a TCP byte stream cannot lose bytes, it stalls. So for TCP-based
peers (Zenoh over TCP, a TLS bridge) the relay terminates TCP on both sides and this model decides
when each chunk of bytes the sender wrote reaches the far end, from the same `Impairment` (delay,
jitter, loss, outage) that drives the UDP emulator:

- a chunk that gets through lands after the path's delay (+ jitter), never before the chunk ahead
  of it (FIFO, as `netem/core.py`);
- a chunk lost at random is fast-retransmitted: the receiver's three duplicate ACKs need three more
  segments (`dupack_wait`, ~3 ms at 1 kHz) and a trip back, so it lands one RTT + `dupack_wait` late;
  a retransmission lost again waits for the retransmission timeout (RTO);
- an outage loses everything sent during it and everything still in flight; the oldest lost chunk is
  retried on the RTO with exponential backoff (Linux: RTO = SRTT + max(4·RTTVAR, 200 ms), doubled
  after every failure), and once a retry gets through the rest is resent when its ACK comes back
  (one RTT later: the SACK blocks tell the sender what is missing);
- bytes are released strictly in order: whatever landed behind a missing chunk waits for it
  (head-of-line blocking).

Not modelled (so the model flatters TCP): the congestion window. After an RTO real TCP restarts in
slow start, and a backlog of several hundred segments then takes several more RTTs to drain.
The RTT is taken as twice this direction's delay (a symmetric path); jitter is drawn normal whatever
`jitter_dist` says; duplication, corruption, reordering and the rate limit do not apply to a stream.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import asdict, dataclass

from telesurg.netem.core import Impairment, ImpairmentControl

MIN_RTO_S = 0.2  # Linux TCP_RTO_MIN
MAX_RTO_S = 60.0
DUPACK_WAIT_S = 0.003  # three more segments at 1 kHz before the third duplicate ACK


@dataclass
class StreamStats:
    chunks: int = 0
    delivered: int = 0
    bytes_delivered: int = 0
    lost_random: int = 0  # transmissions lost at random (each costs a retransmission, never data)
    lost_outage: int = 0  # transmissions lost to an outage (sent during it, or in flight when it began)
    retransmissions: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class StreamDirection(ImpairmentControl):
    """Bytes written at one end → the same bytes, in order, at the other end, late but never lost."""

    def __init__(self, impairment: Impairment, seed: int, *, min_rto: float = MIN_RTO_S,
                 dupack_wait: float = DUPACK_WAIT_S) -> None:
        self.base = impairment
        self.impairment = impairment
        self.stats = StreamStats()
        self.min_rto = min_rto
        self.dupack_wait = dupack_wait
        self._rng = random.Random(seed)
        self._down = False
        self._data: dict[int, bytes] = {}  # chunk id → bytes, until released
        self._sent_at: dict[int, float] = {}  # chunk id → time of its latest transmission
        self._attempts: dict[int, int] = {}
        self._landed: dict[int, float] = {}  # chunk id → time it reached the far end
        self._retries: list[tuple[float, int]] = []  # (when, chunk id): transmissions still to make
        self._next_id = 0
        self._next_release = 0
        self._last_landing = float("-inf")
        self._released_until = float("-inf")  # release time of the last released chunk (lateness)
        self._head: int | None = None  # the chunk the RTO retries during an outage
        self._backoff = 0.0
        self._parked: list[int] = []  # other outage losses, resent once the head's retry is ACKed

    # -- control (the same surface as DirectionEmulator, so scenarios apply unchanged) ------------
    @property
    def is_down(self) -> bool:
        return self._down

    def down(self, now: float | None = None) -> None:
        """Cut the path: chunks in flight (landing after `now`) are lost and must be retransmitted."""
        self._down = True
        cut = float("-inf") if now is None else now
        for chunk in sorted(c for c, t in self._landed.items() if t > cut):
            del self._landed[chunk]
            self.stats.lost_outage += 1
            self._lost_to_outage(chunk, self._sent_at[chunk])
        self._last_landing = min(self._last_landing, cut)

    # -- data path -------------------------------------------------------------------------------
    def submit(self, data: bytes, now: float) -> None:
        """The sender wrote `data` at `now`."""
        chunk = self._next_id
        self._next_id += 1
        self._data[chunk] = data
        self.stats.chunks += 1
        self._transmit(chunk, now)

    def pop_due_timed(self, now: float) -> list[tuple[float, bytes]]:
        """(time it could first be read, bytes) for every chunk readable in order by `now`."""
        while self._retries and self._retries[0][0] <= now:
            when, chunk = heapq.heappop(self._retries)
            self.stats.retransmissions += 1
            self._transmit(chunk, when)
        out: list[tuple[float, bytes]] = []
        while (landed := self._landed.get(self._next_release)) is not None and landed <= now:
            chunk = self._next_release
            del self._landed[chunk]
            del self._sent_at[chunk], self._attempts[chunk]
            data = self._data.pop(chunk)
            self._released_until = max(self._released_until, landed)
            out.append((self._released_until, data))
            self._next_release += 1
            self.stats.delivered += 1
            self.stats.bytes_delivered += len(data)
        return out

    def pop_due(self, now: float) -> list[bytes]:
        return [data for _, data in self.pop_due_timed(now)]

    def next_time(self) -> float | None:
        """When `pop_due_timed` next has something to do (a retransmission or a readable chunk)."""
        times = [self._retries[0][0]] if self._retries else []
        landed = self._landed.get(self._next_release)
        if landed is not None:
            times.append(landed)
        return min(times) if times else None

    @property
    def backlog(self) -> int:
        """Chunks written but not yet readable at the far end."""
        return len(self._data)

    # -- internals -------------------------------------------------------------------------------
    def _rtt(self) -> float:
        return 2.0 * self.impairment.delay_ms / 1000.0

    def _rto(self) -> float:
        return self._rtt() + max(4.0 * 2.0 * self.impairment.jitter_ms / 1000.0, self.min_rto)

    def _transmit(self, chunk: int, at: float) -> None:
        self._attempts[chunk] = self._attempts.get(chunk, 0) + 1
        self._sent_at[chunk] = at
        if self._down:
            self.stats.lost_outage += 1
            self._lost_to_outage(chunk, at)
            return
        imp = self.impairment
        if imp.loss and self._rng.random() < imp.loss:
            self.stats.lost_random += 1
            first = self._attempts[chunk] == 1
            wait = self._rtt() + self.dupack_wait if first else self._rto()
            heapq.heappush(self._retries, (at + wait, chunk))
            return
        landing = max(at + self._delay_s(imp), self._last_landing)
        self._last_landing = landing
        self._landed[chunk] = landing
        if chunk == self._head:  # the RTO retry got through: its ACK brings the rest out one RTT later
            self._head = None
            resend = at + self._rtt()
            for parked in self._parked:
                heapq.heappush(self._retries, (resend, parked))
            self._parked.clear()

    def _lost_to_outage(self, chunk: int, at: float) -> None:
        if self._head is None:
            self._head, self._backoff = chunk, self._rto()
        elif self._head == chunk:
            self._backoff = min(2.0 * self._backoff, MAX_RTO_S)
        else:
            self._parked.append(chunk)
            return
        heapq.heappush(self._retries, (at + self._backoff, chunk))

    def _delay_s(self, imp: Impairment) -> float:
        delay = imp.delay_ms
        if imp.jitter_ms:
            delay = max(0.0, delay + imp.jitter_ms * self._rng.gauss(0.0, 1.0))
        return delay / 1000.0
