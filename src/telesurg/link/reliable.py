"""Reliable ordered byte channel over unreliable datagrams: numbered frames, cumulative + selective
acks, retransmission with an adaptive timeout.

It carries the TLS handshake and then the TLS records (datagram keys, rekeys, session events). The
caller sends every frame on every path, so one dead path never stalls it; volume is small by design.
"""

from __future__ import annotations

import itertools

CHUNK = 1100  # bytes of stream per frame, leaves room for headers under the path MTU
RECV_WINDOW = 1024  # frames buffered out of order before later ones are dropped (they are resent)
SACK_BITS = 64


class ReliableChannel:
    """Sans-I/O sender and receiver halves of one ordered channel."""

    def __init__(self, *, initial_rto: float = 0.4, min_rto: float = 0.05, max_rto: float = 2.0,
                 max_in_flight: int = 256) -> None:
        self._next_seq = 0
        self._unacked: dict[int, list] = {}  # seq -> [data, last_sent | None, retries]
        self._recv_next = 0
        self._recv_buffer: dict[int, bytes] = {}
        self._ack_pending = False
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._rto = initial_rto
        self._min_rto, self._max_rto = min_rto, max_rto
        self._max_in_flight = max_in_flight
        self.retransmissions = 0

    # sender -------------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        for start in range(0, len(data), CHUNK):
            self._unacked[self._next_seq] = [data[start:start + CHUNK], None, 0]
            self._next_seq += 1

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    @property
    def idle(self) -> bool:
        """Nothing to send, retransmit or acknowledge: lets the per-message path skip a flush."""
        return not self._unacked and not self._ack_pending

    def on_ack(self, cumulative: int, sack: int, now: float) -> None:
        """cumulative = next frame the peer expects; bit i of sack = frame cumulative + 1 + i received."""
        acked = [seq for seq in self._unacked if seq < cumulative or (
            seq > cumulative and seq - cumulative - 1 < SACK_BITS and sack >> (seq - cumulative - 1) & 1)]
        for seq in acked:
            _, last_sent, retries = self._unacked.pop(seq)
            if retries == 0 and last_sent is not None:  # Karn: time only frames sent once
                self._sample_rtt(now - last_sent)

    def _sample_rtt(self, rtt: float) -> None:
        rtt = max(rtt, 0.0)
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        self._rto = min(self._max_rto, max(self._min_rto, self._srtt + 4 * self._rttvar))

    def _due(self, entry: list) -> float:
        if entry[1] is None:
            return float("-inf")
        return entry[1] + min(self._max_rto, self._rto * (2 ** entry[2]))

    def frames_due(self, now: float) -> list[tuple[int, bytes]]:
        """Frames to put on the wire now: new ones (within the in-flight limit) and timed-out ones."""
        out: list[tuple[int, bytes]] = []
        for index, (seq, entry) in enumerate(self._unacked.items()):
            if index >= self._max_in_flight:
                break
            if entry[1] is None:
                entry[1] = now
                out.append((seq, entry[0]))
            elif now >= self._due(entry):
                entry[1] = now
                entry[2] += 1
                self.retransmissions += 1
                out.append((seq, entry[0]))
        return out

    def clock_stepped(self, now: float) -> None:
        """The local clock jumped: frames sent "later than now" (it went back) count as sent now, so
        their retransmission is not put off by the step's size."""
        for entry in self._unacked.values():
            if entry[1] is not None and entry[1] > now:
                entry[1] = now

    def next_timer(self) -> float | None:
        # only the in-flight window can be due; stop there (a backlog must not make every call O(backlog))
        return min(map(self._due, itertools.islice(self._unacked.values(), self._max_in_flight)), default=None)

    # receiver -----------------------------------------------------------------------------------
    def on_data(self, seq: int, data: bytes) -> list[bytes]:
        """Accept one frame; returns the stream chunks now deliverable in order."""
        self._ack_pending = True
        if seq < self._recv_next or seq >= self._recv_next + RECV_WINDOW:
            return []
        self._recv_buffer[seq] = data
        ready: list[bytes] = []
        while self._recv_next in self._recv_buffer:
            ready.append(self._recv_buffer.pop(self._recv_next))
            self._recv_next += 1
        return ready

    def take_ack(self) -> tuple[int, int] | None:
        """(cumulative, sack) if an ack is owed since the last call."""
        if not self._ack_pending:
            return None
        self._ack_pending = False
        sack = 0
        base = self._recv_next + 1
        for seq in self._recv_buffer:
            if 0 <= seq - base < SACK_BITS:
                sack |= 1 << (seq - base)
        return self._recv_next, sack
