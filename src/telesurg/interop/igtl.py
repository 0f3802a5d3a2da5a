"""Read-only OpenIGTLink server for the robot site (`telesurg robot --igtl :18944`).

3D Slicer (OpenIGTLinkIF module, "client" connector to the robot's host and port) then shows each
arm's measured tool-tip pose as a linear transform named PSM1/PSM2 (robot base frame, millimetres)
and, if the site offers pictures, a small endoscope image. Nothing a client sends can move the robot:
incoming messages are parsed only far enough to be counted, then dropped.

Why not `pyigtl.OpenIGTLinkServer`: it replaces the process's SIGINT/SIGTERM handlers (the robot site
installs its own stop signals), binds only 127.0.0.1 or the address of a named interface, serves one
client at a time, and queues up to 100 messages for nobody while no client is connected. We keep
pyigtl for the protocol (message encoding, CRC-64, header parsing) and own a small `selectors` loop.

Threads: the servo thread calls `offer_telemetry` (one attribute write, never a lock or a wait);
this server's own thread wakes at the publishing deadlines, packs the latest sample
(igtl_core.IgtlPublisher) and writes it to every client through non-blocking sockets. A client that
reads too slowly loses messages (counted), it never stalls the others or the robot.
OpenIGTLink has neither authentication nor encryption: `:PORT` listens on loopback only; expose it
to an operating-room network deliberately (`0.0.0.0:PORT` or the interface's address).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from telesurg.interop.igtl_core import IgtlConfig, IgtlInbound, IgtlProtocolError, IgtlPublisher
from telesurg.messages import Telemetry

__all__ = ["DEFAULT_PORT", "IgtlAddressError", "IgtlConfig", "IgtlServer", "parse_listen_address", "start_igtl"]

log = logging.getLogger("telesurg.igtl")
DEFAULT_PORT = 18944  # IANA-registered OpenIGTLink port
_IDLE_WAKE_S = 0.1  # longest sleep: how quickly `stop()` and new connections are noticed without traffic
_NICENESS = 10  # the server thread yields CPU to the servo loop and the link


class IgtlAddressError(ValueError):
    """A listen address that is malformed or cannot be bound; the message is one line for the user."""


def parse_listen_address(text: str) -> tuple[str, int]:
    """`[HOST]:PORT` -> (host, port); an empty host means 127.0.0.1 (OpenIGTLink is unauthenticated)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host, port_text = "", text.strip()
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise IgtlAddressError(f"--igtl {text!r}: expected [HOST]:PORT, e.g. :{DEFAULT_PORT} (loopback) or "
                               f"0.0.0.0:{DEFAULT_PORT} (all interfaces)") from None
    if not 0 <= port <= 65535:
        raise IgtlAddressError(f"--igtl {text!r}: port {port} is outside 0..65535 (OpenIGTLink uses {DEFAULT_PORT})")
    return host, port


class _Client:
    __slots__ = ("address", "inbound", "outbox", "sock")

    def __init__(self, sock: socket.socket, address: Any) -> None:
        self.sock = sock
        self.address = address
        self.inbound = IgtlInbound()
        self.outbox = bytearray()


class IgtlServer:
    """Listens at construction (so a bad address fails at start-up), serves from `start()` to `stop()`."""

    def __init__(self, address: str | tuple[str, int], config: IgtlConfig | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 picture_source: Callable[[], tuple[np.ndarray, float] | None] | None = None) -> None:
        """`picture_source`, if given, is called on the server's thread when a picture is due and
        returns (picture, monotonic capture time) or None (e.g. `SharedPicture.read`)."""
        host, port = parse_listen_address(address) if isinstance(address, str) else address
        text = address if isinstance(address, str) else f"{host}:{port}"
        self.config = config or IgtlConfig()
        self.clock = clock
        self.picture_source = picture_source
        self.publisher = IgtlPublisher(self.config, wall_minus_mono=time.time() - time.monotonic())
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, _, _, _, sockaddr = infos[0]
            listener = socket.socket(family, socket.SOCK_STREAM)
        except (OSError, IndexError) as exc:
            raise IgtlAddressError(f"--igtl {text!r}: cannot resolve {host!r} ({_reason(exc)}); "
                                   f"give a local address, e.g. :{DEFAULT_PORT}") from None
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(sockaddr)
            listener.listen(self.config.max_clients)
        except OSError as exc:
            listener.close()
            raise IgtlAddressError(f"--igtl {text!r}: cannot listen on {host}:{port} ({_reason(exc)}); give a local "
                                   f"address and a free port, e.g. :{DEFAULT_PORT}") from None
        listener.setblocking(False)
        self._listener = listener
        self.address: tuple[str, int] = listener.getsockname()[:2]
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._clients: dict[socket.socket, _Client] = {}
        self.counters: Counter[str] = Counter()  # connections, refused_clients, dropped_slow, protocol_errors
        self.ignored: Counter[str] = Counter()  # incoming message type -> count (from clients now gone too)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="igtl", daemon=True)
        self.error: BaseException | None = None

    # -- inputs (any thread, never blocking) -------------------------------------------------------
    def offer_telemetry(self, telemetry: Telemetry) -> None:
        """Called on the servo thread with every telemetry sample; keeps only the latest."""
        self.publisher.offer_telemetry(telemetry)

    def offer_image(self, rgb: np.ndarray, t_mono: float | None = None) -> None:
        """The latest endoscope picture (HxWx3 RGB or HxW grey, uint8); sent at `image_hz`, decimated
        to `image_max_width`. From another process, use `picture_source` with a `SharedPicture`."""
        self.publisher.offer_image(rgb, self.clock() if t_mono is None else t_mono)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        log.info("OpenIGTLink server on %s:%d (read-only)", *self.address)

    def stop(self) -> None:
        """Stop serving and close every socket; safe to call twice, or without `start()`."""
        if self._stop.is_set() and self._listener.fileno() == -1:
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        for sock in list(self._clients):
            self._drop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._listener)
        self._listener.close()
        self._selector.close()

    def __enter__(self) -> IgtlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def clients(self) -> int:
        return len(self._clients)

    def stats(self) -> dict[str, Any]:
        """Counters for the site's report: what was sent, who connected, what was ignored."""
        ignored = Counter(self.ignored)
        for client in list(self._clients.values()):
            ignored.update(client.inbound.counts)
        return {"address": f"{self.address[0]}:{self.address[1]}", "clients": self.clients,
                **dict(self.counters), **dict(self.publisher.counts),
                "incoming_ignored": sum(ignored.values()), "incoming_by_type": dict(ignored)}

    # -- server thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        with contextlib.suppress(OSError):  # Linux niceness is per thread: this one gives way first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _NICENESS)
        try:
            while not self._stop.is_set():
                now = self.clock()
                timeout = _IDLE_WAKE_S  # nobody connected: publish nothing, just listen
                if self._clients:
                    timeout = min(max(self.publisher.next_deadline() - now, 0.0), _IDLE_WAKE_S)
                for key, mask in self._selector.select(timeout):
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._service(key.fileobj, mask)  # type: ignore[arg-type]
                if self._clients:
                    self._publish(self.clock())
        except BaseException as exc:  # noqa: BLE001 - a broken side interface must never take the robot down
            self.error = exc
            log.exception("OpenIGTLink server stopped")

    def _publish(self, now: float) -> None:
        if self.picture_source is not None and self.publisher.image_due(now):
            try:
                picture = self.picture_source()
            except Exception:  # noqa: BLE001 - a broken picture source must not stop the poses
                self.counters["picture_errors"] += 1
                picture = None
            if picture is not None:
                self.publisher.offer_image(*picture)
        messages = self.publisher.due(now)
        if messages:
            self._queue(messages)

    def _accept(self) -> None:
        try:
            sock, address = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if len(self._clients) >= self.config.max_clients:
            self.counters["refused_clients"] += 1
            sock.close()
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.config.send_buffer_bytes is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.send_buffer_bytes)
        self._clients[sock] = _Client(sock, address)
        self._selector.register(sock, selectors.EVENT_READ, None)
        self.counters["connections"] += 1
        log.info("OpenIGTLink client %s connected", address)

    def _service(self, sock: socket.socket, mask: int) -> None:
        client = self._clients.get(sock)
        if client is None:
            return
        if mask & selectors.EVENT_READ:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self._drop(sock, "closed")
                return
            if data:
                try:
                    client.inbound.feed(data)  # counted and discarded: a client never commands the robot
                except IgtlProtocolError as exc:
                    self.counters["protocol_errors"] += 1
                    log.warning("OpenIGTLink client %s: %s; disconnected", client.address, exc)
                    self._drop(sock, None)
                    return
        if mask & selectors.EVENT_WRITE:
            self._flush(client)

    def _queue(self, messages: list[bytes]) -> None:
        size = sum(len(m) for m in messages)
        for client in list(self._clients.values()):
            if len(client.outbox) + size > self.config.max_backlog_bytes:
                self.counters["dropped_slow"] += len(messages)
                continue
            client.outbox += b"".join(messages)
            self._flush(client)

    def _flush(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(client.sock, "send failed")
            return
        del client.outbox[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbox else 0)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(client.sock, events, None)

    def _drop(self, sock: socket.socket, reason: str | None) -> None:
        client = self._clients.pop(sock, None)
        if client is not None:
            self.ignored.update(client.inbound.counts)
            if reason:
                log.info("OpenIGTLink client %s: %s", client.address, reason)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(sock)
        sock.close()


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def start_igtl(address: str | None, config: IgtlConfig | None = None,
               picture_source: Callable[[], tuple[np.ndarray, float] | None] | None = None) -> IgtlServer | None:
    """The robot site's helper: None when `--igtl` was not given, else a started server.

    Raises IgtlAddressError (a ValueError with a one-line message) on a bad or busy address."""
    if not address:
        return None
    server = IgtlServer(address, config, picture_source=picture_source)
    server.start()
    return server
