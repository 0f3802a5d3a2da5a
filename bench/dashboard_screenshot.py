"""The web dashboard in a real browser, its screenshot, and what it costs the site.

    python bench/dashboard_screenshot.py [--seconds 24] [--png out/dashboard.png] [--json F]

A tap fed by a scripted robot site that publishes real records (dashboard/sample_feed.py: 2,000
CommandJudged/s as two arms at 1 kHz, 100 Hz Telemetry, 4 Hz PathStats, H.264 stereo 640x360 at
15 fps from the real VideoSender), the dashboard on a free loopback port, and headless Debian
Chromium (Selenium with /usr/bin/chromedriver; nothing downloaded) showing the page.
Figures: the cost of one tap publish for the 1 kHz threads with and without the dashboard
subscribed (same run, interleaved), and the CPU of the dashboard's own threads per second of wall
time without a page open and with one (the browser's own CPU is not counted).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from telesurg.dashboard import attach_dashboard
from telesurg.dashboard.sample_feed import CONSOLE, SampleRobotSite
from telesurg.messages import ServoCommand
from telesurg.tap import CommandJudged, Tap, Topic

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def publish_cost_us(n: int = 200_000, rounds: int = 5) -> dict[str, float]:
    """Median µs per `Tap.publish` of a CommandJudged: nobody subscribed vs the dashboard's
    subscriptions (drained every 100 publishes, as a consumer would keep up)."""
    command = ServoCommand(0, 1, 0.0, (0.0, 0.0, -0.1), (1.0, 0.0, 0.0, 0.0), 0.2)
    judged = CommandJudged(command, f"{CONSOLE}#1", 1, 0.0, "applied", "")
    out: dict[str, list[float]] = {"no subscriber": [], "dashboard subscribed": []}
    from telesurg.dashboard.model import TOPICS
    for _ in range(rounds):
        for label in out:
            tap = Tap("bench")
            subs = []
            if label != "no subscriber":
                subs = [tap.subscribe("dashboard", 16_384, [t for t in TOPICS if t != Topic.VIDEO]),
                        tap.subscribe("dashboard-video", 64, [Topic.VIDEO])]
            publish = tap.publish
            started = time.perf_counter()
            for i in range(n):
                publish(Topic.COMMAND_DECISION, 0.0, judged)
                if subs and i % 100 == 0:
                    subs[0].drain()
            out[label].append(1e6 * (time.perf_counter() - started) / n)
    return {k: round(sorted(v)[len(v) // 2], 3) for k, v in out.items()}


def open_browser(profile: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1600,1240", "--hide-scrollbars", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=24.0, help="sample site run before the screenshot")
    parser.add_argument("--png", type=Path, default=Path("out/dashboard.png"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    console = Console()
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        console.print(f"[red]needs {CHROMIUM} and {CHROMEDRIVER} (Debian chromium, chromium-driver)")
        return 2
    costs = publish_cost_us()
    tap = Tap("casablanca-robot")
    server = attach_dashboard(tap, "127.0.0.1:0", role="robot")
    feed = SampleRobotSite(tap).start()
    profile = tempfile.mkdtemp(prefix="telesurg-chromium-")
    results: dict[str, Any] = {"publish_us": costs, "url": server.url}
    try:
        with Progress(console=console, transient=True) as progress:
            half = args.seconds / 2
            task = progress.add_task("dashboard, no page open", total=args.seconds)
            cpu0, feed0, wall0 = server.cpu_s, server.feed_cpu_s, time.monotonic()
            _wait(progress, task, half)
            results["idle"] = _cpu(server, cpu0, feed0, wall0)
            driver = open_browser(profile)
            try:
                driver.get(server.url)
                progress.update(task, description="dashboard, one page open")
                _wait(progress, task, 3.0)  # the page loads, the decoder starts at the next intra refresh
                cpu0, feed0, wall0 = server.cpu_s, server.feed_cpu_s, time.monotonic()
                _wait(progress, task, half - 3.0)
                results["page_open"] = _cpu(server, cpu0, feed0, wall0)
                args.png.parent.mkdir(parents=True, exist_ok=True)
                from selenium.webdriver.common.by import By

                phase = (tap.clock() - feed.t0) % 90.0
                if phase < 29.5:  # show the sample site's path B degradation (25-33 s of each 90 s)
                    time.sleep(29.5 - phase)
                driver.find_element(By.CSS_SELECTOR, '#window-select button[data-s="60"]').click()
                height = driver.execute_script("return document.documentElement.scrollHeight")
                driver.set_window_size(1600, height + 140)  # the whole page, browser frame included
                time.sleep(1.0)
                driver.save_screenshot(str(args.png))
                results["browser_errors"] = [e["message"] for e in driver.get_log("browser")
                                             if e.get("level") == "SEVERE"]
            finally:
                driver.quit()
    finally:
        feed.close()
        server.close()
        shutil.rmtree(profile, ignore_errors=True)
    results["records_per_s"] = round(server.records / max(1e-9, time.monotonic() - feed.t0), 0)
    table = Table(title="dashboard cost (2-vCPU VM; sample robot site, 2,000 judged commands/s + 15 fps stereo)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for label, value in costs.items():
        table.add_row(f"tap publish, {label}", f"{value:.3f} µs")
    table.add_row("tap publish overhead of the dashboard",
                  f"+{costs['dashboard subscribed'] - costs['no subscriber']:.3f} µs "
                  f"({costs['dashboard subscribed'] / costs['no subscriber']:.2f}x)")
    for phase in ("idle", "page_open"):
        r = results[phase]
        table.add_row(f"dashboard process CPU (page, figures, picture), {phase.replace('_', ' ')}",
                      f"{r['dashboard_pct']:.2f} % of a core")
        table.add_row(f"its feed thread in the site's process, {phase.replace('_', ' ')}", f"{r['feed_pct']:.2f} % of a core")
    table.add_row("records consumed", f"{results['records_per_s']:.0f} /s")
    console.print(table)
    console.print(f"screenshot: {args.png}")
    if results["browser_errors"]:
        errors = results["browser_errors"]
        console.print(f"[red]browser console errors ({len(errors)}): {errors[:3]}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if results["browser_errors"] else 0


def _wait(progress: Progress, task: Any, seconds: float) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(0.5, left))
        progress.advance(task, min(0.5, left))


def _cpu(server: Any, cpu0: float, feed0: float, wall0: float) -> dict[str, float]:
    wall = time.monotonic() - wall0
    feed = server.feed_cpu_s - feed0
    return {"dashboard_pct": round(100 * (server.cpu_s - cpu0 - feed) / wall, 2),
            "feed_pct": round(100 * feed / wall, 2), "seconds": round(wall, 1)}


if __name__ == "__main__":
    sys.exit(main())
