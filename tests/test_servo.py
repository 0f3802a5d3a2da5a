"""Servo loop: the period body with a fake driver in virtual time, the real thread's clock grid, and an
integration run with the real MuJoCo `SimDriver` at 1 kHz."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from telesurg.messages import FLAG_ENGAGED, FLAG_REENGAGE, ArmId, ServoCommand, Telemetry, decode
from telesurg.robot.driver import ArmOperatingState, OperatingState, Pose
from telesurg.robot.safety_config import SupervisorConfig
from telesurg.robot.servo import DeadlineLoop, ServoConfig, ServoLoop
from telesurg.robot.supervisor import SafetySupervisor, SupervisorState

HOME = np.array((0.0, 0.0, 0.05))
ENGAGE = FLAG_ENGAGED | FLAG_REENGAGE


class FakeArm:
    """Unit-test stand-in: sits exactly at its last servo_cp, homes in one step."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pose = Pose(HOME.copy())
        self.jaw = 0.0
        self.state = OperatingState.DISABLED
        self.homed = False
        self.commands: list[str] = []
        self.servo_calls = 0
        self.explode = False

    def measured_js(self) -> np.ndarray:
        return np.zeros(6)

    def measured_cp(self) -> Pose:
        return self.pose

    def setpoint_cp(self) -> Pose:
        return self.pose

    def measured_jaw(self) -> float:
        return self.jaw

    def servo_cp(self, pose: Pose) -> None:
        if self.explode:
            raise RuntimeError("amplifier bus error")
        self.servo_calls += 1
        self.pose = pose

    def servo_jp(self, q: np.ndarray) -> None:
        raise NotImplementedError

    def servo_jaw(self, angle: float) -> None:
        self.jaw = angle

    def move_jp(self, q: np.ndarray) -> None:
        raise NotImplementedError

    def operating_state(self) -> ArmOperatingState:
        return ArmOperatingState(self.state, self.homed, False)

    def state_command(self, command: str) -> None:
        self.commands.append(command)
        if command == "enable":
            self.state = OperatingState.ENABLED
        elif command == "home":
            self.homed = True
        elif command == "disable":
            self.state = OperatingState.DISABLED


class FakeDriver:
    def __init__(self, names=("PSM1", "PSM2")) -> None:
        self._arms = {n: FakeArm(n) for n in names}
        self.steps = 0

    def arms(self) -> dict[str, FakeArm]:
        return dict(self._arms)

    def step(self, dt: float) -> None:
        self.steps += 1

    def close(self) -> None:
        pass


def make_loop(names=("PSM1", "PSM2"), **servo_kwargs):
    driver = FakeDriver(names)
    sup = SafetySupervisor(SupervisorConfig(), names)
    telemetry: list[Telemetry] = []
    loop = ServoLoop(sup, driver, ServoConfig(**servo_kwargs), on_telemetry=telemetry.append)
    return loop, sup, driver, telemetry


def cmd(seq: int, now: float, pos=HOME, flags=FLAG_ENGAGED, arm="PSM1", jaw=0.2) -> ServoCommand:
    return ServoCommand(ArmId[arm].value, seq, now, tuple(float(v) for v in pos), (1.0, 0.0, 0.0, 0.0), jaw, flags)


def run(loop: ServoLoop, start: float, n: int) -> float:
    now = start
    for _ in range(n):
        now = round(now + 0.001, 9)
        loop.step(now)
    return now


def start_until_ready(loop: ServoLoop, sup: SafetySupervisor, timeout: float = 2.0) -> None:
    """Enable from the local console, give PSM1 to "remote", start the thread, wait for READY."""
    loop.operator(lambda console, now: console.enable(now))
    sup.assign("PSM1", "remote")
    loop.start()
    deadline = time.monotonic() + timeout
    while sup.state("PSM1") is not SupervisorState.READY and time.monotonic() < deadline:
        time.sleep(0.005)


def test_period_body_enables_follows_and_publishes_telemetry() -> None:
    loop, sup, driver, telemetry = make_loop()
    loop.operator(lambda console, now: console.enable(now))
    for arm in sup.arm_names:
        sup.assign(arm, "remote")
    now = run(loop, 0.0, 2)
    assert driver._arms["PSM1"].commands == ["enable", "home"]
    assert sup.state("PSM1") is SupervisorState.READY
    loop.submit(cmd(1, now, flags=ENGAGE), "remote", 1, 0.0)
    target = HOME + np.array((0.002, 0.0, 0.0))
    for seq in range(2, 40):
        loop.submit(cmd(seq, now, target), "remote", seq, 0.0)
        now = run(loop, now, 1)
    assert np.allclose(driver._arms["PSM1"].pose.position, target)  # 2 mm at 0.1 mm/period: 20 periods
    assert driver._arms["PSM2"].servo_calls == 0  # never engaged: no setpoints
    assert driver.steps == 40
    assert len(telemetry) == 4  # 100 Hz of a 1 kHz loop
    last = decode(telemetry[-1].encode())
    psm1 = last.arms[0]
    assert psm1.arm == ArmId.PSM1 and psm1.supervisor_state == SupervisorState.FOLLOWING
    assert psm1.last_applied_seq == 39 and psm1.operating_state == OperatingState.ENABLED
    assert sup.violations == 0


def test_on_decision_reports_each_judged_command() -> None:
    driver = FakeDriver(("PSM1",))
    sup = SafetySupervisor(SupervisorConfig(), ["PSM1"])
    seen: list[tuple[int, str, float, float | None]] = []
    loop = ServoLoop(sup, driver, on_decision=lambda c, d, now, off, sender, link_seq: seen.append((c.cmd_seq, d.reason, now, off)))
    loop.operator(lambda console, now: console.enable(now))
    sup.assign("PSM1", "remote")
    now = run(loop, 0.0, 2)
    loop.submit(cmd(1, now + 0.5, flags=ENGAGE), "remote", 1, 0.5)  # console clock 0.5 s ahead
    loop.submit(cmd(1, now + 0.5, flags=ENGAGE), "remote", 2, 0.5)
    run(loop, now, 1)
    assert seen == [(1, "", now + 0.001, 0.5), (1, "duplicate", now + 0.001, 0.5)]


def test_operator_action_precedes_network_commands_of_the_same_period() -> None:
    loop, sup, driver, _ = make_loop()
    loop.operator(lambda console, now: console.enable(now))
    sup.assign("PSM1", "remote")
    now = run(loop, 0.0, 2)
    loop.submit(cmd(1, now, flags=ENGAGE), "remote", 1, 0.0)
    loop.operator(lambda console, now: console.emergency_stop(now))  # queued after, runs first
    run(loop, now, 1)
    assert sup.counters["estop"] == 1 and sup.applied == 0
    assert {sup.state(a) for a in sup.arm_names} == {SupervisorState.FAULT}
    assert driver._arms["PSM2"].commands[-1] == "disable"


def test_driver_exception_disables_every_arm() -> None:
    loop, sup, driver, _ = make_loop()
    loop.operator(lambda console, now: console.enable(now))
    sup.assign("PSM1", "remote")
    now = run(loop, 0.0, 2)
    loop.submit(cmd(1, now, flags=ENGAGE), "remote", 1, 0.0)
    driver._arms["PSM1"].explode = True
    with pytest.raises(RuntimeError):
        run(loop, now, 1)
    assert all(a.commands[-1] == "disable" for a in driver._arms.values())
    assert sup.estopped


def test_config_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="rate_hz"):
        ServoConfig(rate_hz=1e6)
    with pytest.raises(ValueError, match="telemetry_hz"):
        ServoConfig(telemetry_hz=2000)
    with pytest.raises(ValueError, match="not in the driver"):
        ServoLoop(SafetySupervisor(SupervisorConfig(), ["PSM1", "ECM"]), FakeDriver(("PSM1",)))


def test_deadline_grid_does_not_drift() -> None:
    ticks: list[float] = []
    loop = DeadlineLoop(0.002, ticks.append)
    started = time.monotonic()
    loop.start()
    time.sleep(0.4)
    loop.stop()
    grid_points_elapsed = (time.monotonic() - started) / 0.002
    assert not loop.running
    lateness = list(loop.stats.lateness_s)[: len(ticks)]
    deadlines = np.array(ticks[: len(lateness)]) - np.array(lateness)
    steps = np.diff(deadlines) / 0.002
    # every deadline sits on the absolute grid, however late single wakes were: no drift
    assert np.allclose(steps, np.round(steps), atol=1e-6)
    assert steps.min() >= 1 - 1e-6
    # grid points between the first and last wake are all either served or counted as skipped
    assert loop.stats.periods - 1 <= round(steps.sum()) <= loop.stats.periods + loop.stats.skipped - 1
    # the grid covers the wall time the loop ran (start/stop themselves take time on a busy VM)
    assert 100 <= loop.stats.periods + loop.stats.skipped <= grid_points_elapsed + 1


def test_a_site_clock_step_neither_stalls_nor_bursts_the_grid() -> None:
    """The body gets the site's clock (which steps back 10 s here); the grid keeps to time.monotonic.
    On the stepped clock itself the loop would have slept 10 s."""
    offset = [0.0]
    ticks: list[float] = []
    loop = DeadlineLoop(0.002, ticks.append, clock=lambda: time.monotonic() + offset[0])
    loop.start()
    time.sleep(0.2)
    offset[0] = -10.0
    before = len(ticks)
    time.sleep(0.2)
    loop.stop()
    after = ticks[before:]
    assert len(after) >= 40 and all(t < ticks[0] for t in after[1:])  # served, with the stepped clock's time
    assert loop.stats.skipped < 50 and loop.stats.max_s < 0.1  # the grid never saw the step


def test_thread_runs_restores_switch_interval_and_holds_on_silence() -> None:
    before = sys.getswitchinterval()
    loop, sup, driver, telemetry = make_loop(switch_interval_s=0.0002)
    start_until_ready(loop, sup)
    assert sys.getswitchinterval() == pytest.approx(0.0002)
    seq = 1
    loop.submit(cmd(seq, time.monotonic(), flags=ENGAGE), "remote", seq, 0.0)
    for _ in range(100):  # ~1 kHz stream from "the link thread" for ~0.1 s
        seq += 1
        loop.submit(cmd(seq, time.monotonic(), HOME + np.array((0.001, 0, 0))), "remote", seq, 0.0)
        time.sleep(0.001)
    time.sleep(0.2)  # silence: the watchdog must hold
    loop.stop()
    assert sys.getswitchinterval() == pytest.approx(before)
    assert sup.state("PSM1") is SupervisorState.HOLD
    assert sup.holds and all(h.cause == "watchdog" and h.reaction_ms > 50.0 for h in sup.holds)
    assert sup.violations == 0 and loop.error is None
    assert loop.stats()["periods"] > 100 and telemetry


def _judging_delays(apply_on_arrival: bool) -> tuple[list[float], FakeDriver, SafetySupervisor]:
    """Stream commands every 5 ms into a 20 Hz loop (50 ms periods); how long each waited to be judged."""
    driver = FakeDriver(("PSM1",))
    sup = SafetySupervisor(SupervisorConfig(), ["PSM1"])
    judged: dict[int, float] = {}
    loop = ServoLoop(sup, driver, ServoConfig(rate_hz=20.0, telemetry_hz=20.0, apply_on_arrival=apply_on_arrival),
                     on_decision=lambda c, d, now, off, sender, link_seq: judged.setdefault(c.cmd_seq, now))
    start_until_ready(loop, sup)
    try:
        submitted: dict[int, float] = {}
        for seq in range(1, 41):
            offset = np.array((0.00002 * seq, 0.0, 0.0))  # 20 µm per command: within the step cap
            submitted[seq] = time.monotonic()
            loop.submit(cmd(seq, submitted[seq], HOME + offset, flags=ENGAGE), "remote", seq, 0.0)
            time.sleep(0.005)
        time.sleep(0.06)
    finally:
        loop.stop()
    return [judged[seq] - submitted[seq] for seq in submitted], driver, sup


def test_commands_are_judged_and_applied_on_arrival_not_at_the_next_period() -> None:
    waits, driver, sup = _judging_delays(apply_on_arrival=True)
    assert float(np.median(waits)) < 0.010  # a 50 ms period would make them wait ~25 ms on average
    assert sup.applied == 40 and sup.violations == 0
    arm = driver._arms["PSM1"]
    assert arm.servo_calls > driver.steps + 30  # setpoints went out between periods, on arrival
    np.testing.assert_allclose(arm.pose.position, HOME + np.array((0.0008, 0.0, 0.0)))

    grid_waits, _, _ = _judging_delays(apply_on_arrival=False)
    assert float(np.median(grid_waits)) > 0.012  # judged only at the next 50 ms grid point


@pytest.mark.slow
def test_real_sim_driver_follows_within_caps_and_holds() -> None:
    """Real MuJoCo: engage PSM1, stream a 4 mm move at ~1 kHz from another thread, go silent."""
    from telesurg.robot.config import CartConfig
    from telesurg.robot.safety_config import workspaces_from_cart
    from telesurg.robot.sim import SimDriver

    cart = CartConfig()
    driver = SimDriver(cart)
    sup = SafetySupervisor(SupervisorConfig(workspace=workspaces_from_cart(cart)), list(driver.arms()))
    telemetry: list[Telemetry] = []
    loop = ServoLoop(sup, driver, ServoConfig(), on_telemetry=telemetry.append)
    start_until_ready(loop, sup, timeout=10.0)
    try:
        assert sup.state("PSM1") is SupervisorState.READY
        start = sup.setpoint("PSM1")
        target = start.position + np.array((0.004, 0.0, 0.0))
        quat = tuple(float(v) for v in start.orientation)
        stop = threading.Event()

        def console() -> None:
            seq = 0
            while not stop.is_set():
                seq += 1
                pos = start.position if seq == 1 else target
                c = ServoCommand(ArmId.PSM1, seq, time.monotonic(), tuple(float(v) for v in pos), quat, 0.3,
                                 ENGAGE if seq == 1 else FLAG_ENGAGED)
                loop.submit(c, "remote", seq, 0.0)
                time.sleep(0.001)

        sender = threading.Thread(target=console)
        sender.start()
        time.sleep(0.6)
        stop.set()
        sender.join()
        assert sup.state("PSM1") is SupervisorState.FOLLOWING
        time.sleep(0.3)
        assert sup.state("PSM1") is SupervisorState.HOLD
        held = driver.arms()["PSM1"].measured_cp().position
        time.sleep(0.2)
        moved_after_hold = np.linalg.norm(driver.arms()["PSM1"].measured_cp().position - held)
    finally:
        loop.stop()
        driver.close()
    assert loop.error is None and sup.violations == 0
    measured = driver.arms()["PSM1"].measured_cp().position
    assert np.linalg.norm(measured - target) < 0.001  # reached the target (servo tracking error < 1 mm)
    assert moved_after_hold < 2e-4
    assert sup.holds[0].cause == "watchdog" and sup.holds[0].resumed_by is None
    assert telemetry[-1].arms[0].supervisor_state == SupervisorState.HOLD
    stats = loop.stats()
    print("sim servo loop stats:", stats)
    assert stats["periods"] > 500


def test_the_trace_pairs_each_period_start_with_its_lateness() -> None:
    ticks: list[float] = []
    loop = DeadlineLoop(0.002, ticks.append)
    with pytest.raises(RuntimeError, match="keep_trace"):  # not kept unless asked for
        loop.stats.trace()
    loop.keep_trace()
    before = time.monotonic()
    loop.start()
    time.sleep(0.1)
    loop.stop()
    trace = loop.stats.trace()
    assert trace.shape == (loop.stats.periods, 2) and loop.stats.periods >= 10
    # the start times are the times each body ran with (site clock = time.monotonic here), in order
    assert np.array_equal(trace[:, 0], np.array(ticks[: len(trace)]))
    assert trace[0, 0] >= before and np.all(np.diff(trace[:, 0]) > 0)
    assert np.array_equal(trace[:, 1], np.array(loop.stats.lateness_s))
