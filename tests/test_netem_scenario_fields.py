"""Scenario `set` events reach netem's reorder, duplicate and corrupt probabilities, and revert."""

from __future__ import annotations

import pytest

from telesurg.netem.errors import NetemConfigError
from telesurg.netem.path import apply_action, build_paths
from telesurg.netem.profiles import parse_profile
from telesurg.netem.scenario import ScenarioPlayer, parse_scenario

PROFILE = parse_profile({"name": "t", "path": [{"name": "a", "both": {"delay_ms": 10.0}}]})


def test_set_reorder_duplicate_corrupt_then_revert() -> None:
    paths = build_paths(PROFILE)
    scenario = parse_scenario({"event": [
        {"at": 1.0, "path": "a", "action": "set", "reorder": 0.2, "duplicate": 0.3, "corrupt": 0.1, "duration": 2.0}]})
    player = ScenarioPlayer(scenario)
    for action in player.due(1.0):
        apply_action(paths, action, 1.0)
    imp = paths["a"].forward.impairment
    assert (imp.reorder, imp.duplicate, imp.corrupt) == (0.2, 0.3, 0.1)
    for action in player.due(3.0):
        apply_action(paths, action, 3.0)
    imp = paths["a"].reverse.impairment
    assert (imp.reorder, imp.duplicate, imp.corrupt) == (0.0, 0.0, 0.0)


def test_duplicate_set_really_duplicates_and_fifo_departure_is_exposed() -> None:
    path = build_paths(PROFILE, seed=1)["a"]
    path.set(duplicate=1.0)
    path.forward.submit(b"x", 0.0)
    assert path.forward.pop_due(1.0) == [b"x", b"x"]
    assert path.forward.fifo_departure == pytest.approx(0.010)


def test_bad_probability_names_the_field() -> None:
    with pytest.raises(NetemConfigError, match="corrupt"):
        parse_scenario({"event": [{"at": 0, "path": "a", "action": "set", "corrupt": 2.0}]})
