"""One error type for bad profiles and scenarios, with messages that name the field and the fix."""

from __future__ import annotations

from pydantic import ValidationError


class NetemConfigError(ValueError):
    """A profile or scenario that cannot be used; the message says which field and what to write."""


def describe_validation_error(source: str, exc: ValidationError) -> NetemConfigError:
    """Turn pydantic's error list into one readable message: `source: field: problem (got X)`."""
    lines = [f"{source}: {exc.error_count()} invalid field(s):"]
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        got = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
        hint = _HINTS.get(err["type"], "")
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}{got}{hint}")
    return NetemConfigError("\n".join(lines))


_HINTS = {
    "extra_forbidden": " — unknown field: remove it or fix its spelling (impairment fields: see netem/core.py)",
    "missing": " — add this field",
    "less_than_equal": " — probabilities are fractions 0..1 (0.01 = 1 %)",
}
