"""The dashboard's web server: aiohttp on the event loop of the dashboard's process, fed with the
site's tap records over a pipe (dashboard/process.py runs it and feeds it).

Records arrive ~10 times a second (`feed`); they update the page model and the Prometheus figures,
and a small JSON update goes to each open page 4 times a second over a WebSocket (a slow page simply
gets fewer, larger updates: each client keeps only the time of the last update it was sent). Video
records go to the preview's own thread (dashboard/video.py), so a burst of decoding never crowds out
the figures.

Routes: `/` page, `/static/*` its script and style, `/ws` live updates (JSON text, JPEG binary),
`/metrics` Prometheus, `/frame.jpg` latest picture, `/api/state` the page model as JSON.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST

from telesurg.dashboard.access import AccessPolicy, Bind, parse_bind
from telesurg.dashboard.metrics import SiteMetrics
from telesurg.dashboard.model import DashboardModel
from telesurg.dashboard.video import VideoPreview
from telesurg.tap import TapRecord, Topic

log = logging.getLogger("telesurg.dashboard")
STATIC = Path(__file__).with_name("static")
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
OVERLAP_S = 2.0  # an update repeats this much of the past (records reach the model slightly out of order)
HISTORY_CHUNK = 200  # points per history message of a new page
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; connect-src 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
}
_VIDEO = str(Topic.VIDEO)


class SiteView:
    """What the dashboard knows of its site, in another process: its name, wall-clock offset, its
    clock (the latest value the feed sent, advanced by this process's monotonic clock since) and the
    tap's subscriber figures (as last sent)."""

    def __init__(self, site: str, wall_offset: float, clock_now: float) -> None:
        self.site = site
        self.wall_offset = wall_offset
        self._clock_at = (clock_now, time.monotonic())
        self._stats: dict[str, dict[str, Any]] = {}

    def update(self, clock_now: float, stats: dict[str, dict[str, Any]] | None) -> None:
        self._clock_at = (clock_now, time.monotonic())
        if stats is not None:
            self._stats = stats

    def clock(self) -> float:
        site_now, here = self._clock_at
        return site_now + time.monotonic() - here

    def stats(self) -> dict[str, dict[str, Any]]:
        return self._stats


class _Client:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.wake = asyncio.Event()
        self.since: float | None = None
        self.since_event = 0
        self.jpeg: bytes | None = None


class DashboardServer:
    """Serves one site's page and /metrics on the running event loop: `await serve(ready, stop)`;
    `feed(records)` on the loop as records arrive. Not thread-safe: everything but the preview's
    thread runs on the loop."""

    def __init__(self, site: SiteView, bind: Bind | str, *, role: str | None = None, site_name: str | None = None,
                 video: bool = True, allow: list[str] | None = None, hosts: tuple[str, ...] = (),
                 push_hz: float = 4.0, preview_fps: float = 4.0) -> None:
        self.site = site
        self.bind = parse_bind(bind) if isinstance(bind, str) else bind
        self.policy = AccessPolicy.for_bind(self.bind, allow, hosts)
        self.model = DashboardModel(site_name or site.site, site.wall_offset, role=role)
        self.metrics = SiteMetrics(self.model, site, role)
        self.push_s = 1.0 / push_hz
        self.preview = VideoPreview(self._on_video, site.clock, preview_fps=preview_fps) if video else None
        self.jpeg: bytes | None = None
        self._video_frames: collections.Counter[str] = collections.Counter()
        self._video_freezes: collections.Counter[str] = collections.Counter()
        self.port = self.bind.port
        self.records = 0
        self.feed_cpu_s = 0.0  # the site's feeding thread (reported by the site)
        self.feed_unpicklable = 0  # records the site's feed could not pickle (left out)
        self._clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def clients(self) -> int:
        return len(self._clients)

    def feed(self, records: Iterable[TapRecord]) -> None:
        """Records from the site (rebuilt from the pipe): the figures to the model and the metrics,
        the VIDEO payloads to the preview's thread."""
        model_apply, metrics_apply, video = self.model.apply, self.metrics.apply, []
        for record in records:
            topic, t, payload = record
            self.records += 1
            if topic == _VIDEO:
                video.append(record)
            else:
                model_apply(topic, t, payload)
                metrics_apply(topic, t, payload)
        if video and self.preview is not None:
            self.preview.offer(video)

    async def serve(self, ready: Callable[[int | None, str | None], None], stop: asyncio.Event) -> None:
        """Bind, call `ready(port, None)` (or `ready(None, error)` and return), serve until `stop`."""
        self._loop = asyncio.get_running_loop()
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.bind.host, self.bind.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            ready(None, f"dashboard: cannot serve on {self.bind.host}:{self.bind.port}: {exc}")
            return
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        if self.preview is not None:
            self.preview.start()
        ready(self.port, None)
        pusher = asyncio.create_task(self._push())
        try:
            await stop.wait()
        finally:
            pusher.cancel()
            if self.preview is not None:
                self.preview.close()
            for client in list(self._clients):
                with contextlib.suppress(Exception):
                    await client.ws.close()
            await runner.cleanup()

    async def _push(self) -> None:
        while True:
            await asyncio.sleep(self.push_s)
            self.model.tick(self.site.clock())
            self.model.extra = self._extra()
            for client in self._clients:
                client.wake.set()

    def cpu_s(self) -> float:
        """This process's CPU time and the site's feeding thread's."""
        return time.process_time() + self.feed_cpu_s

    def _extra(self) -> dict[str, Any]:
        stats = self.site.stats()
        return {"tap": {"dropped": sum(sum(s["dropped"].values()) for s in stats.values()),
                        "subscribers": {n: {"queued": s["queued"], "dropped": sum(s["dropped"].values())}
                                        for n, s in stats.items()}},
                "clients": len(self._clients),
                "dashboard": {"cpu_s": round(self.cpu_s(), 3), "records": self.records,
                              "unpicklable": self.feed_unpicklable,
                              "video_cpu_s": None if self.preview is None else round(self.preview.cpu_s, 3)}}

    def _on_video(self, jpeg: bytes | None, stats: dict[str, Any]) -> None:
        """From the preview's thread: hop onto the loop (never touch the model from there)."""
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
        self.model.tick(self.site.clock())
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

