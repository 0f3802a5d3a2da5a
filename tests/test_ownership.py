"""Arm ownership between several consoles: roles, the handover protocol and its refusals (virtual time)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from telesurg.messages import FLAG_ENGAGED, FLAG_REENGAGE, ArmId, ServoCommand
from telesurg.robot.driver import ArmOperatingState, OperatingState, Pose
from telesurg.robot.local_console import LocalConsole
from telesurg.robot.ownership import OwnershipDesk, identity_of
from telesurg.robot.roles import ConsoleEntry, Role, Roster
from telesurg.robot.safety_config import SupervisorConfig
from telesurg.robot.supervisor import LOCAL_SENDER, SafetySupervisor, SupervisorState

ARMS = ("PSM1", "PSM2")
HOME = (0.0, 0.0, 0.05)
IDENT = (1.0, 0.0, 0.0, 0.0)
PERIOD = 0.001
ENGAGE = FLAG_ENGAGED | FLAG_REENGAGE
ROSTER = [ConsoleEntry(identity="lead", role=Role.LEAD, arms=list(ARMS)),
          ConsoleEntry(identity="consultant", role=Role.CONSULTANT),
          ConsoleEntry(identity="watcher", role=Role.OBSERVER)]


class Room:
    """A supervisor, a desk and fake arms that sit at their setpoints, in virtual time."""

    def __init__(self) -> None:
        self.sup = SafetySupervisor(SupervisorConfig(), ARMS)
        self.desk = OwnershipDesk(self.sup, Roster(ROSTER, ARMS))
        self.local = LocalConsole(self.sup)
        self.now = 0.0
        self.seq: dict[tuple[str, str], int] = {}
        self.measured = {a: Pose(np.array(HOME), np.array(IDENT)) for a in ARMS}
        self.ops = {a: ArmOperatingState(OperatingState.ENABLED, True, False) for a in ARMS}
        self.sup.enable(None, 0.0)
        self.tick()

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.now = round(self.now + PERIOD, 9)
            for arm, sp in self.sup.tick(self.now, self.measured, None, self.ops).items():
                self.measured[arm] = sp.pose
            self.desk.tick(self.now)

    def send(self, key: str, arm: str = "PSM1", flags: int = FLAG_ENGAGED, pos=HOME):
        n = self.seq[(key, arm)] = self.seq.get((key, arm), 0) + 1
        cmd = ServoCommand(ArmId[arm].value, n, self.now, pos, IDENT, 0.3, flags)
        return self.sup.submit(cmd, key, n, 0.0, self.now)

    def follow(self, key: str, arm: str = "PSM1") -> None:
        d = self.send(key, arm, ENGAGE)
        assert d.accepted, d
        assert self.sup.state(arm) is SupervisorState.FOLLOWING


def test_lead_gets_its_arms_consultant_and_observer_none() -> None:
    room = Room()
    lead = room.desk.join("lead", 1, room.now)
    cons = room.desk.join("consultant", 2, room.now)
    watch = room.desk.join("watcher", 3, room.now)
    assert [room.sup.owner(a) for a in ARMS] == [lead, lead]
    room.follow(lead)
    assert room.send(cons).reason == "not_owner"
    assert room.send(watch).reason == "not_owner"
    assert room.sup.counters["not_owner"] == 2
    snap = room.desk.snapshot()
    assert snap["arms"]["PSM1"]["owner"] == "lead" and snap["peers"]["watcher"]["role"] == "observer"


def test_a_leads_arms_wait_for_it_even_if_a_consultant_asks_first() -> None:
    room = Room()
    cons = room.desk.join("consultant", 2, 0.0)
    room.desk.handle(cons, {"type": "arm_request", "arm": "PSM1"}, room.now)
    room.tick(1500)
    assert room.sup.owner("PSM1") is None
    lead = room.desk.join("lead", 1, room.now)
    assert [room.sup.owner(a) for a in ARMS] == [lead, lead]
    assert room.desk.snapshot()["arms"]["PSM1"]["pending"] == ["consultant"]


def test_request_granted_by_owner_holds_and_needs_aligned_reengage() -> None:
    room = Room()
    lead, cons = room.desk.join("lead", 1, 0.0), room.desk.join("consultant", 2, 0.0)
    room.follow(lead)
    room.follow(lead, "PSM2")
    room.tick(5)
    assert room.desk.handle(cons, {"type": "arm_request", "arm": "PSM1"}, room.now)
    assert room.sup.owner("PSM1") == lead  # the owner is active: the request waits for its grant
    assert room.desk.snapshot()["arms"]["PSM1"]["pending"] == ["consultant"]
    assert room.desk.handle(lead, {"type": "arm_grant", "arm": "PSM1", "to": "consultant"}, room.now)
    assert room.sup.owner("PSM1") == cons and room.sup.owner("PSM2") == lead  # per arm
    assert room.sup.state("PSM1") is SupervisorState.HOLD
    assert room.send(lead).reason == "not_owner"  # nothing of the old owner after the grant
    room.tick(20)
    assert room.send(cons, pos=(0.0, 0.0, 0.06), flags=ENGAGE).reason == "not_aligned"
    assert room.send(cons).reason == "not_following"  # no re-engage flag: the arm stays held
    room.follow(cons)
    record = room.desk.handover_report()[0]
    assert (record["from"], record["to"], record["reason"]) == ("lead", "consultant", "granted")
    # last applied of the lead at 1 ms, grant at 6 ms, the consultant's re-engage applied at 26 ms
    assert record["gap_ms"] == pytest.approx(25.0) and record["align_ms"] == pytest.approx(20.0)
    assert record["handover_ms"] == pytest.approx(5.0) and record["moved_mm"] == 0.0


def test_release_hands_to_first_requester_and_back() -> None:
    room = Room()
    lead, cons = room.desk.join("lead", 1, 0.0), room.desk.join("consultant", 2, 0.0)
    room.follow(lead)
    room.desk.handle(cons, {"type": "arm_request", "arm": "PSM1"}, room.now)
    room.desk.handle(lead, {"type": "arm_release", "arm": "PSM1"}, room.now)
    assert room.sup.owner("PSM1") == cons
    room.desk.handle(lead, {"type": "arm_request", "arm": "PSM1"}, room.now)
    room.follow(cons)
    room.desk.handle(cons, {"type": "arm_release", "arm": "PSM1"}, room.now)
    assert room.sup.owner("PSM1") == lead
    assert [(h["from"], h["to"]) for h in room.desk.handover_report()] == [("lead", "consultant"),
                                                                           ("consultant", "lead")]


def test_silent_owner_loses_the_arm_after_the_fault_time_only() -> None:
    room = Room()
    lead, cons = room.desk.join("lead", 1, 0.0), room.desk.join("consultant", 2, 0.0)
    room.follow(lead)
    room.desk.handle(cons, {"type": "arm_request", "arm": "PSM1"}, room.now)
    silent_from = room.now
    room.tick(900)
    assert room.sup.owner("PSM1") == lead
    room.tick(200)
    assert room.sup.owner("PSM1") == cons
    at = room.desk.handover_report()[0]["at_s"]
    assert at - silent_from == pytest.approx(room.sup.config.fault_s, abs=0.002)


@pytest.mark.parametrize(("who", "message", "reason"), [
    ("watcher", {"type": "arm_request", "arm": "PSM1"}, "observer"),
    ("consultant", {"type": "arm_grant", "arm": "PSM1", "to": "consultant"}, "not_owner"),
    ("consultant", {"type": "arm_release", "arm": "PSM1"}, "not_owner"),
    ("consultant", {"type": "arm_request", "arm": "ECM9"}, "unknown_arm"),
    ("lead", {"type": "arm_grant", "arm": "PSM1", "to": "watcher"}, "bad_grantee"),
    ("lead", {"type": "arm_grant", "arm": "PSM1", "to": "nobody"}, "bad_grantee"),
    ("lead", {"type": "arm_steal", "arm": "PSM1"}, "unknown_type"),
])
def test_bad_handover_messages_are_refused_and_counted(who: str, message: dict, reason: str) -> None:
    room = Room()
    keys = {name: room.desk.join(name, i, 0.0) for i, name in enumerate(("lead", "consultant", "watcher"))}
    before = [room.sup.owner(a) for a in ARMS]
    assert room.desk.handle(keys[who], message, room.now) is False
    assert room.desk.refused[reason] == 1
    assert [room.sup.owner(a) for a in ARMS] == before
    assert room.desk.outbox[-1] == (keys[who], {"type": "arm_refused", "reason": reason,
                                                "arm": message["arm"], "request": message["type"]})


def test_restarted_console_replaces_its_session_and_old_commands_never_apply() -> None:
    room = Room()
    old = room.desk.join("lead", 1, 0.0)
    room.follow(old)
    new = room.desk.join("lead", 2, room.now)
    assert room.sup.owner("PSM1") == new and room.sup.state("PSM1") is SupervisorState.HOLD
    assert room.send(old, flags=ENGAGE).reason == "not_owner"
    assert room.desk.handle(old, {"type": "arm_release", "arm": "PSM1"}, room.now) is False
    assert room.desk.refused["stale_session"] == 1
    room.follow(new)


def test_local_takeover_outranks_everyone_and_hands_back() -> None:
    room = Room()
    lead, cons = room.desk.join("lead", 1, 0.0), room.desk.join("consultant", 2, 0.0)
    room.follow(lead)
    room.local.takeover(room.now, "PSM1")
    assert room.sup.owner("PSM1") == LOCAL_SENDER
    assert room.desk.handle(lead, {"type": "arm_grant", "arm": "PSM1", "to": "consultant"}, room.now) is False
    room.desk.handle(cons, {"type": "arm_request", "arm": "PSM1"}, room.now)
    room.tick(1500)  # the local console is never "silent": requests wait for the hand-back
    assert room.sup.owner("PSM1") == LOCAL_SENDER
    room.local.hand_back(room.now, "PSM1")
    assert room.sup.owner("PSM1") == lead


def test_roster_errors_name_the_field_and_the_fix() -> None:
    two_leads = [ConsoleEntry(identity="a", role=Role.LEAD, arms=["PSM1"]),
                 ConsoleEntry(identity="b", role=Role.LEAD, arms=["PSM1"])]
    with pytest.raises(ValueError, match=r"robot.consoles.1.arms: PSM1 is already led by 'a'"):
        Roster(two_leads, ARMS)
    with pytest.raises(ValueError, match=r"robot.consoles.0.arms: unknown arm 'XYZ'"):
        Roster([ConsoleEntry(identity="a", role=Role.LEAD, arms=["XYZ"])], ARMS)
    with pytest.raises(ValidationError, match="unknown role 'boss'"):
        ConsoleEntry(identity="a", role="boss")


# --------------------------------------------------------------------- randomized interleavings
ACTIONS = st.lists(st.tuples(
    st.sampled_from(["request", "release", "grant", "command", "reengage", "restart", "leave", "silence",
                     "takeover", "hand_back", "observer_request", "tick"]),
    st.sampled_from(["lead", "consultant", "watcher"]),
    st.sampled_from(ARMS),
    st.sampled_from(["lead", "consultant", "watcher"])), min_size=5, max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ACTIONS)
def test_random_interleavings_keep_one_owner_and_never_apply_a_non_owner(actions: list) -> None:
    room = Room()
    keys = {}
    sid = 0
    for name in ("lead", "consultant", "watcher"):
        sid += 1
        keys[name] = room.desk.join(name, sid, 0.0)
    followed: dict[str, str | None] = dict.fromkeys(ARMS)  # who the arm follows, by our own bookkeeping
    for action, who, arm, to in actions:
        key = keys.get(who)
        owner_before = room.sup.owner(arm)
        state_before = room.sup.state(arm)
        if action in ("command", "reengage") and key is not None:
            d = room.send(key, arm, ENGAGE if action == "reengage" else FLAG_ENGAGED)
            if d.accepted:
                assert key == owner_before, "a non-owner's command was applied"
                if state_before is not SupervisorState.FOLLOWING:
                    assert action == "reengage", "an arm resumed without an aligned re-engage"
                followed[arm] = key
        elif action == "request" and key is not None:
            room.desk.handle(key, {"type": "arm_request", "arm": arm}, room.now)
        elif action == "observer_request":
            room.desk.handle(keys["watcher"], {"type": "arm_request", "arm": arm}, room.now)
            assert identity_of(room.sup.owner(arm)) != "watcher"
        elif action == "release" and key is not None:
            room.desk.handle(key, {"type": "arm_release", "arm": arm}, room.now)
        elif action == "grant" and key is not None:
            room.desk.handle(key, {"type": "arm_grant", "arm": arm, "to": to}, room.now)
        elif action == "restart":
            sid += 1
            keys[who] = room.desk.join(who, sid, room.now)
        elif action == "leave" and key is not None:
            room.desk.leave(key, room.now)
            keys.pop(who)
            if who not in keys:
                sid += 1
                keys[who] = room.desk.join(who, sid, room.now)
        elif action == "silence":
            room.tick(600)
        elif action == "takeover":
            room.local.takeover(room.now, arm)
        elif action == "hand_back":
            room.local.hand_back(room.now, arm)
        room.tick()
        owner = room.sup.owner(arm)
        if owner != owner_before and room.sup.state(arm) is SupervisorState.FOLLOWING:
            raise AssertionError(f"{arm} changed owner {owner_before} -> {owner} and kept following")
        if owner is not None and owner != LOCAL_SENDER:
            assert identity_of(owner) != "watcher", "an observer owns an arm"
            assert owner in keys.values() or room.sup.state(arm) is not SupervisorState.FOLLOWING
    assert room.sup.violations == 0
