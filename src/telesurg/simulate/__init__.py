"""Deterministic whole-system simulation: console, link, emulated WAN, supervisor and a kinematic arm in
one process under a virtual clock, with random fault timelines and invariant checks after every step.

`telesurg simulate` (simulate/cli.py) sweeps seeded scenarios; a failing one is shrunk to a minimal
timeline and written as a scenario TOML (timeline.py) that `telesurg demo --scenario` also replays.
"""

from telesurg.simulate.runner import ScenarioResult, run_scenario, shrink
from telesurg.simulate.timeline import FaultTimeline, SiteEvent, random_timeline

__all__ = ["FaultTimeline", "ScenarioResult", "SiteEvent", "random_timeline", "run_scenario", "shrink"]
