"""Ways into an EC2 instance that do not go through sshd: AWS Systems Manager Session
Manager.

Session Manager sessions are opened by amazon-ssm-agent over its own outbound connection
(as the `ssm-user` account it creates), so no sshd_config repair can close them. The
lockout guard counts them when there is evidence the agent can serve sessions on this host
(docs/ec2.md): the agent's binary is installed (the RPM and .deb put it in /usr/bin, the
Ubuntu snap in /snap/amazon-ssm-agent/current) *and* the agent has registered: a hybrid
activation writes /var/lib/amazon/ssm/registration, and on EC2 the agent keeps its state in
a directory named after the instance ID it got from the instance metadata
(/var/lib/amazon/ssm/i-0123..., mi-... for managed nodes), which exists only once it ran
with an identity. It cannot see IAM: whether anyone may call ssm:StartSession is AWS's
business; `[ec2] session_manager = false` stops the guard from counting it.

Reads only names and file types (lstat, listdir), never file contents.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence

AGENT_BINARIES = ("/usr/bin/amazon-ssm-agent", "/snap/amazon-ssm-agent/current/amazon-ssm-agent",
                  "/usr/local/bin/amazon-ssm-agent")
STATE_DIR = "/var/lib/amazon/ssm"
_NODE_ID = re.compile(r"^m?i-[0-9a-f]{8,17}$")


class SessionManager:
    """`evidence()`: a sentence naming what shows the agent can serve sessions, or None."""

    def __init__(self, binaries: Sequence[str] = AGENT_BINARIES, state_dir: str = STATE_DIR):
        self.binaries = tuple(binaries)
        self.state_dir = state_dir

    def evidence(self) -> str | None:
        agent = next((b for b in self.binaries if _executable(b)), None)
        if agent is None:
            return None
        registration = os.path.join(self.state_dir, "registration")
        if _regular(registration):
            return f"Session Manager (amazon-ssm-agent at {agent}, registered: {registration})"
        try:
            names = sorted(os.listdir(self.state_dir))
        except OSError:
            return None
        for name in names:
            path = os.path.join(self.state_dir, name)
            if _NODE_ID.match(name) and _directory(path):
                return f"Session Manager (amazon-ssm-agent at {agent}, registered as {name})"
        return None


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)  # the snap's `current` is a symlink: follow it
    except OSError:
        return None


def _executable(path: str) -> bool:
    st = _stat(path)
    return st is not None and stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


def _regular(path: str) -> bool:
    st = _stat(path)
    return st is not None and stat.S_ISREG(st.st_mode)


def _directory(path: str) -> bool:
    st = _stat(path)
    return st is not None and stat.S_ISDIR(st.st_mode)
