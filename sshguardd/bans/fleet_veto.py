"""The local veto over bans that other hosts publish. Pure: no clock, no I/O.

A peer in a fleet may be compromised (THREATS.md, adversary 5) and publish anything its
ACL lets it write into its own stream. So nothing a peer says reaches this host's kernel
before it passed, in this order:

* well-formed: a parseable network, op "ban" or "unban", a finite expiry, and the
  publisher it claims is the stream it came from (the server's ACL ties each stream to one
  host's user, the entry's own field is just text);
* not quarantined: a publisher that published more than `max_bans_per_publisher` bans
  within `rate_window` (or a snapshot of more than `max_snapshot_bans`) is ignored for
  `quarantine_time`, and what it contributed so far is withdrawn;
* loopback: never (127.0.0.0/8, ::1, ::, and their IPv4-mapped forms);
* prefix: never wider than ipv4_min_prefix / ipv6_min_prefix (a /8 from a peer is a
  denial of service, not a ban);
* allow: never a network that overlaps the local ban.allow list;
* never_ban: never one that overlaps fleet.never_ban (the VPC's CIDRs, EC2 Instance
  Connect's published prefixes);
* admin: never one that overlaps an address that logged in here successfully within
  ban.protect_logged_in (the same admin protection local bans get).

What passes is a *contribution* of that publisher: network -> until, capped at
now + ban.max_ban_time. A network is banned by the fleet while at least `quorum` distinct
publishers hold a live contribution for it, until the quorum-th latest of their expiries
(so k hosts agree on every second of it). An unban from a publisher removes only that
publisher's contribution: one host cannot lift what others decided.

Time arrives as `now` (the daemon's wall clock when the entry was read), never from the
entry: a peer's clock is the peer's word.
"""

from __future__ import annotations

import math
import socket
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from sshguardd.config import BanConfig, FleetConfig
from sshguardd.contracts import FleetEntry

LOOPBACK = ("127.0.0.0/8", "::1/128", "::/128", "::ffff:127.0.0.0/104", "0.0.0.0/32")

# Stable veto reasons: metric label values and the words in `fleet status`.
REASONS = ("malformed", "publisher", "quarantined", "loopback", "prefix", "allow",
           "never_ban", "admin", "expired")

# Change, Judgement and Contribution are made once or more per peer entry: named tuples
# (as immutable as frozen dataclasses) because a frozen dataclass's __init__ costs about
# three times as much, which a burst of 20,000 peer bans showed in its profile.


class Change(NamedTuple):
    """The fleet's ban of network now ends at until (None: the fleet no longer bans it);
    old is when it ended before (None: the fleet did not ban it)."""

    network: str
    until: float | None
    old: float | None = None


class Judgement(NamedTuple):
    """What one entry (or snapshot) did: kernel changes, the veto reason if refused, and
    whether it put its publisher into quarantine."""

    changes: tuple[Change, ...] = ()
    veto: str | None = None
    quarantined: bool = False


class Verdicts(NamedTuple):
    """What a run of entries from one publisher did (judge_all): the kernel changes, each
    with the ban entry that caused it (None for a withdrawal), the entries refused by
    reason, and whether the run put the publisher into quarantine."""

    changes: list[tuple[Change, FleetEntry | None]]
    vetoed: dict[str, int]
    quarantined: bool


class Contribution(NamedTuple):
    """A row of the contributions table: None until deletes it."""

    network: str
    publisher: str
    until: float | None


@dataclass
class _Publisher:
    recent: deque[float] = field(default_factory=deque)
    quarantined_until: float = 0.0


Span = tuple[int, int, int, int]   # (IP version, first address, last address, prefix)


def span(network: str) -> Span | None:
    """'203.0.113.0/24' -> (4, first, last, 24) as ints; None unless a valid address or
    network (host bits are cleared, as ip_network(strict=False) would). Integer
    arithmetic because a burst of 10,000 peer bans must be judged in milliseconds, and
    ipaddress objects cost ~20 us each."""
    if not isinstance(network, str) or len(network) > 64:
        return None
    addr, slash, plen = network.partition("/")
    if ":" in addr:
        version, family, bits = 6, socket.AF_INET6, 128
    else:
        version, family, bits = 4, socket.AF_INET, 32
    try:
        raw = socket.inet_pton(family, addr)
    except (OSError, ValueError):
        return None
    if slash:
        if not plen.isdigit() or len(plen) > 3 or int(plen) > bits:
            return None
        prefix = int(plen)
    else:
        prefix = bits
    host = bits - prefix
    lo = int.from_bytes(raw, "big") >> host << host
    return version, lo, lo | ((1 << host) - 1), prefix


def canonical(sp: Span) -> str:
    version, lo, _, prefix = sp
    if version == 4:
        return f"{socket.inet_ntop(socket.AF_INET, lo.to_bytes(4, 'big'))}/{prefix}"
    return f"{socket.inet_ntop(socket.AF_INET6, lo.to_bytes(16, 'big'))}/{prefix}"


def _spans(networks: Iterable[str]) -> list[Span]:
    return [sp for sp in (span(n) for n in networks) if sp is not None]


def _hits(sp: Span, ranges: list[Span]) -> bool:
    version, lo, hi, _ = sp
    return any(v == version and a <= hi and lo <= b for v, a, b, _ in ranges)


class _Union:
    """The union of some networks of one IP version as sorted disjoint ranges, so that
    "does this network overlap any of them" is one bisection, however many there are
    (never_ban can hold hundreds of EC2 Instance Connect prefixes)."""

    def __init__(self, spans: Iterable[Span], version: int) -> None:
        merged: list[list[int]] = []
        for a, b in sorted((a, b) for v, a, b, _ in spans if v == version):
            if merged and a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.starts = [a for a, _ in merged]
        self.ends = [b for _, b in merged]

    def overlaps(self, lo: int, hi: int) -> bool:
        i = bisect_right(self.starts, hi) - 1
        return i >= 0 and self.ends[i] >= lo


class FleetVeto:
    """Judges peers' entries for this host and keeps the fleet's contributions.

    contributions: the rows kept in the state store, to start where the last run ended.
    logged_in: network -> time of its latest successful login here (Store.logins).
    quarantined: publisher -> end of its quarantine, as the last run left them (a restart
    must not let a flooding publisher back in).
    Callers persist `drain()` in the same transaction as the kernel changes returned.
    """

    def __init__(self, fleet: FleetConfig, ban: BanConfig, *,
                 contributions: Iterable[tuple[str, str, float]] = (),
                 logged_in: Mapping[str, float] | None = None,
                 quarantined: Mapping[str, float] | None = None) -> None:
        self.fleet = fleet
        self.ban = ban
        self._loopback = _spans(LOOPBACK)
        self._allow = _spans(ban.allow)
        self._never = _spans(fleet.never_ban)
        static = self._loopback + self._allow + self._never
        self._static = {4: _Union(static, 4), 6: _Union(static, 6)}
        self._min_prefix = {4: fleet.ipv4_min_prefix, 6: fleet.ipv6_min_prefix}
        self._logins: dict[str, tuple[Span, float]] = {}
        self._login_lengths: set[tuple[int, int]] = set()
        for net, when in (logged_in or {}).items():
            self.login(net, when)
        self._contrib: dict[str, dict[str, float]] = {}
        self._applied: dict[str, float] = {}
        self._publishers: dict[str, _Publisher] = {
            p: _Publisher(quarantined_until=u) for p, u in (quarantined or {}).items()}
        self._writes: list[Contribution] = []
        for network, publisher, until in contributions:
            self._contrib.setdefault(network, {})[publisher] = until
        # What the kernel holds for the fleet after a restart: recomputed, not trusted.
        for network in list(self._contrib):
            eff = self._effective(network, -math.inf)
            if eff is not None:
                self._applied[network] = eff

    # -- inputs besides entries ----------------------------------------------------------
    def login(self, network: str, when: float) -> None:
        """A successful login here from network (admin protection)."""
        sp = span(network)
        if sp is None:
            return
        key = canonical(sp)
        old = self._logins.get(key)
        self._logins[key] = (sp, max(when, old[1]) if old else when)
        self._login_lengths.add((sp[0], sp[3]))

    @property
    def applied(self) -> Mapping[str, float]:
        """network -> until of every ban the fleet holds in this host's kernel."""
        return self._applied

    def quarantined(self, now: float) -> dict[str, float]:
        """publisher -> end of its quarantine, for those quarantined at now."""
        return {p: s.quarantined_until for p, s in self._publishers.items()
                if s.quarantined_until > now}

    def contributions(self, network: str) -> dict[str, float]:
        return dict(self._contrib.get(network, {}))

    def drain(self) -> list[Contribution]:
        """The contribution rows changed since the last drain, in order."""
        out, self._writes = self._writes, []
        return out

    # -- the static veto -----------------------------------------------------------------
    def veto(self, sp: Span, now: float) -> str | None:
        """Why this host refuses a fleet ban of the network sp, or None."""
        version, lo, hi, prefix = sp
        if not self._static[version].overlaps(lo, hi):  # the common case, one bisection
            if prefix < self._min_prefix[version]:
                return "prefix"
            if self.ban.protect_logged_in > 0 and self._logged_in_overlap(sp, now):
                return "admin"
            return None
        if _hits(sp, self._loopback):
            return "loopback"
        if sp[3] < (self.fleet.ipv4_min_prefix if sp[0] == 4 else self.fleet.ipv6_min_prefix):
            return "prefix"
        if _hits(sp, self._allow):
            return "allow"
        if _hits(sp, self._never):
            return "never_ban"
        if self.ban.protect_logged_in > 0 and self._logged_in_overlap(sp, now):
            return "admin"
        return None

    def _logged_in_overlap(self, sp: Span, now: float) -> bool:
        horizon = now - self.ban.protect_logged_in
        version, lo, hi, prefix = sp
        bits = 32 if version == 4 else 128
        for v, length in self._login_lengths:
            if v != version:
                continue
            if length <= prefix:
                host = bits - length
                hit = self._logins.get(canonical((v, lo >> host << host, 0, length)))
                if hit is not None and hit[1] >= horizon:
                    return True
            else:  # logins narrower than the ban: only for wide bans, so a scan is fine
                for (lv, a, b, _), when in self._logins.values():
                    if lv == version and when >= horizon and lo <= a and b <= hi:
                        return True
        return False

    # -- entries -------------------------------------------------------------------------
    def judge(self, peer: str, entry: FleetEntry | None, now: float) -> Judgement:
        """One entry read from peer's stream at now."""
        batch = self.judge_all(peer, (entry,), now)
        return Judgement(changes=tuple(c for c, _ in batch.changes),
                         veto=next(iter(batch.vetoed), None), quarantined=batch.quarantined)

    def judge_all(self, peer: str, entries: Iterable[FleetEntry | None],
                  now: float) -> Verdicts:
        """Entries read from peer's stream at now, in order: judge() for a whole XREAD
        reply, with what is the same for every entry looked up once."""
        changes: list[tuple[Change, FleetEntry | None]] = []
        vetoed: dict[str, int] = {}
        quarantined = False
        pub = self._publishers.get(peer)
        if pub is None:
            pub = self._publishers[peer] = _Publisher()
        window = pub.recent
        horizon = now - self.fleet.rate_window
        limit = self.fleet.max_bans_per_publisher
        cap = now + self.ban.max_ban_time
        isfinite, set_, veto = math.isfinite, self._set, self.veto
        for entry in entries:
            reason: str
            if entry is None or entry.op not in ("ban", "unban") \
                    or (sp := span(entry.network)) is None or not isfinite(entry.until):
                reason = "malformed"
            elif entry.publisher != peer:
                reason = "publisher"
            elif pub.quarantined_until > now:
                reason = "quarantined"
            elif entry.op == "unban":
                changes.extend((c, None) for c in set_(canonical(sp), peer, None, now))
                continue
            else:
                # Counted before the static veto: a host flooding vetoed bans is as suspect.
                window.append(now)
                while window and window[0] <= horizon:
                    window.popleft()
                if len(window) > limit:
                    changes.extend((c, None) for c in self._quarantine(peer, now))
                    reason, quarantined = "quarantined", True
                else:
                    why = veto(sp, now)
                    if why is None:
                        until = min(entry.until, cap)
                        if until > now:
                            changes.extend((c, entry)
                                           for c in set_(canonical(sp), peer, until, now))
                            continue
                        why = "expired"
                    reason = why
            vetoed[reason] = vetoed.get(reason, 0) + 1
        return Verdicts(changes, vetoed, quarantined)

    def resync(self, peer: str, bans: Iterable[FleetEntry], now: float,
               max_bans: int = 100_000) -> tuple[Judgement, dict[str, int]]:
        """Replace everything peer contributed by its snapshot. Returns the judgement and
        how many snapshot bans were vetoed, by reason."""
        pub = self._publishers.setdefault(peer, _Publisher())
        if pub.quarantined_until > now:
            return Judgement(veto="quarantined"), {}
        wanted: dict[str, float] = {}
        vetoed: dict[str, int] = {}
        items = list(bans)
        if len(items) > max_bans:
            return Judgement(changes=self._quarantine(peer, now), veto="quarantined",
                             quarantined=True), {}
        for entry in items:
            sp = span(entry.network)
            if entry.op != "ban" or sp is None or not math.isfinite(entry.until):
                reason: str | None = "malformed"
            elif entry.publisher != peer:
                reason = "publisher"
            else:
                reason = self.veto(sp, now)
            if reason is None and sp is not None:
                until = min(entry.until, now + self.ban.max_ban_time)
                if until > now:
                    key = canonical(sp)
                    wanted[key] = max(until, wanted.get(key, until))
                    continue
                reason = "expired"
            why = reason or "malformed"
            vetoed[why] = vetoed.get(why, 0) + 1
        changes: list[Change] = []
        held = [n for n, pubs in self._contrib.items() if peer in pubs and n not in wanted]
        for network in held:
            changes.extend(self._set(network, peer, None, now))
        for network, until in wanted.items():
            changes.extend(self._set(network, peer, until, now))
        return Judgement(changes=tuple(changes)), vetoed

    def expire(self, now: float) -> None:
        """Forget expired contributions (the kernel expires the bans by itself)."""
        for network in [n for n, u in self._applied.items() if u <= now]:
            del self._applied[network]
        for network, pubs in list(self._contrib.items()):
            for p in [p for p, u in pubs.items() if u <= now]:
                del pubs[p]
                self._writes.append(Contribution(network, p, None))
            if not pubs:
                del self._contrib[network]

    # -- bookkeeping ---------------------------------------------------------------------
    def _quarantine(self, peer: str, now: float) -> tuple[Change, ...]:
        pub = self._publishers[peer]
        pub.quarantined_until = now + self.fleet.quarantine_time
        pub.recent.clear()
        changes: list[Change] = []
        for network in [n for n, pubs in self._contrib.items() if peer in pubs]:
            changes.extend(self._set(network, peer, None, now))
        return tuple(changes)

    def _set(self, network: str, peer: str, until: float | None,
             now: float) -> tuple[Change, ...]:
        pubs = self._contrib.get(network)
        if until is None:
            if pubs is None or peer not in pubs:
                return ()
            del pubs[peer]
            if not pubs:
                del self._contrib[network]
        else:
            pubs = self._contrib.setdefault(network, {})
            if pubs.get(peer) == until:
                return ()
            pubs[peer] = until
        self._writes.append(Contribution(network, peer, until))
        eff = self._effective(network, now)
        old = self._applied.get(network)
        if eff == old:
            # Same expiry, other holders: worth a row update (the reason names them).
            return () if eff is None else (Change(network, eff, old),)
        if eff is None:
            del self._applied[network]
        else:
            self._applied[network] = eff
        return (Change(network, eff, old),)

    def _effective(self, network: str, now: float) -> float | None:
        if self.fleet.quorum == 1:  # the default: the latest expiry, if still live
            latest = max(self._contrib.get(network, {}).values(), default=None)
            return latest if latest is not None and latest > now else None
        live = sorted((u for u in self._contrib.get(network, {}).values() if u > now),
                      reverse=True)
        k = self.fleet.quorum
        return live[k - 1] if len(live) >= k else None
