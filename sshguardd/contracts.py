"""The messages the stages exchange: small, frozen, and the only coupling between them.

Like SSHGuard's index-card line protocol, every stage talks to the next through one of
these types, so each stage can be tested by feeding it values and reading values back.

    journal or log file ──LogBatch of LogRecord──> classifier ──Event──> policy ──Ban──>
        store and firewall
    watcher ──FileChanged──> drift guard (it judges every guarded file again)
    package manager ──PackageState──> update watch

Kind names what an Event says happened. What the drift guard finds and plans stays inside
drift/ and daemon/; alerts go to the journal as structured fields (effects/alerts.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from fnmatch import fnmatchcase


class Kind(str, enum.Enum):
    """What one sshd message says happened. Values are stable: they appear in JSON output,
    metrics labels and the state store."""

    INVALID_USER = "invalid_user"            # "Invalid user X from A"
    BAD_PASSWORD = "bad_password"            # "Failed password for [invalid user] X from A"
    BAD_KEY = "bad_key"                      # "Failed publickey ...", key refused
    AUTH_FAILURE = "auth_failure"            # other failed method / PAM auth failure
    ROOT_REFUSED = "root_refused"            # "ROOT LOGIN REFUSED", root not allowed
    USER_NOT_ALLOWED = "user_not_allowed"    # AllowUsers/DenyUsers/AllowGroups/shell
    MAX_AUTH_TRIES = "max_auth_tries"        # "maximum authentication attempts exceeded"
    PREAUTH_DISCONNECT = "preauth_disconnect"  # closed/reset/disconnected before auth
    KEX_FAILURE = "kex_failure"              # no matching kex/cipher/mac/host key, bad banner
    PROTOCOL_ERROR = "protocol_error"        # bad packet, invalid format, did not receive id
    TIMEOUT = "timeout"                      # LoginGraceTime expired before auth
    PENALTY = "penalty"                      # OpenSSH 9.8+ PerSourcePenalties drop
    ACCEPTED = "accepted"                    # successful login (not a failure)

    @property
    def is_failure(self) -> bool:
        return self is not Kind.ACCEPTED


@dataclass(frozen=True, slots=True)
class Event:
    """The classifier's verdict on one sshd message.

    host is either a normalised IP literal (IPv4-mapped IPv6 reduced to IPv4) or, when sshd
    logged a name (UseDNS yes), that name as written; it is never resolved.
    pam_relay is True for sshd's relay of a PAM verdict ("error: PAM: Authentication
    failure for ..."): it corroborates an attempt sshd logs itself, so the ban policy does
    not count it again (the classifier knows the wording; the policy never reads text).
    """

    kind: Kind
    host: str
    user: str | None = None
    port: int | None = None
    pam_relay: bool = False


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One sshd message as a log source delivers it.

    time is the entry's own timestamp in seconds since the epoch (None when the source has
    none, e.g. a syslog line without a year is still given one by the reader). pid is sshd's
    process id when known: the policy uses it to tell the lines of one connection apart.
    position is where the record came from: a journal cursor or "FILE:LINE".
    """

    message: str
    time: float | None = None
    pid: int | None = None
    host: str | None = None      # the logging machine's hostname, not the attacker
    position: str | None = None


@dataclass(frozen=True, slots=True)
class LogBatch:
    """The records a log source read in one go, and where it stopped.

    position is what to hand back to the source on restart (a journal cursor, or
    "FILE:OFFSET"); the daemon persists it only after acting on every record of the batch.
    """

    records: tuple[LogRecord, ...]
    position: str | None = None


@dataclass(frozen=True, slots=True)
class Ban:
    """The policy's decision to ban a network (an address as /32 or /128, or an IPv6 prefix).

    until is an absolute time in seconds since the epoch, in the clock of the log entries
    that caused it; duration is its length; strikes counts this offender's bans within
    ban.history_time (1 for a first offence), which is what escalates duration.
    """

    network: str
    duration: float
    until: float
    strikes: int = 1
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FileChanged:
    """The watcher saw a write, create, rename or delete touching a watched file."""

    path: str
    time: float


@dataclass(frozen=True, slots=True)
class PackageState:
    """The update watch's finding about the watched package (openssh-server) and the
    running sshd: what is installed, what the package manager would install, whether a
    security origin offers something newer, and whether a running sshd predates it."""

    backend: str                 # "apt" or "rpm"
    package: str
    installed: str | None
    candidate: str | None
    pending: bool                # the candidate is newer than the installed version
    security: bool               # a newer version comes from a security origin/advisory
    advisories: tuple[str, ...]
    stale: bool                  # a running sshd runs replaced code
    stale_reasons: tuple[str, ...]
    checked: float               # epoch seconds
    error: str | None            # the package manager could not be asked (argv: reason)


@dataclass(frozen=True, slots=True)
class WatchSet:
    """What the drift guard needs watched, as the watcher holds it: the directories to
    watch (including symlink targets' directories), the exact paths that matter (links
    and their targets) and the Include patterns whose matches matter. The watcher filters
    with this snapshot on its own thread and never calls into the guard; the loop hands
    it a new one whenever the guard's judgment changes what must be watched."""

    dirs: tuple[str, ...]
    files: frozenset[str] = frozenset()
    patterns: tuple[str, ...] = ()

    def relevant(self, path: str) -> bool:
        """True if a change at `path` can change the verdict (a watched directory itself
        counts: it may have been swapped)."""
        if path in self.files or path in self.dirs:
            return True
        return any(glob_match(p, path) for p in self.patterns)


def glob_match(pattern: str, path: str) -> bool:
    """glob(3)'s verdict on one path: component by component, '*' never crosses '/', and
    a leading dot must be matched by a literal dot."""
    want, got = pattern.split("/"), path.split("/")
    if len(want) != len(got):
        return False
    return all(fnmatchcase(g, w) and (not g.startswith(".") or w.startswith("."))
               for w, g in zip(want, got, strict=True))


# -- fleet mode: what the fleet stage's threads hand the daemon loop ------------------------

@dataclass(frozen=True, slots=True)
class FleetEntry:
    """One ban or unban as it travels in a host's fleet stream.

    op is "ban" or "unban"; until is absolute (seconds since the epoch) and 0 for an
    unban; kind and count say what decided it ("bad_password", 5) so a receiver can
    judge and show it; publisher is what the entry claims, which a receiver checks
    against the stream it came from; seq counts the publisher's entries from 1 without
    gaps, so a receiver that sees seq jump knows it missed some.
    """

    op: str
    network: str
    until: float
    kind: str
    count: float
    publisher: str
    seq: int


@dataclass(frozen=True, slots=True)
class FleetRead:
    """Entries read from one peer's stream, oldest first, as (stream id, entry) pairs.

    peer is the host named by the stream's key (the server's ACL lets only that host
    write it); entry is None for an entry that did not parse (counted, skipped).
    """

    peer: str
    entries: tuple[tuple[str, FleetEntry | None], ...]


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """A peer's active bans as of its entry (entry_id, seq), read to resync after a gap.

    bans holds one "ban" FleetEntry per network; the receiver replaces everything it
    holds from this peer with them and reads the stream on from entry_id.
    """

    peer: str
    entry_id: str
    seq: int
    bans: tuple[FleetEntry, ...]


@dataclass(frozen=True, slots=True)
class FleetPublished:
    """The writer put every outbox entry up to and including seq into our stream."""

    seq: int


@dataclass(frozen=True, slots=True)
class FleetLink:
    """The engine became reachable (connected) or not for one part of the stage ("reader"
    or "writer"); detail says why when not."""

    connected: bool
    part: str
    detail: str = ""
