"""Unit tests for the sans-I/O video pieces: frame code, FEC, packetizer, reassembler, control, metrics."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telesurg.video import framecode
from telesurg.video.codec import EncodedFrame, EncoderConfig
from telesurg.video.control import ControlDecodeError, KeyframeRequest, is_video_control
from telesurg.video.fec import make_parity, parity_count, recover
from telesurg.video.metrics import VideoMetrics, psnr
from telesurg.video.packetizer import HEADER, MalformedFragment, Packetizer, parse
from telesurg.video.reassembly import FrameDropped, FrameReady, Reassembler


# -- frame code ----------------------------------------------------------------------------------
@given(st.integers(0, 2**32 - 1), st.sampled_from([(320, 180), (1280, 720), (64, 64), (1920, 1080)]))
@settings(max_examples=60, deadline=None)
def test_frame_code_round_trip(number: int, size: tuple[int, int]) -> None:
    w, h = size
    image = np.random.default_rng(number % 1000).integers(0, 256, (h * 3 // 2, w), dtype=np.uint8)
    framecode.stamp_yuv420p(image, number)
    assert framecode.read_luma(image[:h]) == number % (1 << 24)
    assert framecode.same_frame(framecode.read_luma(image[:h]), number)


@given(st.integers(0, 2**24 - 1), st.integers(0, 31))
@settings(max_examples=100, deadline=None)
def test_frame_code_single_bit_flip_is_rejected(number: int, bit: int) -> None:
    """A flipped block never reads as the stamped number, nor as any other: the 8-bit check (low byte
    of CRC-32) catches every single-bit error (checked exhaustively offline, also for 2-bit errors)."""
    luma = np.full((180, 320), 128, dtype=np.uint8)
    framecode.stamp_luma(luma, number)
    bw, bh = framecode.block_size(320, 180)
    row, col = divmod(bit, framecode.BLOCKS_PER_ROW)
    block = luma[row * bh : (row + 1) * bh, col * bw : (col + 1) * bw]
    block[:] = np.where(block > 128, framecode.BLACK, framecode.WHITE)  # invert that one block
    assert framecode.read_luma(luma) is None


def test_frame_code_absent_or_grey_is_none() -> None:
    assert framecode.read_luma(np.full((180, 320), 128, dtype=np.uint8)) is None
    assert framecode.read_luma(np.zeros((180, 320), dtype=np.uint8)) is None  # all black: CRC fails
    assert framecode.read_luma(np.zeros((20, 20), dtype=np.uint8)) is None  # too small for a code


def test_frame_code_survives_noise_like_quantisation() -> None:
    rng = np.random.default_rng(3)
    luma = rng.integers(0, 256, (720, 1280), dtype=np.uint8)
    framecode.stamp_luma(luma, 123456)
    noisy = np.clip(luma.astype(int) + rng.integers(-40, 41, luma.shape), 0, 255).astype(np.uint8)
    assert framecode.read_luma(noisy) == 123456


def test_frame_code_rgb() -> None:
    rgb = np.zeros((180, 320, 3), dtype=np.uint8)
    framecode.stamp_rgb(rgb, 77)
    from telesurg.video.frame import rgb_to_luma
    assert framecode.read_luma(rgb_to_luma(rgb)) == 77


# -- FEC -----------------------------------------------------------------------------------------
@given(st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=40), st.floats(0.05, 1.0),
       st.randoms(use_true_random=False))
@settings(max_examples=150, deadline=None)
def test_fec_recovers_one_loss_per_group(chunks: list[bytes], overhead: float, rnd: random.Random) -> None:
    size = max(len(c) for c in chunks)
    k = len(chunks)
    m = parity_count(k, overhead)
    parity = make_parity(chunks, m, size)
    assert len(parity) == m and all(len(p) == size for p in parity)
    # lose exactly one data fragment in a random subset of groups
    lost = {rnd.choice(range(j, k, m)) for j in range(m) if rnd.random() < 0.7}
    data = {i: c for i, c in enumerate(chunks) if i not in lost}
    rebuilt = recover(data, dict(enumerate(parity)), k, m, size)
    assert set(rebuilt) == lost
    for i in lost:
        assert rebuilt[i][: len(chunks[i])] == chunks[i]


def test_fec_cannot_recover_two_losses_in_one_group() -> None:
    chunks = [bytes([i]) * 10 for i in range(6)]
    parity = make_parity(chunks, 2, 10)  # groups {0,2,4} {1,3,5}
    data = {i: c for i, c in enumerate(chunks) if i not in (0, 2)}
    assert recover(data, dict(enumerate(parity)), 6, 2, 10) == {}
    data = {i: c for i, c in enumerate(chunks) if i not in (0, 1)}  # burst of 2 over 2 groups: fine
    assert set(recover(data, dict(enumerate(parity)), 6, 2, 10)) == {0, 1}


def test_parity_count() -> None:
    assert parity_count(10, 0) == 0
    assert parity_count(1, 0.2) == 1
    assert parity_count(10, 0.2) == 2
    assert parity_count(3, 1.0) == 3


# -- packetizer ----------------------------------------------------------------------------------
def _frame(n: int, size: int, key: bool = False, stream: int = 0, t: float | None = None) -> EncodedFrame:
    data = bytes((n * 7 + i) % 251 for i in range(size))
    return EncodedFrame(stream, n, n / 60 if t is None else t, key, data)


@given(st.integers(1, 20_000), st.floats(0, 1), st.integers(200, 1400))
@settings(max_examples=80, deadline=None)
def test_packetize_sizes_and_parse(size: int, overhead: float, max_payload: int) -> None:
    frame = _frame(5, size, key=True)
    payloads = Packetizer(max_payload, overhead).packetize(frame)
    assert all(len(p) <= max_payload for p in payloads)
    frags = [parse(p) for p in payloads]
    data = [f for f in frags if not f.parity]
    assert b"".join(f.body for f in sorted(data, key=lambda f: f.index)) == frame.data
    assert all(f.keyframe and f.frame_number == 5 and f.capture_time == frame.capture_time for f in frags)
    k = len(data)
    assert len(frags) - k == parity_count(k, overhead)


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_parse_rejects_garbage_with_one_error_type(blob: bytes) -> None:
    """Garbage either parses into a self-consistent fragment or raises MalformedFragment, nothing else."""
    try:
        frag = parse(blob)
    except MalformedFragment:
        return
    assert len(frag.body) <= frag.fragment_size and frag.index < max(frag.data_count, frag.parity_count)


def test_parse_rejects_tampered_fields() -> None:
    good = Packetizer(300, 0.5).packetize(_frame(1, 1000))[0]
    with pytest.raises(MalformedFragment):
        parse(good[:10])
    with pytest.raises(MalformedFragment):
        parse(bytes([9]) + good[1:])  # version
    with pytest.raises(MalformedFragment):
        parse(good + b"x")  # body length
    bad_index = bytearray(good)
    bad_index[8:10] = (999).to_bytes(2, "big")
    with pytest.raises(MalformedFragment):
        parse(bytes(bad_index))


def test_packetizer_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="max_payload"):
        Packetizer(HEADER.size)
    with pytest.raises(ValueError, match="fec_overhead"):
        Packetizer(1100, 2.0)


# -- reassembler ---------------------------------------------------------------------------------
def _feed(r: Reassembler, payloads: list[bytes], now: float) -> list[FrameReady | FrameDropped]:
    events: list[FrameReady | FrameDropped] = []
    for p in payloads:
        events += r.receive(p, now)
    return events


def test_reassembler_releases_complete_frame_immediately_and_repairs() -> None:
    pk = Packetizer(300, 0.25)
    r = Reassembler(hold=1 / 60, max_wait=0.025)
    payloads = pk.packetize(_frame(0, 2000))
    events = _feed(r, payloads[1:], 0.0)  # first data fragment lost; parity rebuilds it
    assert len(events) == 1 and isinstance(events[0], FrameReady)
    assert events[0].repaired and events[0].frame.data == _frame(0, 2000).data
    assert r.stats.repaired_fragments == 1


def test_reassembler_drops_incomplete_frame_at_deadline_and_keeps_order() -> None:
    pk = Packetizer(300, 0.0)
    r = Reassembler(hold=1 / 60, max_wait=0.025)
    f0, f1, f2 = (pk.packetize(_frame(n, 1000)) for n in range(3))
    assert isinstance(_feed(r, f0, 0.0)[0], FrameReady)
    assert _feed(r, f1[:-1], 0.016) == []  # frame 1 incomplete
    assert _feed(r, f2, 0.020) == []  # frame 2 complete but held behind frame 1 (<= one frame)
    timer = r.get_timer()
    assert timer is not None and timer == pytest.approx(min(0.016 + 0.025, 0.020 + 1 / 60))
    events = r.handle_timer(timer)
    assert [type(e) for e in events] == [FrameDropped, FrameReady]
    assert events[0].frame_number == 1 and events[0].reason == "incomplete"  # type: ignore[union-attr]
    assert events[1].frame.frame_number == 2  # type: ignore[union-attr]
    assert _feed(r, f1[-1:], 0.05) == [] and r.stats.stale_fragments == 1  # late piece discarded


def test_reassembler_never_holds_more_than_one_newer_frame() -> None:
    pk = Packetizer(300, 0.0)
    r = Reassembler(hold=1.0, max_wait=1.0)  # long timers: only the depth rule can release
    _feed(r, pk.packetize(_frame(0, 500)), 0.0)
    _feed(r, pk.packetize(_frame(2, 500)), 0.01)  # frame 1 missing entirely
    events = _feed(r, pk.packetize(_frame(3, 500)), 0.02)
    assert [type(e) for e in events] == [FrameDropped, FrameReady, FrameReady]
    assert events[0].frame_number == 1 and events[0].reason == "missing"  # type: ignore[union-attr]
    assert [e.frame.frame_number for e in events[1:]] == [2, 3]  # type: ignore[union-attr]


def test_reassembler_reorder_within_hold_is_repaired() -> None:
    pk = Packetizer(300, 0.0)
    r = Reassembler(hold=1 / 60, max_wait=0.025)
    _feed(r, pk.packetize(_frame(0, 500)), 0.0)
    assert _feed(r, pk.packetize(_frame(2, 500)), 0.030) == []
    events = _feed(r, pk.packetize(_frame(1, 500)), 0.035)
    assert [e.frame.frame_number for e in events] == [1, 2]  # type: ignore[union-attr]


@given(st.lists(st.tuples(st.integers(0, 30), st.floats(0, 0.001), st.booleans()), max_size=200),
       st.binary(max_size=40))
@settings(max_examples=100, deadline=None)
def test_reassembler_invariants_under_random_delivery(plan: list[tuple[int, float, bool]], junk: bytes) -> None:
    """Whatever arrives (loss, duplicates, reordering, garbage), frames come out once, in order,
    byte-exact, and every frame number is accounted for at most once."""
    pk = Packetizer(200, 0.3)
    frames = {n: _frame(n, 150 + 37 * n) for n in range(31)}
    payloads = {n: pk.packetize(f) for n, f in frames.items()}
    r = Reassembler(hold=0.01, max_wait=0.02)
    now, seen, events = 0.0, [], []
    for n, dt, drop_first in plan:
        now += dt
        events += _feed(r, payloads[n][1 if drop_first else 0 :], now)
        events += r.receive(junk, now)
    events += r.handle_timer(now + 10)
    for e in events:
        if isinstance(e, FrameReady):
            assert e.frame.data == frames[e.frame.frame_number].data
            seen.append(e.frame.frame_number)
        else:
            seen.extend(range(e.frame_number, e.frame_number + e.count))
    assert seen == sorted(seen) and len(seen) == len(set(seen))


# -- control and metrics -------------------------------------------------------------------------
def test_keyframe_request_round_trip_and_errors() -> None:
    req = KeyframeRequest(1, 4242)
    blob = req.encode()
    assert is_video_control(blob) and KeyframeRequest.decode(blob) == req
    with pytest.raises(ControlDecodeError):
        KeyframeRequest.decode(blob[:-1])
    with pytest.raises(ControlDecodeError):
        KeyframeRequest.decode(b"\x01" + blob[1:])
    assert not is_video_control(b"\x01\x01")


def test_metrics_report_shape_and_freezes() -> None:
    m = VideoMetrics()
    for _ in range(10):
        m.on_captured(0)
    t = 0.0
    for n in range(10):
        t += 0.2 if n == 5 else 1 / 60  # one 200 ms gap = one freeze
        m.on_displayed(0, n, t - 0.008, t)
    m.on_dropped(0, 2)
    m.on_bytes(125_000, 0.0)
    m.on_bytes(125_000, 1.0)
    m.on_psnr(0, 40.0)
    rep = m.report()
    assert {"frames_captured", "frames_displayed", "frames_dropped", "freezes", "latency_ms", "bitrate_mbps",
            "psnr_db"} <= rep.keys()
    assert rep["frames_captured"] == 10 and rep["frames_displayed"] == 10 and rep["frames_dropped"] == 2
    assert rep["freezes"] == 1 and isinstance(rep["freezes"], int)
    assert rep["latency_ms"]["p50"] == pytest.approx(8.0)  # type: ignore[index]
    assert rep["bitrate_mbps"] == pytest.approx(2.0)
    assert rep["psnr_db"] == 40.0


def test_metrics_stage_breakdown() -> None:
    """Marks from both ends become per-stage deltas; tracing is off (and free) without a stage clock."""
    off = VideoMetrics()
    off.mark(0, 1, "encoded", 1.0)
    assert not off.tracing and off.report()["stages_ms"] == {}
    m = VideoMetrics(stage_clock=lambda: 0.0)
    for n in range(5):
        t = n / 60
        for stage, dt in (("capture", 0.0), ("enc_start", 0.0005), ("encoded", 0.0065), ("packetized", 0.007),
                          ("first_fragment", 0.0075), ("complete", 0.008), ("dec_start", 0.0085)):
            m.mark(0, n, stage, t + dt)
        m.mark(0, n, "decoded", t + 0.010)
    m.mark(1, 99, "encoded", 5.0)  # never decoded: no delta, no leak into the report
    stages = m.report()["stages_ms"]
    assert stages["encoded"]["p50"] == pytest.approx(6.0)  # type: ignore[index]
    assert stages["decoded"]["p50"] == pytest.approx(1.5)  # type: ignore[index]
    assert "send_start" not in stages  # absent marks are skipped, the next delta spans them
    assert stages["first_fragment"]["p50"] == pytest.approx(0.5)  # type: ignore[index]
    assert sum(v["p50"] for v in stages.values()) == pytest.approx(10.0)  # type: ignore[misc]


def test_psnr() -> None:
    a = np.zeros((10, 10), dtype=np.uint8)
    b = a.copy()
    assert math.isinf(psnr(a, b))
    b[0, 0] = 255
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (255**2 / 100)))
    assert psnr(b, a) == psnr(a, b)  # no uint8 wrap-around in the difference


def test_encoder_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="width"):
        EncoderConfig(width=321)
    with pytest.raises(ValueError, match="HEVC"):
        EncoderConfig(codec="hevc", width=1278, height=720)
    with pytest.raises(ValueError, match="bogus"):
        EncoderConfig(bogus=1)  # type: ignore[call-arg]
    assert EncoderConfig(bitrate_kbps=6000, fps=60).vbv_bufsize_kbit == 100
