"""A simulated run's fault timeline: network events (the netem scenario format) plus site events, drawn
at random from a seed, and written to / read from a scenario TOML file.

Network events are `netem.scenario.ScenarioEvent`s, so the `[[event]]` tables of a written file are an
ordinary scenario that `telesurg demo --scenario FILE` replays. Site events (a console crash and
reconnect, a clock step) have no place in that format; they are kept in comment lines
`# sim-site: {...}` (and the clocks in `# sim-clock: {...}`), which the relay ignores and
`read_timeline` reads back, so `telesurg simulate --replay FILE` reruns the whole timeline.
Times count from the start of the simulation; `telesurg demo` counts scenario times from the start
of teleoperation, so there the same network timeline runs shifted by the demo's set-up time, and
without the site events.
"""

from __future__ import annotations

import json
import random
import tomllib
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from telesurg.netem.core import SETTABLE_FIELDS
from telesurg.netem.scenario import ScenarioEvent, parse_scenario

SiteKind = Literal["console_restart", "clock_step", "takeover"]
SITE_KINDS = ("console_restart", "clock_step", "takeover")
_SITE_PREFIX = "# sim-site: "
_CLOCK_PREFIX = "# sim-clock: "
FAULTS_FROM_S = 0.45  # faults start once the console is following (handshake and re-engage take ~0.35 s)


@dataclass(frozen=True)
class SiteEvent:
    """`console_restart`: the console process dies at `at` and a new one dials again `value` s later.
    `clock_step`: the console site's clock jumps by `value` seconds at `at` (a wall clock stepped).
    `takeover`: the patient-side console takes the arm over at `at` and hands it back `value` s later."""

    at: float
    kind: SiteKind
    value: float


@dataclass(frozen=True)
class FaultTimeline:
    network: tuple[ScenarioEvent, ...] = ()
    site: tuple[SiteEvent, ...] = ()
    console_offset_s: float = 0.0  # console clock minus robot clock at t = 0 (monotonic clocks differ)
    console_drift_ppm: float = 0.0  # the console clock's rate error
    labels: tuple[str, ...] = field(default=(), compare=False)  # what each network event was drawn as

    @property
    def size(self) -> int:
        return len(self.network) + len(self.site)

    def without(self, index: int) -> FaultTimeline:
        """The timeline with event `index` (network events first, then site events) removed."""
        n = len(self.network)
        if index < n:
            return replace(self, network=self.network[:index] + self.network[index + 1:],
                           labels=self.labels[:index] + self.labels[index + 1:])
        i = index - n
        return replace(self, site=self.site[:i] + self.site[i + 1:])

    def shortened(self, index: int) -> FaultTimeline | None:
        """Event `index` with half its duration (or half its value for site events); None if too small."""
        n = len(self.network)
        if index < n:
            event = self.network[index]
            if event.duration is None or event.duration < 0.01:
                return None
            events = list(self.network)
            events[index] = event.model_copy(update={"duration": round(event.duration / 2, 4)})
            return replace(self, network=tuple(events))
        i = index - n
        event = self.site[i]
        if abs(event.value) < 0.01:
            return None
        site = list(self.site)
        site[i] = replace(event, value=round(event.value / 2, 4))
        return replace(self, site=tuple(site))

    def simplified_clocks(self) -> list[FaultTimeline]:
        """Candidates with the clocks made ideal (for the shrinker)."""
        out = []
        if self.console_drift_ppm:
            out.append(replace(self, console_drift_ppm=0.0))
        if self.console_offset_s:
            out.append(replace(self, console_offset_s=0.0))
        return out


def _set(at: float, path: str, duration: float, **changes: float) -> ScenarioEvent:
    return ScenarioEvent(at=round(at, 4), path=path, action="set", duration=round(duration, 4),
                         **{k: round(v, 4) for k, v in changes.items()})


def _down(at: float, path: str, duration: float) -> ScenarioEvent:
    return ScenarioEvent(at=round(at, 4), path=path, action="down", duration=round(duration, 4))


def random_timeline(rng: random.Random, seconds: float, paths: tuple[str, ...] = ("a", "b")) -> FaultTimeline:
    """1–5 network faults and 0–2 site faults in [FAULTS_FROM_S, seconds - 0.1], plus random clocks."""
    end = max(FAULTS_FROM_S + 0.05, seconds - 0.1)
    network: list[ScenarioEvent] = []
    labels: list[str] = []

    def when() -> float:
        return rng.uniform(FAULTS_FROM_S, end)

    for _ in range(rng.randint(1, 5)):
        kind = rng.choice(("cut", "cut", "flap", "both_down", "delay_step", "delay_spike", "jitter",
                           "loss_burst", "reorder", "duplicate", "corrupt"))
        path = rng.choice(paths)
        t = when()
        if kind == "cut":
            network.append(_down(t, path, rng.uniform(0.02, 0.8)))
        elif kind == "flap":
            for _ in range(rng.randint(2, 4)):
                network.append(_down(t, path, rng.uniform(0.005, 0.1)))
                labels.append(kind)
                t += rng.uniform(0.02, 0.2)
            continue
        elif kind == "both_down":
            if rng.random() < 0.5:  # long enough to latch (fault time 1 s), early enough to see it
                network.append(_down(rng.uniform(FAULTS_FROM_S, max(FAULTS_FROM_S, end - 1.15)), "*",
                                     rng.uniform(1.05, 1.3)))
            else:
                network.append(_down(t, "*", rng.uniform(0.02, 0.3)))
        elif kind == "delay_step":
            network.append(_set(t, rng.choice((*paths, "*")), rng.uniform(0.1, 1.0), delay_ms=rng.uniform(60, 300)))
        elif kind == "delay_spike":
            network.append(_set(t, rng.choice((*paths, "*")), rng.uniform(0.01, 0.15), delay_ms=rng.uniform(200, 600)))
        elif kind == "jitter":
            network.append(_set(t, path, rng.uniform(0.1, 1.0), jitter_ms=rng.uniform(1, 15)))
        elif kind == "loss_burst":
            network.append(_set(t, path, rng.uniform(0.02, 0.5), loss=rng.uniform(0.2, 1.0)))
        else:  # reorder / duplicate / corrupt, netem's own probabilities
            network.append(_set(t, path, rng.uniform(0.1, 1.0), **{kind: rng.uniform(0.05, 0.5)}))
        labels.append(kind)
    site: list[SiteEvent] = []
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        draw = rng.random()
        if draw < 0.4:
            site.append(SiteEvent(round(when(), 4), "console_restart", round(rng.uniform(0.02, 1.5), 4)))
        elif draw < 0.6:
            site.append(SiteEvent(round(when(), 4), "takeover", round(rng.uniform(0.01, 0.6), 4)))
        else:
            site.append(SiteEvent(round(when(), 4), "clock_step", round(rng.uniform(-0.1, 0.1), 4)))
    order = sorted(range(len(network)), key=lambda i: network[i].at)
    return FaultTimeline(tuple(network[i] for i in order), tuple(sorted(site, key=lambda e: e.at)),
                         round(rng.uniform(-1000.0, 1000.0), 3), round(rng.uniform(-100.0, 100.0), 2),
                         tuple(labels[i] for i in order))


def timeline_toml(timeline: FaultTimeline, description: str) -> str:
    """The timeline as a scenario file (see the module docstring)."""
    lines = [f"description = {json.dumps(description)}",
             _CLOCK_PREFIX + json.dumps({"console_offset_s": timeline.console_offset_s,
                                         "console_drift_ppm": timeline.console_drift_ppm})]
    lines += [_SITE_PREFIX + json.dumps(asdict(e)) for e in timeline.site]
    for event in timeline.network:
        lines += ["", "[[event]]", f"at = {event.at!r}", f"path = {json.dumps(event.path)}",
                  f"action = {json.dumps(event.action)}"]
        lines += [f"{name} = {float(getattr(event, name))!r}" for name in SETTABLE_FIELDS
                  if getattr(event, name) is not None]
        if event.duration is not None:
            lines.append(f"duration = {event.duration!r}")
    return "\n".join(lines) + "\n"


def read_timeline(text: str, source: str = "timeline") -> FaultTimeline:
    """Inverse of `timeline_toml`; a plain scenario file (no sim comments) gives ideal clocks, no site events."""
    scenario = parse_scenario(tomllib.loads(text), source)
    site: list[SiteEvent] = []
    clocks: dict[str, float] = {}
    for number, line in enumerate(text.splitlines(), 1):
        try:
            if line.startswith(_SITE_PREFIX):
                data = json.loads(line[len(_SITE_PREFIX):])
                if data.get("kind") not in SITE_KINDS:
                    raise ValueError(f"kind must be one of {', '.join(SITE_KINDS)}, got {data.get('kind')!r}")
                site.append(SiteEvent(float(data["at"]), data["kind"], float(data["value"])))
            elif line.startswith(_CLOCK_PREFIX):
                clocks = {k: float(v) for k, v in json.loads(line[len(_CLOCK_PREFIX):]).items()}
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{source}:{number}: bad sim comment ({exc}); expected {line.split(':')[0]}: "
                             "{JSON object} as written by telesurg simulate") from None
    return FaultTimeline(tuple(scenario.events), tuple(site), clocks.get("console_offset_s", 0.0),
                         clocks.get("console_drift_ppm", 0.0))
