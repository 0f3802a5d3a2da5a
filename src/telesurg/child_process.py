"""Ending helper processes: a site's (video, recorder writer, broadcast publisher, dashboard) and the
sites and observers a benchmark starts."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def join_or_kill(process: Any, timeout: float, kill_wait: float = 2.0) -> None:
    """Wait up to `timeout` s for `process` (a multiprocessing.Process) to end after it was asked to,
    then kill it: a site's shutdown must not hang on a stuck helper, nor leave it running."""
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join(kill_wait)


def interrupt_or_kill(process: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """Ask a command (`telesurg robot`, an observer...) to stop as Ctrl-C would, waking it first if it
    was stopped (SIGSTOP, as a stall test leaves it); kill it after `timeout` s."""
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
