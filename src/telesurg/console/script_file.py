"""Master trajectory files for the scripted surgeon: JSON Lines, one sample per line.

Format (UTF-8; blank lines and lines starting with `#` are ignored):

    {"t": 0.00, "arm": "PSM1", "pos": [0.0, 0.0, 0.0], "quat": [1, 0, 0, 0], "jaw": 0.3,
     "clutch": false, "engaged": true, "reengage": true}

- `t` seconds from the start of the script; strictly increasing per arm.
- `arm` an `ArmId` name (PSM1, PSM2, ECM) or its number.
- `pos` master position in metres (master frame); `quat` master orientation w, x, y, z (optional,
  default identity; normalised on read); `jaw` gripper opening in radians (optional, default 0).
- `clutch`, `engaged`, `reengage` booleans (optional; defaults false, true, false).

Between two samples of an arm, position and jaw are interpolated linearly and orientation by nlerp;
the booleans keep the value of the sample at or before `t` (a button is pressed or it is not). Before
the first sample the first is held, after the last the last. See console/examples/ for an example.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from telesurg.console import quat
from telesurg.console.quat import Quat, Vec3
from telesurg.messages import ArmId

_KNOWN = {"t", "arm", "pos", "quat", "jaw", "clutch", "engaged", "reengage"}


class ScriptError(ValueError):
    """A trajectory file that cannot be replayed; the message names the line and the field."""


@dataclass(frozen=True, slots=True)
class ScriptSample:
    t: float
    arm: ArmId
    position: Vec3
    orientation: Quat = quat.IDENTITY
    jaw: float = 0.0
    clutch: bool = False
    engaged: bool = True
    reengage: bool = False

    def to_json(self) -> str:
        return json.dumps({"t": self.t, "arm": self.arm.name, "pos": list(self.position),
                           "quat": list(self.orientation), "jaw": self.jaw, "clutch": self.clutch,
                           "engaged": self.engaged, "reengage": self.reengage})


def _arm(value: object) -> ArmId:
    if isinstance(value, str) and value.upper() in ArmId.__members__:
        return ArmId[value.upper()]
    if isinstance(value, int) and not isinstance(value, bool) and value in set(ArmId):
        return ArmId(value)
    raise ValueError(f"unknown arm {value!r}; use one of {', '.join(ArmId.__members__)}")


def _floats(value: object, n: int, field: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != n:
        raise ValueError(f"{field} must be a list of {n} numbers")
    out = tuple(float(v) for v in value)
    if not all(v == v and abs(v) != float("inf") for v in out):
        raise ValueError(f"{field} must be finite")
    return out


def _bool(record: dict, field: str, default: bool) -> bool:
    value = record.get(field, default)
    if not isinstance(value, bool):
        raise ValueError(f"{field} must be true or false")
    return value


def parse_sample(record: object) -> ScriptSample:
    if not isinstance(record, dict):
        raise ValueError("each line must be a JSON object")
    unknown = set(record) - _KNOWN
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}; known: {sorted(_KNOWN)}")
    for field in ("t", "arm", "pos"):
        if field not in record:
            raise ValueError(f"missing field {field!r}")
    t = float(record["t"])
    if not (t == t and t >= 0 and t != float("inf")):
        raise ValueError("t must be a finite number ≥ 0")
    position = _floats(record["pos"], 3, "pos")
    orientation = quat.normalize(_floats(record.get("quat", [1, 0, 0, 0]), 4, "quat"))  # type: ignore[arg-type]
    jaw = float(record.get("jaw", 0.0))
    return ScriptSample(t, _arm(record["arm"]), position, orientation, jaw,  # type: ignore[arg-type]
                        _bool(record, "clutch", False), _bool(record, "engaged", True),
                        _bool(record, "reengage", False))


class TrajectoryScript:
    """Samples per arm, time-ordered, with interpolated lookup."""

    def __init__(self, samples: Iterable[ScriptSample]) -> None:
        self._by_arm: dict[ArmId, list[ScriptSample]] = {}
        for s in samples:
            track = self._by_arm.setdefault(s.arm, [])
            if track and s.t <= track[-1].t:
                raise ScriptError(f"arm {s.arm.name}: t={s.t} is not after t={track[-1].t}; "
                                  "times must increase strictly per arm")
            track.append(s)
        if not self._by_arm:
            raise ScriptError("script has no samples")
        self._times = {arm: [s.t for s in track] for arm, track in self._by_arm.items()}

    @property
    def arms(self) -> tuple[ArmId, ...]:
        return tuple(self._by_arm)

    @property
    def duration(self) -> float:
        return max(track[-1].t for track in self._by_arm.values())

    def samples(self) -> list[ScriptSample]:
        return sorted((s for track in self._by_arm.values() for s in track), key=lambda s: (s.t, s.arm))

    def at(self, t: float) -> dict[ArmId, ScriptSample]:
        out: dict[ArmId, ScriptSample] = {}
        for arm, track in self._by_arm.items():
            i = bisect.bisect_right(self._times[arm], t)
            if i == 0:
                out[arm] = track[0]
                continue
            before = track[i - 1]
            if i == len(track) or before.t == t:
                out[arm] = before
                continue
            after = track[i]
            s = (t - before.t) / (after.t - before.t)
            pos = tuple(a + s * (b - a) for a, b in zip(before.position, after.position, strict=True))
            out[arm] = ScriptSample(t, arm, pos, quat.nlerp(before.orientation, after.orientation, s),  # type: ignore[arg-type]
                                    before.jaw + s * (after.jaw - before.jaw),
                                    before.clutch, before.engaged, before.reengage)
        return out


def read_script(path: str | Path) -> TrajectoryScript:
    """Read a JSONL master script; raise ScriptError naming file, line and field on bad input."""
    samples = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                samples.append(parse_sample(json.loads(text)))
            except (ValueError, TypeError) as exc:
                raise ScriptError(f"{path}:{lineno}: {exc}") from None
    try:
        return TrajectoryScript(samples)
    except ScriptError as exc:
        raise ScriptError(f"{path}: {exc}") from None


def write_script(path: str | Path, samples: Iterable[ScriptSample], comment: str | None = None) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        if comment:
            for line in comment.splitlines():
                fh.write(f"# {line}\n")
        for s in samples:
            fh.write(s.to_json() + "\n")
