"""Arm ownership across several consoles: the handover protocol, on top of the supervisor's owner.

The supervisor keeps, per arm, the one sender whose commands it may apply (`assign`/`owner`); this
desk decides who that is when several consoles are connected. Sans-I/O and run on the servo thread
(through `ServoLoop.operator`), so a grant and the commands around it are ordered on one clock.

A sender is a *session key*, `identity#sid` (`session_key`): the console's certificate name plus the
link session it spoke on, so a console that restarts gets a new key and nothing of its old session
is applied after the new one replaced it.

Protocol (JSON on the link's reliable, authenticated event channel; the sender is the session the
message came on, never a field of the message):
    {"type": "arm_request", "arm": "PSM1"}     lead or consultant asks for an arm
    {"type": "arm_release", "arm": "PSM1"}     the owner lets go (the first pending request gets it)
    {"type": "arm_grant", "arm": "PSM1", "to": "consultant-b"}   the owner hands it to someone
A request is granted by the owner, or by the desk once the owner has released it, has none, or has
been silent past the fault time. A grant makes a moving arm HOLD; the new owner aligns and
re-engages (dVRK style). Refusals (observer, unknown arm, grant by a non-owner, stale session,
unknown party) are counted by reason, logged and answered with `arm_refused`; nothing changes hands.
The local console's takeover (robot/local_console.py) outranks all of this.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from telesurg.robot.roles import LOCAL_SLOT, NO_OWNER_SLOT, Role, Roster
from telesurg.robot.supervisor import LOCAL_SENDER, SafetySupervisor

log = logging.getLogger(__name__)
OwnershipNotice = tuple[str | None, dict[str, Any]]  # (session key to tell, or None: everyone; message)


def session_key(identity: str, sid: int) -> str:
    return f"{identity}#{sid:x}"


def identity_of(key: str | None) -> str | None:
    return None if key is None else key.split("#", 1)[0]


@dataclass(slots=True)
class Party:
    identity: str
    role: Role
    slot: int
    key: str | None = None  # its live session, None while disconnected
    joined_at: float = 0.0


@dataclass(slots=True)
class _ArmClaim:
    pending: list[str] = field(default_factory=list)  # identities, first come first served
    since: float = 0.0  # when the current owner got the arm
    reserved_for: str | None = None  # the lead it is configured for, until that lead first connects


class OwnershipDesk:
    """Requests, grants and releases of arms between sessions; see the module docstring."""

    def __init__(self, supervisor: SafetySupervisor, roster: Roster, fault_s: float | None = None) -> None:
        self.supervisor = supervisor
        self.roster = roster
        self.fault_s = supervisor.config.fault_s if fault_s is None else fault_s
        self.parties: dict[str, Party] = {}
        self._claims = {arm: _ArmClaim() for arm in supervisor.arm_names}
        for entry in roster.entries():  # a lead's arms wait for it: no early consultant takes them
            for arm in roster.lead_arms(entry.identity):
                if arm in self._claims:
                    self._claims[arm].reserved_for = entry.identity
        self.refused: Counter[str] = Counter()
        self.outbox: list[OwnershipNotice] = []
        self.changed = True  # the snapshot differs from the last one published
        self.slots: dict[str | None, int] = {None: NO_OWNER_SLOT, LOCAL_SENDER: LOCAL_SLOT}
        self._published_owners: tuple[str | None, ...] = ()

    # -- sessions ----------------------------------------------------------------------------------
    def join(self, identity: str, sid: int, now: float) -> str:
        """An authenticated session starts; a lead gets its free arms. Returns the session key."""
        key = session_key(identity, sid)
        party = self.parties.get(identity)
        if party is None:
            party = self.parties[identity] = Party(identity, self.roster.role(identity), self.roster.slot(identity))
        old, party.key, party.joined_at = party.key, key, now
        self.slots[key] = party.slot
        if old is not None:
            self._retire(old, key, now)
        for arm in self.roster.lead_arms(identity) if party.role is Role.LEAD else ():
            owner = self.supervisor.owner(arm)
            if owner is None or identity_of(owner) == identity:
                self._give(arm, key, now, "session_start" if owner is None else "session_replaced")
        self.changed = True
        return key

    def leave(self, key: str, now: float) -> None:
        """A session ended: its pending requests go; arms it owns hold (watchdog) until handed on."""
        party = self.parties.get(identity_of(key) or "")
        if party is None or party.key != key:
            return
        party.key = None
        for claim in self._claims.values():
            if party.identity in claim.pending:
                claim.pending.remove(party.identity)
        self.changed = True

    def _retire(self, old: str, new: str, now: float) -> None:
        """The same console came back on a new session: its arms move to the new key, holding."""
        for arm in self.supervisor.arm_names:
            if self.supervisor.owner(arm) == old:
                self._give(arm, new, now, "session_replaced")
        # its ordering records stay (a few entries per session): commands of the old session may
        # still wait in the servo inbox, and must keep failing the ordering gate as well as ownership
        self.slots.pop(old, None)

    # -- protocol ----------------------------------------------------------------------------------
    def handle(self, key: str, message: dict[str, Any], now: float) -> bool:
        """One handover message from session `key`; True if it was taken, False if refused."""
        kind, arm = message.get("type"), message.get("arm")
        identity = identity_of(key) or ""
        party = self.parties.get(identity)
        if party is None or party.key != key:
            return self._refuse(key, "stale_session", kind, arm, now)
        if not isinstance(arm, str) or arm not in self._claims:
            return self._refuse(key, "unknown_arm", kind, arm, now)
        if party.role is Role.OBSERVER:
            return self._refuse(key, "observer", kind, arm, now)
        owner = self.supervisor.owner(arm)
        claim = self._claims[arm]
        if kind == "arm_request":
            if owner != key and identity not in claim.pending:
                claim.pending.append(identity)
                log.info("t=%.3f %s requests %s (owner %s)", now, identity, arm, identity_of(owner))
            self._settle(arm, now)
        elif kind == "arm_release":
            if owner != key:
                return self._refuse(key, "not_owner", kind, arm, now)
            self._give(arm, None, now, "released")
            self._settle(arm, now)
        elif kind == "arm_grant":
            to = self.parties.get(str(message.get("to")))
            if owner != key:
                return self._refuse(key, "not_owner", kind, arm, now)
            if to is None or to.key is None or to.role is Role.OBSERVER or to.key == key:
                return self._refuse(key, "bad_grantee", kind, arm, now)
            if not self._give(arm, to.key, now, "granted"):
                return self._refuse(key, "local_takeover", kind, arm, now)
        else:
            return self._refuse(key, "unknown_type", kind, arm, now)
        self.changed = True
        return True

    def tick(self, now: float) -> None:
        """Grant pending requests whose arm's owner released it, is gone or fell silent; move arms
        handed back (by the local console) to a session that was replaced meanwhile."""
        owner_of = self.supervisor.owner  # runs every servo period: plain loops, nothing looked up twice
        owners = tuple(map(owner_of, self._claims))
        if owners != self._published_owners:  # e.g. the local console took an arm over
            self._published_owners = owners
            self.changed = True
        for arm, claim in self._claims.items():
            owner = owner_of(arm)
            if owner is not None and owner != LOCAL_SENDER:
                party = self.parties.get(identity_of(owner) or "")
                if party is not None and party.key not in (None, owner):
                    self._give(arm, party.key, now, "session_replaced")
            if claim.pending:
                self._settle(arm, now)

    def _settle(self, arm: str, now: float) -> None:
        claim = self._claims[arm]
        owner = self.supervisor.owner(arm)
        while claim.pending:
            party = self.parties.get(claim.pending[0])
            if party is None or party.key is None:
                claim.pending.pop(0)
                continue
            if owner == LOCAL_SENDER:
                return  # the local console has it: requests wait for its hand-back
            if owner is None and claim.reserved_for not in (None, party.identity):
                return  # its lead has not connected yet (the local console can still give it away)
            if owner is not None:
                # silent: it spoke and stopped, or its session is gone. An owner that has not yet said
                # anything since it got the arm (a lead still starting) is waited for.
                heard = self.supervisor.last_heard(arm)
                holder = self.parties.get(identity_of(owner) or "")
                gone = holder is None or holder.key != owner
                quiet = heard if heard is not None else (claim.since if gone else None)
                if quiet is None or now - max(quiet, claim.since) <= self.fault_s:
                    return
            claim.pending.pop(0)
            reason = "requested" if owner is None else "owner_silent"
            self._give(arm, party.key, now, reason)
            return

    def _give(self, arm: str, key: str | None, now: float, reason: str) -> bool:
        if not self.supervisor.assign(arm, key, now, cause=reason):
            return False
        claim = self._claims[arm]
        claim.reserved_for = None
        claim.since = now
        if key is not None and identity_of(key) in claim.pending:
            claim.pending.remove(identity_of(key) or "")
        self.changed = True
        return True

    def _refuse(self, key: str, reason: str, kind: object, arm: object, now: float) -> bool:
        self.refused[reason] += 1
        log.warning("t=%.3f handover message %r for %r from %s refused: %s", now, kind, arm, key, reason)
        self.outbox.append((key, {"type": "arm_refused", "reason": reason, "arm": str(arm)[:16],
                                  "request": str(kind)[:32]}))
        return False

    # -- what every console sees -------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Who owns each arm, who waits for it, and who is connected in which role."""
        arms = {}
        for arm, claim in self._claims.items():
            owner = self.supervisor.owner(arm)
            arms[arm] = {"owner": identity_of(owner), "owner_slot": self.slots.get(owner, NO_OWNER_SLOT),
                         "pending": list(claim.pending), "local": owner == LOCAL_SENDER}
        peers = {p.identity: {"role": p.role.value, "slot": p.slot, "connected": p.key is not None}
                 for p in self.parties.values()}
        return {"type": "ownership", "arms": arms, "peers": peers}

    def handover_report(self, t0: float = 0.0) -> list[dict[str, Any]]:
        """The supervisor's handover records with identities instead of session keys."""
        out = []
        for h in self.supervisor.handovers:
            gap, align = h.gap_ms, h.align_ms
            out.append({"at_s": round(h.at_s - t0, 4), "arm": h.arm, "from": identity_of(h.from_sender),
                        "to": identity_of(h.to_sender), "reason": h.reason,
                        "gap_ms": None if gap is None else round(gap, 3),
                        "align_ms": None if align is None else round(align, 3),
                        "handover_ms": None if gap is None or align is None else round(gap - align, 3),
                        "moved_mm": None if h.moved_m is None else round(1000.0 * h.moved_m, 4)})
        return out
