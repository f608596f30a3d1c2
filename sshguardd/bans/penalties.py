"""sshd's PerSourcePenalties as sshguardd keeps them, and which of them to carry over a
restart of sshd as short bans. Pure: no clock, no I/O; time arrives as data.

sshd (9.8+) keeps its penalties in the listener's memory, so every restart forgives them
all, including the restarts our own drift repairs cause. The daemon keeps the penalties
the listener logged (PenaltyBook) and, when it restarts sshd itself, turns those still in
force into nft bans for what is left of them (carry): not strikes (they never escalate,
are never in the ban history, never go to the fleet), never for an allow-listed network
or one an account logged in from recently (admin protection), never shortening a ban
already in force.

How long a penalty lasts:
* a srclimit_penalise line says it: the seconds left from the line's time;
* a drop line (all a default LogLevel INFO shows on 10.0) says only that it is in force
  at the line's time. sshd activates a penalty once more than `min` seconds of it are
  outstanding, and adds the reason's seconds per offence, so it lasts at least
  max(min, seconds of the reason) from its activation: that, capped at `max`, from the
  drop line's time is the estimate (a later drop line moves it on).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sshguardd.contracts import Ban, LogRecord
from sshguardd.detect.penalties import PenaltyLine, PenaltySettings, parse_line

__all__ = ["CARRIED", "Penalty", "PenaltyBook", "carry", "exempt_gaps"]

# The reason of every carried ban starts with this (the engine tells them apart by it).
CARRIED = "sshd penalty carried over a restart"
MAX_PENALTIES = 65536   # sshd's own default max-sources4 (and max-sources6)
MIN_LEFT = 1.0          # a penalty with less left than this is not worth a ban

_LISTENING = "Server listening on "  # sshd.c: a new listener (start, restart, SIGHUP)

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Penalty:
    """A penalty in force: the network as sshd aggregates it, when it ends (epoch
    seconds, in the log's clock), its reason, and whether the end was logged or
    estimated from drop lines."""

    network: str
    until: float
    reason: str
    logged: bool


class PenaltyBook:
    """The penalties sshd's listener logged, by network; at most `cap`, the soonest to
    end forgotten first. A "Server listening on" line (a new listener: sshd started,
    restarted or re-executed on SIGHUP) forgets them all, as sshd did."""

    def __init__(self, cap: int = MAX_PENALTIES) -> None:
        self.cap = cap
        self._book: dict[str, Penalty] = {}
        self.settings = PenaltySettings()

    def __len__(self) -> int:
        return len(self._book)

    def observe(self, records: Iterable[LogRecord]) -> int:
        """Read a batch's records; returns how many penalty lines it held."""
        seen = 0
        for rec in records:
            msg = rec.message
            if msg.startswith(_LISTENING):
                self._book.clear()
                continue
            if not msg.startswith(("srclimit_penalise: ", "drop connection #")) \
                    or rec.time is None:
                continue
            line = parse_line(msg)
            if line is not None and line.active:
                seen += 1
                self._note(line, rec.time)
        return seen

    def _note(self, line: PenaltyLine, t: float) -> None:
        s = self.settings
        network = line.network or _mask(line.address, s.ipv4_bits, s.ipv6_bits)
        if network is None:
            return
        old = self._book.get(network)
        if line.seconds is not None:
            new = Penalty(network, t + line.seconds, line.reason, True)
        else:
            guess = min(s.maximum, max(s.minimum, s.per_offence(line.reason)))
            new = Penalty(network, t + guess, line.reason, False)
            if old is not None and old.logged and old.until >= t:
                return  # what sshd said beats a guess while it holds
        if old is not None and not new.logged and old.until > new.until:
            return
        self._book.pop(network, None)
        if len(self._book) >= self.cap:
            self._evict(t)
        self._book[network] = new

    def _evict(self, now: float) -> None:
        live = {n: p for n, p in self._book.items() if p.until > now}
        if len(live) >= self.cap:
            for p in sorted(live.values(), key=lambda p: p.until)[: max(1, self.cap // 128)]:
                del live[p.network]
        self._book = live

    def in_force(self, now: float) -> list[Penalty]:
        """The penalties not ended at `now`, soonest end first."""
        return sorted((p for p in self._book.values() if p.until > now),
                      key=lambda p: p.until)

    def forget_all(self) -> None:
        """sshd was restarted: it forgave them all (and we carried what we carry)."""
        self._book.clear()


def _mask(address: str, v4: int, v6: int) -> str | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return str(ipaddress.ip_network(f"{ip}/{v4 if ip.version == 4 else v6}", strict=False))


def _nets(items: Iterable[str]) -> list[Net]:
    out = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue
    return out


def _overlap(a: Net, nets: Sequence[Net]) -> bool:
    return any(a.version == b.version and a.overlaps(b) for b in nets)


def carry(penalties: Sequence[Penalty], now: float, *, allow: Iterable[str],
          logged_in: Iterable[str], active: Sequence[Ban],
          min_left: float = MIN_LEFT) -> list[Ban]:
    """The bans that carry `penalties` over a restart of sshd at `now`.

    allow: the never-ban list; logged_in: networks a successful login came from within
    ban.protect_logged_in (admin protection); active: the bans in force. A penalty whose
    network overlaps either list, that an active ban at least as long already covers, or
    with less than min_left seconds left is not carried. strikes is 0: not a strike."""
    spared = _nets(allow) + _nets(logged_in)
    covering = [(net, b.until) for b in active for net in _nets([b.network])]
    out = []
    for p in penalties:
        left = p.until - now
        if left < min_left:
            continue
        net = ipaddress.ip_network(p.network, strict=False)
        if _overlap(net, spared):
            continue
        if any(net.version == c.version and net.subnet_of(c)  # type: ignore[arg-type]
               and until >= p.until for c, until in covering):
            continue
        how = "" if p.logged else ", end estimated from sshd's drop lines"
        out.append(Ban(p.network, left, p.until, 0, f"{CARRIED} ({p.reason}{how})"))
    return out


def exempt_gaps(allow: Iterable[str], exempt: Iterable[str]) -> list[str]:
    """The never-ban networks that PerSourcePenaltyExemptList does not cover, so sshd may
    still penalise (refuse) them. Exempt entries are sshd's address/CIDR patterns; a
    wildcard or negated pattern is not judged (the gap is reported)."""
    ex = _nets(e for e in exempt if not e.startswith("!") and "*" not in e and "?" not in e)
    gaps = []
    for net in _nets(allow):
        if not any(net.version == e.version and net.subnet_of(e)  # type: ignore[arg-type]
                   for e in ex):
            gaps.append(str(net))
    return gaps
