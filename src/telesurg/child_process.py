"""Ending a site's helper processes (video, recorder writer, broadcast publisher, dashboard picture)."""

from __future__ import annotations

from typing import Any


def join_or_kill(process: Any, timeout: float, kill_wait: float = 2.0) -> None:
    """Wait up to `timeout` s for `process` (a multiprocessing.Process) to end after it was asked to,
    then kill it: a site's shutdown must not hang on a stuck helper, nor leave it running."""
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join(kill_wait)
