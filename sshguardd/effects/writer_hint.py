"""Who keeps writing that file? Cheap answers for the revert-war alert.

Catching the writing process in the act would need fanotify or auditd. Two sources name
the usual culprits for free: what the file says about its manager (the header comments
cloud-init, Ansible, Puppet, Chef, Salt and CFEngine write, or a drop-in named after its
tool), and the journal, where shadow-utils' tools, cloud-init and configuration management
agents log what they do under their own SYSLOG_IDENTIFIER.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# Header comments tools put into files they manage (facts from their generated files).
WRITER_MARKERS = (
    ("cloud-init", re.compile(r"cloud-init", re.I)),
    ("ansible", re.compile(r"ansible managed", re.I)),
    ("puppet", re.compile(r"managed by puppet|puppet[- ]managed", re.I)),
    ("chef", re.compile(r"(managed|generated) by chef", re.I)),
    ("salt", re.compile(r"managed by salt", re.I)),
    ("cfengine", re.compile(r"cfengine", re.I)),
)


def writer_of(path: str, text: str | None) -> str | None:
    """A best guess at which tool wrote this file, from its name and header."""
    name = os.path.basename(path).lower()
    for tool, pattern in WRITER_MARKERS:
        if tool in name or (text and pattern.search(text[:4096])):
            return tool
    return None


# Programs that rewrite sshd_config or /etc/shadow and say so in the journal (their
# SYSLOG_IDENTIFIER): cloud-init and configuration management agents for both, and
# shadow-utils' tools for the shadow file only (a useradd must not be blamed for an
# sshd_config edit).
CONFIG_WRITERS = frozenset({
    "cloud-init", "cloud-init-hotplugd", "puppet", "puppet-agent", "chef-client",
    "salt-minion", "cf-agent",
})
SHADOW_WRITERS = CONFIG_WRITERS | {
    "usermod", "passwd", "chpasswd", "chage", "vipw", "pwconv", "newusers",
}


def journal_writer(since: float, reader_factory: Callable[[], Any] | None = None,
                   limit: int = 5000, tools: frozenset[str] = CONFIG_WRITERS) -> str | None:
    """The most recent known writer (one of `tools`, or any `ansible-*` module) that logged
    to the journal since `since` (epoch seconds), as "usermod (pid 123)"; None if none.
    Reads backwards from the end, at most `limit` entries: only called when a revert war
    starts, so its cost does not matter."""
    try:
        if reader_factory is None:
            from systemd import journal

            reader = journal.Reader()
        else:
            reader = reader_factory()
    except (ImportError, OSError) as exc:
        log.debug("no journal to ask for the writer: %s", exc)
        return None
    try:
        reader.seek_tail()
        for _ in range(limit):
            entry = reader.get_previous()
            if not entry:
                break
            stamp = entry.get("__REALTIME_TIMESTAMP")
            if stamp is not None and stamp.timestamp() < since:
                break
            ident = str(entry.get("SYSLOG_IDENTIFIER") or "")
            if ident in tools or ident.startswith("ansible-"):
                pid = entry.get("_PID")
                return f"{ident} (pid {pid})" if pid else ident
    except OSError as exc:
        log.debug("reading the journal for the writer failed: %s", exc)
    finally:
        reader.close()
    return None
