"""Per-connection memory for the wordings that carry no address.

Some old or terse sshd wordings ("Disconnecting: Too many authentication failures",
kex_exchange_identification errors) name no address; fail2ban's multi-line filters join
them to the other lines of the same sshd process. `Correlator` does the same, keyed by
the logging host and sshd's pid, and bounded in size and in log time.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, cast

from sshguardd.contracts import Event, Kind
from sshguardd.detect.families import PARSERS
from sshguardd.detect.tokens import (
    MAX_MESSAGE,
    Raw,
    parse_host,
    split_prefixes,
    split_tail,
    strip_prefixes,
    user_prefix,
)

__all__ = ["CORRELATED_WORDS", "ENDINGS", "ENDING_WORDS", "Correlator", "orphan_kind"]

_ORPHANS: tuple[tuple[str, Kind], ...] = (
    ("Disconnecting: Too many authentication failures", Kind.MAX_AUTH_TRIES),
    ("Disconnecting: Change of username or service not allowed", Kind.AUTH_FAILURE),
    ("kex_exchange_identification: client sent invalid protocol identifier", Kind.PROTOCOL_ERROR),
    ("kex_exchange_identification: Connection closed by remote host", Kind.PROTOCOL_ERROR),
    ("kex_exchange_identification: read: Connection reset by peer", Kind.PROTOCOL_ERROR),
    ("kex_exchange_identification: Connection reset by peer", Kind.PROTOCOL_ERROR),
    ("Unable to negotiate a ", Kind.KEX_FAILURE),
    ("no matching ", Kind.KEX_FAILURE),
    ("Read from socket failed: Connection reset by peer", Kind.PREAUTH_DISCONNECT),
)


def orphan_kind(message: str) -> Kind | None:
    """The failure Kind of an sshd message that names no address (old OpenSSH wordings,
    kex_exchange_identification errors), or None. The address comes from other lines of
    the same sshd process: see Correlator."""
    if len(message) > MAX_MESSAGE:
        return None
    return _orphan(strip_prefixes(message))


_ORPHAN_WORDS = frozenset(prefix.split(" ", 1)[0] for prefix, _ in _ORPHANS) | {"User"}


def _orphan(msg: str) -> Kind | None:
    if msg.partition(" ")[0] not in _ORPHAN_WORDS:
        return None
    for prefix, kind in _ORPHANS:
        if msg.startswith(prefix):
            if prefix == "no matching " and " found" not in msg:
                return None
            return kind
    if msg.startswith("User ") and " from " not in msg and (
            msg.endswith(" not allowed because account is locked")
            or " not allowed because shell " in msg):
        return Kind.USER_NOT_ALLOWED
    return None


_ANNOUNCE_WORDS = frozenset({"Connection", "SSH:"})


def _announced_host(msg: str) -> str | None:
    """The peer address of a line that only announces a connection (LogLevel VERBOSE
    "Connection from ADDR port N on ADDR port N", or the gh-864 "SSH: Server;..." lines)."""
    if msg.startswith("Connection from "):
        token = msg[16:].split(" ", 1)[0]
        return parse_host(token)
    if msg.startswith("SSH: Server;Ltype: "):
        i = msg.find(";Remote: ")
        if i > 0:
            token = msg[i + 9:].split(";", 1)[0].rpartition("-")[0]
            return parse_host(token)
    return None


ENDINGS = ("Connection closed by ", "Connection reset by ", "Disconnected from ",
            "Received disconnect from ")
ENDING_WORDS = frozenset({"Connection", "Disconnected", "Received"})
# First words of the lines the Correlator must look at even when classify() says nothing.
CORRELATED_WORDS = frozenset({
    "Connection", "Disconnected", "Received", "SSH:", "Disconnecting:",
    "kex_exchange_identification:", "Unable", "no", "Read", "User",
})


def _closing_host(msg: str) -> str | None:
    """The peer named by a closing line, with or without [preauth]."""
    for prefix in ENDINGS[:3]:
        if msg.startswith(prefix):
            head, token, _, _ = split_tail(msg[len(prefix):])
            return parse_host(token) if user_prefix(head) is not None else None
    return None


class Correlator:
    """classify() plus memory per sshd process, for messages that carry no address.

    Keyed by (logging host, pid). An address learnt from one line of a connection is lent
    to that connection's address-less failures; a failure seen before any address waits
    for the connection's next line that names one. Entries are dropped when the
    connection's closing line is seen, after `ttl` seconds of the entries' own time (pid
    reuse), and beyond `max_entries` (oldest first), so memory is bounded.
    """

    def __init__(self, max_entries: int = 4096, ttl: float = 600.0):
        self.max_entries = max_entries
        self.ttl = ttl
        # key -> [host or None, pending kinds or None, last time]; insertion order = age.
        # An OrderedDict because evicting the oldest is O(1) there (popitem(last=False)),
        # while next(iter(dict)) walks over every slot freed since the dict last resized:
        # with thousands of short connections between evictions, that cost dominated scan.
        self._conns: OrderedDict[tuple[str | None, int], list[Any]] = OrderedDict()

    def feed(self, message: str, pid: int | None, machine: str | None = None,
             time: float | None = None) -> list[Event]:
        """Events for one message of sshd process `pid` on `machine`, at entry time `time`.

        Every event classify() gives is returned; address-less failures are returned once
        the connection's address is known (possibly on a later line)."""
        return [Event(*raw) for raw in self.feed_raw(message, pid, machine, time)]

    def feed_raw(self, message: str, pid: int | None, machine: str | None = None,
                 time: float | None = None) -> list[Raw]:
        """feed() with raw verdicts (kind, host, user, port[, True for a PAM relay])
        instead of Events."""
        if len(message) > MAX_MESSAGE:
            return []
        msg, relay = split_prefixes(message)
        sp = msg.find(" ")
        first = msg[:sp] if sp > 0 else msg
        family = PARSERS.get(first)
        event = family(msg) if family is not None else None
        if relay and event is not None:
            event = (*event[:4], True)
        if pid is None:
            return [event] if event is not None else []
        if event is None and first not in CORRELATED_WORDS:
            return []  # the common case (pam_unix, session lines): nothing to learn
        return self.correlate(msg, first, event, pid, machine, time)

    def correlate(self, msg: str, first: str, event: Raw | None, pid: int,
                  machine: str | None, time: float | None) -> list[Raw]:
        """The bookkeeping half of feed(), for callers that classified a message proper
        themselves (families.verdict; scan's fused loop): `first` is its first word,
        `event` the raw verdict. Returns raw verdicts. Only needed when event is not None
        or first is in CORRELATED_WORDS."""
        key = (machine, pid)
        conns = self._conns
        entry = conns.get(key)
        if entry is not None and time is not None and entry[2] is not None \
                and time - entry[2] > self.ttl:
            del conns[key]  # a stale entry: the pid has been reused
            entry = None
        ending = first in ENDING_WORDS and msg.startswith(ENDINGS)
        if event is not None:
            if entry is None:
                if not ending:  # inline _remember: this is the hot path
                    conns[key] = [event[1], None, time]
                    if len(conns) > self.max_entries:
                        conns.popitem(last=False)
                return [event]
            host: str | None = event[1]
            out = [event]
        else:
            out = []
            host = _announced_host(msg) if first in _ANNOUNCE_WORDS else None
            if host is None:
                kind = _orphan(msg) if first in _ORPHAN_WORDS else None
                if kind is not None:
                    if entry is not None and entry[0] is not None:
                        out.append((kind, entry[0], None, None))
                        entry[2] = time
                    else:
                        if entry is None:
                            entry = self._remember(key, None, time)
                        if entry[1] is None:
                            entry[1] = []
                        entry[1].append(kind)
                    return out
                if entry is None:
                    return out
                if entry[1]:
                    host = _closing_host(msg)  # gh-3086: a close without [preauth]
                if host is None:
                    if ending:
                        del conns[key]
                    return out
        if entry is None:
            entry = self._remember(key, host, time)
        else:
            entry[0] = host
            entry[2] = time
        if entry[1]:
            # Every path without an address returned above.
            out.extend((kind, cast(str, host), None, None) for kind in entry[1])
            entry[1] = None
        if ending:
            del conns[key]  # the connection is over: its pid may be reused
        return out

    def settle(self, machine: str | None, pid: int, host: str, time: float | None,
               ending: bool) -> bool:
        """correlate()'s common case in one call, for a line with its own verdict naming
        `host`: when the connection has nothing pending (and its entry is not stale),
        remember its address, or forget it when the line ends it (`ending`: the message
        starts with one of ENDINGS), and return True: the line's own verdict is then the
        only event. False: nothing was changed; call correlate()."""
        key = (machine, pid)
        conns = self._conns
        entry = conns.get(key)
        if entry is None:
            if not ending:
                conns[key] = [host, None, time]
                if len(conns) > self.max_entries:
                    conns.popitem(last=False)  # the oldest
            return True
        if entry[1] is None and (time is None or entry[2] is None
                                 or time - entry[2] <= self.ttl):
            if ending:
                del conns[key]
            else:
                entry[0] = host
                entry[2] = time
            return True
        return False

    def close(self, machine: str | None, pid: int) -> bool:
        """correlate()'s common case for a closing line without a verdict of its own:
        with nothing pending the connection (if known) is forgotten and True returned;
        False when something waits for an address: call correlate()."""
        key = (machine, pid)
        entry = self._conns.get(key)
        if entry is None:
            return True
        if not entry[1]:
            del self._conns[key]
            return True
        return False

    def _remember(self, key: tuple[str | None, int], host: str | None,
                  time: float | None) -> list[Any]:
        entry = [host, None, time]  # host, pending kinds (None: none), last time
        self._conns[key] = entry
        while len(self._conns) > self.max_entries:
            self._conns.popitem(last=False)  # the oldest
        return entry

    def __len__(self) -> int:
        return len(self._conns)
