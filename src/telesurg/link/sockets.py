"""UDP socket helpers shared by the link driver and the netem relay: buffers, a thread's own socket
object, and the kernel's receive time."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import struct
import time

SOCKET_BUFFER_BYTES = 4 << 20  # ~2 s of 1 kHz control on two arms plus video: a stalled process loses nothing


def enlarge_socket_buffers(transport: asyncio.BaseTransport, size: int = SOCKET_BUFFER_BYTES) -> None:
    """Ask for large UDP buffers so a process descheduled for a while finds its datagrams queued
    instead of dropped by the kernel (the default ~208 KiB holds ~0.8 s of control traffic)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, size)  # capped by net.core.[rw]mem_max


def thread_socket(transport: asyncio.BaseTransport) -> socket.socket:
    """A second socket object on a transport's (non-blocking) socket, usable from another thread:
    the event loop's transports are not thread-safe."""
    return socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))


_SIOCGSTAMP = 0x8906  # Linux: kernel receive time of the last datagram read from a socket (struct timeval)
_TIMEVAL = struct.Struct("@ll")


def enable_arrival_stamps(sock: socket.socket) -> None:
    """Have the kernel stamp every datagram on arrival: the first SIOCGSTAMP on a socket turns
    stamping on (and reports the time of that call), so make it here, before traffic. The kernel
    flips its switch from deferred work: datagrams in the first moments may still read as arriving
    when they were read, which only makes them look later. (SO_TIMESTAMP would not do: it moves the
    stamp into ancillary data, which the event loop's reads discard.)"""
    with contextlib.suppress(OSError):
        fcntl.ioctl(sock.fileno(), _SIOCGSTAMP, bytes(_TIMEVAL.size))


def kernel_arrival_time(sock: socket.socket | None, now: float | None = None) -> float:
    """When the kernel received the datagram just read from `sock`, on the scale of `now` (by default
    time.monotonic(); a site's own clock works too, stepped or not); now where unsupported. The netem
    relay starts a packet's emulated delay there, not when its busy loop got round to it (that lag
    was p99 3.4 ms, max 32 ms in the demo); the robot counts its share of a command's delay from
    there, socket queueing and decryption included. `now`: the caller's clock, if it has just read it."""
    if now is None:
        now = time.monotonic()
    if sock is None:
        return now
    try:
        seconds, micros = _TIMEVAL.unpack(fcntl.ioctl(sock.fileno(), _SIOCGSTAMP, bytes(_TIMEVAL.size)))
    except OSError:
        return now
    arrived = seconds + micros / 1e6 - (time.time() - now)  # wall clock -> the scale of `now`
    return arrived if arrived <= now else now
