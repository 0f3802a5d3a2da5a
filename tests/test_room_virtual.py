"""Several consoles at one robot, end to end under a virtual clock, with randomized interleavings.

Three real link clients (real TLS, AEAD) face one `LinkHub` over a `VirtualNetwork`; the hub's events
drive the ownership desk and the safety supervisor exactly as the robot site wires them (commands
judged with their session key, handover messages from the reliable event channel). Hypothesis draws
timelines of requests, grants, releases, per-console path cuts, console restarts (a new session of
the same identity), silences and local takeovers, and the test checks after every servo period that
no arm ever has a non-owner's command applied, that an arm never resumes without an aligned
re-engage, and that nothing of a replaced session is applied.
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telesurg.link.events import (
    HandshakeComplete,
    MessageClass,
    MessageReceived,
    SessionClosed,
    SessionEventReceived,
)
from telesurg.link.testing import ClientBank, HubFront, make_client, make_hub
from telesurg.messages import FLAG_ENGAGED, FLAG_REENGAGE, ArmId, ServoBundle, ServoCommand, decode
from telesurg.netem.profiles import parse_profile
from telesurg.netem.virtual import VirtualNetwork
from telesurg.robot.driver import ArmOperatingState, OperatingState, Pose
from telesurg.robot.local_console import LocalConsole
from telesurg.robot.ownership import OwnershipDesk, identity_of, session_key
from telesurg.robot.roles import ConsoleEntry, Role, Roster
from telesurg.robot.safety_config import SupervisorConfig
from telesurg.robot.supervisor import LOCAL_SENDER, SafetySupervisor, SupervisorState

ARMS = ("PSM1", "PSM2")
HOME = (0.0, 0.0, 0.05)
IDENT = (1.0, 0.0, 0.0, 0.0)
NAMES = ("console0", "console1", "console2")
ROSTER = [ConsoleEntry(identity="console0", role=Role.LEAD, arms=list(ARMS)),
          ConsoleEntry(identity="console1", role=Role.CONSULTANT),
          ConsoleEntry(identity="console2", role=Role.OBSERVER)]
WAN = parse_profile({"name": "t", "path": [{"name": "a", "both": {"delay_ms": 15.0, "jitter_ms": 1.0}},
                                           {"name": "b", "both": {"delay_ms": 30.0, "jitter_ms": 2.0}}]})


class VirtualRoom:
    def __init__(self, seed: int) -> None:
        self.hub, clients, self.ids, self.robot_id = make_hub(3, names=list(NAMES))
        self.bank = ClientBank(clients)
        self.net = VirtualNetwork(self.bank, HubFront(self.hub), WAN, seed=seed)
        self.sup = SafetySupervisor(SupervisorConfig(), ARMS)
        self.desk = OwnershipDesk(self.sup, Roster(ROSTER, ARMS))
        self.local = LocalConsole(self.sup)
        self.peer: dict[int, str] = {}  # sid -> identity
        self.replaced: set[str] = set()  # session keys that a newer session of their console replaced
        self.measured = {a: Pose(np.array(HOME), np.array(IDENT)) for a in ARMS}
        self.ops = {a: ArmOperatingState(OperatingState.ENABLED, True, False) for a in ARMS}
        self.seq = [dict.fromkeys(ARMS, 0) for _ in NAMES]
        self.quiet = [0.0] * len(NAMES)  # console i sends nothing until then
        self.applied = 0
        self.sup.enable(None, 0.0)
        for client in clients:
            client.connect(0.0)
        self.net.add_ticker(0.001, self.console_tick)
        self.net.add_ticker(0.001, self.servo_tick, start=0.0005)

    # consoles: every console streams both arms, aligned, re-engaging every 50 ms (non-owners too)
    def console_tick(self, now: float) -> None:
        for i, client in enumerate(self.bank.clients):
            if now < self.quiet[i] or not client.established:
                continue
            commands = []
            for arm in ARMS:
                self.seq[i][arm] += 1
                n = self.seq[i][arm]
                flags = FLAG_ENGAGED | (FLAG_REENGAGE if n % 50 == 0 else 0)
                commands.append(ServoCommand(ArmId[arm].value, n, now, HOME, IDENT, 0.3, flags))
            client.send(MessageClass.CONTROL, ServoBundle(tuple(commands)).encode(), now)

    def handover(self, i: int, kind: str, arm: str, to: str = "") -> None:
        self.bank.clients[i].send_event(json.dumps({"type": kind, "arm": arm, "to": to}).encode(), self.net.now)

    # robot: hub events as apps/robot.py wires them, then one supervisor period
    def servo_tick(self, now: float) -> None:
        while (event := self.hub.next_event()) is not None:
            if isinstance(event, HandshakeComplete):
                old = [k for k, name in self.peer.items() if name == event.peer_name]
                self.replaced.update(session_key(event.peer_name, sid) for sid in old)
                self.peer[event.sid] = event.peer_name
                self.desk.join(event.peer_name, event.sid, now)
            elif isinstance(event, SessionClosed) and event.sid in self.peer:
                self.desk.leave(session_key(self.peer[event.sid], event.sid), now)
            elif isinstance(event, SessionEventReceived) and event.sid in self.peer:
                self.desk.handle(session_key(self.peer[event.sid], event.sid), json.loads(event.payload), now)
            elif isinstance(event, MessageReceived) and event.sid in self.peer:
                key = session_key(self.peer[event.sid], event.sid)
                offset = self.hub.core_of(event.sid).clock_offset()
                bundle = decode(event.payload)
                assert isinstance(bundle, ServoBundle)
                for cmd in bundle.commands:
                    self.judge(cmd, key, event.seq, offset, now)
        for arm, sp in self.sup.tick(now, self.measured, None, self.ops).items():
            self.measured[arm] = sp.pose
        self.desk.tick(now)

    def judge(self, cmd: ServoCommand, key: str, link_seq: int, offset: float | None, now: float) -> None:
        arm = ArmId(cmd.arm).name
        owner, state = self.sup.owner(arm), self.sup.state(arm)
        decision = self.sup.submit(cmd, key, link_seq, offset, now)
        if decision.accepted:
            self.applied += 1
            assert key == owner, f"{arm}: {key}'s command applied while {owner} owns it"
            assert key not in self.replaced, f"{arm}: a replaced session's command was applied"
            assert identity_of(key) != "console2", "an observer moved an arm"
            if state is not SupervisorState.FOLLOWING:
                assert cmd.reengage, f"{arm} resumed from {state.name} without a re-engage"

    def restart(self, i: int) -> None:
        """Console i reboots: a fresh core of the same identity dials again (its old session is left)."""
        client = make_client(self.ids[i], self.robot_id)
        self.bank.clients[i] = client
        self.seq[i] = dict.fromkeys(ARMS, 0)
        client.connect(self.net.now)


STEPS = st.lists(st.tuples(
    st.sampled_from(["request", "release", "grant", "cut", "heal", "restart", "silence", "takeover", "hand_back"]),
    st.integers(0, 2), st.sampled_from(ARMS), st.sampled_from(NAMES), st.floats(0.02, 0.4)),
    min_size=3, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STEPS, st.integers(0, 1000))
def test_randomized_handovers_cuts_restarts_and_overrides_keep_every_invariant(steps: list, seed: int) -> None:
    room = VirtualRoom(seed)
    room.net.run_until(0.8)  # all three established; the lead owns both arms
    assert [identity_of(room.sup.owner(a)) for a in ARMS] == ["console0", "console0"]
    for action, i, arm, to, wait in steps:
        if action in ("request", "release"):
            room.handover(i, f"arm_{action}", arm)
        elif action == "grant":
            room.handover(i, "arm_grant", arm, to)
        elif action == "cut":
            room.bank.cut(i, "a")
        elif action == "heal":
            room.bank.cut(i, "a", down=False)
        elif action == "restart":
            room.restart(i)
        elif action == "silence":
            room.quiet[i] = room.net.now + 1.2  # past the fault time: a waiting request may be granted
        elif action == "takeover":
            room.local.takeover(room.net.now, arm)
        elif action == "hand_back":
            room.local.hand_back(room.net.now, arm)
        room.net.run_for(wait)
    room.net.run_for(0.3)
    assert room.sup.violations == 0
    for arm in ARMS:
        owner = room.sup.owner(arm)
        assert owner in (None, LOCAL_SENDER) or identity_of(owner) in ("console0", "console1")


def test_the_virtual_room_really_moves_arms_and_hands_them_over() -> None:
    """The harness itself: the lead's commands are applied, a grant moves PSM1 to the consultant, whose
    commands are then applied after its re-engage and the lead's no longer are."""
    room = VirtualRoom(3)
    room.net.run_until(1.0)
    applied_by_lead = room.applied
    assert applied_by_lead > 500
    room.handover(1, "arm_request", "PSM1")
    room.net.run_for(0.2)
    room.handover(0, "arm_grant", "PSM1", "console1")
    room.net.run_for(0.5)
    assert identity_of(room.sup.owner("PSM1")) == "console1"
    assert room.sup.state("PSM1") is SupervisorState.FOLLOWING  # the consultant re-engaged, aligned
    assert room.sup.counters["not_owner"] > 0  # the lead's PSM1 commands after the grant
    assert [(h["from"], h["to"]) for h in room.desk.handover_report()] == [("console0", "console1")]
    room.restart(0)  # the lead's console reboots: its new session takes over PSM2, after a re-engage
    old_key = room.sup.owner("PSM2")
    room.net.run_for(1.0)
    assert old_key in room.replaced and room.sup.owner("PSM2") not in (old_key, None)
    assert identity_of(room.sup.owner("PSM2")) == "console0"
    assert room.sup.state("PSM2") is SupervisorState.FOLLOWING
    # the old session fell silent first (watchdog hold); the replacement then moved the arm while held
    replaced = [h for h in room.desk.handover_report() if h["reason"] == "session_replaced"]
    assert [(h["arm"], h["from"], h["to"]) for h in replaced] == [("PSM2", "console0", "console0")]
    assert replaced[0]["gap_ms"] is not None and all(h.resumed_by == "reengage" for h in room.sup.holds)
