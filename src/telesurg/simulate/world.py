"""One simulated operation: a real console core and link client, a real `LinkHub`, the ownership desk
and safety supervisor, a kinematic arm, joined by `VirtualNetwork` under a fault timeline.

Robot side, once per 1 ms servo period (as apps/robot.py wires it): hub events to the desk and the
supervisor, `tick`, the arm's measured pose := the setpoint (kinematic: a perfect servo, like
tests/test_room_virtual.py), telemetry every `telemetry_period_s`. Console side, every command period:
telemetry in, `ConsoleCore.tick` with a scripted surgeon (`ScriptedTaskInput`, which presses resume
periodically and aligns itself like a motorised master), one `ServoBundle` out. The console runs on
its own `SiteClock` (offset, drift, steps). The `InvariantChecker` sees everything after each period.
"""

from __future__ import annotations

import functools
import math
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from telesurg.console.config import ConsoleConfig
from telesurg.console.core import ConsoleCore
from telesurg.console.inputs import ScriptedTaskInput
from telesurg.link.config import LinkSettings
from telesurg.link.core import LinkCore
from telesurg.link.events import (
    HandshakeComplete,
    MessageClass,
    MessageReceived,
    SessionClosed,
)
from telesurg.link.hub import LinkHub
from telesurg.link.keys import Identity, make_identity
from telesurg.link.tls import make_context
from telesurg.messages import ArmId, ArmTelemetry, ServoBundle, Telemetry, decode
from telesurg.netem.profiles import Profile, parse_profile
from telesurg.netem.scenario import Scenario
from telesurg.netem.virtual import VirtualNetwork
from telesurg.robot.driver import ArmOperatingState, OperatingState, Pose
from telesurg.robot.local_console import LocalConsole
from telesurg.robot.ownership import OwnershipDesk, session_key
from telesurg.robot.roles import ConsoleEntry, Role, Roster
from telesurg.robot.safety_config import SupervisorConfig
from telesurg.robot.supervisor import SafetySupervisor, SupervisorState
from telesurg.simulate.checks import InvariantChecker, PathTruth
from telesurg.simulate.clock import ClockedEndpoint, SiteClock
from telesurg.simulate.timeline import FaultTimeline

ARM = "PSM1"
ARM_ID = ArmId.PSM1
HOME = (0.0, 0.0, 0.05)
IDENTITY_Q = (1.0, 0.0, 0.0, 0.0)
# Shanghai–Casablanca delays and jitter (netem/profiles/shanghai-casablanca.toml) without its background
# loss: "no command lost while a path delivers" needs paths that deliver; loss comes from the timeline.
SIM_PROFILE = parse_profile({"name": "sim-shanghai-casablanca", "path": [
    {"name": "a", "both": {"delay_ms": 52.5, "jitter_ms": 0.5}},
    {"name": "b", "both": {"delay_ms": 82.5, "jitter_ms": 3.0}}]})
_LATCHED = SupervisorState.LATCHED
SupervisorFactory = Callable[[SupervisorConfig, list[str]], SafetySupervisor]


@dataclass(frozen=True)
class SimSettings:
    seconds: float = 1.5
    command_hz: float = 200.0  # reduced from the product's 1 kHz to fit the CI budget, see the README
    telemetry_period_s: float = 0.02  # the robot's default 50 Hz telemetry
    check_paths_every: int = 10  # servo periods between path-state checks


class _Target(NamedTuple):
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]
    jaw: float


class CircleTask:
    """A 5 mm circle at 0.5 Hz around HOME with a slowly opening jaw: a surgeon's hand, always moving."""

    duration = 3600.0

    def sample(self, t: float) -> dict[ArmId, _Target]:
        w = math.pi * t
        pos = (HOME[0] + 0.005 * math.sin(w), HOME[1] + 0.005 * (1 - math.cos(w)), HOME[2])
        return {ARM_ID: _Target(pos, IDENTITY_Q, 0.3 + 0.2 * math.sin(0.5 * w))}

    def sample_floats(self, t: float) -> dict[ArmId, _Target]:
        """The same, for `ScriptedTaskInput`'s float path (it skips converting what is already floats)."""
        return self.sample(t)


class _Sites(NamedTuple):
    console: Identity
    robot: Identity
    client: LinkSettings
    hub: LinkSettings
    client_ctx: ssl.SSLContext
    hub_ctx: ssl.SSLContext


@functools.lru_cache(maxsize=1)
def _identities() -> _Sites:
    """Site identities and both TLS contexts, made once per process (key generation is slow, and a
    context costs as much as a scenario's handshake; each session still does its full handshake)."""
    console, robot = make_identity("console"), make_identity("robot")
    client = LinkSettings(path_names=["a", "b"], peer_certs_pem=[robot.cert_pem])
    hub = LinkSettings(path_names=["a", "b"], peer_certs_pem=[console.cert_pem])
    return _Sites(console, robot, client, hub, make_context(console, client.peer_certs_pem, is_client=True),
                  make_context(robot, hub.peer_certs_pem, is_client=False))


class SimWorld:
    def __init__(self, seed: int, timeline: FaultTimeline, settings: SimSettings | None = None,
                 supervisor_factory: SupervisorFactory = SafetySupervisor,
                 config: SupervisorConfig | None = None) -> None:
        self.seed = seed
        self.timeline = timeline
        self.settings = settings = settings or SimSettings()
        self.config = config or SupervisorConfig()
        sites = _identities()
        self.console_id, self.client_settings, self._ctx = sites.console, sites.client, sites.client_ctx
        hub_settings = sites.hub
        self.hub = LinkHub(hub_settings, sites.robot, seed=seed, ctx=sites.hub_ctx)
        self.clock = SiteClock(timeline.console_offset_s, timeline.console_drift_ppm)
        self.console_end = ClockedEndpoint(None, self.clock)
        profile: Profile = SIM_PROFILE
        self.net = VirtualNetwork(self.console_end, self.hub, profile, seed=seed,
                                  scenario=Scenario(events=list(timeline.network)))
        self.truth = PathTruth(timeline.network, {p.name: p.forward for p in profile.paths})
        self.checker = InvariantChecker(self.config, hub_settings, self.truth)
        self.sup = supervisor_factory(self.config, [ARM])
        self.desk = OwnershipDesk(self.sup, Roster([ConsoleEntry(identity="console", role=Role.LEAD, arms=[ARM])],
                                                   [ARM]))
        self.local = LocalConsole(self.sup)
        self.measured = {ARM: Pose(np.array(HOME), np.array(IDENTITY_Q))}
        self.position: tuple[float, float, float] = HOME
        self.jaw = {ARM: 0.3}
        self.ops = {ARM: ArmOperatingState(OperatingState.ENABLED, True, False)}
        self.keys: dict[int, str] = {}
        self.established_at = math.inf
        self.client: LinkCore | None = None
        self.console: ConsoleCore | None = None
        self.sessions = 0
        self.restarts = 0
        self._site = sorted(timeline.site, key=lambda e: e.at)
        self._rejoin_at: float | None = None
        self._hand_back_at: float | None = None
        self._latched_at: float | None = None
        self._ticks = 0
        self._telemetry_every = round(settings.telemetry_period_s / self.config.servo_period_s)
        self._restart_times = [e.at for e in self._site if e.kind == "console_restart"]
        self.sup.enable(None, 0.0)
        self._start_console(0.0)
        self.net.add_ticker(1.0 / settings.command_hz, self._console_tick)
        self.net.add_ticker(self.config.servo_period_s, self._servo_tick, start=self.config.servo_period_s / 2)

    # -- console site ------------------------------------------------------------------------------
    def _start_console(self, now: float) -> None:
        self.sessions += 1
        self.client = LinkCore(self.client_settings, self.console_id, is_client=True,
                               seed=self.seed * 7919 + self.sessions, ctx=self._ctx)
        config = ConsoleConfig(rate_hz=self.settings.command_hz, arms=(ARM_ID,), reengage_timeout_s=0.5)
        master = ScriptedTaskInput(CircleTask(), config.scale, lead_in_s=0.0, press_period_s=0.1, press_s=0.02)
        self.console = ConsoleCore(config, master)
        self.console_end.inner = self.client
        self.client.connect(self.clock.local(now))

    def _console_tick(self, now: float) -> None:
        client, console = self.client, self.console
        if client is None or console is None:
            return
        local = self.clock.local(now)
        while (event := client.next_event()) is not None:
            if isinstance(event, MessageReceived) and event.msg_class is MessageClass.TELEMETRY:
                telemetry = decode(event.payload)
                if isinstance(telemetry, Telemetry):
                    console.receive_telemetry(telemetry, local)
        console.set_clock_offset(client.clock_offset())
        commands = console.tick(local)
        if not commands or not client.established:
            return
        seq = client.send(MessageClass.CONTROL, ServoBundle(tuple(commands)).encode(), local)
        if seq is not None and client.session_id is not None:
            self.checker.on_sent(client.session_id, seq, tuple(commands), now, self._deliverable_until(now))

    def _deliverable_until(self, now: float) -> float | None:
        """When this command must have arrived, if some path surely delivers it; None otherwise."""
        if any(now - 1.0 <= at <= now + 1.0 for at in self._restart_times):
            return None  # its session may be replaced before it lands
        best = None
        for name, path in self.net.paths.items():
            imp = path.forward.impairment
            if self.truth.deliverable(name, now, imp, path.forward.is_down, path.forward.fifo_departure):
                flight = (imp.delay_ms + 6 * imp.jitter_ms + imp.reorder_extra_ms) / 1000.0
                due = max(now + flight, path.forward.fifo_departure) + 0.003
                best = due if best is None else min(best, due)
        return best

    def _site_events(self, now: float) -> None:
        while self._site and self._site[0].at <= now:
            event = self._site.pop(0)
            if event.kind == "clock_step":
                self.clock.step(event.value)
            elif event.kind == "takeover":
                if self._hand_back_at is None:
                    self.local.takeover(now, ARM)
                    self.checker.local_control = True
                self._hand_back_at = now + event.value
            else:
                self._restart_times.remove(event.at)  # pending restarts only, as _deliverable_until needs
                if self.client is None:
                    continue
                # the console process dies: no goodbye, state lost
                self.restarts += 1
                self.client = self.console = None
                self.console_end.inner = None
                self._rejoin_at = now + event.value
        if self._hand_back_at is not None and now >= self._hand_back_at:
            self._hand_back_at = None
            self.local.hand_back(now, ARM)
            self.checker.local_control = False
        # the patient-side operator acknowledges a latched arm 200 ms later (LATCHED -> READY); the
        # surgeon must then re-engage, aligned, like after any hold
        if self.sup.state(ARM) is SupervisorState.LATCHED:
            if self._latched_at is None:
                self._latched_at = now
            elif now - self._latched_at >= 0.2:
                self.local.clear_latch(now, ARM)
                self._latched_at = None
        if self._rejoin_at is not None and now >= self._rejoin_at:
            self._rejoin_at = None
            self._start_console(now)

    # -- robot site --------------------------------------------------------------------------------
    def _servo_tick(self, now: float) -> None:
        sup, checker = self.sup, self.checker
        site = self._site
        if (site and site[0].at <= now) or self._hand_back_at is not None or self._rejoin_at is not None \
                or sup.state(ARM) is _LATCHED:  # otherwise _site_events has nothing to do
            self._site_events(now)
        while (event := self.hub.next_event()) is not None:
            if isinstance(event, HandshakeComplete):
                self.keys[event.sid] = self.desk.join(event.peer_name, event.sid, now)
                checker.current_sid = event.sid
                self.established_at = now
            elif isinstance(event, SessionClosed) and event.sid in self.keys:
                self.desk.leave(self.keys[event.sid], now)
            elif isinstance(event, MessageReceived) and event.msg_class is MessageClass.CONTROL:
                self._on_control(event, now)
        before = self.position
        sp = sup.tick(now, self.measured, self.jaw, self.ops).get(ARM)
        if sp is not None:
            self.measured[ARM] = sp.pose
            self.jaw[ARM] = sp.jaw
            x, y, z = sp.pose.position.tolist()
            self.position = (x, y, z)
        checker.after_tick(ARM, sup.state(ARM), before, self.position, now)
        self.desk.tick(now)
        self._ticks += 1
        if self._ticks % self.settings.check_paths_every == 0 and checker.current_sid is not None and \
                self.client is not None and self.client.session_id == checker.current_sid:
            core = self.hub.core_of(checker.current_sid)
            if core is not None and core.established:
                states = {name: state.value for name, state in core.path_states().items()}
                checker.check_paths(states, self.established_at, now)
        if self._ticks % self._telemetry_every == 0:
            arm = ArmTelemetry(ARM_ID.value, int(OperatingState.ENABLED), int(sup.state(ARM)),
                               sup.last_applied_seq(ARM), self.position,
                               tuple(float(v) for v in self.measured[ARM].orientation), self.jaw[ARM], 0)
            self.hub.send(MessageClass.TELEMETRY, Telemetry(now, len(sup.holds), (arm,)).encode(), now)

    def _on_control(self, event: MessageReceived, now: float) -> None:
        self.checker.on_delivered(event.sid, event.seq)
        key = self.keys.get(event.sid)
        core = self.hub.core_of(event.sid)
        bundle = decode(event.payload)
        if key is None or core is None or not isinstance(bundle, ServoBundle):
            return
        offset = core.freshness_offset()  # as the robot site judges (apps/robot.py)
        for cmd in bundle.commands:
            if key == self.sup.owner(ARM):
                self.checker.on_owner_command(ARM, now)
            state = self.sup.state(ARM)
            decision = self.sup.submit(cmd, session_key(self.console_id.name, event.sid), event.seq, offset, now)
            if decision.accepted:
                self.checker.on_applied(ARM, event.sid, cmd, state, self.position, now)

    # -- running -----------------------------------------------------------------------------------
    def run(self) -> None:
        self.net.run_until(self.settings.seconds)
        self.checker.finish(self.settings.seconds)

    def memory_figures(self) -> dict[str, int]:
        """Sizes of everything that could grow without bound over a long run."""
        in_flight = sum(len(e.departures) for p in self.net.paths.values() for e in p.directions)
        core = self.hub.core_of(self.checker.current_sid) if self.checker.current_sid is not None else None
        return {"hub_cores": len(self.hub), "in_flight": in_flight,
                "transitions": len(self.sup.transitions), "holds": len(self.sup.holds),
                "rel_unacked": core._session.rel.unacked if core is not None and core._session else 0}
