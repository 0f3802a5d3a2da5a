"""The dashboard's web server: aiohttp on a thread and event loop of its own, fed by one tap subscription.

Why its own thread and loop: the site's link loop and 1 kHz threads must never wait for a browser.
The tap hands records over without blocking (a full queue drops and counts); this loop drains them
10 times a second, updates the page model and the Prometheus figures, and pushes a small JSON update
to each open page 4 times a second over a WebSocket (a slow page simply gets fewer, larger updates:
each client keeps only the time of the last update it was sent). Video has its own subscription and
thread (dashboard/video.py) so a burst of video never crowds out the figures.

Routes: `/` page, `/static/*` its script and style, `/ws` live updates (JSON text, JPEG binary),
`/metrics` Prometheus, `/frame.jpg` latest picture, `/api/state` the page model as JSON.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST

from telesurg.dashboard.access import AccessPolicy, Bind, parse_bind
from telesurg.dashboard.metrics import SiteMetrics
from telesurg.dashboard.model import TOPICS, DashboardModel
from telesurg.dashboard.video import VideoPreview
from telesurg.realtime import GIL_SHARER_PRIORITY, request_realtime
from telesurg.tap import Tap, Topic, handing_over

log = logging.getLogger("telesurg.dashboard")
STATIC = Path(__file__).with_name("static")
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
RECORDS_QUEUE = 16_384  # ~7 s of a robot's records at 2.2 k/s: a stalled dashboard loses figures, never blocks
# ~2 s of 15 fps stereo at 2.5 Mbit/s, ~2 MB at most: the robot publishes one batch per eye and frame,
# the console one record per payload as they arrive
VIDEO_QUEUE = {"robot": 64, "console": 2048}
OVERLAP_S = 2.0
HISTORY_CHUNK = 200  # points per history message of a new page  # an update repeats this much of the past (records reach the model slightly out of order)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; connect-src 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}


class _Client:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.wake = asyncio.Event()
        self.since: float | None = None
        self.since_event = 0
        self.jpeg: bytes | None = None


class DashboardServer:
    """`start()` serves until `close()`; `url` is where to point a browser; `set_observers(n)` for the
    broadcast part. Records flow tap -> this thread only."""

    def __init__(self, tap: Tap, bind: Bind | str, *, site_name: str | None = None, role: str | None = None,
                 video: bool = True, allow: list[str] | None = None, hosts: tuple[str, ...] = (),
                 push_hz: float = 4.0, drain_hz: float = 10.0, preview_fps: float = 4.0) -> None:
        self.tap = tap
        self.bind = parse_bind(bind) if isinstance(bind, str) else bind
        self.policy = AccessPolicy.for_bind(self.bind, allow, hosts)
        self.model = DashboardModel(site_name or tap.site, tap.wall_offset, role=role)
        self.metrics = SiteMetrics(self.model, tap, role)
        self.push_s, self.drain_s = 1.0 / push_hz, 1.0 / drain_hz
        topics = [t for t in TOPICS if t != Topic.VIDEO]
        self.subscription = tap.subscribe("dashboard", RECORDS_QUEUE, topics)
        self.preview: VideoPreview | None = None
        if video:
            queue = VIDEO_QUEUE.get(role or "", max(VIDEO_QUEUE.values()))
            self.preview = VideoPreview(tap.subscribe("dashboard-video", queue, [Topic.VIDEO]),
                                        self._on_video, preview_fps=preview_fps)
        self.jpeg: bytes | None = None
        self._video_frames: collections.Counter[str] = collections.Counter()
        self._video_freezes: collections.Counter[str] = collections.Counter()
        self.port = self.bind.port
        self.cpu_s = 0.0
        self.records = 0
        self._clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._thread_main, name="dashboard", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.bind.url_host}:{self.port}/"

    def start(self) -> DashboardServer:
        self._thread.start()
        self._ready.wait(15.0)
        if self._error is not None:
            self.close()
            raise OSError(f"dashboard: cannot serve on {self.bind.host}:{self.bind.port}: {self._error}")
        if self.preview is not None:
            self.preview.start()
        return self

    def close(self) -> None:
        if self.preview is not None:
            self.preview.close()
            self.tap.unsubscribe(self.preview.subscription)
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(5.0)
        self.tap.unsubscribe(self.subscription)

    def set_observers(self, count: int) -> None:
        """Read-only observers of the live broadcast (the Zenoh part sets this; any thread)."""
        self.metrics.observers = int(count)

    # -- the dashboard thread ----------------------------------------------------------------------
    def _thread_main(self) -> None:
        request_realtime(GIL_SHARER_PRIORITY)  # see realtime.py
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by start(); never propagates into the site
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.bind.host, self.bind.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            self._error = exc
            self._ready.set()
            return
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        pump = asyncio.create_task(self._pump())
        try:
            await self._stop.wait()
        finally:
            pump.cancel()
            for client in list(self._clients):
                with contextlib.suppress(Exception):
                    await client.ws.close()
            await runner.cleanup()

    async def _pump(self) -> None:
        cpu0, next_push = time.thread_time(), 0.0
        while True:
            await asyncio.sleep(self.drain_s)
            model_apply, metrics_apply = self.model.apply, self.metrics.apply
            records = self.subscription.drain()
            for topic, t, payload in handing_over(records):
                model_apply(topic, t, payload)
                metrics_apply(topic, t, payload)
            self.records += len(records)
            now = time.monotonic()
            if now >= next_push:
                next_push = now + self.push_s
                self.model.tick(self.tap.clock())
                self.cpu_s = time.thread_time() - cpu0
                self.model.extra = self._extra()
                for client in self._clients:
                    client.wake.set()

    def _extra(self) -> dict[str, Any]:
        stats = self.tap.stats()
        return {"tap": {"dropped": sum(sum(s["dropped"].values()) for s in stats.values()),
                        "subscribers": {n: {"queued": s["queued"], "dropped": sum(s["dropped"].values())}
                                        for n, s in stats.items()}},
                "observers": self.metrics.observers, "clients": len(self._clients),
                "dashboard": {"cpu_s": round(self.cpu_s, 3), "records": self.records,
                              "video_cpu_s": None if self.preview is None else round(self.preview.cpu_s, 3)}}

    def _on_video(self, jpeg: bytes | None, stats: dict[str, Any]) -> None:
        """From the video thread: hop onto the loop (never touch the model from there)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._video_on_loop, jpeg, stats)

    def _video_on_loop(self, jpeg: bytes | None, stats: dict[str, Any]) -> None:
        self.metrics.video(stats)
        self.model.video = {k: stats[k] for k in ("fps", "decoding", "decoded", "dropped", "jpegs", "jpeg_ms")}
        for stream, n in stats["frames"].items():
            self._video_frames[str(stream)] += n
        for stream, n in stats["freezes"].items():
            self._video_freezes[str(stream)] += n
        self.model.video["frames"] = dict(self._video_frames)
        self.model.video["freezes"] = dict(self._video_freezes)
        if jpeg is not None:
            self.jpeg = jpeg
            for client in self._clients:
                client.jpeg = jpeg
                client.wake.set()

    # -- HTTP --------------------------------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/frame.jpg", self._frame)
        app.router.add_get("/api/state", self._state)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        reason = self.policy.refusal(request.remote, request.headers.get("Host"), request.headers.get("Origin"))
        if reason is not None:
            log.warning("dashboard: refused %s %s: %s", request.remote, request.path, reason)
            return web.Response(status=403, text=f"403 Forbidden: {reason}\n")
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=(STATIC / "index.html").read_bytes(), content_type="text/html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.Response(body=(STATIC / name).read_bytes(), content_type=STATIC_FILES[name])

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metrics.clients = len(self._clients)
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _frame(self, request: web.Request) -> web.Response:
        if self.preview is not None:
            self.preview.want(10.0)
        if self.jpeg is None:
            return web.Response(status=404, text="no picture yet (video off, or waiting for the stream's "
                                                 "next intra refresh)\n")
        return web.Response(body=self.jpeg, content_type="image/jpeg")

    async def _state(self, request: web.Request) -> web.Response:
        self.model.tick(self.tap.clock())
        return web.json_response(self.model.view())

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        # no per-message deflate: JPEG does not compress and JSON updates are small; it would cost this
        # thread CPU. A client that does not answer a close within 1 s is dropped (shutdown never waits long).
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096, compress=False, timeout=1.0)
        await ws.prepare(request)
        client = _Client(ws)
        client.jpeg = self.jpeg
        self._clients.add(client)
        sender = asyncio.create_task(self._send_loop(client))
        try:
            async for message in ws:  # the page sends nothing we act on; this waits for the close
                if message.type is WSMsgType.ERROR:
                    break
        finally:
            self._clients.discard(client)
            sender.cancel()
        return ws

    async def _send_loop(self, client: _Client) -> None:
        """One page: the whole model first, then what changed, whenever the pump wakes us."""
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.CancelledError):
            while not client.ws.closed:
                if self.preview is not None:
                    self.preview.want(5.0)
                since = None if client.since is None else client.since - OVERLAP_S
                now, last_event = self.model.now, self.model.last_event_id()
                for text in _messages(self.model.view(since, client.since_event)):
                    await client.ws.send_str(text)
                client.since, client.since_event = now, last_event
                if client.jpeg is not None:
                    jpeg, client.jpeg = client.jpeg, None
                    await client.ws.send_bytes(jpeg)
                client.wake.clear()
                await client.wake.wait()


def _messages(view: dict[str, Any]) -> Iterator[str]:
    """The view as JSON texts: a snapshot's minutes of points go in chunks after it, because one
    `json.dumps` of ~100 KB holds the GIL for 7-10 ms in C (measured), which the site's 1 kHz
    threads would feel; each chunk holds it ~1 ms and the loop yields between sends."""
    if view["type"] != "snapshot":
        yield json.dumps(view, separators=(",", ":"))
        return
    series = [("path", p["key"], p) for p in view["paths"]] + [("delay", d["peer"], d) for d in view["delay"]["series"]]
    held = {(kind, key): entry.pop("points") for kind, key, entry in series}
    for entry in (e for _, _, e in series):
        entry["points"] = []
    yield json.dumps(view, separators=(",", ":"))
    for (kind, key), points in held.items():
        for start in range(0, len(points), HISTORY_CHUNK):
            yield json.dumps({"type": "history", "kind": kind, "key": key,
                              "points": points[start:start + HISTORY_CHUNK]}, separators=(",", ":"))


def attach_dashboard(tap: Tap, bind: str, *, site_name: str | None = None, role: str | None = None,
                     video: bool = True, allow: list[str] | None = None) -> DashboardServer:
    """Serve the site's dashboard and /metrics from the tap, on its own thread; returns the running
    server (`.url`, `.close()`, `.set_observers(n)`). Raises `BindError` (bad value) or `OSError`."""
    return DashboardServer(tap, bind, site_name=site_name, role=role, video=video, allow=allow).start()
