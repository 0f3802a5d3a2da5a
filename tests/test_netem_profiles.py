"""Shipped profiles and scenarios load, match the issue's numbers; bad files name the field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from telesurg.netem import NetemConfigError, ScenarioPlayer, list_profiles, load_profile, load_scenario
from telesurg.netem.scenario import list_scenarios, parse_scenario


def test_shipped_profiles() -> None:
    assert {"lan", "shanghai-casablanca", "lossy", "congested"} <= set(list_profiles())
    for name in list_profiles():
        profile = load_profile(name)
        assert profile.name == name and profile.description
        assert profile.path_names == ["a", "b"]


def test_shanghai_casablanca_numbers() -> None:
    p = load_profile("shanghai-casablanca")
    a, b = p.path("a"), p.path("b")
    assert 100 <= a.forward.delay_ms + a.reverse.delay_ms <= 110
    assert 150 <= b.forward.delay_ms + b.reverse.delay_ms <= 180
    assert a.forward.jitter_ms < b.forward.jitter_ms
    assert a.forward.mean_loss() == pytest.approx(0.0001) and b.reverse.mean_loss() == pytest.approx(0.001)


def test_lossy_uses_gilbert_elliott_and_congested_breaks_thresholds() -> None:
    for path in load_profile("lossy").paths:
        assert path.forward.gilbert_elliott and path.reverse.gilbert_elliott
    for path in load_profile("congested").paths:
        assert path.forward.delay_ms + path.reverse.delay_ms >= 400 - 1e-9
        assert path.forward.mean_loss() >= 0.02


def test_lan_has_no_impairment() -> None:
    for path in load_profile("lan").paths:
        assert path.forward.delay_ms == path.reverse.delay_ms == 0 == path.forward.mean_loss()


def test_profile_file_with_both_and_direction_override(tmp_path: Path) -> None:
    f = tmp_path / "x.toml"
    f.write_text('name = "x"\n[[path]]\nname = "p"\nboth = { delay_ms = 10, loss = 0.01 }\n'
                 "[path.reverse]\ndelay_ms = 30\n")
    p = load_profile(str(f))
    assert p.path("p").forward.delay_ms == 10 and p.path("p").reverse.delay_ms == 30
    assert p.path("p").reverse.loss == 0.01


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('name = "x"\n[[path]]\nname = "a"\nboth = { loss = 5 }\n', r"path\.0\.forward\.loss.*less than or equal to 1"),
        ('name = "x"\n[[path]]\nname = "a"\nforward = { delay = 5 }\n', r"path\.0\.forward\.delay.*remove it"),
        ('name = "x"\n[[path]]\nname = "a"\n[[path]]\nname = "a"\n', r"path.*unique.*rename"),
        ('name = "x"\n', r"path: .*Field required.*add this field"),
        ('name = "x"\n[[path]]\nname = "a"\nboth = { ge_p = 0.1 }\n', r"ge_r must be > 0"),
        ('name = "x"\n[[path', r"not valid TOML"),
    ],
)
def test_profile_errors_name_the_field_and_the_fix(tmp_path: Path, body: str, expected: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(body)
    with pytest.raises(NetemConfigError, match=expected) as info:
        load_profile(str(f))
    assert str(f) in str(info.value)


def test_unknown_profile_lists_the_choices() -> None:
    with pytest.raises(NetemConfigError, match="shanghai-casablanca"):
        load_profile("mars")


def test_shipped_scenarios_and_player_with_auto_revert() -> None:
    assert {"cut-path-a", "cut-both-300ms"} <= set(list_scenarios())
    player = ScenarioPlayer(load_scenario("cut-path-a"), start=10.0)
    assert player.next_time() == 18.0
    assert player.due(17.99) == []
    (down,) = player.due(18.0)
    assert (down.path, down.action) == ("a", "down")
    (up,) = player.due(30.0)
    assert (up.at, up.path, up.action) == (21.0, "a", "up")
    assert player.next_time() is None
    both = ScenarioPlayer(load_scenario("cut-both-300ms"))
    assert [(a.at, a.path, a.action) for a in both.due(20)] == [(10.0, "*", "down"), (10.3, "*", "up")]


def test_set_event_reverts_its_fields() -> None:
    s = parse_scenario({"event": [{"at": 1, "path": "b", "action": "set", "loss": 0.2, "delay_ms": 99,
                                   "duration": 2}]})
    actions = ScenarioPlayer(s).due(5)
    assert actions[0].changes == {"delay_ms": 99, "loss": 0.2}
    assert (actions[1].at, actions[1].action, set(actions[1].changes)) == (3, "revert", {"delay_ms", "loss"})


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"at": 1, "path": "a", "action": "set"}, "needs at least one of delay_ms"),
        ({"at": 1, "path": "a", "action": "down", "loss": 0.1}, "use action = 'set'"),
        ({"at": -1, "path": "a", "action": "down"}, r"event\.0\.at"),
        ({"at": 1, "path": "a", "action": "explode"}, r"event\.0\.action.*'down', 'up' or 'set'"),
        ({"at": 1, "path": "a", "action": "down", "duration": 0}, r"event\.0\.duration"),
    ],
)
def test_scenario_errors_name_the_field(event: dict, expected: str) -> None:
    with pytest.raises(NetemConfigError, match=expected):
        parse_scenario({"event": [event]})


def test_scenario_path_check() -> None:
    s = parse_scenario({"event": [{"at": 1, "path": "c", "action": "down"}]})
    with pytest.raises(NetemConfigError, match=r"event\[0\]\.path.*'c'"):
        s.check_paths(["a", "b"])
    parse_scenario({"event": [{"at": 1, "path": "*", "action": "up"}]}).check_paths(["a"])
