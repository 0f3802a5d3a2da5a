"""A TCP relay for one emulated path: the TCP counterpart of `relay.PathRelay`, for peers that only
speak TCP (Zenoh's tcp/ links, TLS bridges), driven by the same profile and scenarios.

It accepts connections on a local port and opens one to the target for each; the bytes of each
direction go through a sans-I/O `StreamDirection` (netem/stream.py: delay, jitter, loss as a
retransmission delay, outage as a stall with RTO backoff) and leave in order when it says so.
Plain threads and blocking sockets: one reader and one writer per direction, the writer sleeping
until the model's next release (a precise timeout, as the UDP relay's departure threads).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from telesurg.netem.core import Impairment
from telesurg.netem.path import derive_seed
from telesurg.netem.stream import StreamDirection

Address = tuple[str, int]
RECV_BYTES = 65536


class StreamPath:
    """Both directions of every connection on one path; `down`/`up`/`set`/`revert` apply to all of
    them, and to connections opened later (the surface of `EmulatedPath`, so `apply_action` works)."""

    def __init__(self, name: str, forward: Impairment, reverse: Impairment, seed: int = 0) -> None:
        self.name = name
        self.seed = seed
        self._base = {"forward": forward, "reverse": reverse}
        self._impairments = dict(self._base)  # current values, after `set`
        self._down = False
        self.connections: list[tuple[StreamDirection, StreamDirection]] = []
        self.lock = threading.Lock()

    @property
    def is_down(self) -> bool:
        return self._down

    def open(self) -> tuple[StreamDirection, StreamDirection]:
        """A new connection's (forward, reverse) models, in the path's current state."""
        with self.lock:
            n = str(len(self.connections))
            pair = tuple(StreamDirection(self._base[d], derive_seed(self.seed, self.name, d, n))
                         for d in ("forward", "reverse"))
            for name, direction in zip(("forward", "reverse"), pair, strict=True):
                direction.impairment = self._impairments[name]
                if self._down:
                    direction.down()
            self.connections.append(pair)  # type: ignore[arg-type]
            return pair  # type: ignore[return-value]

    def _all(self) -> list[StreamDirection]:
        return [d for pair in self.connections for d in pair]

    def down(self, now: float | None = None) -> None:
        with self.lock:
            self._down = True
            for direction in self._all():
                direction.down(now)

    def up(self) -> None:
        with self.lock:
            self._down = False
            for direction in self._all():
                direction.up()

    def set(self, **changes: float) -> None:
        with self.lock:
            for name, imp in self._impairments.items():
                self._impairments[name] = imp.model_copy(update=changes)
            for direction in self._all():
                direction.set(**changes)

    def revert(self, *fields: str) -> None:
        with self.lock:
            for name, imp in self._impairments.items():
                self._impairments[name] = imp.model_copy(update={f: getattr(self._base[name], f) for f in fields})
            for direction in self._all():
                direction.revert(*fields)

    def stats(self) -> dict[str, dict[str, int]]:
        totals: dict[str, dict[str, int]] = {}
        for pair in self.connections:
            for name, direction in zip(("forward", "reverse"), pair, strict=True):
                for key, value in direction.stats.as_dict().items():
                    totals.setdefault(name, {}).setdefault(key, 0)
                    totals[name][key] += value
        return totals


class _Pump:
    """One direction of one connection: read from `src` into the model, write to `dst` on time."""

    def __init__(self, src: socket.socket, dst: socket.socket, model: StreamDirection, lock: threading.Lock,
                 on_done: Callable[[], None]) -> None:
        self._src, self._dst, self._model, self._lock = src, dst, model, lock
        self._doorbell = threading.Condition(lock)
        self._eof = False
        self._closed = False
        self._on_done = on_done
        self.threads = [threading.Thread(target=self._read, daemon=True, name="tcp-relay-read"),
                        threading.Thread(target=self._write, daemon=True, name="tcp-relay-write")]
        for thread in self.threads:
            thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self._src.recv(RECV_BYTES)
            except OSError:
                data = b""
            with self._lock:
                if not data:
                    self._eof = True
                else:
                    self._model.submit(data, time.monotonic())
                self._doorbell.notify()
            if not data:
                return

    def _write(self) -> None:
        while True:
            out: list[bytes] = []
            with self._lock:
                while not out:
                    if self._closed:
                        return
                    due = self._model.next_time()
                    if due is None and self._eof and self._model.backlog == 0:
                        break  # the sender closed and everything it wrote is out
                    now = time.monotonic()
                    if due is not None and due <= now:
                        out = self._model.pop_due(now)
                        continue
                    self._doorbell.wait(None if due is None else due - now)
            if not out:
                with contextlib.suppress(OSError):
                    self._dst.shutdown(socket.SHUT_WR)
                self._on_done()
                return
            try:
                for data in out:
                    self._dst.sendall(data)
            except OSError:
                self._on_done()
                return

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._doorbell.notify_all()


class TcpPathRelay:
    """One emulated path for TCP: listen locally, connect to `target` per accepted connection."""

    def __init__(self, name: str, forward: Impairment | None = None, reverse: Impairment | None = None,
                 seed: int = 0) -> None:
        self.path = StreamPath(name, forward or Impairment(), reverse or Impairment(), seed)
        self.name = name
        self.listen_address: Address | None = None
        self.accepted = 0
        self._listener: socket.socket | None = None
        self._target: Address | None = None
        self._sockets: list[socket.socket] = []
        self._pumps: list[_Pump] = []
        self._closed = False

    def start(self, listen: Address, target: Address) -> Address:
        """Bind `listen` (port 0 picks one); returns the bound address. Connections are accepted on a thread."""
        self._target = target
        self._listener = socket.create_server(listen, reuse_port=False)
        self.listen_address = self._listener.getsockname()[:2]
        threading.Thread(target=self._accept, daemon=True, name=f"tcp-relay-{self.name}").start()
        return self.listen_address

    def _accept(self) -> None:
        assert self._listener is not None and self._target is not None
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5.0)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.accepted += 1
            self._sockets += [client, upstream]
            forward, reverse = self.path.open()
            lock = self.path.lock
            self._pumps += [_Pump(client, upstream, forward, lock, lambda: None),
                            _Pump(upstream, client, reverse, lock, lambda: None)]

    def rearm(self) -> None:
        """Call after changing the path so the writers look at the new release times."""
        for pump in self._pumps:
            with pump._doorbell:
                pump._doorbell.notify()

    @property
    def stats(self) -> dict[str, Any]:
        return {"accepted": self.accepted, **self.path.stats(), "down": self.path.is_down}

    def close(self) -> None:
        self._closed = True
        for pump in self._pumps:
            pump.close()
        for sock in [*self._sockets, *([self._listener] if self._listener else [])]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
