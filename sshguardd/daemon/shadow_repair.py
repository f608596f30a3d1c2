"""Judging and relocking root's password in /etc/shadow and /etc/passwd.

The verdict is about the password pam_unix would check for root (sshguardd.drift.
shadow_rules reads both files as glibc does); the write is shadow-utils' locked
read-modify-write (sshguardd.effects.shadow_file) and changes only root's password field
(and, when configured, empty password fields). Called on the daemon loop only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sshguardd.drift import shadow_rules as rules
from sshguardd.effects.shadow_file import ShadowFile

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShadowVerdict:
    """What is wrong, by item, with the file each item is in. Never holds a hash."""

    state: rules.ShadowState
    root_file: str                       # where root's password lives for pam_unix
    empty: tuple[str, ...]               # non-root accounts with an empty password


class ShadowRepair:
    def __init__(self, shadow: ShadowFile):
        self.shadow = shadow

    def judge(self) -> ShadowVerdict:
        """Raises OSError when the shadow file cannot be read."""
        text = self.shadow.read()
        try:
            passwd = self.shadow.read_passwd()
        except OSError as exc:
            log.warning("cannot read %s: %s; judging shadow alone", self.shadow.passwd, exc)
            passwd = None
        state = rules.judge(text, passwd)
        del text, passwd  # hashes must not outlive this function
        root_file = str(self.shadow.passwd if state.passwd_hash else self.shadow.path)
        empty = tuple(a for a in state.empty_password_accounts if a != "root")
        return ShadowVerdict(state, root_file, empty)

    def relock(self, verdict: ShadowVerdict, form: rules.LockForm, lock_root: bool,
               lock_empty: bool) -> dict[str, str]:
        """Lock what the verdict found; returns {path: new text} for each file written.
        Raises OSError (a lock timeout, a failed write, swap.Conflict) or
        ShadowFormatError; nothing is half-written either way."""
        return self.shadow.relock(form, lock_empty=lock_empty, lock_root=lock_root,
                                  passwd=lock_root and verdict.state.passwd_hash)
