"""Servo loop timing beside the real link, against a bare deadline loop measured in the same run.

    python bench/servo_loop.py [--seconds N] [--json F] [--no-compare]
    python bench/servo_loop.py --cpu [--periods N] [--json F]

`--cpu`: CPU cost of the command path alone, in virtual time (no threads, no link): (a) one servo
period (`ServoLoop.step` with 2 queued commands, supervisor + SimDriver) while PSM1 and PSM2 follow a
moving target, (b) one `ConsoleCore` tick (+ `ServoBundle.encode`) with 2 arms following the scripted
peg transfer of `telesurg demo`. Both are printed next to baselines measured interleaved in the same
run: a bare `mujoco.mj_step` on the same model, and for the console the scripted input's own `sample`
(timed inside the tick; console/inputs.py and robot/peg_transfer.py, not the console core), so the
console's own work is shown apart. Figures are thread CPU time (`time.thread_time_ns`).

Robot process (this one): MuJoCo `SimDriver` + `SafetySupervisor` in `ServoLoop` at 1 kHz on its own
thread, and the robot's `LinkEndpoint` (2 paths, TLS 1.3 + AEAD, loopback UDP) on a uvloop thread
feeding decoded commands to the loop's inbox and sending 100 Hz telemetry back, as in `telesurg robot`.
Console process (spawned): a `LinkEndpoint` client that waits for telemetry, re-engages PSM1 at the
tool pose and streams 1 kHz `servo_cp` on both paths (a slow 2 mm circle).

Baseline: `bare`, a `DeadlineLoop` whose body does nothing, runs in its own process at the same time
as the servo loop, so both see the same background load (the machine is shared) but the bare loop
has no GIL contention. Phases: `servo` (the configured short GIL switch interval) and, unless
--no-compare, `servo_default_switch` (CPython's default 5 ms) with its own concurrent bare loop.
Target: servo p99 <= 1.5 x bare p99 and servo missed <= bare missed + 0.1 % of periods.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import multiprocessing as mp
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

os.environ.setdefault("MUJOCO_GL", "osmesa")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from telesurg.console.config import ConsoleConfig  # noqa: E402
from telesurg.console.core import ConsoleCore  # noqa: E402
from telesurg.console.inputs import ScriptedTaskInput  # noqa: E402
from telesurg.link import LinkCore, MessageClass, MessageReceived, make_identity  # noqa: E402
from telesurg.link.driver import LinkEndpoint, install_uvloop  # noqa: E402
from telesurg.messages import (  # noqa: E402
    FLAG_ENGAGED,
    FLAG_REENGAGE,
    ArmId,
    ArmTelemetry,
    DecodeError,
    ServoBundle,
    ServoCommand,
    Telemetry,
    decode,
)
from telesurg.realtime import cpu_seconds_of  # noqa: E402
from telesurg.robot.config import CartConfig  # noqa: E402
from telesurg.robot.peg_transfer import peg_transfer_plan  # noqa: E402
from telesurg.robot.safety_config import SupervisorConfig, workspaces_from_cart  # noqa: E402
from telesurg.robot.scene import default_board  # noqa: E402
from telesurg.robot.servo import DeadlineLoop, ServoConfig, ServoLoop  # noqa: E402
from telesurg.robot.sim import SimDriver  # noqa: E402
from telesurg.robot.supervisor import SafetySupervisor, SupervisorState  # noqa: E402

LOCAL = "127.0.0.1"
PATHS = ("a", "b")


# ---------------------------------------------------------------------------- console process
def console_main(identity: Any, robot_cert: bytes, robot_addrs: dict[str, tuple[str, int]], seconds: float,
                 result: Any) -> None:
    install_uvloop()
    asyncio.run(_console(identity, robot_cert, robot_addrs, seconds, result))


async def _console(identity: Any, robot_cert: bytes, robot_addrs: dict[str, tuple[str, int]], seconds: float,
                   result: Any) -> None:
    latest: list[Telemetry] = []

    def on_message(event: MessageReceived) -> None:
        try:
            msg = decode(event.payload)
        except DecodeError:
            return
        if isinstance(msg, Telemetry):
            latest[:] = [msg]

    core = LinkCore.in_memory(identity, [robot_cert], is_client=True, path_names=PATHS)
    endpoint = LinkEndpoint(core, dict.fromkeys(PATHS, (LOCAL, 0)), robot_addrs, on_message=on_message)
    await endpoint.start()
    await endpoint.wait_established(15.0)
    loop = asyncio.get_running_loop()
    while not (latest and latest[0].arms[0].supervisor_state == SupervisorState.READY):
        await asyncio.sleep(0.01)
    psm1 = latest[0].arms[0]
    centre = psm1.position
    seq, sent = 0, 0
    start = loop.time()
    next_t = start
    while (now := loop.time()) < start + seconds:
        if now >= next_t:
            seq += 1
            phase = 2 * math.pi * 0.25 * (now - start)  # 0.25 Hz circle, 2 mm radius: ~3 mm/s
            r = 0.0 if seq == 1 else 0.002 * min(1.0, (now - start) / 2.0)
            pos = (centre[0] + r * math.cos(phase) - (0.002 * min(1.0, (now - start) / 2.0) if seq > 1 else 0.0),
                   centre[1] + r * math.sin(phase), centre[2])
            flags = FLAG_ENGAGED | (FLAG_REENGAGE if seq == 1 else 0)
            cmd = ServoCommand(ArmId.PSM1, seq, time.monotonic(), pos, psm1.orientation, 0.3, flags)
            endpoint.send(MessageClass.CONTROL, cmd.encode())
            sent += 1
            next_t += 0.001
            if next_t < now - 0.01:  # fell far behind: do not burst
                next_t = now
        await asyncio.sleep(max(0.0, next_t - loop.time()))
    result.put({"sent": sent, "rate_hz": sent / seconds})
    await endpoint.close()


# ------------------------------------------------------------------------------ robot process
class RobotLink:
    """The robot's link endpoint on its own uvloop thread, feeding a ServoLoop."""

    def __init__(self, identity: Any, console_cert: bytes) -> None:
        self.identity, self.console_cert = identity, console_cert
        self.servo: ServoLoop | None = None
        self.counters: Counter[str] = Counter()
        self.addrs: dict[str, tuple[str, int]] = {}
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="link", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    def send_telemetry(self, telemetry: Telemetry) -> None:
        """Called on the servo thread: hand the bytes to the link thread, never block."""
        payload = telemetry.encode()
        self._loop.call_soon_threadsafe(self._send, MessageClass.TELEMETRY, payload)

    def _send(self, cls: MessageClass, payload: bytes) -> None:
        if self.endpoint.established:
            self.endpoint.send(cls, payload)

    def _on_message(self, event: MessageReceived) -> None:
        try:
            msg = decode(event.payload)
        except DecodeError:
            self.counters["decode_error"] += 1
            return
        if isinstance(msg, ServoCommand) and self.servo is not None:
            self.counters["commands"] += 1
            self.servo.submit(msg, self.endpoint.core.peer_name or "?", event.seq,
                              self.endpoint.core.clock_offset())

    def _run(self) -> None:
        install_uvloop()
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        core = LinkCore.in_memory(self.identity, [self.console_cert], is_client=False, path_names=PATHS)
        self.endpoint = LinkEndpoint(core, dict.fromkeys(PATHS, (LOCAL, 0)), dict.fromkeys(PATHS),
                                     on_message=self._on_message)
        await self.endpoint.start()
        self.addrs = {p: self.endpoint.local_address(p) for p in PATHS}
        self._ready.set()
        await self._stop.wait()
        await self.endpoint.close()


def thread_cpu_s(native_id: int | None) -> float:
    """CPU seconds (user + system) a thread of this process has used, from /proc (Linux only)."""
    seconds = cpu_seconds_of(f"/proc/self/task/{native_id}/stat")
    return float("nan") if seconds is None else seconds


def bare_main(period_s: float, spin_s: float, seconds: float, go: Any, result: Any) -> None:
    """The baseline, in its own process so it shares the machine's load but not our GIL."""
    go.wait(60)
    loop = DeadlineLoop(period_s, lambda now: None, spin_s=spin_s, name="bare")
    loop.start()
    time.sleep(seconds)
    loop.stop()
    result.put(loop.stats.summary())


def servo_phase(seconds: float, servo_config: ServoConfig) -> dict[str, Any]:
    robot_id, console_id = make_identity("robot"), make_identity("console")
    link = RobotLink(robot_id, console_id.cert_pem)
    link.start()
    cart = CartConfig()
    driver = SimDriver(cart)
    sup = SafetySupervisor(SupervisorConfig(workspace=workspaces_from_cart(cart)), list(driver.arms()))
    servo = ServoLoop(sup, driver, servo_config, on_telemetry=link.send_telemetry)
    link.servo = servo
    sup.assign("PSM1", "console")
    servo.operator(lambda console, now: console.enable(now))
    servo.start()
    ctx = mp.get_context("spawn")
    result = ctx.Queue()
    warmup = 3.0
    child = ctx.Process(target=console_main, args=(console_id, robot_id.cert_pem, link.addrs, seconds + warmup,
                                                   result), daemon=True)
    child.start()
    go = ctx.Event()
    bare_result = ctx.Queue()
    bare = ctx.Process(target=bare_main, args=(servo_config.period_s, servo_config.spin_s, seconds, go, bare_result),
                       daemon=True)
    bare.start()
    try:
        t_end = time.monotonic() + 30.0
        while sup.state("PSM1") is not SupervisorState.FOLLOWING and time.monotonic() < t_end:
            time.sleep(0.01)
        if sup.state("PSM1") is not SupervisorState.FOLLOWING:
            raise RuntimeError(f"PSM1 never followed: {sup.report()}")
        time.sleep(1.0)
        go.set()
        servo.reset_stats()
        applied_before = sup.applied
        tids = {"servo": servo._loop._thread.native_id, "link": link._thread.native_id}
        cpu_before = {k: thread_cpu_s(t) for k, t in tids.items()}
        time.sleep(seconds)
        stats = servo.stats()
        cpu = {f"{k}_cpu_pct": 100 * (thread_cpu_s(t) - cpu_before[k]) / seconds for k, t in tids.items()}
        applied = sup.applied - applied_before
        console = result.get(timeout=warmup + 10)
        bare_stats = bare_result.get(timeout=10)
    finally:
        servo.stop()
        child.join(10)
        bare.join(10)
        link.stop()
        driver.close()
    report = sup.report()
    stats.update(cpu)
    stats.update({
        "switch_interval_s": servo_config.switch_interval_s or sys.getswitchinterval(),
        "commands_applied_per_s": applied / seconds,
        "console_sent_rate_hz": console["rate_hz"],
        "rejected": report["commands"]["rejected"],
        "violations": report["safety"]["violations"],
        "holds": len(report["safety"]["holds"]),
        "loop_error": repr(servo.error) if servo.error else None,
    })
    return {"servo": stats, "bare": bare_stats}


# ------------------------------------------------------------------- --cpu: command path cost
def _stats_us(ns: list[int]) -> dict[str, float]:
    a = np.array(ns, dtype=float) / 1000.0
    return {"mean_us": float(a.mean()), "p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99))}


def servo_period_cpu(periods: int) -> dict[str, Any]:
    """(a) One servo period, as on the servo thread, while PSM1 and PSM2 follow a moving target."""
    cart = CartConfig()
    driver = SimDriver(cart)
    sup = SafetySupervisor(SupervisorConfig(workspace=workspaces_from_cart(cart)), list(driver.arms()))
    servo = ServoLoop(sup, driver, ServoConfig(), on_telemetry=lambda t: t.encode())
    names, dt, now = ("PSM1", "PSM2"), servo.config.period_s, 0.0
    for name in names:
        sup.assign(name, "console")
    servo.operator(lambda console, t: console.enable(t))
    while any(sup.state(n) is not SupervisorState.READY for n in names):
        now += dt
        servo.step(now)
    home = {n: driver.arms()[n].measured_cp() for n in names}
    bare_data = mujoco.MjData(driver.model)  # the floor: a bare mj_step on the same model
    bare_data.qpos[:], bare_data.ctrl[:] = driver.data.qpos, driver.data.ctrl
    period_ns, bare_ns, clock = [], [], time.thread_time_ns
    for k in range(periods + 500):
        now += dt
        seq, t = k + 1, k * dt
        for i, n in enumerate(names):  # 5 mm circle at 0.5 Hz, a small wrist roll and a jaw wave
            pos, q = home[n].position, home[n].orientation
            r, ph = 0.005 * min(1.0, t), 2 * math.pi * 0.5 * t + i
            roll = 0.1 * math.sin(2 * math.pi * 0.3 * t) * min(1.0, t)
            dq = (math.cos(roll / 2), 0.0, 0.0, math.sin(roll / 2))
            quat = (q[0] * dq[0] - q[3] * dq[3], q[1] * dq[0] + q[2] * dq[3], q[2] * dq[0] - q[1] * dq[3],
                    q[3] * dq[0] + q[0] * dq[3])
            target = (float(pos[0]) + r * math.cos(ph) - r, float(pos[1]) + r * math.sin(ph), float(pos[2]))
            flags = FLAG_ENGAGED | (FLAG_REENGAGE if k == 0 else 0)
            jaw = 0.4 + 0.3 * math.sin(2 * math.pi * 0.2 * t)
            cmd = ServoCommand(int(ArmId[n]), seq, now, target, quat, jaw, flags)
            if k == 0:
                cmd = ServoCommand(int(ArmId[n]), seq, now, tuple(float(v) for v in pos),  # type: ignore[arg-type]
                                   tuple(float(v) for v in q), 0.0, flags)  # type: ignore[arg-type]
            servo.submit(cmd, "console", seq, 0.0)
        c0 = clock()
        servo.step(now)
        c1 = clock()
        mujoco.mj_step(driver.model, bare_data)
        c2 = clock()
        if k >= 500:
            period_ns.append(c1 - c0)
            bare_ns.append(c2 - c1)
    report = sup.report()
    if any(sup.state(n) is not SupervisorState.FOLLOWING for n in names) or report["safety"]["violations"]:
        raise RuntimeError(f"arms did not follow cleanly: {report}")
    return {"servo_period": _stats_us(period_ns), "bare_mj_step": _stats_us(bare_ns),
            "applied": report["commands"]["applied"], "rejected": report["commands"]["rejected"],
            "qpos_checksum": float(np.sum(np.abs(driver.data.qpos)))}


class _TimedInput:
    """The scripted master, timing its own `sample` (unchanged code: the baseline inside each tick)."""

    def __init__(self, inner: ScriptedTaskInput) -> None:
        self.inner, self.ns = inner, 0

    def sample(self, now: float) -> Any:
        c0 = time.thread_time_ns()
        state = self.inner.sample(now)
        self.ns += time.thread_time_ns() - c0
        return state

    def align_to(self, arm: ArmId, orientation: Any, now: float) -> None:
        self.inner.align_to(arm, orientation, now)

    def set_force(self, arm: ArmId, force_xyz: Any, now: float) -> None:
        self.inner.set_force(arm, force_xyz, now)

    def close(self) -> None:
        self.inner.close()


def console_tick_cpu(ticks: int) -> dict[str, Any]:
    """(b) One console tick for PSM1+PSM2 on the demo's scripted peg transfer, and the bundle encode."""
    config = ConsoleConfig()
    plan = peg_transfer_plan(default_board(), rings=6)
    master = _TimedInput(ScriptedTaskInput(plan, config.scale, config.registration_wxyz, start_time=0.0))
    core = ConsoleCore(config, master)
    start = plan.sample(0.0)
    robot = {a: [tuple(map(float, start[a.name].position)), tuple(map(float, start[a.name].orientation)), 0.0,
                 SupervisorState.READY, 0] for a in config.arms}
    dt, warm = 1.0 / config.rate_hz, 2000
    tick_ns, sample_ns, own_ns, clock = [], [], [], time.thread_time_ns
    for k in range(ticks + warm):
        now = k * dt
        telemetry = None
        if k % 10 == 0:  # the robot echoes the commands it applied, at 100 Hz
            telemetry = Telemetry(now, 0, tuple(ArmTelemetry(int(a), 1, int(r[3]), r[4], r[0], r[1], r[2])
                                                for a, r in robot.items()))
        master.ns = 0
        c0 = clock()
        commands = core.tick(now, telemetry)
        ServoBundle(tuple(commands)).encode()
        c1 = clock()
        for c in commands:
            r = robot[ArmId(c.arm)]
            if c.engaged and (c.reengage or r[3] is SupervisorState.FOLLOWING):
                r[:] = [c.position, c.orientation, c.jaw, SupervisorState.FOLLOWING, c.cmd_seq]
        if k >= warm:
            tick_ns.append(c1 - c0)
            sample_ns.append(master.ns)
            own_ns.append(c1 - c0 - master.ns)
    modes = {a.name: core.teleop(a).mode.value for a in config.arms}
    if set(modes.values()) != {"following"}:
        raise RuntimeError(f"console arms not following: {modes}")
    return {"console_tick": _stats_us(tick_ns), "input_sample_only": _stats_us(sample_ns),
            "console_tick_without_input": _stats_us(own_ns), "sent": sum(core.counters.sent.values())}


def cpu_main(periods: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"periods": periods, "load_average": os.getloadavg()}
    figures["servo"] = servo_period_cpu(periods)
    figures["console"] = console_tick_cpu(periods)
    s, c = figures["servo"], figures["console"]
    for label, f in (("servo period", s["servo_period"]), ("  baseline bare mj_step", s["bare_mj_step"]),
                     ("console tick + encode", c["console_tick"]),
                     ("  of which input.sample", c["input_sample_only"]),
                     ("  console own work", c["console_tick_without_input"])):
        print(f"{label:26s} mean={f['mean_us']:7.1f} us  p50={f['p50_us']:7.1f} us  p99={f['p99_us']:7.1f} us")
    print(f"servo: applied {s['applied']} rejected {s['rejected']} qpos checksum {s['qpos_checksum']:.9f}; "
          f"console sent {c['sent']}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement time per phase")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    parser.add_argument("--spin-s", type=float, default=ServoConfig().spin_s,
                        help="spin (instead of sleep) this long before each deadline, both loops")
    parser.add_argument("--no-compare", action="store_true", help="skip the default-switch-interval phase")
    parser.add_argument("--cpu", action="store_true", help="only the command path's CPU per period (see above)")
    parser.add_argument("--periods", type=int, default=10000, help="--cpu: periods/ticks measured")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.cpu:
        figures = cpu_main(args.periods)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(figures, fh, indent=2)
        return 0
    config = ServoConfig(spin_s=args.spin_s)
    figures: dict[str, Any] = {"rate_hz": config.rate_hz, "seconds": args.seconds, "cpus": os.cpu_count(),
                               "spin_s": config.spin_s, "load_average": os.getloadavg()}
    figures.update(servo_phase(args.seconds, config))
    if not args.no_compare:
        other = servo_phase(args.seconds, ServoConfig(switch_interval_s=None, spin_s=args.spin_s))
        figures["servo_default_switch"], figures["bare_default_switch"] = other["servo"], other["bare"]
    bare, servo = figures["bare"], figures["servo"]
    ratio = servo["p99_us"] / max(bare["p99_us"], 1.0)
    missed_ok = servo["missed"] <= bare["missed"] + 0.001 * servo["periods"]
    served = servo["periods"] / max(servo["periods"] + servo["skipped"], 1)
    figures["target"] = {"p99_ratio": ratio, "p99_ok": ratio <= 1.5, "missed_ok": missed_ok,
                         "servo_served_fraction": served,
                         "bare_served_fraction": bare["periods"] / max(bare["periods"] + bare["skipped"], 1)}
    for name in ("bare", "servo", "bare_default_switch", "servo_default_switch"):
        if name in figures:
            f = figures[name]
            print(f"{name:22s} periods={f['periods']:6d} p50={f['p50_us']:8.1f} us  p99={f['p99_us']:8.1f} us  "
                  f"max={f['max_us']:8.1f} us  missed={f['missed']}  skipped={f['skipped']}")
    print(f"servo: applied {servo['commands_applied_per_s']:.0f} cmd/s of {servo['console_sent_rate_hz']:.0f} sent, "
          f"violations={servo['violations']} holds={servo['holds']} rejected={servo['rejected']}")
    print(f"servo thread CPU {servo['servo_cpu_pct']:.0f} %, link thread CPU {servo['link_cpu_pct']:.0f} %; "
          f"periods served: servo {served:.1%}, bare {figures['target']['bare_served_fraction']:.1%}")
    print(f"target p99 <= 1.5 x bare: ratio {ratio:.2f} -> {'OK' if ratio <= 1.5 else 'MISSED'}; "
          f"missed {'OK' if missed_ok else 'MISSED'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
