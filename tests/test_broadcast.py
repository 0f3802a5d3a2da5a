"""The observers' broadcast end to end: real Zenoh router, real publisher process, real observers,
real H.264 (libx264 on test-pattern frames) and real telemetry records, on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zenoh

from telesurg.broadcast import attach_broadcast
from telesurg.broadcast.observer import ObserverSession, ObserverState
from telesurg.broadcast.router_cli import start_router
from telesurg.broadcast.schema import (
    MalformedPayload,
    RecordEncoder,
    VideoUnit,
    decode_json,
    decode_video,
    encode_video,
)
from telesurg.broadcast.zconfig import make_config
from telesurg.messages import ArmTelemetry, Telemetry
from telesurg.tap import Tap, Topic
from telesurg.video.codec import EncoderConfig
from telesurg.video.pipeline import VideoSender
from telesurg.video.sources import TestPatternSource

W, H, FPS = 320, 240, 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SiteFeeder:
    """Publishes what a robot site publishes into its tap: stereo video fragments, 100 Hz telemetry."""

    def __init__(self, tap: Tap) -> None:
        self.tap = tap
        self.outbox: list[bytes] = []
        eyes = [TestPatternSource(W, H, FPS, eye_offset_px=o) for o in (0, 6)]
        self.sender = VideoSender(eyes, EncoderConfig(width=W, height=H, fps=FPS, bitrate_kbps=800),
                                  self.outbox.append, flush_fn=self._flush)
        self.publish_s: list[float] = []
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _flush(self) -> None:
        batch = tuple(self.outbox)
        self.outbox.clear()
        started = time.perf_counter()
        self.tap.publish(Topic.VIDEO, time.monotonic(), batch)
        self.publish_s.append(time.perf_counter() - started)

    def _run(self) -> None:
        next_frame = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            arms = tuple(ArmTelemetry(i, 1, 3, self.frames, (0.01 * i, 0.02, 0.08), (1.0, 0.0, 0.0, 0.0), 0.4, 1)
                         for i in range(2))
            started = time.perf_counter()
            self.tap.publish(Topic.TELEMETRY, now, Telemetry(now, 0, arms))
            self.publish_s.append(time.perf_counter() - started)
            if now >= next_frame:
                self.sender.process(self.sender.capture(), now)
                self.frames += 1
                next_frame += 1.0 / FPS
            self._stop.wait(0.01)

    def start(self) -> SiteFeeder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.sender.close()


@pytest.fixture
def broadcast():
    """A router on a fresh port, a robot-like tap with a publisher attached, and the feeder."""
    endpoint = f"tcp/127.0.0.1:{free_port()}"
    router = start_router([endpoint])
    tap = Tap("robot")
    publisher = attach_broadcast(tap, "robot", endpoint)
    feeder = SiteFeeder(tap).start()
    state = {"router": router}
    yield endpoint, tap, publisher, feeder, state
    feeder.stop()
    publisher.close()
    state["router"].close()


def pump(observer: ObserverSession, seconds: float, until=None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if observer.poll() == 0:
            time.sleep(0.005)
        if until is not None and until():
            return


def observers_counted(subscription, wanted, timeout: float = 10.0) -> bool:
    """Whether a BROADCAST record with a count `wanted` accepts arrives in the tap within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(wanted(payload["observers"]) for _, _, payload in subscription.drain()):
            return True
        time.sleep(0.1)
    return False


def test_video_telemetry_and_safety_reach_an_observer_which_decodes_the_picture(broadcast, tmp_path: Path) -> None:
    endpoint, tap, publisher, feeder, _ = broadcast
    counts = tap.subscribe("observer counts", 100, [Topic.BROADCAST])
    cli_report = tmp_path / "observe.json"
    cli = subprocess.Popen([sys.executable, "-m", "telesurg.cli", "observe", "--connect", endpoint, "--site", "robot",
                            "--headless", "--duration", "6", "--report", str(cli_report)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    observer = ObserverSession([endpoint], "robot", decode=True)
    try:
        pump(observer, 15.0, until=lambda: min(e.decoded for e in observer.state.eyes) >= 20)
        tap.publish(Topic.HOLD, time.monotonic(), {"arm": 0, "cause": "watchdog", "reaction_ms": 1.5, "at_s": 1.0})
        pump(observer, 3.0, until=lambda: observer.state.safety_total >= 1)
        # picture: the frame number drawn into the pixels by the sender, read back from the decoded picture
        left, right = observer.latest
        assert left is not None and right is not None
        assert left.frame_code() == left.frame_number
        assert right.frame_code() == right.frame_number
        report = observer.report()
        assert report["video"]["left"]["decoded"] >= 20 and report["video"]["right"]["decoded"] >= 20
        assert 0.0 < report["latency_ms"]["p50"] < 1000.0
        assert observer.state.telemetry["PSM2"]["position_m"] == [0.01, 0.02, 0.08]
        assert observer.state.telemetry["PSM1"]["supervisor_state"] == "FOLLOWING"
        assert observer.state.safety[-1]["kind"] == "hold" and observer.state.safety[-1]["cause"] == "watchdog"
        assert report["malformed_total"] == 0
        # a malformed payload on an observed key is counted and skipped; the picture goes on
        with zenoh.open(make_config("client", connect=[endpoint])) as intruder:
            intruder.put("telesurg/robot/video/left", b"\x01\x00garbage")
            intruder.put("telesurg/robot/telemetry/PSM1", b"{not json")
            intruder.put("telesurg/robot/alarms", json.dumps({"v": 99, "kind": "alarm"}).encode())
            decoded_before = observer.state.eyes[0].decoded
            pump(observer, 5.0, until=lambda: observer.state.eyes[0].decoded >= decoded_before + 10
                 and sum(observer.state.malformed.values()) >= 3)
        assert sum(observer.state.malformed.values()) == 3, observer.state.malformed
        assert observer.state.eyes[0].decoded >= decoded_before + 10
        # the site's publisher counts its observers (their liveliness tokens) into the site's tap
        assert observers_counted(counts, lambda n: n == 2), "two observers (this one and the CLI) never counted"
    finally:
        observer.close()
    out, _ = cli.communicate(timeout=30)
    assert cli.returncode == 0, out
    assert observers_counted(counts, lambda n: n == 0), "the observers' departure never counted"
    assert publisher.stats()["observers"] == 0
    from_cli = json.loads(cli_report.read_text())
    assert from_cli["video"]["left"]["decoded"] > 10 and from_cli["telemetry_arms"] == ["PSM1", "PSM2"]
    assert publisher.stats()["process_alive"]


def test_a_stalled_publisher_process_never_blocks_the_site(broadcast) -> None:
    endpoint, tap, publisher, feeder, _ = broadcast
    observer = ObserverSession([endpoint], "robot", decode=False)
    try:
        pump(observer, 10.0, until=lambda: observer.state.eyes[0].frames >= 10)
        os.kill(publisher.process.pid, signal.SIGSTOP)
        try:
            stalled_at = len(feeder.publish_s)
            # fill the hand-over socket: keyframe-sized batches straight into the tap
            for _ in range(200):
                tap.publish(Topic.VIDEO, time.monotonic(), (b"\x01" * 1100,) * 100)
            deadline = time.monotonic() + 20.0
            while not publisher.dropped_handover.get(Topic.VIDEO) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
            stats = publisher.stats()
            assert stats["dropped_handover"].get(Topic.VIDEO, 0) > 0, stats
            # a failed non-blocking write, never a wait for the stalled process (that would last until SIGCONT);
            # the bounds leave room for GIL and scheduler delays on a busy 2-core machine
            assert stats["send_ms_max"] < 250.0, stats
            assert max(feeder.publish_s[stalled_at:]) < 0.25
            assert len(feeder.publish_s) > stalled_at + 50  # the site kept publishing while stalled
        finally:
            os.kill(publisher.process.pid, signal.SIGCONT)
        frames = observer.state.eyes[0].frames
        pump(observer, 15.0, until=lambda: observer.state.eyes[0].frames >= frames + 10)
        assert observer.state.eyes[0].frames >= frames + 10  # the broadcast resumes after the stall
    finally:
        observer.close()


def test_observers_and_publisher_reconnect_after_the_router_restarts(broadcast) -> None:
    endpoint, _, _, _, state = broadcast
    observer = ObserverSession([endpoint], "robot", decode=False)
    try:
        pump(observer, 10.0, until=lambda: observer.state.eyes[0].frames >= 10)
        state["router"].close()
        pump(observer, 5.0, until=lambda: observer.router_lost >= 1)
        assert observer.router_lost == 1
        time.sleep(0.5)
        state["router"] = start_router([endpoint])
        frames = observer.state.eyes[0].frames
        pump(observer, 30.0, until=lambda: observer.state.eyes[0].frames >= frames + 10)
        assert observer.router_regained == 1
        assert observer.state.eyes[0].frames >= frames + 10
    finally:
        observer.close()


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    closed = f"tcp/127.0.0.1:{free_port()}"
    env = dict(os.environ, RUST_LOG="off")
    done = subprocess.run([sys.executable, "-m", "telesurg.cli", "observe", "--connect", closed, "--headless"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert done.stdout.strip().count("\n") == 0 and "Unable to connect" in done.stdout, done.stdout
    done = subprocess.run([sys.executable, "-m", "telesurg.cli", "broadcast-router", "--listen", "127.0.0.1:7447"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and "--listen '127.0.0.1:7447'" in done.stdout, done.stdout
    bad = tmp_path / "zenoh.json5"
    bad.write_text("{ mode: ")
    done = subprocess.run([sys.executable, "-m", "telesurg.cli", "broadcast-router", "--zenoh-config", str(bad)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and done.stdout.startswith("telesurg broadcast-router: --zenoh-config"), done.stdout
    assert done.stdout.strip().count("\n") == 0


def test_site_options_fail_in_one_line_before_the_site_starts(tmp_path: Path) -> None:
    import argparse

    from telesurg.broadcast.site_options import (
        add_broadcast_arguments,
        broadcast_from_args,
        check_broadcast_args,
    )

    parser = argparse.ArgumentParser()
    add_broadcast_arguments(parser)
    assert "give a Zenoh endpoint" in check_broadcast_args(parser.parse_args(["--broadcast", "1.2.3.4:7447"]), "robot")
    assert "key chunk" in check_broadcast_args(parser.parse_args(["--broadcast", "tcp/1.2.3.4:7447"]), "a/b")
    assert check_broadcast_args(parser.parse_args(["--broadcast", "tcp/1.2.3.4:7447"]), "robot") is None
    assert check_broadcast_args(parser.parse_args([]), "robot") is None
    assert broadcast_from_args(parser.parse_args([]), Tap("robot"), "robot") is None


def test_video_payload_round_trip_and_malformed_headers() -> None:
    unit = VideoUnit(1, 42, 12.5, 1.7e9, True, False, "h264", b"\x00\x00\x00\x01\x67abc")
    assert decode_video(encode_video(unit)) == unit
    payload = encode_video(unit)
    with pytest.raises(MalformedPayload, match="offset 0"):
        decode_video(b"\x07" + payload[1:])
    with pytest.raises(MalformedPayload, match="offset 1"):
        decode_video(payload[:1] + b"\x05" + payload[2:])
    with pytest.raises(MalformedPayload, match="start code"):
        decode_video(payload[:24] + b"abcd")
    with pytest.raises(MalformedPayload, match="'v'"):
        decode_json(b'{"kind": "alarm"}')


def test_record_encoder_pseudonyms_and_what_is_not_published() -> None:
    encoder = RecordEncoder("robot", 1000.0, anonymous=True)
    out = encoder.encode(Topic.HANDOVER, 5.0, {"arm": 0, "from": "dr-lee#3", "to": "dr-chen#4", "reason": "asked",
                                               "at_s": 5.0})
    (key, body), = out
    record = json.loads(body)
    assert key == "telesurg/robot/safety" and record["from"] == "peer-1" and record["to"] == "peer-2"
    assert record["v"] == 1 and record["t_wall"] == 1005.0
    site = json.loads(encoder.encode(Topic.SITE, 1.0, {"event": "start", "role": "robot", "software": "x",
                                                       "config": {"link": {"key": "secret"}}})[0][1])
    assert "config" not in site
    assert encoder.encode(Topic.COMMAND_RECEIVED, 1.0, object()) == []
    room = {"arms": {"0": {"owner": "dr-lee", "pending": ["dr-chen"], "local": False}},
            "peers": {"dr-lee": {"role": "lead", "slot": 1, "connected": True},
                      "dr-chen": {"role": "consultant", "slot": 2, "connected": True}}}
    (key, room_body), = encoder.encode(Topic.ROOM, 3.0, room)
    assert key == "telesurg/robot/room" and b"dr-" not in room_body
    assert json.loads(room_body)["arms"]["PSM1"] == {"owner": "peer-1", "pending": ["peer-2"], "local": False}
    assert encoder.encode(Topic.ROOM, 3.1, room) == []  # unchanged: not sent again at 20 Hz
    telemetry = Telemetry(4.0, 0, (ArmTelemetry(0, 1, 3, 7, (0.0, 0.0, 0.1), (1.0, 0.0, 0.0, 0.0), 0.2, 2),))
    (_, arm), = encoder.encode(Topic.TELEMETRY, 4.0, telemetry)
    assert json.loads(arm)["owner"] == "peer-2"  # slot 2 is dr-chen (peer-2 since the handover above)
    state = ObserverState()
    assert state.receive("telesurg/robot/safety", body, 0.0, 0.0) is None and state.safety_total == 1
    for severity in ("ALARM", "OK"):  # the console's alarm record: a severity change
        (key, alarm), = encoder.encode(Topic.ALARM, 2.0, {"key": "rtt", "severity": severity, "previous": "WARN",
                                                          "message": "path a RTT"})
        state.receive(key, alarm, 0.0, 0.0)
        assert state.report()["alarms_active"] == (["rtt"] if severity == "ALARM" else [])
    with pytest.raises(ValueError, match="key chunk"):
        RecordEncoder("robot/*", 0.0)


def test_credentials_and_acl_from_a_zenoh_config_file(tmp_path: Path) -> None:
    """The shipped router example's ACL (without TLS): refused credentials are a one-line error;
    an observer may subscribe but its puts never reach anyone; a site's do."""
    import re

    example = (Path(__file__).parents[1] / "src/telesurg/broadcast/examples/router-secure.json5").read_text()
    users = tmp_path / "users.txt"
    users.write_text("robot-site:site-pw\nobserver:observer-pw\n")
    router_config = re.sub(r"link: \{.*?\n    \},\n", "", example, flags=re.S).replace(
        "/etc/telesurg/broadcast/users.txt", str(users))
    assert "tls" not in router_config.split("auth:")[0].split("transport:")[1]
    (tmp_path / "router.json5").write_text(router_config)
    for name, user, password in (("site", "robot-site", "site-pw"), ("observer", "observer", "observer-pw"),
                                 ("wrong", "observer", "guess")):
        (tmp_path / f"{name}.json5").write_text(f'{{ transport: {{ auth: {{ usrpwd: {{ user: "{user}", '
                                                f'password: "{password}" }} }} }} }}')
    endpoint = f"tcp/127.0.0.1:{free_port()}"
    router = start_router([endpoint], zenoh_config=tmp_path / "router.json5")
    try:
        done = subprocess.run([sys.executable, "-m", "telesurg.cli", "observe", "--connect", endpoint, "--headless",
                               "--zenoh-config", str(tmp_path / "wrong.json5")],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "credentials refused" in done.stdout, done.stdout
        assert done.stdout.strip().count("\n") == 0 and not done.stderr.strip(), done.stderr
        observer = ObserverSession([endpoint], "robot", zenoh_config=tmp_path / "observer.json5")
        try:
            from telesurg.broadcast.zconfig import open_session

            site = open_session(make_config("client", connect=[endpoint], config_file=tmp_path / "site.json5"), "site")
            other = open_session(make_config("client", connect=[endpoint], config_file=tmp_path / "observer.json5"), "o")
            time.sleep(0.5)
            alarm = {"v": 1, "kind": "alarm", "site": "robot", "t": 0.0, "t_wall": 0.0, "key": "k", "active": True}
            other.put("telesurg/robot/alarms", json.dumps(dict(alarm, key="forged")).encode())
            site.put("telesurg/robot/alarms", json.dumps(alarm).encode())
            pump(observer, 5.0, until=lambda: "k" in observer.state.alarms)
            time.sleep(0.3)
            observer.poll()
            assert set(observer.state.alarms) == {"k"}
            # the ACL lets a site count the observers' liveliness tokens, and an observer none of them
            seen: dict[str, list[str]] = {"site": [], "observer": []}
            for name, session in (("site", site), ("observer", other)):
                session.liveliness().declare_subscriber(
                    "telesurg/observers/**", lambda sample, n=name: seen[n].append(str(sample.key_expr)), history=True)
            deadline = time.monotonic() + 5.0
            while not seen["site"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert seen["site"] and all(k.startswith("telesurg/observers/robot/") for k in seen["site"])
            assert seen["observer"] == []
            site.close()
            other.close()
        finally:
            observer.close()
    finally:
        router.close()


def test_routers_chain_a_hall_reads_from_its_own_router() -> None:
    site_side, hall = f"tcp/127.0.0.1:{free_port()}", f"tcp/127.0.0.1:{free_port()}"
    upstream = start_router([site_side])
    downstream = start_router([hall], connect=[site_side])
    try:
        observer = ObserverSession([hall], "robot", decode=False)
        try:
            encoder = RecordEncoder("robot", 0.0)
            with zenoh.open(make_config("client", connect=[site_side])) as site:
                time.sleep(0.5)
                (key, body), = encoder.encode(Topic.ALARM, 1.0, {"key": "rtt", "severity": "ALARM", "message": "x"})
                site.put(key, body)
                pump(observer, 5.0, until=lambda: "rtt" in observer.state.alarms)
            assert observer.state.report()["alarms_active"] == ["rtt"]
        finally:
            observer.close()
    finally:
        downstream.close()
        upstream.close()
