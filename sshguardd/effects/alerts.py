"""Structured journal alerts: one entry per ban, repair, refusal, failure or start-up problem.

Each alert type has a stable 128-bit MESSAGE_ID (generated once with
`journalctl --new-id128`; never change one, alert routers match on them), a syslog PRIORITY
that fits it, and fields a router can match on without parsing MESSAGE:

  type             MESSAGE_ID                        PRIORITY    fields
  ban              3f23408183d74f4784dc5f117abdee3f  5 notice    NETWORK ADDRESS BAN_DURATION
                                                                 STRIKES REASON
  unban            3f48e5c06afd494b8f0ac8538e46aea3  6 info      NETWORK ADDRESS REASON
  drift            76499904177d4216bc0a2d3f6c1ac2b1  4 warning   SETTING FILE OLD_VALUE NEW_VALUE
  repaired         e5c9268b6be441a68ef9a52d139b9576  5 notice    SETTING FILE OLD_VALUE NEW_VALUE
  repair_refused   b3992e2e69c3459eb931e746622af782  3 err       SETTING FILE REASON
  repair_failed    3d43ae04cf3a4eee90294a0737c31381  2 crit      STEP FILE COMMAND STDERR
  revert_war       8c2a5d5824594df39cb21d6316bafbc9  1 alert     SETTING FILE WRITER REVERT_COUNT
  restart_failed   a673c5707a754d51aca2d72e0c5a18b4  2 crit      COMMAND STDERR
  lockout_guard    9c40f62eef344412b47cf9d3de98422e  3 err       REASON [SETTING FILE]
  startup_problem  13c13104e8b84661851ee6e5321966ae  3 err       WHAT DETAIL
  log_suppressed   c7b0da2d346c433ea282ba803366138f  3 err       UNIT DROPPED
  fleet_quarantine c965f43112a249519ad0116a9e461609  3 err       PUBLISHER REASON
                                                                 QUARANTINE_DURATION
  fleet_outage     890de3e6ecb54dc39f3441220b5dabc5  3 err       ENGINE DETAIL OUTAGE_SECONDS

Every entry also carries SYSLOG_IDENTIFIER=sshguardd and SSHGUARDD_ALERT=<type>.
packaging/systemd/sshguardd.catalog explains each MESSAGE_ID for `journalctl -x`.

Nothing from /etc/shadow reaches the journal: values for a shadow file must be descriptive
words ("locked", "empty password"), anything else is replaced, and crypt(3) hashes are
scrubbed from every free-text field (stderr, reasons) in case a tool echoed one.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertType:
    name: str
    message_id: str
    priority: int  # syslog severity, 0 emerg .. 7 debug


ALERT_TYPES: dict[str, AlertType] = {t.name: t for t in (
    AlertType("ban", "3f23408183d74f4784dc5f117abdee3f", 5),
    AlertType("unban", "3f48e5c06afd494b8f0ac8538e46aea3", 6),
    AlertType("drift", "76499904177d4216bc0a2d3f6c1ac2b1", 4),
    AlertType("repaired", "e5c9268b6be441a68ef9a52d139b9576", 5),
    AlertType("repair_refused", "b3992e2e69c3459eb931e746622af782", 3),
    AlertType("repair_failed", "3d43ae04cf3a4eee90294a0737c31381", 2),
    AlertType("revert_war", "8c2a5d5824594df39cb21d6316bafbc9", 1),
    AlertType("restart_failed", "a673c5707a754d51aca2d72e0c5a18b4", 2),
    AlertType("lockout_guard", "9c40f62eef344412b47cf9d3de98422e", 3),
    AlertType("startup_problem", "13c13104e8b84661851ee6e5321966ae", 3),
    AlertType("sshd_outdated", "a79a2e70ee2d485397db0b937b106218", 4),
    AlertType("log_suppressed", "c7b0da2d346c433ea282ba803366138f", 3),
    AlertType("fleet_quarantine", "c965f43112a249519ad0116a9e461609", 3),
    AlertType("fleet_outage", "890de3e6ecb54dc39f3441220b5dabc5", 3),
)}

_LOG_LEVEL = {0: logging.CRITICAL, 1: logging.CRITICAL, 2: logging.CRITICAL,
              3: logging.ERROR, 4: logging.WARNING, 5: logging.INFO, 6: logging.INFO,
              7: logging.DEBUG}

# crypt(3) hashes: "$id$...": $1$ $5$ $6$ $2b$ $y$ $gy$ $7$ $sha1$ ..., also behind a "!".
_CRYPT = re.compile(r"\$[0-9a-z]{1,6}\$[^\s:]+")
_SHADOW_NAMES = {"shadow", "gshadow", "shadow-", "gshadow-"}
# What a value for a shadow file may look like: a short description, never a field.
_SHADOW_SAFE = re.compile(r"[A-Za-z][A-Za-z0-9 _()-]{0,39}")
MAX_FIELD = 4096  # bytes of stderr/detail kept: enough for nft's or sshd's complaint


def _default_send() -> Callable[..., Any]:
    from systemd import journal  # imported lazily: only the production default needs it
    send: Callable[..., Any] = journal.send  # systemd-python has no type hints
    return send


def scrub(text: str) -> str:
    """Remove crypt(3) hashes and cap the length (keeps the end: errors come last)."""
    text = _CRYPT.sub("<hash>", text)
    if len(text) > MAX_FIELD:
        text = "…" + text[-MAX_FIELD:]
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "permanent"
    s = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


class Alerts:
    """Writes sshguardd's structured alerts to the journal (and one log line each).

    send: a callable with systemd.journal.send's signature (MESSAGE positional, fields as
    keyword arguments); the default is systemd.journal.send. A failed send (no journald)
    is logged and swallowed: an alert must never stop a ban or a repair.
    """

    def __init__(self, send: Callable[..., Any] | None = None, *,
                 identifier: str = "sshguardd", echo: bool | None = None):
        self._send = send if send is not None else _default_send()
        self._identifier = identifier
        self.failed_sends = 0
        # The log line repeats the alert for stderr readers. Under systemd, stderr *is* the
        # journal, so at its usual level it would show every alert twice in
        # `journalctl -u sshguardd`; there it goes out at DEBUG instead.
        self._echo = (not stderr_is_journal()) if echo is None else echo

    def ban(self, network: str, duration: float | None, strikes: int = 1,
            reason: str = "") -> None:
        """network banned for duration seconds (None: until unbanned by hand)."""
        self._emit("ban", f"banned {network} for {_duration(duration)} "
                   f"(strike {strikes}){': ' + reason if reason else ''}",
                   NETWORK=network, ADDRESS=_address_of(network),
                   BAN_DURATION=None if duration is None else round(duration),
                   STRIKES=strikes, REASON=reason)

    def unban(self, network: str, reason: str = "") -> None:
        self._emit("unban", f"unbanned {network}{': ' + reason if reason else ''}",
                   NETWORK=network, ADDRESS=_address_of(network), REASON=reason)

    def drift(self, setting: str, file: str, old: str | None, new: str | None) -> None:
        """A watched file changed so that `setting` no longer holds: old is the value the
        policy requires (or had), new the value now found."""
        old, new = _values(file, old, new)
        self._emit("drift", f"drift in {file}: {setting} is {new!s}, policy wants {old!s}",
                   SETTING=setting, FILE=file, OLD_VALUE=old, NEW_VALUE=new)

    def repaired(self, setting: str, file: str, old: str | None, new: str | None) -> None:
        """`setting` in `file` was put back: old is the drifted value, new the restored."""
        old, new = _values(file, old, new)
        self._emit("repaired", f"repaired {setting} in {file}: {old!s} -> {new!s}",
                   SETTING=setting, FILE=file, OLD_VALUE=old, NEW_VALUE=new)

    def repair_refused(self, setting: str, file: str, reason: str) -> None:
        self._emit("repair_refused", f"not repairing {setting} in {file}: {reason}",
                   SETTING=setting, FILE=file, REASON=reason)

    def repair_failed(self, step: str, file: str, command: Sequence[str] | str | None,
                      stderr: str | None) -> None:
        cmd = _command(command)
        self._emit("repair_failed", f"repair of {file} failed at {step}"
                   f"{' (' + cmd + ')' if cmd else ''}"
                   f"{': ' + _one_line(scrub(stderr))[:300] if stderr else ''}",
                   STEP=step, FILE=file, COMMAND=cmd, STDERR=stderr)

    def revert_war(self, setting: str, file: str, writer: str | None, count: int, *,
                   until: float | None = None, resume: str | None = None) -> None:
        """Repairs of `setting` pause until `until` (clock time); `resume` is the command
        that ends the pause early."""
        when = "" if until is None else " until " + time.strftime(
            "%Y-%m-%d %H:%M:%S UTC", time.gmtime(until))
        self._emit("revert_war", f"revert war over {setting} in {file}: undone {count} "
                   f"times{' by ' + writer if writer else ''}; repairs of it paused{when}"
                   f"{'; `' + resume + '` resumes them now' if resume else ''}",
                   SETTING=setting, FILE=file, WRITER=writer, REVERT_COUNT=count,
                   PAUSED_UNTIL=None if until is None else f"{until:.0f}", RESUME=resume)

    def restart_failed(self, command: Sequence[str] | str | None, stderr: str | None) -> None:
        cmd = _command(command)
        self._emit("restart_failed", f"sshd restart failed ({cmd})"
                   f"{': ' + _one_line(scrub(stderr))[:300] if stderr else ''}",
                   COMMAND=cmd, STDERR=stderr)

    def lockout_guard(self, reason: str, setting: str | None = None,
                      file: str | None = None) -> None:
        self._emit("lockout_guard", f"lockout guard refused a repair: {reason}",
                   REASON=reason, SETTING=setting, FILE=file)

    def startup_problem(self, what: str, detail: str) -> None:
        self._emit("startup_problem", f"start-up problem: {what}: "
                   f"{_one_line(scrub(detail))[:300]}", WHAT=what, DETAIL=detail)

    def sshd_outdated(self, package: str, installed: str | None, candidate: str | None,
                      security: bool, stale: bool, reason: str) -> None:
        """openssh-server has a (security) update pending, or the running sshd predates
        the installed binary."""
        what = ("a security update is pending" if security
                else "an update is pending" if candidate and candidate != installed
                else "the running sshd predates the installed package")
        self._emit("sshd_outdated", f"{package}: {what}"
                   f" (installed {installed or '?'}, candidate {candidate or '?'})"
                   f"{'; ' + reason if reason else ''}",
                   PACKAGE=package, INSTALLED=installed, CANDIDATE=candidate,
                   SECURITY="yes" if security else "no", STALE="yes" if stale else "no",
                   REASON=reason)

    def log_suppressed(self, unit: str, dropped: int) -> None:
        """journald rate-limited `unit` and dropped `dropped` of its messages: failed
        logins in them were not counted (journald's own notice, matched by the follower)."""
        self._emit("log_suppressed", f"journald dropped {dropped} messages from {unit}: "
                   "failed logins in them were not seen", UNIT=unit, DROPPED=dropped)

    def fleet_quarantine(self, publisher: str, reason: str, duration: float) -> None:
        """A fleet peer's entries are ignored for duration seconds (docs/fleet.md)."""
        self._emit("fleet_quarantine", f"fleet peer {publisher} quarantined for "
                   f"{_duration(duration)}: {reason}", PUBLISHER=publisher, REASON=reason,
                   QUARANTINE_DURATION=round(duration))

    def fleet_outage(self, engine: str, detail: str, seconds: float) -> None:
        """The fleet engine has been unreachable for seconds; bans stay as they are."""
        self._emit("fleet_outage", f"fleet engine {engine} unreachable for "
                   f"{int(seconds)}s: {_one_line(scrub(detail))[:300]}", ENGINE=engine,
                   DETAIL=detail, OUTAGE_SECONDS=int(seconds))

    def _emit(self, kind: str, message: str, **fields: Any) -> None:
        t = ALERT_TYPES[kind]
        message = _one_line(scrub(message))
        log.log(_LOG_LEVEL[t.priority] if self._echo else logging.DEBUG, "%s", message)
        out = {k: scrub(str(v)) for k, v in fields.items() if v is not None and v != ""}
        try:
            self._send(message, MESSAGE_ID=t.message_id, PRIORITY=str(t.priority),
                       SYSLOG_IDENTIFIER=self._identifier, SSHGUARDD_ALERT=kind, **out)
        except OSError as exc:
            self.failed_sends += 1
            log.warning("could not write %s alert to the journal: %s", kind, exc)


def stderr_is_journal(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """True when `fd` is the journal stream systemd connected (sd_journal_stream_fd(3):
    $JOURNAL_STREAM holds its "device:inode")."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _address_of(network: str) -> str | None:
    # ADDRESS only for a single host, so a router can match it against other logs.
    addr, _, prefix = network.partition("/")
    if not prefix or prefix == ("128" if ":" in addr else "32"):
        return addr
    return None


def _command(command: Sequence[str] | str | None) -> str:
    if command is None:
        return ""
    return command if isinstance(command, str) else shlex.join(command)


def _values(file: str, old: str | None, new: str | None) -> tuple[str | None, str | None]:
    if PurePath(file).name not in _SHADOW_NAMES:
        return old, new
    return tuple(  # type: ignore[return-value]
        v if v is None or _SHADOW_SAFE.fullmatch(v) else "<redacted>" for v in (old, new))
