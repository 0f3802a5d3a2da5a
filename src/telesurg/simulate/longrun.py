"""A long operation in accelerated virtual time: a real client/server link pair over the WAN-like
simulation profile with CONTROL streaming, for hours of virtual time, checking that memory stays flat
(tracemalloc), that the server rekeys at least every `rekey_s` with no gap in traffic, and how far
every counter and sequence number is from wrapping."""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass, field

from telesurg.link.events import MessageClass, MessageReceived
from telesurg.link.testing import make_pair
from telesurg.netem.virtual import VirtualNetwork
from telesurg.simulate.world import SIM_PROFILE


@dataclass
class LongRunReport:
    virtual_s: float
    control_hz: float
    sent: int = 0
    delivered: int = 0
    rekeys: int = 0
    max_rekey_interval_s: float = 0.0
    longest_delivery_gap_s: float = 0.0
    memory_samples_kib: list[tuple[float, float]] = field(default_factory=list)  # (virtual s, current KiB)
    peak_kib: float = 0.0
    wrap_fractions: dict[str, float] = field(default_factory=dict)  # used fraction of each counter's range

    @property
    def memory_growth_kib(self) -> float:
        """Growth between the first sample after warm-up and the last one."""
        samples = self.memory_samples_kib
        return samples[-1][1] - samples[min(1, len(samples) - 1)][1] if samples else 0.0


def long_run(virtual_s: float = 4 * 3600.0, control_hz: float = 50.0, sample_every_s: float = 600.0,
             seed: int = 0, on_progress=None) -> LongRunReport:  # type: ignore[no-untyped-def]
    client, server, _, _ = make_pair(seed=seed)
    net = VirtualNetwork(client, server, SIM_PROFILE, seed=seed)
    report = LongRunReport(virtual_s, control_hz)
    state: dict = {"rekeys": 0, "last_rekey": None, "last_delivery": None}

    def send(now: float) -> None:
        if client.send(MessageClass.CONTROL, bytes(80), now) is not None:
            report.sent += 1

    def watch(now: float) -> None:
        while (event := server.next_event()) is not None:
            if isinstance(event, MessageReceived):
                report.delivered += 1
                last = state["last_delivery"]
                if last is not None:
                    report.longest_delivery_gap_s = max(report.longest_delivery_gap_s, now - last)
                state["last_delivery"] = now
        while client.next_event() is not None:
            pass
        if state["last_rekey"] is None:
            if server.established:  # the session's first keys count as the first "rekey"
                state["last_rekey"] = now
            return
        rekeys = server.counters["rekeys"]
        if rekeys != state["rekeys"]:
            report.max_rekey_interval_s = max(report.max_rekey_interval_s, now - state["last_rekey"])
            state["rekeys"], state["last_rekey"] = rekeys, now

    tracemalloc.start()
    try:
        client.connect(0.0)
        net.add_ticker(1.0 / control_hz, send, start=1.0)
        net.add_ticker(0.01, watch)
        t = 0.0
        while t < virtual_s:
            t = min(virtual_s, t + sample_every_s)
            net.run_until(t)
            current, peak = tracemalloc.get_traced_memory()
            report.memory_samples_kib.append((t, current / 1024))
            report.peak_kib = peak / 1024
            if on_progress is not None:
                on_progress(t)
    finally:
        tracemalloc.stop()
    report.rekeys = state["rekeys"]
    report.max_rekey_interval_s = max(report.max_rekey_interval_s, virtual_s - (state["last_rekey"] or 0.0))
    session = server._session
    assert session is not None
    report.wrap_fractions = {
        "server AEAD counter (2^64)": session.epochs._counter / 2**64,
        "client AEAD counter (2^64)": client._session.epochs._counter / 2**64 if client._session else 0.0,
        "key epoch (2^32)": session.epochs.send_epoch / 2**32,
        "control message seq (2^64)": client._seq[MessageClass.CONTROL] / 2**64,
        "probe id (2^32)": max(m._next_probe_id for m in server._paths.values()) / 2**32,
    }
    return report
