"""The web dashboard and /metrics (telesurg/dashboard/): real tap records in, a real HTTP client,
WebSocket and headless Chromium out; the 403s of the access policy from a real second source address."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from telesurg.dashboard import BindError, attach_dashboard, demo_flags, parse_bind
from telesurg.dashboard.access import AccessPolicy
from telesurg.dashboard.process import DashboardFeed
from telesurg.dashboard.sample_feed import SampleRobotSite
from telesurg.dashboard.video import PreviewCore
from telesurg.link.events import PathStateChanged
from telesurg.link.paths import PathState, PathStats
from telesurg.messages import ArmTelemetry, ServoCommand, Telemetry
from telesurg.tap import CommandJudged, Tap, Topic
from telesurg.video.codec import EncoderConfig
from telesurg.video.pipeline import VideoSender
from telesurg.video.sources import TestPatternSource

REPO = Path(__file__).resolve().parents[1]
CONSOLE = "console-shanghai"


def stats(rtt_ms: float, *, loss: float = 0.0, state: PathState = PathState.UP) -> PathStats:
    return PathStats(state, rtt_ms, rtt_ms - 1.0, rtt_ms + 5.0, 0.5, loss, 0.0, 1, 100, 99, 1)


def judged(seq: int, t_sent: float, offset: float, outcome: str = "applied", reason: str = "") -> CommandJudged:
    command = ServoCommand(0, seq, t_sent, (0.0, 0.0, -0.1), (1.0, 0.0, 0.0, 0.0), 0.2)
    return CommandJudged(command, f"{CONSOLE}#3", seq, offset, outcome, reason)


def telemetry(t: float, holds: int = 0) -> Telemetry:
    arm = ArmTelemetry(0, 1, 3, 7, (0.01, 0.02, -0.1), (1.0, 0.0, 0.0, 0.0), 0.3, 1)
    return Telemetry(t, holds, (arm,))


@pytest.fixture
def robot_dashboard() -> Iterator[tuple[Tap, DashboardFeed]]:
    tap = Tap("casablanca-robot")
    server = attach_dashboard(tap, "127.0.0.1:0", role="robot", video=False)
    yield tap, server
    server.close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(server: DashboardFeed) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = get(server.url + "metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def wait_for(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def test_bind_values_and_their_errors() -> None:
    assert parse_bind(":8080") == parse_bind("8080") == parse_bind("127.0.0.1:8080")
    assert parse_bind("0.0.0.0:8080").host == "0.0.0.0" and not parse_bind("0.0.0.0:8080").loopback
    assert parse_bind("[::1]:9000").host == "::1" and parse_bind("[::1]:9000").loopback
    with pytest.raises(BindError, match="port must be a number"):
        parse_bind("localhost:http")
    with pytest.raises(BindError, match="host must be an IP address"):
        parse_bind("example.org:8080")
    with pytest.raises(BindError, match="--dashboard-allow 'ten'"):
        AccessPolicy.for_bind(parse_bind(":1"), ["ten"])
    loopback = AccessPolicy.for_bind(parse_bind(":8080"))
    assert loopback.client_allowed("127.0.0.9") and not loopback.client_allowed("10.1.2.3")
    lan = AccessPolicy.for_bind(parse_bind("0.0.0.0:8080"))
    assert lan.client_allowed("10.1.2.3") and lan.client_allowed("::ffff:192.168.1.4")
    assert not lan.client_allowed("8.8.8.8")
    assert lan.refusal("10.1.2.3", "10.0.0.1:8080") is None
    assert "Host" in (lan.refusal("10.1.2.3", "attacker.example:8080") or "")
    assert "Origin" in (lan.refusal("10.1.2.3", "10.0.0.1:8080", "http://attacker.example") or "")
    assert demo_flags(":8080", ["10.0.0.0/8"]) == {
        "console": ["--dashboard", "127.0.0.1:8080", "--dashboard-allow", "10.0.0.0/8"],
        "robot": ["--dashboard", "127.0.0.1:8081", "--dashboard-allow", "10.0.0.0/8"]}
    assert demo_flags(None) == {"console": [], "robot": []}
    with pytest.raises(BindError, match="fixed port"):
        demo_flags(":0")


def test_metrics_from_real_records(robot_dashboard: tuple[Tap, DashboardFeed]) -> None:
    tap, server = robot_dashboard
    tiny = tap.subscribe("recorder", capacity=1)  # a stalled consumer: its losses must show in /metrics
    now = tap.clock()
    tap.publish(Topic.CLOCK, now, {CONSOLE: -0.25})
    tap.publish(Topic.PATHS, now, {CONSOLE: {"A": stats(204.1), "B": stats(231.0, loss=0.8,
                                                                            state=PathState.DEGRADED)}})
    # applied commands 99 ms and 120 ms after the console stamped them (console clock = robot - 0.25 s)
    tap.publish(Topic.COMMAND_DECISION, now, judged(1, now - 0.099 - 0.25, -0.25))
    tap.publish(Topic.COMMAND_DECISION, now, judged(2, now - 0.120 - 0.25, -0.25, "clipped", "jaw"))
    tap.publish(Topic.COMMAND_DECISION, now, judged(3, now - 0.9, -0.25, "rejected", "stale"))
    tap.publish(Topic.HOLD, now, {"arm": "PSM1", "cause": "watchdog", "reaction_ms": 50.2, "at_s": now})
    tap.publish(Topic.PATH_EVENT, now, PathStateChanged("B", PathState.UP, PathState.DEGRADED, now))
    tap.publish(Topic.TELEMETRY, now, telemetry(now))
    tap.publish(Topic.BROADCAST, now, {"observers": 3})  # as the broadcast publisher counts them
    key = ("telesurg_command_delay_seconds_count", (("peer", CONSOLE),))
    m = wait_for(lambda: (s := scrape(server)).get(key) and s)
    assert m[key] == 2
    assert m[("telesurg_command_delay_seconds_sum", (("peer", CONSOLE),))] == pytest.approx(0.219, abs=1e-6)
    assert m[("telesurg_command_delay_seconds_bucket", (("le", "0.1"), ("peer", CONSOLE)))] == 1
    assert m[("telesurg_path_rtt_seconds", (("path", "A"), ("peer", CONSOLE)))] == pytest.approx(0.2041)
    assert m[("telesurg_path_loss_ratio", (("path", "B"), ("peer", CONSOLE)))] == pytest.approx(0.008)
    assert m[("telesurg_path_state", (("path", "B"), ("peer", CONSOLE), ("state", "degraded")))] == 1
    assert m[("telesurg_path_state", (("path", "B"), ("peer", CONSOLE), ("state", "up")))] == 0
    assert m[("telesurg_commands_rejected_total", (("reason", "stale"),))] == 1
    assert m[("telesurg_commands_judged_total", (("outcome", "clipped"),))] == 1
    assert m[("telesurg_holds_total", (("arm", "PSM1"), ("cause", "watchdog")))] == 1
    assert m[("telesurg_path_state_changes_total", (("path", "B"), ("to", "degraded")))] == 1
    assert m[("telesurg_arm_state", (("arm", "PSM1"), ("owner", "slot 1"), ("state", "FOLLOWING")))] == 1
    assert m[("telesurg_clock_offset_seconds", (("peer", CONSOLE),))] == -0.25
    assert m[("telesurg_observers", ())] == 3
    assert m[("telesurg_tap_dropped_total", (("subscriber", "recorder"), ("topic", "link/paths")))] == 1
    assert m[("telesurg_tap_dropped_total", (("subscriber", "recorder"), ("topic", "telemetry")))] == 1
    assert tiny.dropped_total() == 8  # 9 published, the first one queued


def test_console_delay_comes_from_telemetry() -> None:
    tap = Tap("shanghai-console")
    server = attach_dashboard(tap, "127.0.0.1:0", role="console", video=False)
    try:
        now = tap.clock()
        tap.publish(Topic.CLOCK, now, {"casablanca-robot": 0.5})  # robot clock = console + 0.5 s
        for i in range(10):  # stamped by the robot 104 ms before they arrive here
            tap.publish(Topic.TELEMETRY, now + i * 0.01, telemetry(now + i * 0.01 + 0.5 - 0.104, holds=2))
        m = wait_for(lambda: (s := scrape(server)).get(("telesurg_telemetry_delay_seconds_count", ())) and s)
        assert m[("telesurg_telemetry_delay_seconds_count", ())] == 10
        assert m[("telesurg_telemetry_delay_seconds_sum", ())] == pytest.approx(1.04, abs=1e-6)
        assert m[("telesurg_robot_holds", ())] == 2
        assert ("telesurg_command_delay_seconds_count", (("peer", CONSOLE),)) not in m
    finally:
        server.close()


def test_event_stream_sends_the_model_then_what_changes(robot_dashboard: tuple[Tap, DashboardFeed]) -> None:
    tap, server = robot_dashboard
    tap.publish(Topic.PATHS, tap.clock(), {CONSOLE: {"A": stats(200.0)}})
    assert wait_for(lambda: json.loads(get(server.url + "api/state")[1])["paths"])  # drained into the model

    async def run() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        async with aiohttp.ClientSession() as session, session.ws_connect(server.url + "ws") as ws:
            first = json.loads((await ws.receive(timeout=5)).data)
            tap.publish(Topic.PATHS, tap.clock(), {CONSOLE: {"A": stats(287.5, state=PathState.DEGRADED)}})
            tap.publish(Topic.HOLD, tap.clock(), {"arm": "PSM2", "cause": "watchdog", "reaction_ms": 51.0,
                                                  "at_s": 0.0})
            history, updates = [], []
            while not any(u["paths"] and u["paths"][0]["rtt_ms"] == 287.5 for u in updates):
                message = json.loads((await ws.receive(timeout=5)).data)
                (history if message["type"] == "history" else updates).append(message)
            return first, history, updates

    first, history, updates = asyncio.run(run())
    assert first["type"] == "snapshot" and first["site"]["name"] == "casablanca-robot"
    assert first["paths"][0]["rtt_ms"] == 200.0 and first["paths"][0]["points"] == []  # the past comes next
    assert [(h["kind"], h["key"]) for h in history] == [("path", f"{CONSOLE}|A")]
    assert history[0]["points"][-1][1] == 200.0
    last = updates[-1]
    assert last["type"] == "update" and last["paths"][0]["state"] == "degraded"
    assert [p[1] for p in last["paths"][0]["points"]][-1] == 287.5
    assert len(last["paths"][0]["points"]) < 10  # an update repeats only the recent past
    assert any("PSM2 held: watchdog" in e["text"] for u in updates for e in u["events"])
    assert {"path B (console-shanghai) degraded", "path A (console-shanghai) degraded"} & {
        c["text"] for c in last["conditions"]}


def test_requests_from_outside_the_allowed_networks_get_403() -> None:
    tap = Tap("casablanca-robot")
    strict = attach_dashboard(tap, "127.0.0.1:0", role="robot", video=False, allow=["127.0.0.1/32"])
    default = attach_dashboard(tap, "127.0.0.1:0", role="robot", video=False)

    async def status(url: str, source: str, headers: dict[str, str] | None = None) -> int:
        connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session, session.get(url, headers=headers) as r:
            return r.status

    async def run() -> dict[str, int]:
        url = strict.url
        results = {"own address": await status(url + "metrics", "127.0.0.1"),
                   "other address": await status(url + "metrics", "127.0.0.2"),
                   "other address page": await status(url, "127.0.0.2"),
                   "other address default policy": await status(default.url + "metrics", "127.0.0.2"),
                   "foreign Host": await status(url + "metrics", "127.0.0.1", {"Host": "attacker.example"}),
                   "foreign Origin": await status(url + "ws", "127.0.0.1", {"Origin": "http://attacker.example"})}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url + "ws")
            results["websocket from other address"] = refused.value.status
        return results

    try:
        assert asyncio.run(run()) == {"own address": 200, "other address": 403, "other address page": 403,
                                      "other address default policy": 200, "foreign Host": 403,
                                      "foreign Origin": 403, "websocket from other address": 403}
    finally:
        strict.close()
        default.close()


def test_a_stopped_or_killed_dashboard_process_never_holds_up_the_site() -> None:
    """The page runs in a process of its own: stopped (SIGSTOP), the site's publishes still return and
    the tap drops and counts what the dashboard cannot take; resumed, /metrics shows those drops; killed,
    the site publishes on and closing it returns."""
    tap = Tap("casablanca-robot")
    server = attach_dashboard(tap, "127.0.0.1:0", role="robot", video=False)
    child = server._child
    try:
        os.kill(child.pid, signal.SIGSTOP)
        now = tap.clock()
        for seq in range(60_000):  # ~30 s of a robot's judged commands: more than the queue and the pipe hold
            tap.publish(Topic.COMMAND_DECISION, now, judged(seq, now - 0.35, -0.25))
        assert wait_for(lambda: server.subscription.dropped_total() > 0)
        os.kill(child.pid, signal.SIGCONT)
        key = ("telesurg_tap_dropped_total", (("subscriber", "dashboard"), ("topic", str(Topic.COMMAND_DECISION))))
        applied = ("telesurg_commands_judged_total", (("outcome", "applied"),))

        def accounted() -> dict | None:  # every record shown or counted as dropped
            m = scrape(server)
            return m if m.get(key, 0) + m.get(applied, 0) == 60_000 else None

        m = wait_for(accounted, timeout=10.0)
        assert m and m[key] > 0 and m[applied] >= 16_384
        os.kill(child.pid, signal.SIGKILL)
        child.join(5.0)
        for seq in range(1000):
            tap.publish(Topic.COMMAND_DECISION, tap.clock(), judged(seq, now, -0.25))
    finally:
        started = time.monotonic()
        server.close()
    assert time.monotonic() - started < 8.0 and not child.is_alive()


def test_closing_never_hangs_on_a_stopped_dashboard_process() -> None:
    tap = Tap("casablanca-robot")
    server = attach_dashboard(tap, "127.0.0.1:0", role="robot", video=False)
    child = server._child
    os.kill(child.pid, signal.SIGSTOP)
    now = tap.clock()
    for seq in range(60_000):  # the pipe fills behind the stopped process; the feed thread waits on it
        tap.publish(Topic.COMMAND_DECISION, now, judged(seq, now - 0.35, -0.25))
    time.sleep(1.0)
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 10.0 and not child.is_alive()


def test_port_in_use_is_a_clear_error(robot_dashboard: tuple[Tap, DashboardFeed]) -> None:
    tap, server = robot_dashboard
    with pytest.raises(OSError, match=f"dashboard: cannot serve on 127.0.0.1:{server.port}"):
        attach_dashboard(Tap("other"), f"127.0.0.1:{server.port}", video=False)


def test_preview_decodes_real_h264_into_jpeg() -> None:
    """Joined mid-stream (as a page opening late does): the picture starts at the next intra refresh."""
    clock = [0.0]  # virtual: 15 fps exactly, whatever the encoder's speed on this machine
    tap = Tap("robot", clock=lambda: clock[0])
    sub = tap.subscribe("video", 1000, [Topic.VIDEO])
    outbox: list[bytes] = []
    config = EncoderConfig(width=640, height=360, fps=15, bitrate_kbps=2500, gop_frames=10)
    sender = VideoSender([TestPatternSource(640, 360, 15, seed=s) for s in (0, 1)], config, outbox.append,
                         flush_fn=lambda: (tap.publish(Topic.VIDEO, tap.clock(), tuple(outbox)), outbox.clear()),
                         parallel=False)
    core = PreviewCore(preview_fps=100.0)
    jpegs = []
    try:
        for i in range(40):
            if i == 6:
                core.set_wanted(True)
            clock[0] = i / 15 + (0.15 if i >= 20 else 0.0)  # one 217 ms gap before frame 20: a freeze
            sender.step(clock[0])
            jpeg = core.feed(sub.drain(), clock[0])
            if jpeg is not None:
                jpegs.append(jpeg)
    finally:
        sender.close()
    assert core.frames == {0: 40, 1: 40} and core.freezes == {0: 1, 1: 1}
    assert jpegs and core.decoded >= len(jpegs)
    container = av.open(__import__("io").BytesIO(jpegs[-1]), format="mjpeg")
    picture = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert picture.shape == (360, 640, 3) and picture.std() > 10.0 and picture[..., 0].mean() > picture[..., 2].mean()


def test_browser_shows_live_figures_and_the_picture(tmp_path: Path) -> None:
    if not Path("/usr/bin/chromium").exists() or not Path("/usr/bin/chromedriver").exists():
        pytest.skip("needs Debian's /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    tap = Tap("casablanca-robot")
    server = attach_dashboard(tap, "127.0.0.1:0", role="robot")
    feed = SampleRobotSite(tap, command_hz=1000.0).start()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1600,1250", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(server.url)
        wait = WebDriverWait(driver, 20, poll_frequency=0.2)

        def text_of(selector: str) -> str:  # read in one script: the page re-renders 4 times a second
            return driver.execute_script("const e = document.querySelector(arguments[0]);"
                                         "return e ? e.textContent : '';", selector)

        def rtt_shown(path: str) -> str:
            return text_of(f'.tile[data-path="{CONSOLE}|{path}"] .rtt-now')

        for value in (150.0, 321.0):
            feed.rtt_override["A"] = value
            wait.until(lambda _d, v=value: rtt_shown("A").startswith(f"{v:.1f}"))
        assert driver.find_element(By.ID, "conn").text.lower() == "live"
        wait.until(lambda d: d.find_element(By.ID, "pill-arms").text.endswith("2/2 following"))
        delay = wait.until(lambda _d: text_of(".delay-p50"))
        assert 95.0 < float(delay.split()[0]) < 115.0  # the sample site's ~102.5 ms
        # the picture: a decoded JPEG, drawn into a canvas by the test and checked for real content
        wait.until(lambda d: d.execute_script("const i = document.getElementById('endoscope');"
                                              "return i.complete && i.naturalWidth > 0;"))
        spread = driver.execute_script("""
            const i = document.getElementById('endoscope'), c = document.createElement('canvas');
            c.width = i.naturalWidth; c.height = i.naturalHeight;
            const g = c.getContext('2d'); g.drawImage(i, 0, 0);
            const d = g.getImageData(0, 0, c.width, c.height).data; let s = 0, s2 = 0, n = 0;
            for (let k = 0; k < d.length; k += 64) { s += d[k]; s2 += d[k] * d[k]; n++; }
            return [c.width, c.height, Math.sqrt(s2 / n - (s / n) ** 2)];""")
        assert spread[:2] == [640, 360] and spread[2] > 10.0
        first_src = driver.find_element(By.ID, "endoscope").get_attribute("src")
        wait.until(lambda d: d.find_element(By.ID, "endoscope").get_attribute("src") != first_src)  # it moves
        errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, errors
        driver.save_screenshot(str(tmp_path / "dashboard.png"))
        (REPO / "out").mkdir(exist_ok=True)
        shutil.copy(tmp_path / "dashboard.png", REPO / "out" / "dashboard.png")
        image = av.open(str(tmp_path / "dashboard.png"))
        assert np.asarray(next(image.decode(video=0)).to_ndarray(format="rgb24")).std() > 5.0
    finally:
        driver.quit()
        feed.close()
        server.close()
