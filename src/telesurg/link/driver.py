"""asyncio UDP driver for LinkCore (or a LinkHub of many sessions): one socket per path, the loop's
monotonic clock, one timer.

All protocol logic stays in the core; this file only moves bytes between sockets and the core,
arms the core's timer, and hands events to callbacks or a queue. uvloop is used when installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from telesurg.link.config import LinkConfig, parse_hostport
from telesurg.link.core import LinkCore
from telesurg.link.events import Event, HandshakeComplete, MessageClass, MessageReceived, SessionClosed
from telesurg.link.hub import LinkHub
from telesurg.link.keys import Identity, load_identity
from telesurg.link.sockets import (
    enable_arrival_stamps,
    enlarge_socket_buffers,
    kernel_arrival_time,
    thread_socket,
)

Addr = tuple[str, int]


def install_uvloop() -> bool:
    """Use uvloop's event loop policy when available (≈3× lower UDP latency on loopback)."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


class _PathProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: LinkEndpoint, path: str) -> None:
        self._endpoint = endpoint
        self._path = path

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._endpoint._on_datagram(data, self._path, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable while the peer restarts
        self._endpoint.counters[f"socket_error:{type(exc).__name__}"] += 1


class LinkEndpoint:
    """A LinkCore (one session) or a LinkHub (the robot's many) on real UDP sockets. Messages go to
    `on_message`, other events to `on_event`, and whatever has no callback goes to the `events` queue."""

    def __init__(self, core: LinkCore | LinkHub, locals_: dict[str, Addr], remotes: dict[str, Addr | None], *,
                 on_message: Callable[[MessageReceived], None] | None = None,
                 on_event: Callable[[Event], None] | None = None, stamp_arrivals: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if set(locals_) != set(core.path_names):
            raise ValueError(f"paths: sockets {sorted(locals_)} do not match the core's {sorted(core.path_names)}")
        self.core = core
        self._locals = locals_
        self._remotes = dict(remotes)
        self.on_message = on_message
        self.on_event = on_event
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.counters = core.counters
        self._transports: dict[str, asyncio.DatagramTransport] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._established = asyncio.Event()
        self._closed = False
        # The core is single-threaded; `send_from_thread` lets one other thread (the console's 1 kHz
        # ticker) seal and send without a hop through the event loop, so every core call holds this.
        self._core_lock = threading.Lock()
        self._thread_sockets: dict[str, socket.socket] = {}
        # With stamp_arrivals, when the kernel received the datagram being handled (one ioctl per
        # datagram), else when the loop read it: callbacks read it to measure their share of a delay.
        self.stamp_arrivals = stamp_arrivals
        self.arrived_at = 0.0
        # The site's clock: every `now` the core gets (probe stamps, hence the clock offset the peer
        # measures). It may step (a site's wall clock); the event loop's own time never does.
        self._clock = clock
        self._clock_is_loops = clock is time.monotonic

    @classmethod
    def from_config(cls, config: LinkConfig, *, is_client: bool, identity: Identity | None = None,
                    multi_session: bool = False, **callbacks: Any) -> LinkEndpoint:
        """`multi_session` (server only): a LinkHub, one session per console, instead of one LinkCore."""
        if multi_session and is_client:
            raise ValueError("multi_session is for the server side: a client dials one peer")
        identity = identity or load_identity(config.identity_cert, config.identity_key)
        core: LinkCore | LinkHub = LinkHub(config, identity) if multi_session else \
            LinkCore(config, identity, is_client=is_client)
        locals_ = {p.name: parse_hostport(p.local) for p in config.paths}
        remotes = {p.name: parse_hostport(p.remote) if p.remote else None for p in config.paths}
        return cls(core, locals_, remotes, **callbacks)

    def now(self) -> float:
        assert self._loop is not None, "start() first"
        return self._clock()  # not loop.time(): uvloop caches it per iteration at 1 ms resolution

    async def start(self) -> None:
        """Bind one socket per path; the client then starts the handshake on all of them."""
        self._loop = asyncio.get_running_loop()
        for path, local in self._locals.items():
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda path=path: _PathProtocol(self, path), local_addr=local)
            enlarge_socket_buffers(transport)
            self._transports[path] = transport
            self._thread_sockets[path] = thread_socket(transport)  # for `send_from_thread`
            if self.stamp_arrivals:
                enable_arrival_stamps(self._thread_sockets[path])
        with self._core_lock:
            if isinstance(self.core, LinkCore) and self.core.is_client:
                self.core.connect(self.now())
        self._after_core_call()

    def local_address(self, path: str) -> Addr:
        sockname = self._transports[path].get_extra_info("sockname")
        return sockname[0], sockname[1]

    def set_remote(self, path: str, addr: Addr) -> None:
        self._remotes[path] = addr

    async def wait_established(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._established.wait(), timeout)

    @property
    def established(self) -> bool:
        return self.core.established

    def send(self, msg_class: MessageClass, payload: bytes) -> int | None:
        """Send now (CONTROL leaves before this returns); message seq or None if dropped (a LinkHub
        broadcasts: the number of sessions reached). Loop thread."""
        with self._core_lock:
            seq = self.core.send(msg_class, payload, self.now())
        self._flush()
        return seq

    def send_from_thread(self, msg_class: MessageClass, payload: bytes) -> int | None:
        """`send` from another thread: sealed and on the sockets before this returns.

        Why: handing each command to the loop (call_soon_threadsafe) cost a wake-up and a thread
        switch per command, 0.3 ms at p50 and several ms at p99 on a busy 2-core machine."""
        if self._closed or self._loop is None:
            return None
        with self._core_lock:
            now = self._clock()
            seq = self.core.send(msg_class, payload, now)
            out = self.core.datagrams_to_send_addressed(now)
            rearm = self.core.get_timer() != self._timer_at
        for sock, data, dest in self._destinations(out, self._thread_sockets):
            try:
                sock.sendto(data, dest)
            except OSError as exc:  # a full socket buffer (BlockingIOError) or an unreachable network
                self.counters[f"socket_error:{type(exc).__name__}"] += 1
        if rearm:
            self._loop.call_soon_threadsafe(self._arm_timer)
        return seq

    def send_event(self, payload: bytes) -> None:
        with self._core_lock:
            self.core.send_event(payload, self.now())
        self._after_core_call()

    def send_to(self, sid: int, msg_class: MessageClass, payload: bytes) -> int | None:
        """`send` to one session of a LinkHub (the sid of its events); message seq or None. Loop thread."""
        hub = self._hub()
        with self._core_lock:
            seq = hub.send_to(sid, msg_class, payload, self.now())
        if msg_class == MessageClass.EVENT:
            self._after_core_call()  # the reliable channel's retransmission timer moved
        else:
            self._flush()  # like `send`: nothing else can have changed
        return seq

    def send_event_to(self, sid: int, payload: bytes) -> bool:
        """`send_event` to one session of a LinkHub; False if the session is unknown. Loop thread."""
        hub = self._hub()
        with self._core_lock:
            queued = hub.send_event_to(sid, payload, self.now())
        self._after_core_call()
        return queued

    def _hub(self) -> LinkHub:
        if not isinstance(self.core, LinkHub):
            raise TypeError("send_to/send_event_to need a LinkHub core (from_config(..., multi_session=True))")
        return self.core

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop is not None:
            with self._core_lock:
                self.core.close(self.now())
            self._flush()
        if self._timer is not None:
            self._timer.cancel()
        for transport in self._transports.values():
            transport.close()
        for sock in self._thread_sockets.values():
            sock.close()
        await asyncio.sleep(0)

    # -- internals -------------------------------------------------------------------------------
    def _on_datagram(self, data: bytes, path: str, addr: Addr) -> None:
        if self._closed:
            return
        now = self._clock()  # sockets exist, so start() ran: skip now()'s check on this hot path
        self.arrived_at = kernel_arrival_time(self._thread_sockets.get(path), now) if self.stamp_arrivals else now
        with self._core_lock:
            self.core.receive_datagram(data, path, now, addr)
        self._after_core_call(now)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if not self._closed:
            now = self.now()
            with self._core_lock:
                self.core.handle_timer(now)
            self._after_core_call(now)

    def _after_core_call(self, now: float | None = None) -> None:
        """Per datagram: cheap when nothing happened (the core caches its timer and output lists)."""
        self._dispatch_events()
        self._flush(now)
        self._arm_timer()

    def _dispatch_events(self) -> None:
        core = self.core
        while True:
            with self._core_lock:  # not held while a callback runs: callbacks may send
                events = []
                while (event := core.next_event()) is not None:
                    events.append(event)
            if not events:
                return
            for event in events:
                self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, MessageReceived) and self.on_message is not None:
            self.on_message(event)
            return
        if isinstance(event, HandshakeComplete):
            self._established.set()
        elif isinstance(event, SessionClosed) and not self.core.established:
            self._established.clear()  # a hub stays established while any other session is
        if self.on_event is not None:
            self.on_event(event)
        else:
            self.events.put_nowait(event)

    def _flush(self, now: float | None = None) -> None:
        with self._core_lock:
            out = self.core.datagrams_to_send_addressed(self.now() if now is None else now)
        if not out:
            return
        for transport, data, dest in self._destinations(out, self._transports):
            transport.sendto(data, dest)

    def _destinations(self, out: list[tuple[str, bytes, Addr | None]],
                      senders: dict[str, Any]) -> Iterator[tuple[Any, bytes, Addr]]:
        """(sender of its path, datagram, address: learnt, else configured); counts what has neither."""
        remotes = self._remotes
        for path, data, addr in out:
            dest = addr or remotes.get(path)
            sender = senders.get(path)
            if dest is None or sender is None:
                self.counters["no_address"] += 1
                continue
            yield sender, data, dest

    def _arm_timer(self) -> None:
        with self._core_lock:
            when = self.core.get_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        if when is None or self._loop is None:
            self._timer = None
            return
        if not self._clock_is_loops:  # the core's deadline is on the site's clock: move it to the loop's
            when = self._loop.time() + (when - self._clock())
        self._timer = self._loop.call_at(when, self._on_timer)

    async def __aenter__(self) -> LinkEndpoint:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.close()
