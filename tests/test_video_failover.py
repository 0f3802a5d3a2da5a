"""Stereo video across a path cut, under a virtual clock: the picture never freezes.

Every video fragment travels on every path that is not DOWN, so when path a (52.5 ms) is cut the
same fragments are already on their way over path b (82.5 ms): the viewer sees one frame interval
stretched by the 30 ms difference, never a freeze (> 100 ms without a new picture), and nothing is
lost. When path a returns, pictures come 30 ms earlier again, in order. The same property runs end to
end over real sockets in test_e2e_demo.py, where CPU contention adds noise; here it is exact.
"""

from __future__ import annotations

import numpy as np

from telesurg.netem.profiles import parse_profile
from telesurg.video.metrics import FREEZE_S
from test_video_link import FPS, stream_stereo

# the Shanghai-Casablanca delays with their jitter, and no random loss: any freeze is the cut's doing
PROFILE = parse_profile({"name": "cut-video", "path": [
    {"name": "a", "both": {"delay_ms": 52.5, "jitter_ms": 0.5}},
    {"name": "b", "both": {"delay_ms": 82.5, "jitter_ms": 3.0}},
]})


def test_cutting_one_path_never_freezes_the_picture_and_loses_no_frame() -> None:
    net, console, _, sender = stream_stereo(PROFILE, link_seed=5, net_seed=7, fec_overhead=0.2)
    net.run_for(3.0)
    cut_at = net.now
    net.path_down("a")
    net.run_for(4.0)  # long enough for the link to declare a DOWN and run on b alone
    back_at = net.now
    net.path_up("a")
    net.run_for(4.0)
    sender.close()

    assert console.receiver.keyframe_requests_sent == 0  # no frame was lost, so none was needed
    for stream in (0, 1):
        shown = [(f.frame_number, t) for f, t in console.shown if f.stream == stream and t > cut_at - 1.0]
        numbers = [n for n, _ in shown]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # every frame, in order
        times = np.array([t for _, t in shown])
        gaps = np.diff(times)
        assert gaps.max() < FREEZE_S, (stream, gaps.max())
        # the cut stretches one interval by the paths' difference (30 ms), no more
        around_cut = gaps[(times[1:] > cut_at) & (times[1:] < cut_at + 0.2)]
        assert around_cut.max() < 1 / FPS + 0.030 + 0.012
        # after the cut pictures ride path b: ~82.5 ms old; after path a returns, ~52.5 ms again
        latency = {t: t - f.capture_time for f, t in console.shown if f.stream == stream}
        on_b = [v for t, v in latency.items() if cut_at + 0.5 < t < back_at]
        on_a = [v for t, v in latency.items() if t > back_at + 1.0]
        assert 0.080 < np.median(on_b) < 0.095 and 0.050 < np.median(on_a) < 0.065
