"""Helpers for tests, benchmarks and simulations of the robot side (link/testing.py is the link's)."""

from __future__ import annotations

from typing import TypeVar

from telesurg.robot.driver import Driver

D = TypeVar("D", bound=Driver)


def enable_and_home(driver: D, *, settle_steps: int = 50, dt: float = 0.001) -> D:
    """Enable and home every arm of `driver`, then step it `settle_steps` periods (homing a cart at
    rest takes well under 50 ms), as the local team does before an operation."""
    for arm in driver.arms().values():
        arm.state_command("enable")
        arm.state_command("home")
    for _ in range(settle_steps):
        driver.step(dt)
    return driver
