"""OpenSSH 9.8+ PerSourcePenalties as sshd's listener logs them, and as `sshd -T` prints
their settings. Pure: text in, values out.

The wordings, from openssh-portable (srclimit.c and sshd.c, 9.8 to 10.x) and checked
against Debian 13's openssh-server 1:10.0p1-7+deb13u4 (`sshd -V`: OpenSSH_10.0p2), whose
real lines are in tests/data/penalty_golden.jsonl:

* srclimit.c srclimit_penalise(), a new penalty (VERBOSE up to 10.0, INFO for an active
  one in later sources, which also print "%.3f" seconds instead of "%d"):
  "srclimit_penalise: ipv4: new 203.0.113.7/32 active penalty of 6 seconds for penalty:
  failed authentication" ("deferred" while below PerSourcePenalties min);
* the same function, a deferred penalty that grew past min:
  "srclimit_penalise: 203.0.113.7/32: activating ipv4 penalty of 8 seconds for penalty:
  ..." (the seconds are what is left from now);
* sshd.c drop_connection(), a connection refused while the penalty is in force (INFO in
  every version, so the only line a default LogLevel INFO shows on 10.0):
  "drop connection #0 from [203.0.113.7]:45937 on [198.51.100.1]:22 penalty: failed
  authentication". The same line ending "past Maxstartups" (10.x) or "past MaxStartups"
  (9.x) is load shedding, and "too many penalised addresses" a full table: neither names
  a penalty of this source.

The reasons after "penalty: " (srclimit.c) name the PerSourcePenalties keyword whose
seconds were added: REASONS below.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from sshguardd.detect.tokens import parse_host, strip_prefixes

__all__ = ["REASONS", "PenaltyLine", "PenaltySettings", "parse_line", "parse_settings"]

# srclimit.c's reason texts -> the PerSourcePenalties keyword that set the seconds.
REASONS: dict[str, str] = {
    "caused crash": "crash",
    "failed authentication": "authfail",
    "connections without attempting authentication": "noauth",
    "attempted authentication by invalid user": "invaliduser",
    "connection prohibited by RefuseConnection": "refuseconnection",
    "exceeded LoginGraceTime": "grace-exceeded",
}

_FUNC = "srclimit_penalise: "
_DROP = "drop connection #"


@dataclass(frozen=True, slots=True)
class PenaltyLine:
    """One penalty line read.

    network is the source as sshd aggregates it ("203.0.113.0/24" under
    PerSourceNetBlockSize 24) when the line says (srclimit_penalise), else None and
    address is the peer (a drop line: the caller masks it). seconds is what the line says
    is left from the line's time (None for a drop line); active is False for a deferred
    penalty (below min: connections are still let in); reason is srclimit.c's text.
    """

    address: str
    network: str | None
    seconds: float | None
    active: bool
    reason: str


def _seconds(text: str) -> float | None:
    # "%d" (9.8-10.0) or "%.3f" (later); one public Debian 13 log shows "1s seconds".
    text = text[:-1] if text.endswith("s") else text
    if not text or len(text) > 16 or not text.isascii():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 <= value < 1e9 else None


def _network(text: str) -> tuple[str, str] | None:
    """'ADDR/BITS' as addr_masklen_ntop prints it -> (address, normalised network)."""
    addr, sep, bits = text.rpartition("/")
    host = parse_host(addr) if sep and bits.isdigit() and len(bits) <= 3 else None
    if host is None or ("." not in host and ":" not in host):
        return None
    try:
        net = ipaddress.ip_network(f"{host}/{int(bits)}", strict=False)
    except ValueError:
        return None
    return host, str(net)


def _penalise(rest: str) -> PenaltyLine | None:
    # "ipv4: new NET STATE penalty of N seconds for penalty: REASON"
    # "NET: activating ipv4 penalty of N seconds for penalty: REASON"
    head, sep, reason = rest.partition(" seconds for penalty: ")
    if not sep or not reason:
        return None
    head, sep, secs = head.rpartition(" penalty of ")
    seconds = _seconds(secs) if sep else None
    if seconds is None:
        return None
    words = head.split(" ")
    if len(words) == 4 and words[0] in ("ipv4:", "ipv6:") and words[1] == "new" \
            and words[3] in ("active", "deferred"):
        net, active = _network(words[2]), words[3] == "active"
    elif len(words) == 3 and words[0].endswith(":") and words[1] == "activating" \
            and words[2] in ("ipv4", "ipv6"):
        net, active = _network(words[0][:-1]), True
    else:
        return None
    if net is None:
        return None
    return PenaltyLine(net[0], net[1], seconds, active, reason)


def _drop(rest: str) -> PenaltyLine | None:
    # "N from [ADDR]:PORT on [ADDR]:PORT penalty: REASON" (sshd.c drop_connection)
    num, sep, rest = rest.partition(" from [")
    if not sep or not num.isdigit():
        return None
    addr, sep, rest = rest.partition("]:")
    host = parse_host(addr) if sep else None
    if host is None or ("." not in host and ":" not in host):
        return None
    _, sep, rest = rest.partition(" on [")
    _, sep2, rest = rest.partition("]:")
    _, sep3, reason = rest.partition(" penalty: ")
    if not (sep and sep2 and sep3 and reason):
        return None
    return PenaltyLine(host, None, None, True, reason)


def parse_line(message: str) -> PenaltyLine | None:
    """The penalty a listener line reports, or None when it reports none."""
    msg = strip_prefixes(message)
    if msg.startswith(_FUNC):
        return _penalise(msg[len(_FUNC):])
    if msg.startswith(_DROP):
        return _drop(msg[len(_DROP):])
    return None


@dataclass(frozen=True, slots=True)
class PenaltySettings:
    """The effective PerSourcePenalties settings (`sshd -T`), with sshd's defaults.

    seconds: keyword -> seconds added per offence; minimum/maximum: min and max;
    ipv4_bits/ipv6_bits: PerSourceNetBlockSize; exempt: PerSourcePenaltyExemptList.
    """

    enabled: bool = True
    seconds: Mapping[str, float] | None = None
    minimum: float = 15.0
    maximum: float = 600.0
    ipv4_bits: int = 32
    ipv6_bits: int = 128
    exempt: tuple[str, ...] = ()

    def per_offence(self, reason: str) -> float:
        """The seconds sshd adds for `reason` (srclimit.c's text); sshd's 10.0 default
        when `sshd -T` did not say (crash 90, authfail 5, noauth 1, grace-exceeded 10,
        refuseconnection 10, invaliduser as authfail)."""
        key = REASONS.get(reason, "")
        table = self.seconds or {}
        if key in table:
            return table[key]
        return _DEFAULT_SECONDS.get(key, self.minimum)


_DEFAULT_SECONDS = {"crash": 90.0, "authfail": 5.0, "noauth": 1.0, "grace-exceeded": 10.0,
                    "refuseconnection": 10.0, "invaliduser": 5.0}


def _number(text: str) -> float | None:
    # sshd -T prints plain seconds ("authfail:5"); accept sshd_config's units too.
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    mult = units.get(text[-1:].lower(), 0)
    body = text[:-1] if mult else text
    mult = mult or 1
    if not body or not body.isascii() or not body.isdigit() or len(body) > 10:
        return None
    return float(int(body) * mult)


def parse_settings(sshd_t: Mapping[str, str]) -> PenaltySettings | None:
    """PenaltySettings from `sshd -T` (keyword -> value), or None when this sshd has no
    PerSourcePenalties (before 9.8). As printed by 10.0p2:
    "persourcepenalties crash:90 authfail:5 noauth:1 grace-exceeded:10
    refuseconnection:10 max:600 min:15 max-sources4:65536 ...", "persourcepenalties no",
    "persourcenetblocksize 32:128", "persourcepenaltyexemptlist none" (or a list)."""
    value = sshd_t.get("persourcepenalties")
    if value is None:
        return None
    value = value.strip()
    if value.lower() in ("no", "none"):
        return PenaltySettings(enabled=False)
    seconds: dict[str, float] = {}
    minimum, maximum = 15.0, 600.0
    for item in value.split():
        key, _, raw = item.partition(":")
        n = _number(raw)
        if n is None:
            continue
        if key == "min":
            minimum = n
        elif key == "max":
            maximum = n
        elif key in _DEFAULT_SECONDS:
            seconds[key] = n
    v4, v6 = 32, 128
    block = sshd_t.get("persourcenetblocksize", "32:128").strip()
    a, _, b = block.partition(":")
    if a.isdigit() and 0 <= int(a) <= 32:
        v4 = int(a)
    if b.isdigit() and 0 <= int(b) <= 128:
        v6 = int(b)
    exempt_text = sshd_t.get("persourcepenaltyexemptlist", "none").strip()
    exempt = () if exempt_text.lower() == "none" else tuple(
        e for e in exempt_text.split(",") if e)
    return PenaltySettings(True, seconds, minimum, maximum, v4, v6, exempt)
