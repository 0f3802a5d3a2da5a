"""The latency-benefit model (console/latency_study.py): seeded and deterministic, and it orders the
variants as its assumptions say it must (these check the model, not surgeons)."""

from __future__ import annotations

from telesurg.console.latency_study import StudySetup, run_scripted, run_study


def test_same_seed_same_session_other_seed_other_session():
    setup = StudySetup(rtt_ms=300.0, rings=1, seed=3)
    first, again = run_study(setup), run_study(setup)
    assert first == again and first.completed
    assert run_study(StudySetup(rtt_ms=300.0, rings=1, seed=4)) != first


def test_at_300_ms_the_overlay_is_faster_and_feedback_touches_softer():
    plain = run_study(StudySetup(rtt_ms=300.0, rings=1))
    overlay = run_study(StudySetup(rtt_ms=300.0, rings=1, overlay=True))
    felt = run_study(StudySetup(rtt_ms=300.0, rings=1, feedback=True))
    assert plain.completed and overlay.completed and felt.completed
    assert overlay.task_s < 0.8 * plain.task_s  # no waiting for the delayed picture to settle
    assert felt.mean_touch_force_n < plain.mean_touch_force_n - 1.0  # contact felt before it is seen
    assert abs(felt.path_mm - plain.path_mm) < 5.0  # in free space feedback changes nothing


def test_more_delay_costs_the_waiting_surgeon_more_than_the_overlay_one():
    def task(rtt: float, overlay: bool) -> float:
        return run_study(StudySetup(rtt_ms=rtt, rings=1, overlay=overlay)).task_s

    assert task(300, False) - task(100, False) > 2 * (task(300, True) - task(100, True)) > 0


def test_the_scripted_surgeon_is_only_shifted_by_the_one_way_delay():
    near, far = run_scripted(0.0, rings=1), run_scripted(300.0, rings=1)
    assert abs((far.task_s - near.task_s) - 0.150) < 0.02
    assert abs(far.path_mm - near.path_mm) < 1.0
