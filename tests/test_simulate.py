"""`telesurg simulate`: the whole system under random fault timelines keeps every invariant, and the
checker really fails when the supervisor is broken (it judges against the simulation's truth)."""

from __future__ import annotations

import math

import pytest

from telesurg.netem.scenario import ScenarioEvent, load_scenario
from telesurg.robot.safety_config import SupervisorConfig
from telesurg.robot.supervisor import SafetySupervisor
from telesurg.simulate.cli import _results
from telesurg.simulate.runner import run_scenario, scenario_timeline, shrink
from telesurg.simulate.timeline import FaultTimeline, SiteEvent, read_timeline, timeline_toml
from telesurg.simulate.world import SimSettings

SETTINGS = SimSettings()
# the figure: 10,000 scenarios, ~3 min with 2 workers on the 2-vCPU VM (~57-60 scenarios/s)
SWEEP = 10_000
FIRST_SEED = 1000


def _stale_applying(config: SupervisorConfig, arms: list[str]) -> SafetySupervisor:
    """A broken supervisor: it judges freshness against 2 s instead of the configured 0.3 s."""
    return SafetySupervisor(config.model_copy(update={"freshness_s": 2.0, "future_tolerance_s": 0.5}), arms)


class _ResumesByItself(SafetySupervisor):
    """A broken supervisor: any command from the owner counts as a re-engage."""

    def submit(self, cmd, sender, link_seq, clock_offset, now):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        from telesurg.messages import FLAG_REENGAGE
        return super().submit(replace(cmd, flags=cmd.flags | FLAG_REENGAGE), sender, link_seq, clock_offset, now)


# the delay creeps up 35 ms every 60 ms: each step leaves a gap shorter than the watchdog, so the arm
# keeps following while commands age past the 300 ms freshness bound
class _IgnoresTakeover(SafetySupervisor):
    """A broken supervisor: the patient-side console's takeover does not take control away."""

    def assign(self, arm, sender, now=0.0, *, local=False, cause="handover"):  # type: ignore[no-untyped-def]
        if sender == "local":
            return True
        return super().assign(arm, sender, now, local=local, cause=cause)


SLOW_PATHS = FaultTimeline(network=tuple(
    ScenarioEvent(at=round(0.6 + 0.06 * i, 3), path="*", action="set", delay_ms=80.0 + 35 * i) for i in range(11)))


@pytest.mark.slow
@pytest.mark.timeout(600)  # ~3 min on the 2-vCPU VM; the suite's 300 s default is too close on a slower runner
def test_sweep_of_random_fault_scenarios_keeps_every_invariant() -> None:
    results = list(_results(list(range(FIRST_SEED, FIRST_SEED + SWEEP)), SETTINGS, jobs=2))
    assert len(results) == SWEEP
    failed = [(r.seed, r.violations[:3]) for r in results if not r.ok]
    assert not failed, f"failing seeds (rerun: telesurg simulate --seed S --scenarios 1): {failed}"
    # the sweep exercised what it claims, in proportion (10,000 seeds from 1000 on 2026-12-05: 0.8 holds,
    # 0.08 latches, 0.3 restarts, 0.16 takeovers and ~128 commands due per scenario)
    assert sum(len(r.holds) for r in results) > SWEEP / 2
    assert sum(r.latched for r in results) > SWEEP / 50
    assert sum(r.restarts for r in results) > SWEEP / 10
    assert sum(r.fault_kinds["takeover"] for r in results) > SWEEP / 20
    assert sum(r.commands_expected for r in results) > 100 * SWEEP
    assert sum(r.commands_lost for r in results) == 0


def test_a_supervisor_that_applies_stale_commands_is_caught() -> None:
    good = run_scenario(5, SETTINGS, SLOW_PATHS)
    assert good.ok, good.violations
    bad = run_scenario(5, SETTINGS, SLOW_PATHS, supervisor_factory=_stale_applying)
    assert not bad.ok
    assert any("stale command applied" in v for v in bad.violations)


def test_a_supervisor_that_resumes_without_reengage_is_caught() -> None:
    cut = FaultTimeline(network=(ScenarioEvent(at=0.7, path="*", action="down", duration=0.2),))
    assert run_scenario(6, SETTINGS, cut).ok
    bad = run_scenario(6, SETTINGS, cut, supervisor_factory=_ResumesByItself)
    assert any("re-engage" in v for v in bad.violations), bad.violations


def test_a_supervisor_that_ignores_a_local_takeover_is_caught() -> None:
    takeover = FaultTimeline(site=(SiteEvent(0.7, "takeover", 0.3),))
    assert run_scenario(7, SETTINGS, takeover).ok
    bad = run_scenario(7, SETTINGS, takeover, supervisor_factory=_IgnoresTakeover)
    assert any("during a local takeover" in v for v in bad.violations), bad.violations


def test_shrinker_keeps_only_the_fault_that_matters_and_the_file_replays(tmp_path) -> None:
    noisy = FaultTimeline(network=(
        ScenarioEvent(at=0.5, path="a", action="set", jitter_ms=5.0, duration=0.3),
        *SLOW_PATHS.network,
        ScenarioEvent(at=1.2, path="b", action="down", duration=0.1)),
        site=(SiteEvent(1.3, "clock_step", 0.05),), console_offset_s=12.5, console_drift_ppm=40.0)
    assert not run_scenario(5, SETTINGS, noisy, supervisor_factory=_stale_applying).ok
    small = shrink(5, noisy, SETTINGS, supervisor_factory=_stale_applying)
    assert small.size <= len(SLOW_PATHS.network) and all(e.action == "set" and e.delay_ms for e in small.network)
    assert small.console_drift_ppm == 0.0 and small.console_offset_s == 0.0
    text = timeline_toml(small, "minimal")
    assert read_timeline(text) == small
    file = tmp_path / "failure.toml"
    file.write_text(text)
    assert load_scenario(file).events == list(small.network)  # what `telesurg demo --scenario` loads


def test_timeline_round_trip_keeps_site_events_and_clocks() -> None:
    timeline = scenario_timeline(12345, SETTINGS)
    timeline = FaultTimeline(timeline.network, (SiteEvent(0.9, "console_restart", 0.25),
                                                SiteEvent(1.1, "clock_step", -0.04)), -321.5, 55.0)
    assert read_timeline(timeline_toml(timeline, "x")) == timeline


def test_same_seed_same_run() -> None:
    a, b = run_scenario(77, SETTINGS), run_scenario(77, SETTINGS)
    assert (a.holds, a.applied, a.commands_expected, a.restarts) == (b.holds, b.applied, b.commands_expected,
                                                                      b.restarts)
    assert all(math.isfinite(ms) for _, ms in a.holds)


# Found by the 10,000-scenario sweep (seeds 103386 and 103462 of `telesurg simulate --seed 100000
# --scenarios 10000`), shrunk to two events each: the console's clock steps forward by 75-85 ms, then a
# delay spike on both paths delivers a burst of old commands. The robot's clock-offset estimate (link
# core: the minimum-RTT sample of the last 64 probe replies) still holds the pre-step sample, so every
# console timestamp looks 75-85 ms younger than it is and commands 320-380 ms old pass the 300 ms
# freshness check. Fix (link/core.py, not this branch's): drop the offset samples when a new one
# disagrees with the min-RTT one by more than (rtt_new - rtt_min)/2 + 2 ms; verified to pass both.
CLOCK_STEP_REGRESSIONS = {
    103386: FaultTimeline(network=(ScenarioEvent(at=0.672, path="*", action="set", delay_ms=463.5735,
                                                 duration=0.0075),),
                          site=(SiteEvent(0.5447, "clock_step", 0.0754),)),
    103462: FaultTimeline(network=(ScenarioEvent(at=0.6104, path="*", action="set", delay_ms=552.5433,
                                                 duration=0.0086),),
                          site=(SiteEvent(0.4846, "clock_step", 0.085),)),
}


@pytest.mark.parametrize("seed", sorted(CLOCK_STEP_REGRESSIONS))
def test_clock_step_then_delay_spike_applies_no_stale_command(seed: int) -> None:
    result = run_scenario(seed, SETTINGS, CLOCK_STEP_REGRESSIONS[seed])
    assert result.ok, result.violations[:3]


@pytest.mark.parametrize("seed", sorted(CLOCK_STEP_REGRESSIONS))
def test_the_same_spike_without_the_clock_step_is_safe(seed: int) -> None:
    timeline = CLOCK_STEP_REGRESSIONS[seed]
    assert run_scenario(seed, SETTINGS, FaultTimeline(network=timeline.network)).ok


# Found by the 10,000-scenario sweep (seed 8219 of `telesurg simulate --scenarios 10000`), shrunk to three
# events: a 372 ms delay spike leaves a FIFO backlog on both paths, then the console clock steps forward
# 33.5 ms. Every probe since the spike waited in that backlog, so no sample could show the step, the
# robot's offset estimate kept its pre-step minimum-RTT sample, and a command sent just after the step
# arrived behind the backlog 321.5 ms old but judged 288 ms old: applied past the 300 ms bound. Fixed by
# judging age with `LinkCore.freshness_offset` (the estimate moved by the step the newest probes could hide).
BACKLOG_THEN_STEP = {
    8219: FaultTimeline(network=(ScenarioEvent(at=0.8097, path="*", action="down", duration=0.063),
                                 ScenarioEvent(at=1.0199, path="*", action="set", delay_ms=371.9691,
                                               duration=0.0222)),
                        site=(SiteEvent(1.0861, "clock_step", 0.0335),)),
}


def test_small_clock_step_behind_a_backlog_applies_no_stale_command() -> None:
    result = run_scenario(8219, SETTINGS, BACKLOG_THEN_STEP[8219])
    assert result.ok, result.violations[:3]


def test_a_supervisor_judging_with_the_plain_estimate_applies_the_stale_command() -> None:
    """The regression above can fail: judged with `clock_offset()` (the estimate alone), it does."""
    from telesurg.link.core import LinkCore

    original = LinkCore.freshness_offset
    LinkCore.freshness_offset = LinkCore.clock_offset  # type: ignore[method-assign]
    try:
        result = run_scenario(8219, SETTINGS, BACKLOG_THEN_STEP[8219])
    finally:
        LinkCore.freshness_offset = original  # type: ignore[method-assign]
    assert any("stale command applied" in v for v in result.violations), result.violations[:3]


def test_the_backlog_without_the_clock_step_is_safe() -> None:
    timeline = BACKLOG_THEN_STEP[8219]
    assert run_scenario(8219, SETTINGS, FaultTimeline(network=timeline.network)).ok
