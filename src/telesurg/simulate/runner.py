"""Run one seeded scenario and summarise it; shrink a failing timeline to a minimal one.

Scenario `seed` draws its timeline from `random.Random(seed)` and seeds every emulator from the same
number, so (seed, settings) reruns exactly. The shrinker is deliberately simple (delta debugging by
hand): drop single events, then halve durations and site values, then make the clocks ideal, for as
long as the run still fails, so a failure is reported with the fewest faults that still cause it.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field

from telesurg.robot.supervisor import SafetySupervisor
from telesurg.simulate.timeline import FaultTimeline, random_timeline
from telesurg.simulate.world import SimSettings, SimWorld, SupervisorFactory

DEFAULT_SETTINGS = SimSettings()
MEMORY_BOUNDS = {"hub_cores": 3, "in_flight": 5000, "transitions": 2000, "holds": 1000, "rel_unacked": 256}


@dataclass
class ScenarioResult:
    seed: int
    ok: bool
    violations: list[str]
    violation_count: int
    holds: list[tuple[str, float]]  # (cause, reaction ms)
    latched: bool
    sent: int
    applied: int
    commands_expected: int
    commands_lost: int
    restarts: int
    fault_kinds: Counter[str] = field(default_factory=Counter)
    link_counters: Counter[str] = field(default_factory=Counter)
    sim_seconds: float = 0.0


def scenario_timeline(seed: int, settings: SimSettings) -> FaultTimeline:
    return random_timeline(random.Random(seed), settings.seconds)


def run_scenario(seed: int, settings: SimSettings = DEFAULT_SETTINGS, timeline: FaultTimeline | None = None,
                 supervisor_factory: SupervisorFactory = SafetySupervisor) -> ScenarioResult:
    timeline = scenario_timeline(seed, settings) if timeline is None else timeline
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # every hold is logged as a warning: thousands per sweep
    try:
        world = SimWorld(seed, timeline, settings, supervisor_factory)
        world.run()
    finally:
        logging.disable(previous)
    checker = world.checker
    for name, size in world.memory_figures().items():
        if size > MEMORY_BOUNDS[name]:
            checker.violation(world.net.now, f"memory: {name} = {size} > {MEMORY_BOUNDS[name]}")
    stats = checker.stats
    kinds = Counter(timeline.labels) + Counter(e.kind for e in timeline.site)
    sent = sum(world.console.counters.sent.values()) if world.console is not None else 0
    return ScenarioResult(
        seed=seed, ok=stats.violation_count == 0, violations=list(stats.violations),
        violation_count=stats.violation_count,
        holds=[(h.cause, h.reaction_ms) for h in world.sup.holds],
        latched=any(t.to_state.name == "LATCHED" for t in world.sup.transitions),
        sent=sent, applied=stats.applied, commands_expected=stats.commands_expected,
        commands_lost=stats.commands_lost, restarts=world.restarts, fault_kinds=kinds,
        link_counters=world.hub.counters_total(), sim_seconds=settings.seconds)


def shrink(seed: int, timeline: FaultTimeline, settings: SimSettings = DEFAULT_SETTINGS,
           supervisor_factory: SupervisorFactory = SafetySupervisor, max_runs: int = 200) -> FaultTimeline:
    """A smaller timeline that still fails (same seed and settings); `timeline` itself must fail."""
    runs = 0

    def fails(candidate: FaultTimeline) -> bool:
        nonlocal runs
        runs += 1
        return not run_scenario(seed, settings, candidate, supervisor_factory).ok

    changed = True
    while changed and runs < max_runs:
        changed = False
        for index in reversed(range(timeline.size)):
            candidate = timeline.without(index)
            if runs < max_runs and fails(candidate):
                timeline, changed = candidate, True
        for index in range(timeline.size):
            while runs < max_runs and (candidate := timeline.shortened(index)) is not None and fails(candidate):
                timeline, changed = candidate, True
        for candidate in timeline.simplified_clocks():
            if runs < max_runs and fails(candidate):
                timeline, changed = candidate, True
    return timeline
