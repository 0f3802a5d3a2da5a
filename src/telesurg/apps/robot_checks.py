"""The robot's side of a qualification session (called from `apps/robot.py`).

It lives beside the robot site, not in qualify/: qualify drives sessions from the console side and
sits above the apps; the robot only answers.

`echo_probe` answers echo requests on the link thread: it never touches the supervisor, so network
tests cannot move an arm. `run_robot_check` runs one robot check asked for with `--robot-checks`;
every arm action goes through `site.servo.operator(...)`, i.e. the local console's path on the servo
thread, and motion stays within the supervisor's caps (homing and the sweep use the driver's planned
moves at half speed while the supervisor is not FOLLOWING; the watchdog check follows the console's
aligned, motionless commands and then watches the supervisor hold when they stop).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from telesurg import qualify_wire as protocol
from telesurg.robot.driver import OperatingState
from telesurg.robot.supervisor import SupervisorState

if TYPE_CHECKING:
    from telesurg.apps.robot import RobotSite
    from telesurg.robot.local_console import LocalConsole

_MAX_STREAMS = 64
_received: OrderedDict[int, int] = OrderedDict()  # stream -> requests received (link thread only)
malformed: Counter[str] = Counter()
T = TypeVar("T")


def echo_probe(payload: bytes, now: float) -> bytes | None:
    """The reply to one echo request (robot clock `now`), or None for anything else (counted)."""
    try:
        probe = protocol.decode(payload)
    except protocol.ProbeDecodeError as exc:
        malformed[str(exc)] += 1
        return None
    if probe.kind != protocol.KIND_REQUEST:
        malformed["not_request"] += 1
        return None
    count = _received.pop(probe.stream, 0) + 1
    _received[probe.stream] = count
    while len(_received) > _MAX_STREAMS:
        _received.popitem(last=False)
    reply = protocol.EchoProbe(protocol.KIND_REPLY, probe.stream, probe.seq, probe.t_sent, now, count)
    return reply.encode(padding=probe.reply_pad)


# -- robot checks ------------------------------------------------------------------------------------
async def _on_servo(site: RobotSite, fn: Callable[[LocalConsole, float], T]) -> tuple[T, float]:
    """Run `fn` on the servo thread (before that period's network commands); its result and servo time."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[T, float]] = loop.create_future()

    def action(console: LocalConsole, now: float) -> None:
        try:
            result = (fn(console, now), now)
        except Exception as exc:  # noqa: BLE001 - handed back to the awaiting check
            error = exc
            loop.call_soon_threadsafe(lambda: done.done() or done.set_exception(error))
            return
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(result))

    site.servo.operator(action)
    return await asyncio.wait_for(done, 5.0)


async def _wait_for(predicate: Callable[[], bool], timeout: float, poll: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll)
    return True


def _states(site: RobotSite) -> dict[str, str]:
    return {arm: site.supervisor.state(arm).name for arm in site.supervisor.arm_names}


def _all_in(site: RobotSite, state: SupervisorState) -> bool:
    return all(site.supervisor.state(arm) is state for arm in site.supervisor.arm_names)


def _result(check: str, status: str, detail: str, **figures: Any) -> dict[str, Any]:
    return {"type": "qualify_result", "check": check, "status": status, "detail": detail, "figures": figures}


async def _check_homing(site: RobotSite, message: dict[str, Any]) -> dict[str, Any]:
    if not (_all_in(site, SupervisorState.READY) or _all_in(site, SupervisorState.DISABLED)):
        return _result("homing", "fail", f"arms must be READY or DISABLED to re-home, are {_states(site)}")
    _, t0 = await _on_servo(site, lambda c, now: (c.supervisor.disable(None, now), c.enable(now)))
    ok = await _wait_for(lambda: _all_in(site, SupervisorState.READY), float(message.get("timeout_s", 30.0)))
    ready_at = max((t.at_s for t in site.supervisor.transitions if t.to_state is SupervisorState.READY and t.at_s >= t0),
                   default=None)
    homing_s = None if ready_at is None else round(ready_at - t0, 3)
    if not ok:
        return _result("homing", "fail", f"arms not READY after homing: {_states(site)}", homing_s=homing_s)
    return _result("homing", "pass", "every arm powered, homed and READY", homing_s=homing_s)


async def _check_sweep(site: RobotSite, message: dict[str, Any]) -> dict[str, Any]:
    """A slow joint-range sweep (planned moves at half speed) over a fraction of each joint's range."""
    fraction = min(max(float(message.get("fraction", 0.25)), 0.0), 0.9)
    if not _all_in(site, SupervisorState.READY):
        return _result("sweep", "fail", f"arms must be READY (not following) for the sweep, are {_states(site)}")
    arms = {name: site.sim.arms()[name] for name in site.supervisor.arm_names}
    start = {name: arm.measured_js() for name, arm in arms.items()}
    worst_error = 0.0
    started = time.monotonic()
    for leg in ("lower", "upper", "home"):
        targets = {}
        for name, arm in arms.items():
            q0 = start[name]
            lower, upper = np.asarray(arm.config.lower, float), np.asarray(arm.config.upper, float)
            targets[name] = q0 if leg == "home" else q0 + fraction * ((lower if leg == "lower" else upper) - q0)
        await _on_servo(site, lambda c, now, t=targets: [arms[n].move_jp(q) for n, q in t.items()])
        done = await _wait_for(lambda: all(not a.operating_state().is_busy for a in arms.values()),
                               float(message.get("timeout_s", 20.0)))
        faults = [n for n, a in arms.items() if a.operating_state().state is OperatingState.FAULT]
        if faults or not done:
            return _result("sweep", "fail", f"leg {leg}: {'fault on ' + str(faults) if faults else 'timed out'}")
        await asyncio.sleep(0.2)  # let the joints settle on the setpoint
        for name, arm in arms.items():
            worst_error = max(worst_error, float(np.max(np.abs(arm.measured_js() - targets[name]))))
    status = "pass" if worst_error <= float(message.get("tolerance", 0.02)) and _all_in(
        site, SupervisorState.READY) else "fail"
    return _result("sweep", status, f"{fraction:.0%} of each joint's range both ways and back",
                   duration_s=round(time.monotonic() - started, 2), worst_tracking_error=round(worst_error, 5))


async def _check_watchdog(site: RobotSite, message: dict[str, Any]) -> dict[str, Any]:
    """The console streams aligned, motionless commands, then stops: each arm must hold within the bound."""
    bound_ms = float(message.get("limit_ms", site.supervisor.config.watchdog_s * 1000.0))
    first_hold = len(site.supervisor.holds)
    if not await _wait_for(lambda: _all_in(site, SupervisorState.FOLLOWING), float(message.get("follow_timeout_s", 5))):
        return _result("watchdog", "fail", f"arms never followed the qualification commands: {_states(site)}")

    def new_holds() -> list[Any]:
        return [h for h in site.supervisor.holds[first_hold:] if h.cause == "watchdog"]

    arms = set(site.supervisor.arm_names)
    if not await _wait_for(lambda: {h.arm for h in new_holds()} >= arms, 5.0):
        return _result("watchdog", "fail", f"no watchdog hold after commands stopped: {_states(site)}")
    reaction = {h.arm: round(h.reaction_ms, 3) for h in new_holds()}
    latched = await _wait_for(lambda: _all_in(site, SupervisorState.LATCHED),
                              site.supervisor.config.fault_s + 2.0)
    await _on_servo(site, lambda c, now: c.clear_latch(now))
    await _wait_for(lambda: _all_in(site, SupervisorState.READY), 2.0)
    worst = max(reaction.values())
    status = "pass" if worst <= bound_ms and latched else "fail"
    detail = "held within the bound, latched after the fault time, cleared by the local console"
    if not latched:
        detail = "held, but did not latch after the fault time"
    return _result("watchdog", status, detail, reaction_ms=reaction, worst_ms=worst, limit_ms=bound_ms)


async def _check_estop(site: RobotSite, message: dict[str, Any]) -> dict[str, Any]:
    sup = site.supervisor
    first = len(sup.transitions)
    _, t0 = await _on_servo(site, lambda c, now: c.emergency_stop(now))
    arms = [site.sim.arms()[name] for name in sup.arm_names]
    ok = await _wait_for(lambda: _all_in(site, SupervisorState.FAULT) and all(
        a.operating_state().state is OperatingState.DISABLED for a in arms), 2.0)
    faults = [t.at_s for t in sup.transitions[first:] if t.to_state is SupervisorState.FAULT]
    reaction_ms = round((max(faults) - t0) * 1000.0, 3) if faults else None
    await _on_servo(site, lambda c, now: (c.release_estop(now), c.enable(now)))
    recovered = await _wait_for(lambda: _all_in(site, SupervisorState.READY), float(message.get("timeout_s", 30.0)))
    status = "pass" if ok and recovered else "fail"
    detail = "every arm FAULT and powered off at once; released and re-homed by the local console"
    if not ok:
        detail = f"e-stop did not disable every arm: {_states(site)}"
    elif not recovered:
        detail = f"arms did not re-home after release: {_states(site)}"
    return _result("estop", status, detail, reaction_ms=reaction_ms, recovered=recovered)


async def _check_video(site: RobotSite, message: dict[str, Any]) -> dict[str, Any]:
    """The robot side of the video check: is the endoscope streaming? The console side decodes and
    judges fps and capture-to-decoded latency (qualify/runner.py)."""
    if getattr(site, "video", None) is None:
        reason = "video disabled in robot.toml or --no-video" if not site.want_video else \
            "the robot site has no video sender running"
        return _result("video", "not_run", reason)
    seconds = float(message.get("seconds", 3.0))
    before = site.video.report()
    await asyncio.sleep(seconds)
    after = site.video.report()
    sent = after["payloads"] - before["payloads"]
    status = "pass" if sent > 0 and after["process_alive"] else "fail"
    return _result("video", status, f"{sent} video payloads sent in {seconds:.0f} s", payloads=sent,
                   mbps=round(8 * (after["bytes"] - before["bytes"]) / seconds / 1e6, 3))


CHECKS = {"homing": _check_homing, "sweep": _check_sweep, "watchdog": _check_watchdog, "estop": _check_estop,
          "video": _check_video}


async def run_robot_check(site: RobotSite, message: dict[str, Any]) -> dict[str, Any]:
    """One check from a `{"type": "qualify", "check": NAME, ...}` session event; never raises."""
    name = str(message.get("check"))
    check = CHECKS.get(name)
    if check is None:
        result = _result(name, "error", f"unknown check {name!r}; known: {sorted(CHECKS)}")
    else:
        try:
            result = await check(site, message)
        except Exception as exc:  # noqa: BLE001 - the console must get an answer, not silence
            result = _result(name, "error", f"{type(exc).__name__}: {exc}")
    result["id"] = message.get("id")
    result["states"] = _states(site)
    return result
