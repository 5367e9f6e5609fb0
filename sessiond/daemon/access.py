"""Who may call what (SPEC §2.5), decided from the kernel's word only.

`Peer` is what SO_PEERCRED and SO_PEERGROUPS said about the other end of a
connection; nothing a client sends changes it. `role_of()` ranks a peer
against the live session; the RPC table names the least role each method
needs.
"""

from __future__ import annotations

import enum
import grp
import os
import pwd
from dataclasses import dataclass


class Role(enum.IntEnum):
    OBSERVER = 0
    PARTICIPANT = 1
    OWNER = 2  # admins share the owner's rights
    ADMIN = 3  # only for what no owner may do (cleanup with no live session)


@dataclass(frozen=True)
class Peer:
    uid: int
    gid: int
    pid: int
    groups: frozenset[int] = frozenset()

    @property
    def user(self) -> str:
        return user_name(self.uid)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def is_admin(peer: Peer, admin_gid: int | None) -> bool:
    if peer.uid == 0:
        return True
    return admin_gid is not None and (peer.gid == admin_gid or admin_gid in peer.groups)


def role_of(
    peer: Peer, owner_uid: int | None, participant_uids: frozenset[int], admin: bool
) -> Role:
    if admin:
        return Role.ADMIN
    if owner_uid is not None and peer.uid == owner_uid:
        return Role.OWNER
    if peer.uid in participant_uids:
        return Role.PARTICIPANT
    return Role.OBSERVER


def groups_of(uid: int, gid: int) -> frozenset[int]:
    """Supplementary groups from the user database, when the kernel did not say."""
    try:
        return frozenset(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
    except KeyError:
        return frozenset({gid})
