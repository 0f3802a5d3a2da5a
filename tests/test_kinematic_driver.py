"""The kinematic (no physics) driver: protocol conformance, lag, noise, faults, and the real
ServoLoop + SafetySupervisor running on it under a virtual clock (the driver seam, proven twice)."""

from __future__ import annotations

import numpy as np
import pytest

from telesurg.messages import FLAG_ENGAGED, FLAG_REENGAGE, ArmId, ServoCommand, Telemetry
from telesurg.robot.config import CartConfig
from telesurg.robot.driver import Arm, Driver, OperatingState, Pose, open_driver
from telesurg.robot.kinematic_driver import KinematicConfig, KinematicDriver
from telesurg.robot.safety_config import SupervisorConfig, workspaces_from_cart
from telesurg.robot.servo import ServoConfig, ServoLoop
from telesurg.robot.supervisor import SafetySupervisor, SupervisorState

DT = 0.001
ENGAGE = FLAG_ENGAGED | FLAG_REENGAGE


def homed(settings: KinematicConfig | None = None) -> KinematicDriver:
    driver = KinematicDriver(settings=settings)
    for arm in driver.arms().values():
        arm.state_command("enable")
        arm.state_command("home")
    driver.step(DT)
    assert all(a.operating_state().is_homed for a in driver.arms().values())
    return driver


def run(driver: KinematicDriver, seconds: float) -> None:
    for _ in range(round(seconds / DT)):
        driver.step(DT)


def test_implements_the_driver_protocols() -> None:
    driver = open_driver("kinematic")
    assert isinstance(driver, Driver) and isinstance(driver, KinematicDriver)
    assert set(driver.arms()) == {"PSM1", "PSM2", "ECM"}
    assert all(isinstance(arm, Arm) for arm in driver.arms().values())
    with pytest.raises(ValueError, match="dt must be"):
        driver.step(0.0)
    with pytest.raises(ValueError, match="expected one of mujoco, kinematic"):
        open_driver("ros")
    with pytest.raises(ValueError, match="lag_s"):
        KinematicConfig(lag_s=-1.0)


def test_measured_lags_the_rate_limited_setpoint_first_order() -> None:
    driver = homed(KinematicConfig(lag_s=0.01))
    arm = driver.arms()["PSM1"]
    start = arm.setpoint_js()
    goal = start + np.array([0.05, 0, 0, 0, 0, 0])  # 0.05 rad at 1 rad/s: 50 ms of setpoint travel
    arm.servo_jp(goal)
    steps = []
    for _ in range(20):
        before = arm.setpoint_js()
        driver.step(DT)
        steps.append(np.abs(arm.setpoint_js() - before).max())
    assert max(steps) <= 1.0 * DT + 1e-12  # the velocity limit
    run(driver, 0.04)
    np.testing.assert_allclose(arm.setpoint_js(), goal)
    error_at_arrival = abs(arm.measured_js()[0] - goal[0])
    run(driver, 0.01)  # one time constant later the error is e^-1 of what it was
    assert abs(arm.measured_js()[0] - goal[0]) == pytest.approx(error_at_arrival * np.exp(-1.0), rel=0.02)
    run(driver, 0.2)
    np.testing.assert_allclose(arm.measured_js(), goal, atol=1e-6)
    np.testing.assert_allclose(arm.measured_cp().position, arm.setpoint_cp().position, atol=1e-6)


def test_servo_cp_move_cp_and_twist() -> None:
    driver = homed(KinematicConfig(lag_s=0.0))
    arm = driver.arms()["PSM2"]
    start = arm.measured_cp()
    target = Pose(start.position + np.array([0.004, -0.003, -0.01]), start.orientation)
    arm.move_cp(target)
    assert arm.operating_state().is_busy
    driver.step(DT)
    before = arm.measured_cp().position
    driver.step(DT)
    np.testing.assert_allclose(arm.measured_cv()[:3], (arm.measured_cp().position - before) / DT, rtol=0.02)
    run(driver, 1.0)
    assert not arm.operating_state().is_busy
    np.testing.assert_allclose(arm.measured_cp().position, target.position, atol=1e-9)
    back = Pose(start.position, start.orientation)
    arm.servo_cp(back)
    run(driver, 1.0)
    np.testing.assert_allclose(arm.measured_cp().position, start.position, atol=1e-9)
    arm.servo_jaw(0.7)
    run(driver, 0.5)
    assert arm.measured_jaw() == pytest.approx(0.7)


def test_encoder_noise_is_seeded_and_of_the_configured_size() -> None:
    settings = KinematicConfig(encoder_noise_rad=1e-3, encoder_noise_m=1e-4, seed=7)
    a, b, c = homed(settings), homed(settings), homed(KinematicConfig(encoder_noise_rad=1e-3, seed=8))
    readings = []
    for _ in range(2000):
        for driver in (a, b, c):
            driver.step(DT)
        ja, jb = a.arms()["PSM1"].measured_js(), b.arms()["PSM1"].measured_js()
        np.testing.assert_array_equal(ja, jb)  # same seed, same readings
        readings.append(ja)
    assert not np.array_equal(a.arms()["PSM1"].measured_js(), c.arms()["PSM1"].measured_js())
    std = np.std(readings, axis=0)
    assert std[0] == pytest.approx(1e-3, rel=0.1) and std[2] == pytest.approx(1e-4, rel=0.1)
    reading = a.arms()["PSM1"]
    np.testing.assert_array_equal(reading.measured_js(), reading.measured_js())  # one draw per period


def test_state_machine_fault_injection_and_stall() -> None:
    driver = KinematicDriver()
    arm = driver.arms()["PSM1"]
    arm.servo_jp(arm.setpoint_js() + 0.1)  # refused while disabled
    assert arm.ignored_commands == 1 and arm.operating_state().state is OperatingState.DISABLED
    arm.state_command("enable")
    arm.state_command("home")
    driver.step(DT)
    arm.inject_fault("amplifier over-current")
    assert arm.operating_state().state is OperatingState.FAULT and arm.fault_reason == "amplifier over-current"
    arm.state_command("enable")  # refused: a fault needs an explicit disable first
    assert arm.operating_state().state is OperatingState.FAULT
    arm.state_command("disable")
    assert arm.operating_state().state is OperatingState.DISABLED
    arm.state_command("home")
    driver.step(DT)
    arm.stall()
    arm.servo_jp(arm.setpoint_js() + np.array([0.4, 0, 0, 0, 0, 0]))
    run(driver, 0.6)  # 0.25 rad of error after 0.25 s, then 0.25 s above the limit
    assert arm.operating_state().state is OperatingState.FAULT and "tracking error" in arm.fault_reason
    with pytest.raises(ValueError, match="unknown state command"):
        arm.state_command("reboot")


# -- the seam: the real servo loop and supervisor on this driver ---------------------------------
class VirtualSite:
    """ServoLoop + SafetySupervisor + KinematicDriver, stepped by hand on a virtual 1 kHz clock."""

    def __init__(self) -> None:
        cart = CartConfig()
        self.driver = KinematicDriver(cart, KinematicConfig(lag_s=0.003, encoder_noise_rad=2e-5, seed=1))
        self.sup = SafetySupervisor(SupervisorConfig(workspace=workspaces_from_cart(cart)), ["PSM1", "PSM2"])
        self.telemetry: list[Telemetry] = []
        self.loop = ServoLoop(self.sup, self.driver, ServoConfig(), on_telemetry=self.telemetry.append,
                              clock=lambda: self.now)
        self.now = 0.0
        self.seq = 0

    def run(self, seconds: float, command_to=None, flags: int = FLAG_ENGAGED) -> None:
        for _ in range(round(seconds / DT)):
            self.now = round(self.now + DT, 9)
            if command_to is not None:
                self.seq += 1
                position = tuple(float(v) for v in command_to(self.now))
                quat = tuple(float(v) for v in self.start.orientation)
                self.loop.submit(ServoCommand(ArmId.PSM1, self.seq, self.now, position, quat, 0.3, flags),
                                 "remote", self.seq, 0.0)
                flags = FLAG_ENGAGED
            self.loop.step(self.now)

    def ready(self) -> None:
        self.loop.operator(lambda console, now: console.enable(now))
        self.sup.assign("PSM1", "remote")
        self.run(0.01)
        assert self.sup.state("PSM1") is SupervisorState.READY
        self.start = self.driver.arms()["PSM1"].measured_cp()


def test_servo_loop_and_supervisor_follow_hold_and_fault_on_the_kinematic_driver() -> None:
    site = VirtualSite()
    site.ready()
    arm = site.driver.arms()["PSM1"]
    origin = site.start.position
    target = origin + np.array([0.004, -0.002, -0.003])

    def ramp(now: float, t0: float = site.now) -> np.ndarray:  # the surgeon's hand: ~5 mm over 0.25 s
        return origin + (target - origin) * min(1.0, (now - t0) / 0.25)

    site.run(0.4, ramp, flags=ENGAGE)
    assert site.sup.state("PSM1") is SupervisorState.FOLLOWING
    assert np.linalg.norm(arm.measured_cp().position - target) < 2e-4  # lag + encoder noise
    last = site.telemetry[-1].arms[0]
    assert last.supervisor_state == SupervisorState.FOLLOWING and last.last_applied_seq == site.seq
    np.testing.assert_allclose(last.position, arm.measured_cp().position, atol=1e-4)

    site.run(0.1)  # silence: the watchdog (50 ms) holds the arm where it is
    assert site.sup.state("PSM1") is SupervisorState.HOLD
    hold = site.sup.holds[-1]
    assert hold.cause == "watchdog" and 50.0 < hold.reaction_ms <= 52.0
    held = arm.setpoint_cp().position
    site.run(0.3)
    np.testing.assert_allclose(arm.setpoint_cp().position, held, atol=1e-12)  # nothing moves in HOLD

    site.run(0.05, lambda now: target, flags=ENGAGE)  # an aligned re-engage resumes following
    assert site.sup.state("PSM1") is SupervisorState.FOLLOWING
    applied = site.sup.applied
    arm.inject_fault("encoder lost")
    site.run(0.01, lambda now: target)
    assert site.sup.state("PSM1") is SupervisorState.FAULT
    assert site.sup.transitions[-1].cause == "driver_fault"
    assert arm.operating_state().state is OperatingState.DISABLED  # the supervisor sent "disable"
    assert site.sup.applied == applied + 1  # only the command judged before the fault was seen
    assert site.sup.state("PSM2") is SupervisorState.READY  # the other arm is untouched
    assert site.sup.violations == 0
