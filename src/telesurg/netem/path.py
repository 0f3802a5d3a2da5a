"""Both directions of one emulated path, built from a profile, and how scenario actions apply to them.

Shared by the virtual-clock network and the UDP relay, so a scenario means the same thing in both.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable
from typing import Any

from telesurg.netem.core import DirectionEmulator, Impairment
from telesurg.netem.profiles import Profile
from telesurg.netem.scenario import ALL_PATHS, ScenarioAction


def derive_seed(seed: int, *labels: str) -> int:
    """Independent, stable per-direction seeds from one run seed (same seed → same run, any platform)."""
    digest = hashlib.blake2b("/".join((str(seed), *labels)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class EmulatedPath:
    """A path: `forward` carries console→robot packets, `reverse` robot→console."""

    def __init__(self, name: str, forward: Impairment, reverse: Impairment, seed: int = 0) -> None:
        self.name = name
        self.forward = DirectionEmulator(forward, derive_seed(seed, name, "forward"))
        self.reverse = DirectionEmulator(reverse, derive_seed(seed, name, "reverse"))
        # a relay whose departure threads share these emulators sets a real lock here
        self.lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()

    @property
    def directions(self) -> tuple[DirectionEmulator, DirectionEmulator]:
        return (self.forward, self.reverse)

    @property
    def is_down(self) -> bool:
        return self.forward.is_down

    def down(self, now: float | None = None) -> None:
        with self.lock:
            for direction in self.directions:
                direction.down(now)

    def up(self) -> None:
        with self.lock:
            for direction in self.directions:
                direction.up()

    def set(self, **changes: float) -> None:
        with self.lock:
            for direction in self.directions:
                direction.set(**changes)

    def revert(self, *fields: str) -> None:
        with self.lock:
            for direction in self.directions:
                direction.revert(*fields)

    def stats(self) -> dict[str, dict[str, int]]:
        return {"forward": self.forward.stats.as_dict(), "reverse": self.reverse.stats.as_dict()}


def build_paths(profile: Profile, seed: int = 0) -> dict[str, EmulatedPath]:
    return {p.name: EmulatedPath(p.name, p.forward, p.reverse, seed) for p in profile.paths}


def select(paths: dict[str, EmulatedPath], name: str) -> Iterable[EmulatedPath]:
    """The path called `name`, or all of them for '*'; a clear KeyError for an unknown name."""
    if name == ALL_PATHS:
        return list(paths.values())
    if name not in paths:
        raise KeyError(f"no path {name!r}; known paths: {sorted(paths)} (or '*')")
    return [paths[name]]


def apply_action(paths: dict[str, EmulatedPath], action: ScenarioAction, now: float) -> None:
    for path in select(paths, action.path):
        if action.action == "down":
            path.down(now)
        elif action.action == "up":
            path.up()
        elif action.action == "set":
            path.set(**action.changes)
        else:
            path.revert(*action.changes)
