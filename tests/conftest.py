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
