"""Smoke test of bench/peers.py: every system (telesurg, aiortc data channels, Zenoh over UDP and
TCP, the lock-step TLS bridge) carries the 1 kHz stream through real loopback relays for ~1 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "peers.py"
SYSTEMS = ("telesurg", "webrtc-unordered", "webrtc-reliable", "zenoh-udp", "zenoh-tcp", "lockstep-tls")


def test_every_peer_carries_commands_through_the_relays(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    command = [sys.executable, str(BENCH), "--profile", "lan", "--systems", ",".join(SYSTEMS),
               "--warmup", "0.3", "--steady", "1", "--cut", "0", "--loss", "0", "--jitter", "0",
               "--drain", "0.5", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=150, env=dict(os.environ), check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["systems"]) == set(SYSTEMS)
    for name, system in report["systems"].items():
        steady = system["phases"]["steady"]
        assert steady["offered"] == 1000, name
        assert steady["delivered"] > 0, name
        assert system["malformed"] == 0, name
        relays = system["relays"]["steady"]
        assert set(relays) == set(system["paths"]), name  # it went through a relay on each of its paths
        if name == "lockstep-tls":  # one exchange per round trip: newest command only
            assert relays["a"]["forward"]["chunks"] >= steady["delivered"]
        else:  # a stream that keeps up: almost every command of the second arrives
            assert steady["delivered"] >= 900, (name, steady)
    assert report["systems"]["telesurg"]["paths"] == ["a", "b"]
