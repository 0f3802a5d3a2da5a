"""Shared test fixtures: where ../shared lives, and environment for headless MuJoCo/SDL."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def contract_checker() -> Path:
    checker = SHARED / "contract" / "check_report.py"
    if not checker.exists():
        pytest.fail(f"{checker} is missing: CI runs with ../shared beside the clone")
    return checker


@pytest.fixture
def no_loss_profile(tmp_path: Path) -> Path:
    """The Shanghai-Casablanca delays without random loss. With it a command can be lost in a path cut
    only if the failover itself loses it; on the real profile, path b's 0.1 % loss can still take a
    command in the ~30 ms before the link starts doubling control on the surviving path."""
    profile = tmp_path / "no-loss.toml"
    profile.write_text("""
name = "shanghai-casablanca-no-loss"
description = "test: delays of shanghai-casablanca, no random loss"
[[path]]
name = "a"
both = { delay_ms = 52.5, jitter_ms = 0.5 }
[[path]]
name = "b"
both = { delay_ms = 82.5, jitter_ms = 3.0 }
""")
    return profile
